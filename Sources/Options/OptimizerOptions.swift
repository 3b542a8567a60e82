import ArgumentParser
import Model

extension OptimizerKind: ExpressibleByArgument {}
extension LearningRateSchedule.Shape: ExpressibleByArgument {}

/// The optimizer and its schedule (train).
public struct OptimizerOptions: ParsableArguments, Sendable {
    @Option(name: .customLong("lr"), help: "Peak learning rate.")
    public var learningRate = 2e-5
    @Option(help: "Fraction of the steps with linear warmup.")
    public var warmupRatio = 0.0
    @Option(help: "Steps of linear warmup (when more than 0, instead of --warmup-ratio, as HF's warmup_steps).")
    public var warmupSteps = 0
    @Option(help: "Weight decay (not on biases and LayerNorm weights).")
    public var weightDecay = 0.0
    @Option(help: "Clip the global gradient norm to this (0: no clipping).")
    public var maxGradNorm = 1.0
    @Option(help: "adamw (decoupled weight decay) or adam (L2, torch.optim.Adam).")
    public var optimizer: OptimizerKind = .adamw
    @Option(name: .customLong("lr-schedule"), help: "The rate after warmup, as transformers' get_scheduler: linear decay to 0 (HF's default), cosine, constant, constant_with_warmup or polynomial.")
    public var schedule: LearningRateSchedule.Shape = .linear

    public init() {}

    public func validate() throws {
        if !(learningRate > 0) { throw ValidationError("--lr must be positive") }
        if !(0...1).contains(warmupRatio) { throw ValidationError("--warmup-ratio must be in [0, 1]") }
        if warmupSteps < 0 { throw ValidationError("--warmup-steps must not be negative") }
        if weightDecay < 0 || maxGradNorm < 0 { throw ValidationError("--weight-decay and --max-grad-norm must not be negative") }
    }

    public var adamHyperparameters: AdamHyperparameters { AdamHyperparameters(kind: optimizer, weightDecay: Float(weightDecay)) }
}
