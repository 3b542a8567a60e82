import ArgumentParser
import Model

extension OptimizerKind: ExpressibleByArgument {}
extension LearningRateSchedule.Shape: ExpressibleByArgument {}

/// The optimizer and its schedule (train).
struct OptimizerOptions: ParsableArguments {
    @Option(help: "Peak learning rate.")
    var lr = 2e-5
    @Option(help: "Fraction of the steps with linear warmup.")
    var warmupRatio = 0.0
    @Option(help: "Weight decay (not on biases and LayerNorm weights).")
    var weightDecay = 0.0
    @Option(help: "Clip the global gradient norm to this (0: no clipping).")
    var maxGradNorm = 1.0
    @Option(help: "adamw (decoupled weight decay) or adam (L2, torch.optim.Adam).")
    var optimizer: OptimizerKind = .adamw
    @Option(help: "linear (warmup then linear decay, HF's default) or constant (after warmup).")
    var lrSchedule: LearningRateSchedule.Shape = .linear

    func validate() throws {
        if !(lr > 0) { throw ValidationError("--lr must be positive") }
        if !(0...1).contains(warmupRatio) { throw ValidationError("--warmup-ratio must be in [0, 1]") }
        if weightDecay < 0 || maxGradNorm < 0 { throw ValidationError("--weight-decay and --max-grad-norm must not be negative") }
    }
}
