import CKernels
import Foundation

/// torch.optim.AdamW (decoupled weight decay) or torch.optim.Adam (L2 penalty added to the
/// gradient), with PyTorch's exact order of operations.
public enum OptimizerKind: String, Sendable, CaseIterable {
    case adamw, adam
}

public struct AdamHyperparameters: Sendable, Equatable {
    public var kind: OptimizerKind = .adamw
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var epsilon: Float = 1e-8
    public var weightDecay: Float = 0
    public init(kind: OptimizerKind = .adamw, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 0) {
        self.kind = kind
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
    }
}

/// Adam state for the part `range` of the parameter arena this rank updates: the whole arena,
/// or its ZeRO-1 shard. `m` and `v` are arenas of `range.count` floats, index 0 = range start.
/// Updates run on the rank's `compute`.
public final class AdamOptimizer {
    public let hyperparameters: AdamHyperparameters
    public let compute: Compute
    public let range: Range<Int>
    public let m: FloatArena
    public let v: FloatArena
    /// Optimizer steps taken (PyTorch's `state["step"]`), for bias correction.
    public var stepCount = 0
    /// Sub-ranges of `range` (absolute arena offsets) with their weight-decay flag.
    private let segments: [(range: Range<Int>, decays: Bool)]

    public init(hyperparameters: AdamHyperparameters, layout: ParameterLayout, range: Range<Int>, compute: Compute) {
        self.hyperparameters = hyperparameters
        self.compute = compute
        self.range = range
        m = FloatArena(count: range.count)
        v = FloatArena(count: range.count)
        var segments: [(Range<Int>, Bool)] = []
        var cursor = range.lowerBound
        for tensor in layout.tensors {
            let overlap = tensor.range.clamped(to: range)
            if overlap.isEmpty { continue }
            // Alignment gaps between tensors hold zeros in every arena; treat them as no-decay.
            if overlap.lowerBound > cursor { segments.append((cursor..<overlap.lowerBound, false)) }
            segments.append((overlap, tensor.decays))
            cursor = overlap.upperBound
        }
        if cursor < range.upperBound { segments.append((cursor..<range.upperBound, false)) }
        self.segments = segments
    }

    /// One update of `parameters[range]` from `gradients[range]` multiplied by `gradientScale`
    /// (the clipping coefficient, 1 if none), at learning rate `learningRate`.
    public func step(parameters: FloatArena, gradients: FloatArena, learningRate: Double, gradientScale: Float) {
        apply(beginStep(learningRate: learningRate, gradientScale: gradientScale), to: range, parameters: parameters, gradients: gradients)
    }

    /// The constants of one update: made once per step by `beginStep`, which counts the step.
    public struct Update: Sendable {
        let learningRate: Double
        let gradientScale, stepSize, biasCorrection2Sqrt: Float
    }

    /// Counts an optimizer step (PyTorch's `state["step"]`) and returns its constants; then
    /// `apply` them to every part of `range` once, in any order and pieces (trainers update each
    /// gradient bucket as its sum arrives). Each element's arithmetic is the same whatever the
    /// pieces: one update in pieces equals `step` bit for bit.
    public func beginStep(learningRate: Double, gradientScale: Float) -> Update {
        stepCount += 1
        let t = Double(stepCount)
        let biasCorrection1 = 1 - pow(Double(hyperparameters.beta1), t)
        let biasCorrection2Sqrt = (1 - pow(Double(hyperparameters.beta2), t)).squareRoot()
        return Update(learningRate: learningRate, gradientScale: gradientScale, stepSize: Float(learningRate / biasCorrection1),
                      biasCorrection2Sqrt: Float(biasCorrection2Sqrt))
    }

    /// Updates `parameters[part ∩ range]` (absolute arena offsets) with `update`.
    public func apply(_ update: Update, to part: Range<Int>, parameters: FloatArena, gradients: FloatArena) {
        let part = part.clamped(to: range)
        if part.isEmpty { return }
        let h = hyperparameters
        // One team job for the part: every member updates its share of every segment in it.
        let members = min(compute.threads, max(1, part.count / (1 << 16)))
        segments.withUnsafeBufferPointer { segments in
            compute.teamRun(members: members, AdamJob(
                kernels: compute.kernels, segments: segments, part: part, parameters: parameters.base, gradients: gradients.base,
                m: m.base, v: v.base, rangeStart: range.lowerBound, learningRate: update.learningRate, weightDecay: h.weightDecay,
                gradientScale: update.gradientScale, isAdamW: h.kind == .adamw ? 1 : 0, oneMinusBeta1: 1 - h.beta1, beta2: h.beta2,
                oneMinusBeta2: 1 - h.beta2, biasCorrection2Sqrt: update.biasCorrection2Sqrt, stepSize: update.stepSize, epsilon: h.epsilon))
        }
    }
}

private struct AdamJob: TeamJob {
    let kernels: bd_kernel_table
    let segments: UnsafeBufferPointer<(range: Range<Int>, decays: Bool)>
    let part: Range<Int>
    let parameters, gradients, m, v: UnsafeMutablePointer<Float>
    let rangeStart: Int, learningRate: Double, weightDecay, gradientScale: Float, isAdamW: Int32
    let oneMinusBeta1, beta2, oneMinusBeta2, biasCorrection2Sqrt, stepSize, epsilon: Float

    func run(member: Int, of members: Int) {
        for segment in segments {
            let range = segment.range.clamped(to: part)
            if range.isEmpty { continue }
            let decay: Float = segment.decays ? weightDecay : 0
            let decoupledFactor = Float(1 - learningRate * Double(decay))
            let count = range.count
            let first = range.lowerBound + count * member / members
            let end = range.lowerBound + count * (member + 1) / members
            if first == end { continue }
            kernels.adam(parameters + first, gradients + first, m + (first - rangeStart), v + (first - rangeStart), end - first,
                         gradientScale, isAdamW, decay, decoupledFactor, oneMinusBeta1, beta2, oneMinusBeta2,
                         biasCorrection2Sqrt, stepSize, epsilon)
        }
    }
}

/// The naive loop `AdamOptimizer.step` must agree with (bd_adam), for the tests: one update of
/// `count` parameters, PyTorch's order of operations.
func adamStepReference(parameters p: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>,
                       m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, count: Int,
                       gradientScale: Float, isAdamW: Bool, decay: Float, decoupledFactor: Float,
                       oneMinusBeta1: Float, beta2: Float, oneMinusBeta2: Float,
                       biasCorrection2Sqrt: Float, stepSize: Float, epsilon: Float) {
    for i in 0..<count {
        var grad = g[i] * gradientScale
        if isAdamW {
            p[i] *= decoupledFactor                    // param.mul_(1 - lr * wd)
        } else {
            grad += decay * p[i]                       // grad = grad.add(param, alpha=wd)
        }
        m[i] += (grad - m[i]) * oneMinusBeta1          // exp_avg.lerp_(grad, 1 - beta1)
        v[i] = v[i] * beta2 + oneMinusBeta2 * grad * grad
        let denominator = v[i].squareRoot() / biasCorrection2Sqrt + epsilon
        p[i] -= stepSize * m[i] / denominator          // param.addcdiv_(m, denom, -step_size)
    }
}

/// Σ g² over `range` of an arena, in Double (for the global gradient norm): float partial sums
/// over blocks of 4096 floats, added in Double per part, the (at most 64) parts added in order.
/// The parts depend only on the range, so the result does not depend on the thread count of
/// `compute`, whose team shares the parts.
public func sumOfSquares(_ arena: FloatArena, range: Range<Int>, compute: Compute) -> Double {
    let blocks = (range.count + 4095) / 4096
    let parts = min(64, blocks)
    if parts == 0 { return 0 }
    struct Job: ChunkJob {
        let kernels: bd_kernel_table
        let partial: UnsafeMutablePointer<Double>, values: UnsafePointer<Float>, range: Range<Int>, blocks, parts: Int
        func run(chunk: Int, range parts: Range<Int>) {
            for part in parts {
                let first = range.lowerBound + 4096 * (blocks * part / self.parts)
                let end = min(range.upperBound, range.lowerBound + 4096 * (blocks * (part + 1) / self.parts))
                partial[part] = kernels.sum_of_squares(values + first, end - first)
            }
        }
    }
    return withUnsafeTemporaryAllocation(of: Double.self, capacity: parts) { partial in
        let partial = partial.baseAddress!
        compute.parallelChunks(parts, minimumChunk: 4, Job(kernels: compute.kernels, partial: partial, values: arena.base,
                                                           range: range, blocks: blocks, parts: parts))
        var total = 0.0
        for part in 0..<parts { total += partial[part] }
        return total
    }
}

/// torch.nn.utils.clip_grad_norm_: the factor gradients are multiplied by.
public func gradientClipFactor(totalNorm: Double, maxNorm: Double) -> Float {
    guard maxNorm > 0 else { return 1 }
    return Float(min(1.0, maxNorm / (totalNorm + 1e-6)))
}

/// The learning-rate schedules of transformers (`get_scheduler(name, ...)`), step by step the
/// same values (LambdaLR: base rate x the schedule's factor at the 0-based step):
/// - `linear`: warmup from 0, then linear decay to 0 at `totalSteps` (get_linear_schedule_with_warmup);
/// - `cosine`: warmup, then 0.5 (1 + cos(pi 2 cycles progress)), floored at 0 (cycles 0.5: half
///   a cosine down to 0 at `totalSteps`; get_cosine_schedule_with_warmup);
/// - `constant_with_warmup`: warmup, then the base rate;
/// - `polynomial`: warmup, then (base - end) (1 - progress)^power + end, `end` after `totalSteps`
///   (get_polynomial_decay_schedule_with_warmup, lr_end 1e-7, power 1);
/// - `constant`: the base rate. HF's `constant` ignores warmup; bert-dist's `constant` has always
///   warmed up when given warmup steps, and keeps doing so (it is then `constant_with_warmup`),
///   so that a run and its resumption see the same rates. Without warmup the two agree.
/// Warmup is linear from 0: step s < warmupSteps has rate base x s / warmupSteps.
public struct LearningRateSchedule: Sendable, Equatable {
    public enum Shape: String, Sendable, CaseIterable {
        case linear, cosine, constant
        case constantWithWarmup = "constant_with_warmup"
        case polynomial
    }
    public var shape: Shape
    public var baseLearningRate: Double
    public var warmupSteps: Int
    public var totalSteps: Int
    /// `cosine`: HF's num_cycles.
    public var cosineCycles: Double
    /// `polynomial`: HF's lr_end (the rate reached at `totalSteps`) and power.
    public var polynomialEndLearningRate: Double
    public var polynomialPower: Double

    public init(shape: Shape = .linear, baseLearningRate: Double, warmupSteps: Int, totalSteps: Int,
                cosineCycles: Double = 0.5, polynomialEndLearningRate: Double = 1e-7, polynomialPower: Double = 1.0) {
        self.shape = shape
        self.baseLearningRate = baseLearningRate
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.cosineCycles = cosineCycles
        self.polynomialEndLearningRate = polynomialEndLearningRate
        self.polynomialPower = polynomialPower
    }

    /// HF's `warmup_ratio` -> steps: ceil(total * ratio).
    public static func warmupSteps(ratio: Double, totalSteps: Int) -> Int {
        Int((Double(totalSteps) * ratio).rounded(.up))
    }

    /// The warmup of a run: `steps` (--warmup-steps) when it is more than 0, else ceil(total *
    /// ratio) (--warmup-ratio), as HF's Trainer resolves warmup_steps and warmup_ratio.
    public static func warmupSteps(steps: Int, ratio: Double, totalSteps: Int) -> Int {
        steps > 0 ? steps : warmupSteps(ratio: ratio, totalSteps: totalSteps)
    }

    /// Why these settings make no schedule (nil: they do): HF refuses a polynomial decay whose
    /// end rate is not below the base rate.
    public var problem: String? {
        if shape == .polynomial && !(baseLearningRate > polynomialEndLearningRate) {
            return "the polynomial schedule decays to \(polynomialEndLearningRate): the learning rate (\(baseLearningRate)) must be larger"
        }
        return nil
    }

    /// The learning rate of optimizer step `step` (0-based: the first update uses step 0).
    public func learningRate(atStep step: Int) -> Double {
        // The factor in HF's order of operations, then times the base rate (as LambdaLR does).
        if step < warmupSteps { return baseLearningRate * (Double(step) / Double(max(1, warmupSteps))) }
        switch shape {
        case .constant, .constantWithWarmup:
            return baseLearningRate
        case .linear:
            return baseLearningRate * max(0, Double(totalSteps - step) / Double(max(1, totalSteps - warmupSteps)))
        case .cosine:
            let progress = Double(step - warmupSteps) / Double(max(1, totalSteps - warmupSteps))
            return baseLearningRate * max(0, 0.5 * (1 + cos(Double.pi * cosineCycles * 2 * progress)))
        case .polynomial:
            // HF computes the rate, divides it by the base for LambdaLR, which multiplies it back.
            let end = polynomialEndLearningRate
            if step > totalSteps || totalSteps == warmupSteps { return baseLearningRate * (end / baseLearningRate) }
            let remaining = 1 - Double(step - warmupSteps) / Double(totalSteps - warmupSteps)
            let decayed = (baseLearningRate - end) * pow(remaining, polynomialPower) + end
            return baseLearningRate * (decayed / baseLearningRate)
        }
    }
}
