import Data
import Foundation
import Model
import Options

/// How each global batch is divided among the ranks.
enum BatchSplitting: Sendable, Equatable {
    /// Equal example counts, contiguous in the batch (`Sampler.rankBatch`): the split before
    /// token balancing, kept for comparisons (bert-dist-dev bench --example-split).
    case examples
    /// About equal costs (`BalancedSplit`): tokens plus attention's squared lengths.
    case tokens(SequenceCost)
}

/// What the steps of a run are, decided before the first one: how many, their learning rates,
/// and which examples each rank's micro-batches hold. Training and the bench both step through
/// a plan, so they cut global batches, shards and micro-batches the same way.
struct TrainingPlan {
    let totalSteps: Int
    let globalBatchSize: Int
    let worldSize: Int
    /// The micro-batch option, at most ceil(global batch / ranks): a micro-batch never holds
    /// more tokens than this many sequences of its batch's longest length (the activation memory
    /// reserved; what checkpoints record as the micro-batch size).
    let microBatchSize: Int
    /// The most examples a micro-batch holds: the micro-batch option, else the rank's whole share
    /// (a token-balanced share may have more than ceil(global batch / ranks) short examples).
    let microBatchExamples: Int
    let schedule: LearningRateSchedule
    let sampler: Sampler
    /// Each example's token count (the token-balanced split's input).
    let lengths: [Int32]
    let splitting: BatchSplitting

    /// Training's plan: --max-steps, or --epochs (default 1) passes over the examples whose token
    /// counts are `lengths`, with the learning-rate schedule of the optimizer options; batches
    /// split by tokens for a model of `hiddenSize` (or into equal example counts).
    init(options: TrainingOptions, lengths: [Int32], worldSize: Int, hiddenSize: Int, splitByExamples: Bool = false) throws {
        let exampleCount = lengths.count
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
                      schedule: schedule, seed: UInt64(options.seed), lengths: lengths, worldSize: worldSize,
                      groupByLength: options.groupByLength,
                      splitting: splitByExamples ? .examples : .tokens(SequenceCost(hiddenSize: hiddenSize)))
    }

    /// `microBatchSize` nil: each rank's whole share of the global batch. `shuffle` false: the
    /// examples in file order (the bench). `groupByLength`: --group-by-length's order.
    init(globalBatchSize: Int, microBatchSize: Int?, totalSteps: Int, schedule: LearningRateSchedule, seed: UInt64,
         lengths: [Int32], worldSize: Int, groupByLength: Bool = false, shuffle: Bool = true, splitting: BatchSplitting) throws {
        guard !lengths.isEmpty else { throw TrainingError.invalidInput("nothing to train: the training data has no examples") }
        guard totalSteps > 0 else { throw TrainingError.invalidInput("nothing to train: 0 steps (check --max-steps / --epochs and the data)") }
        self.globalBatchSize = globalBatchSize
        self.totalSteps = totalSteps
        self.worldSize = worldSize
        let largestShard = (globalBatchSize + worldSize - 1) / worldSize
        self.microBatchSize = max(1, min(microBatchSize ?? largestShard, largestShard))
        microBatchExamples = max(1, min(microBatchSize ?? globalBatchSize, globalBatchSize))
        self.schedule = schedule
        self.lengths = lengths
        self.splitting = splitting
        sampler = Sampler(exampleCount: lengths.count, globalBatchSize: globalBatchSize, seed: seed,
                          groupByLength: groupByLength ? lengths : nil, shuffle: shuffle)
    }
}

/// Walks a plan's global batches in order, keeping the current epoch's example order and the
/// current batch's split (the same on every rank: each computes it from the lengths).
struct BatchCursor {
    let plan: TrainingPlan
    private(set) var position: SamplePosition
    private var order: [Int32] = []
    private var orderEpoch = -1
    private var balanced: BalancedSplit?
    /// The example split's slots of this rank (kept across steps).
    private var exampleSlots: [Int] = []

    init(plan: TrainingPlan, position: SamplePosition) {
        self.plan = plan
        self.position = position
        if case .tokens(let cost) = plan.splitting { balanced = BalancedSplit(worldSize: plan.worldSize, cost: cost) }
    }

    /// Rank `rank`'s share of the current global batch, and the epoch order its slots index.
    mutating func current(rank: Int) -> (share: RankShare, order: [Int32]) {
        if orderEpoch != position.epoch {
            order = plan.sampler.order(epoch: position.epoch)
            orderEpoch = position.epoch
        }
        let global = plan.sampler.globalBatchRange(at: position)
        guard balanced != nil else {
            let batch = plan.sampler.rankBatch(at: position, rank: rank, worldSize: plan.worldSize, microBatchSize: plan.microBatchSize)
            exampleSlots.removeAll(keepingCapacity: true)
            exampleSlots.append(contentsOf: batch.shard)
            return (RankShare(globalRange: global, slots: exampleSlots[...], microBatchSize: plan.microBatchSize), order)
        }
        let order = self.order, lengths = plan.lengths
        balanced!.split(global) { slot in Int(lengths[Int(order[slot])]) }
        return (RankShare(globalRange: global, slots: balanced!.slots(ofRank: rank), microBatchSize: plan.microBatchExamples), order)
    }

    mutating func advance() { position = plan.sampler.position(after: position) }
}

extension TaskLoss {
    /// The loss denominator of the whole global batch of `share` (slots of `order`): every
    /// rank computes it from the global batch's examples, so it does not depend on how they are
    /// split over ranks and micro-batches. Weighted cross-entropy reads their classes.
    func lossDenominator(globalBatch share: RankShare, order: [Int32], examples: any TokenizedExamples) -> Double {
        lossDenominator(count: share.globalRange.count, labelCount: examples.labelSet.count,
                        classes: share.globalRange.lazy.map { examples.label(at: Int(order[$0])) })
    }
}

extension PackedBatch {
    /// Packs micro-batch `micro` of `share` (slots of `order`) from `examples`.
    mutating func append(micro: Int, of share: RankShare, order: [Int32], from examples: any TokenizedExamples) {
        for slot in share.microBatch(micro) { append(examples, index: Int(order[slot])) }
    }
}
