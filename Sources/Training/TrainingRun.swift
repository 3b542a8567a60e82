import Data
import Distributed
import Foundation
import Model
import Storage

/// What a run trains and evaluates on, already tokenised (see DataLoading for files).
public struct PreparedData: Sendable {
    public var train: any TokenizedExamples
    public var eval: (any TokenizedExamples)?
    public var labels: [String]
    /// Identifies the training data (stored in checkpoints; a resume on other data is refused).
    public var trainFingerprint: String
    public var modelFiles: ModelFiles

    public init(train: any TokenizedExamples, eval: (any TokenizedExamples)?, labels: [String], trainFingerprint: String, modelFiles: ModelFiles) {
        self.train = train
        self.eval = eval
        self.labels = labels
        self.trainFingerprint = trainFingerprint
        self.modelFiles = modelFiles
    }
}

/// How a run ended, as rank 0 reports it.
public struct RunSummary: Sendable {
    public var stepsDone: Int
    public var totalSteps: Int
    public var stoppedBySignal: Bool
    public var finalCheckpoint: URL?
    public var finalEvaluation: ClassificationMetrics?
    public var trainSeconds: Double
    public var skippedSteps: Int
}

/// The training loop of one rank. Every rank runs the same code with its own communicator
/// (MPI, or one thread of the in-process group in the debug mode).
public final class TrainingRun {
    let options: TrainingOptions
    let communicator: any Communicator
    let compute: Compute
    let data: PreparedData
    let log: (String) -> Void
    /// Asked after every step; the ranks agree to stop when any of them says yes.
    let stopRequested: () -> Bool
    /// Tests only: called on every rank after each step (e.g. to perturb one replica).
    var afterStep: ((_ step: Int, _ parameters: FloatArena) -> Void)?

    public init(options: TrainingOptions, communicator: any Communicator, compute: Compute, data: PreparedData,
                log: @escaping (String) -> Void, stopRequested: @escaping () -> Bool = { StopSignal.requested }) {
        self.options = options
        self.communicator = communicator
        self.compute = compute
        self.data = data
        self.log = log
        self.stopRequested = stopRequested
    }

    public func run() throws -> RunSummary {
        let isRoot = communicator.rank == 0
        let worldSize = communicator.worldSize
        let labelCount = data.labels.count
        let hyperparameters = AdamHyperparameters(kind: options.optimizer, weightDecay: Float(options.weightDecay))

        // The model: pretrained weights, a classifier initialised from the seed when absent.
        let (model, loadReport, replica) = try collectively(communicator) { () throws -> (BertForSequenceClassification, LoadReport, Replica) in
            var (model, loadReport) = try BertForSequenceClassification.load(
                modelDirectory: options.modelDirectory, labelCount: labelCount, seed: UInt64(options.seed), compute: compute)
            if let dropout = options.dropout {
                var config = model.config
                config.hiddenDropoutProb = dropout
                config.attentionDropoutProb = dropout
                try config.validate(file: "--dropout")
                let replaced = BertForSequenceClassification(config: config, labelCount: labelCount, compute: compute)
                replaced.parameters.copy(from: model.parameters)
                model = replaced
            }
            model.checkFinite = options.debug
            let replica = try Replica(model: model, hyperparameters: hyperparameters, communicator: communicator,
                                      shardOptimizer: options.shardOptimizer,
                                      bucketFloats: max(1, Int(options.bucketMegabytes * 1_000_000 / 4)))
            return (model, loadReport, replica)
        }

        // The plan: steps, schedule, micro-batches.
        let trainCount = data.train.count
        let stepsPerEpoch = (trainCount + options.globalBatchSize - 1) / options.globalBatchSize
        let totalSteps = options.maxSteps ?? Int((Double(stepsPerEpoch) * (options.epochs ?? 1)).rounded(.up))
        guard totalSteps > 0 else { throw TrainingError.invalidInput("nothing to train: 0 steps (check --max-steps / --epochs and the data)") }
        let schedule = LearningRateSchedule(shape: options.schedule, baseLearningRate: options.learningRate,
                                            warmupSteps: LearningRateSchedule.warmupSteps(ratio: options.warmupRatio, totalSteps: totalSteps),
                                            totalSteps: totalSteps)
        let largestShard = (options.globalBatchSize + worldSize - 1) / worldSize
        let microBatchSize = min(options.microBatchSize ?? largestShard, largestShard)
        replica.reserve(microBatchSize: max(microBatchSize, 1), maxSequenceLength: options.maxSequenceLength)
        let lengths: [Int32]? = options.groupByLength ? (0..<trainCount).map { Int32(data.train.tokens(at: $0).count) } : nil
        let sampler = Sampler(exampleCount: trainCount, globalBatchSize: options.globalBatchSize, seed: UInt64(options.seed),
                              groupByLength: lengths)

        // Start: fresh (rank 0's weights to everyone) or from the newest complete checkpoint.
        var startStep = 0
        var position = SamplePosition(epoch: 0, samplesConsumed: 0)
        if options.resume, let resumed = try resume(into: replica) {
            // Every rank read the same files; rank 0's copy is broadcast anyway, so that replicas
            // start identical whatever the file system showed each rank.
            try synchronizeReplicas(replica)
            startStep = resumed.step
            position = SamplePosition(epoch: resumed.epoch, samplesConsumed: resumed.samplesConsumedInEpoch)
            if isRoot { log("resumed from \(CheckpointFolder.name(step: resumed.step)) (step \(resumed.step) of \(totalSteps), written by \(resumed.worldSize) rank(s)\(resumed.shardOptimizer ? " with a sharded optimizer" : ""))") }
        } else {
            try communicator.broadcast(model.parameters.buffer, root: 0)
            if isRoot && !loadReport.initialized.isEmpty {
                log("initialised from seed \(options.seed) (not in the checkpoint): \(loadReport.initialized.joined(separator: ", "))")
            }
        }
        if isRoot {
            log("training \(options.modelDirectory.lastPathComponent): \(trainCount) examples, \(totalSteps) steps of \(options.globalBatchSize) "
                + "over \(worldSize) rank(s), micro-batch \(microBatchSize), \(model.layout.totalCount) parameters; Adam state "
                + String(format: "%.1f MB per rank", Double(2 * 4 * replica.optimizer.range.count) / 1e6)
                + (options.shardOptimizer ? " (sharded 1/\(worldSize))" : ""))
        }

        let reporter = try Reporter(enabled: isRoot, totalSteps: totalSteps, logEvery: options.logEvery,
                                    tensorBoardDirectory: options.tensorboardDirectory, output: log)
        defer { reporter.finish() }
        let writer = CheckpointWriter(output: options.outputDirectory, communicator: communicator, keep: options.keepCheckpoints)
        var evalBatch = PackedBatch()
        var summary = RunSummary(stepsDone: startStep, totalSteps: totalSteps, stoppedBySignal: false, finalCheckpoint: nil,
                                 finalEvaluation: nil, trainSeconds: 0, skippedSteps: 0)
        var consecutiveSkipped = 0
        var firstNonFinite: String?
        var recentMetrics: [TrainerState.Metric] = []
        var phaseTotals = Replica.PhaseSeconds()
        let started = Date()

        func checkpoint(step: Int, learningRate: Double) throws -> URL {
            let state = TrainerState(
                step: step, epoch: position.epoch, samplesConsumedInEpoch: position.samplesConsumed,
                totalSteps: totalSteps, warmupSteps: schedule.warmupSteps, seed: options.seed,
                worldSize: worldSize, shardOptimizer: options.shardOptimizer, parameterCount: model.layout.totalCount,
                optimizerShards: options.shardOptimizer
                    ? replica.shards.ranges.enumerated().map { .init(rank: $0.offset, start: $0.element.lowerBound, count: $0.element.count) }
                    : [.init(rank: 0, start: 0, count: model.layout.totalCount)],
                optimizer: .init(kind: options.optimizer.rawValue, learningRate: options.learningRate,
                                 beta1: Double(hyperparameters.beta1), beta2: Double(hyperparameters.beta2),
                                 epsilon: Double(hyperparameters.epsilon), weightDecay: options.weightDecay,
                                 maxGradNorm: options.maxGradNorm, schedule: options.schedule.rawValue),
                currentLearningRate: learningRate, globalBatchSize: options.globalBatchSize,
                microBatchSize: microBatchSize, maxSequenceLength: options.maxSequenceLength,
                trainDataFingerprint: data.trainFingerprint, recentMetrics: recentMetrics,
                createdUnixSeconds: Date().timeIntervalSince1970, bertDistVersion: bertDistVersion,
                optimizerStep: replica.optimizer.stepCount, parameterLayout: model.layout.fingerprint)
            if worldSize > 1 {
                // Rank 0 alone writes the weights (and the replicated Adam state): make sure they are everyone's.
                let repaired = try ensureReplicasMatch(buffers: replicatedBuffers(replica), communicator: communicator)
                if isRoot && !repaired.isEmpty { reporter.say("warning: ranks \(repaired) had drifted from rank 0 and were repaired before checkpointing") }
            }
            return try writer.write(step: step, replica: replica,
                                    content: .init(state: state, labels: data.labels, files: data.modelFiles))
        }

        var lastLearningRate = schedule.learningRate(atStep: startStep)
        var step = startStep
        var epochOrder: [Int32] = []
        var orderEpoch = -1
        while step < totalSteps {
            let stepStart = Date()
            if orderEpoch != position.epoch {
                epochOrder = sampler.order(epoch: position.epoch)
                orderEpoch = position.epoch
            }
            // This rank's contiguous part of the global batch, in micro-batches.
            let rankBatch = sampler.rankBatch(at: position, rank: communicator.rank, worldSize: worldSize, microBatchSize: microBatchSize)
            let learningRate = schedule.learningRate(atStep: step)
            let outcome = try replica.step(
                microBatchCount: rankBatch.microBatches.count, globalBatchSize: rankBatch.globalRange.count, stepIndex: step,
                learningRate: learningRate, maxGradNorm: options.maxGradNorm,
                dropout: DropoutContext(seed: UInt64(options.seed), step: step), stopRequested: stopRequested()) { micro, batch in
                    for slot in rankBatch.microBatches[micro] { batch.append(data.train, index: Int(epochOrder[slot])) }
                }
            position = sampler.position(after: position)
            lastLearningRate = learningRate
            step += 1
            summary.stepsDone = step
            phaseTotals.add(outcome.phaseSeconds)

            if outcome.skipped {
                summary.skippedSteps += 1
                consecutiveSkipped += 1
                if firstNonFinite == nil { firstNonFinite = "step \(step): \(outcome.nonFiniteWhere)" }
                reporter.say("warning: step \(step) skipped on every rank: non-finite gradient (\(outcome.nonFiniteWhere))")
                if consecutiveSkipped >= options.maxConsecutiveNonFiniteSteps {
                    throw TrainingError.diverged("training diverged: \(consecutiveSkipped) consecutive steps had non-finite gradients, first at \(firstNonFinite!); lower --lr, raise --warmup-ratio or check the data (--debug names the first layer)")
                }
            } else {
                consecutiveSkipped = 0
                firstNonFinite = nil
                let loss = outcome.lossSum / max(outcome.examples, 1)
                recentMetrics = [.init(name: "train/loss", value: loss, step: step),
                                 .init(name: "train/accuracy", value: outcome.correct / max(outcome.examples, 1), step: step),
                                 .init(name: "train/grad_norm", value: outcome.gradientNorm, step: step)]
            }
            try reporter.step(step - 1, outcome: outcome, stepSeconds: Date().timeIntervalSince(stepStart))
            if options.debug && isRoot {
                let p = outcome.phaseSeconds
                reporter.say(String(format: "  step %d phases: data %.3fs forward %.3fs backward %.3fs sync %.3fs optimizer %.3fs",
                                    step, p.data, p.forward, p.backward, p.sync, p.optimizer))
            }

            afterStep?(step, model.parameters)
            if worldSize > 1 && options.consistencyEvery > 0 && step % options.consistencyEvery == 0 {
                let repaired = try ensureReplicasMatch(buffers: replicatedBuffers(replica), communicator: communicator)
                if isRoot && !repaired.isEmpty { reporter.say("warning: step \(step): replicas of ranks \(repaired) differed from rank 0 and were repaired") }
            }
            if let evalExamples = data.eval, let every = options.evalEvery, every > 0, step % every == 0, step < totalSteps {
                let metrics = try evaluate(model: model, examples: evalExamples, labels: data.labels, communicator: communicator,
                                           batchSize: 64, batch: &evalBatch)
                recentMetrics += [.init(name: "eval/accuracy", value: metrics.accuracy, step: step),
                                  .init(name: "eval/loss", value: metrics.loss, step: step)]
                try reporter.evaluation(metrics, step: step)
            }
            if outcome.stopRequested {
                summary.stoppedBySignal = true
                summary.finalCheckpoint = try checkpoint(step: step, learningRate: learningRate)
                break
            }
            if step < totalSteps && options.checkpointEvery > 0 && step % options.checkpointEvery == 0 {
                summary.finalCheckpoint = try checkpoint(step: step, learningRate: learningRate)
            }
        }
        summary.trainSeconds = Date().timeIntervalSince(started)
        if !summary.stoppedBySignal {
            if let evalExamples = data.eval {
                let metrics = try evaluate(model: model, examples: evalExamples, labels: data.labels, communicator: communicator,
                                           batchSize: 64, batch: &evalBatch)
                recentMetrics += [.init(name: "eval/accuracy", value: metrics.accuracy, step: step),
                                  .init(name: "eval/loss", value: metrics.loss, step: step)]
                try reporter.evaluation(metrics, step: step)
                summary.finalEvaluation = metrics
            }
            // The last step is always checkpointed: OUTPUT/checkpoint-<last step> is the trained model.
            summary.finalCheckpoint = try checkpoint(step: step, learningRate: lastLearningRate)
        }
        if options.debug && isRoot {
            let p = phaseTotals
            reporter.say(String(format: "phase totals: data %.2fs forward %.2fs backward %.2fs sync %.2fs optimizer %.2fs",
                                p.data, p.forward, p.backward, p.sync, p.optimizer))
        }
        return summary
    }

    /// What every rank holds an identical copy of: the parameters, and the Adam moments unless
    /// they are sharded.
    private func replicatedBuffers(_ replica: Replica) -> [UnsafeMutableBufferPointer<Float>] {
        replica.shardOptimizer ? [replica.model.parameters.buffer]
            : [replica.model.parameters.buffer, replica.optimizer.m.buffer, replica.optimizer.v.buffer]
    }

    private func synchronizeReplicas(_ replica: Replica) throws {
        for buffer in replicatedBuffers(replica) { try communicator.broadcast(buffer, root: 0) }
    }

    /// Loads the newest complete checkpoint of the output folder into `replica`; nil when there
    /// is none. Rank 0 verifies (checksums) and falls back past damaged ones, saying so; every
    /// rank then reads the weights and the part of the Adam state its (new) range needs.
    private func resume(into replica: Replica) throws -> TrainerState? {
        var chosen: Int64 = -1
        if communicator.rank == 0 {
            for candidate in CheckpointFolder.candidates(in: options.outputDirectory) {
                do {
                    let state = try CheckpointFolder.verify(candidate.url)
                    guard state.parameterLayout == replica.model.layout.fingerprint else {
                        throw CheckpointError.incompatible(folder: candidate.url.path, reason: "written for a different model layout (another model or label count)")
                    }
                    chosen = Int64(candidate.step)
                    break
                } catch {
                    log("warning: not resuming from \(candidate.url.lastPathComponent): \(error); trying the previous checkpoint")
                }
            }
            if chosen < 0 { log("no complete checkpoint in \(options.outputDirectory.path): starting from the beginning") }
        }
        try withUnsafeMutableBytes(of: &chosen) { try communicator.broadcast($0, root: 0) }
        guard chosen >= 0 else {
            try communicator.broadcast(replica.model.parameters.buffer, root: 0)
            return nil
        }
        let folder = options.outputDirectory.appendingPathComponent(CheckpointFolder.name(step: Int(chosen)))
        return try collectively(communicator) {
            let state = try TrainerState(contentsOf: folder.appendingPathComponent(TrainerState.fileName))
            if !data.trainFingerprint.isEmpty && !state.trainDataFingerprint.isEmpty && state.trainDataFingerprint != data.trainFingerprint {
                throw CheckpointError.incompatible(folder: folder.path, reason: "was trained on other data (fingerprint \(state.trainDataFingerprint), this run's is \(data.trainFingerprint)); use another --output or the same --train file")
            }
            let weights = try SafeTensorsFile(url: folder.appendingPathComponent(CheckpointFolder.modelFile))
            _ = try replica.model.loadWeights(from: weights, seed: 0)
            try readOptimizer(into: replica.optimizer, from: folder, state: state)
            return state
        }
    }
}

public let bertDistVersion = "0.1.0"

/// `bert-dist train` on one rank: checks the BLAS kernels, reads the data, trains.
public func runTraining(_ options: TrainingOptions, communicator: any Communicator, compute: Compute,
                        log: @escaping (String) -> Void) throws -> RunSummary {
    try collectively(communicator) { try BLASSetup.selfTest() }
    let data = try DataLoading.prepare(options, communicator: communicator, log: log)
    return try TrainingRun(options: options, communicator: communicator, compute: compute, data: data, log: log).run()
}
