import Data
import Foundation
import Model
import Options

/// What the steps of a run are, decided before the first one: how many, their learning rates,
/// and which examples each rank's micro-batches hold. Training and the bench both step through
/// a plan, so they cut global batches, shards and micro-batches the same way.
struct TrainingPlan {
    let totalSteps: Int
    let globalBatchSize: Int
    /// Per-rank forward/backward size: the micro-batch option, at most the largest shard.
    let microBatchSize: Int
    let schedule: LearningRateSchedule
    let sampler: Sampler

    /// Training's plan: --max-steps, or --epochs (default 1) passes over `exampleCount` examples,
    /// with the learning-rate schedule of the optimizer options; `lengths` for --group-by-length.
    init(options: TrainingOptions, exampleCount: Int, worldSize: Int, lengths: [Int32]? = nil) throws {
        guard exampleCount > 0 else { throw TrainingError.invalidInput("nothing to train: the training data has no examples") }
        let stepsPerEpoch = (exampleCount + options.globalBatchSize - 1) / options.globalBatchSize
        let totalSteps = options.maxSteps ?? Int((Double(stepsPerEpoch) * (options.epochs ?? 1)).rounded(.up))
        let optimizer = options.optimizer
        let schedule = LearningRateSchedule(shape: optimizer.schedule, baseLearningRate: optimizer.learningRate,
                                            warmupSteps: LearningRateSchedule.warmupSteps(steps: optimizer.warmupSteps, ratio: optimizer.warmupRatio,
                                                                                              totalSteps: totalSteps),
                                            totalSteps: totalSteps)
        if let problem = schedule.problem { throw TrainingError.invalidInput("--lr-schedule \(schedule.shape.rawValue): \(problem)") }
        try self.init(globalBatchSize: options.globalBatchSize, microBatchSize: options.parallel.microBatchSize, totalSteps: totalSteps,
                      schedule: schedule, seed: UInt64(options.seed), exampleCount: exampleCount, worldSize: worldSize, lengths: lengths)
    }

    /// `microBatchSize` nil: each rank's whole share of the global batch. `shuffle` false: the
    /// examples in file order (the bench).
    init(globalBatchSize: Int, microBatchSize: Int?, totalSteps: Int, schedule: LearningRateSchedule, seed: UInt64,
         exampleCount: Int, worldSize: Int, lengths: [Int32]? = nil, shuffle: Bool = true) throws {
        guard exampleCount > 0 else { throw TrainingError.invalidInput("nothing to train: the training data has no examples") }
        guard totalSteps > 0 else { throw TrainingError.invalidInput("nothing to train: 0 steps (check --max-steps / --epochs and the data)") }
        self.globalBatchSize = globalBatchSize
        self.totalSteps = totalSteps
        let largestShard = (globalBatchSize + worldSize - 1) / worldSize
        self.microBatchSize = max(1, min(microBatchSize ?? largestShard, largestShard))
        self.schedule = schedule
        sampler = Sampler(exampleCount: exampleCount, globalBatchSize: globalBatchSize, seed: seed, groupByLength: lengths, shuffle: shuffle)
    }
}

/// Walks a plan's global batches in order, keeping the current epoch's example order.
struct BatchCursor {
    let plan: TrainingPlan
    private(set) var position: SamplePosition
    private var order: [Int32] = []
    private var orderEpoch = -1

    init(plan: TrainingPlan, position: SamplePosition) {
        self.plan = plan
        self.position = position
    }

    /// Rank `rank`'s part of the current global batch, and the epoch order its slots index.
    mutating func current(rank: Int, worldSize: Int) -> (batch: RankBatch, order: [Int32]) {
        if orderEpoch != position.epoch {
            order = plan.sampler.order(epoch: position.epoch)
            orderEpoch = position.epoch
        }
        return (plan.sampler.rankBatch(at: position, rank: rank, worldSize: worldSize, microBatchSize: plan.microBatchSize), order)
    }

    mutating func advance() { position = plan.sampler.position(after: position) }
}

extension TaskLoss {
    /// The loss denominator of the whole global batch of `rankBatch` (slots of `order`): every
    /// rank computes it from the global batch's examples, so it does not depend on how they are
    /// split over ranks and micro-batches. Weighted cross-entropy reads their classes.
    func lossDenominator(globalBatch rankBatch: RankBatch, order: [Int32], examples: any TokenizedExamples) -> Double {
        lossDenominator(count: rankBatch.globalRange.count, labelCount: examples.labelSet.count,
                        classes: rankBatch.globalRange.lazy.map { examples.label(at: Int(order[$0])) })
    }
}

extension PackedBatch {
    /// Packs micro-batch `micro` of `rankBatch` (slots of `order`) from `examples`.
    mutating func append(micro: Int, of rankBatch: RankBatch, order: [Int32], from examples: any TokenizedExamples) {
        for slot in rankBatch.microBatch(micro) { append(examples, index: Int(order[slot])) }
    }
}
