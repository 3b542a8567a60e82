import Data
import Distributed
import Foundation
import Model
import Storage

/// What a run trains and evaluates on, already tokenised (see DataLoading for files).
public struct PreparedData: Sendable {
    public var train: any TokenizedExamples
    public var eval: (any TokenizedExamples)?
    /// The classes: the classifier's size, config.json's id2label, eval's per-class table.
    public var labels: LabelSet
    /// Identifies the training data (stored in checkpoints; a resume on other data is refused).
    public var trainFingerprint: String
    public var modelFiles: ModelFiles

    public init(train: any TokenizedExamples, eval: (any TokenizedExamples)?, labels: LabelSet, trainFingerprint: String, modelFiles: ModelFiles) {
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
    public var stoppedBySignal = false
    public var finalCheckpoint: URL?
    public var finalEvaluation: ClassificationMetrics?
    public var trainSeconds = 0.0
    public var skippedSteps = 0
}

/// The training loop of one rank. Every rank runs the same code with its own communicator
/// (MPI, or one thread of the in-process group in the debug mode):
///
///     start     the model, the plan, and fresh weights or the newest complete checkpoint
///     step      one optimizer step over this rank's share of the global batch
///     after it  the non-finite policy, reports, replica consistency, evaluation, checkpoints
///     stop      a signal: checkpoint this step and end; the end: evaluate, checkpoint the last step
public final class TrainingRun {
    let options: TrainingOptions
    let runtime: Runtime
    let communicator: any Communicator
    /// This rank's kernel team and instruction set (from `runtime`).
    let compute: Compute
    let data: PreparedData
    let log: (String) -> Void
    /// Asked after every step; the ranks agree to stop when any of them says yes.
    let stopRequested: () -> Bool
    /// Told the newest complete checkpoint (nil: none yet) whenever it changes, on every rank
    /// (what a report of a failed peer names).
    var checkpointNote: (URL?) -> Void = { _ in }
    /// Tests only: called on every rank after each step (e.g. to perturb one replica).
    var afterStep: ((_ step: Int, _ parameters: FloatArena) -> Void)?
    /// Tests only: called on every rank while it computes step `step` (e.g. to slow one rank).
    var duringStep: ((_ step: Int) -> Void)?

    public init(options: TrainingOptions, runtime: Runtime, communicator: any Communicator, data: PreparedData,
                log: @escaping (String) -> Void, stopRequested: @escaping () -> Bool = { StopSignal.requested }) {
        self.options = options
        self.runtime = runtime
        self.communicator = communicator
        compute = runtime.makeCompute()
        self.data = data
        self.log = log
        self.stopRequested = stopRequested
    }

    var isRoot: Bool { communicator.rank == 0 }

    /// The state the loop carries from step to step.
    struct Progress {
        var step: Int
        var batches: BatchCursor
        var learningRate: Double
        var consecutiveSkipped = 0
        /// Where the current run of non-finite steps began.
        var firstNonFinite: String?
        /// The latest train/eval metrics, stored in the next checkpoint.
        var recentMetrics: [TrainerState.Metric] = []
        var phaseTotals = Replica.PhaseSeconds()
    }

    public func run() throws -> RunSummary {
        let (replica, loaded, maxSequenceLength) = try makeReplica()
        // The options with the max sequence length settled (it may default to the model's).
        var options = self.options
        options.maxSequenceLength = maxSequenceLength
        guard let output = options.outputDirectory else { throw TrainingError.invalidInput("training needs an output folder (--output)") }
        let checkpoints = CheckpointPolicy(options: options, output: output, communicator: communicator, labels: data.labels,
                                           files: data.modelFiles, trainFingerprint: data.trainFingerprint, announce: checkpointNote)
        try checkpoints.prepareOutputFolder()
        let plan = try TrainingPlan(options: options, exampleCount: data.train.count, worldSize: communicator.worldSize,
                                    lengths: options.groupByLength ? (0..<data.train.count).map { Int32(data.train.tokens(at: $0).count) } : nil)
        replica.reserve(microBatchSize: plan.microBatchSize, maxSequenceLength: maxSequenceLength)
        var progress = try start(replica, loaded: loaded, plan: plan, checkpoints: checkpoints)

        let reporter = try Reporter(enabled: isRoot, totalSteps: plan.totalSteps, logEvery: options.logEvery,
                                    progress: runtime.progress, tensorBoardDirectory: options.tensorboardDirectory, output: log)
        defer { reporter.finish() }
        var stragglers = StragglerMonitor(hosts: try communicator.allGather(bytes: Array(runtime.hostName.utf8)).map { String(decoding: $0, as: UTF8.self) },
                                          window: options.stragglerWindow)
        var summary = RunSummary(stepsDone: progress.step, totalSteps: plan.totalSteps)
        let started = Date()
        while progress.step < plan.totalSteps {
            let stepStart = Date()
            let outcome = try step(replica, &progress)
            summary.stepsDone = progress.step
            try apply(outcome, to: &progress, summary: &summary, reporter: reporter)
            try reporter.step(progress.step - 1, outcome: outcome, stepSeconds: Date().timeIntervalSince(stepStart))
            if options.debug && isRoot { reporter.say("  step \(progress.step) phases: \(outcome.phaseSeconds.line(decimals: 3))") }
            afterStep?(progress.step, replica.model.parameters)
            if isRoot, let line = stragglers.record(step: progress.step, seconds: replica.lastStepSeconds) { reporter.say(line) }

            if communicator.worldSize > 1 && options.consistencyEvery > 0 && progress.step % options.consistencyEvery == 0 {
                let repaired = try ensureReplicasMatch(buffers: replica.replicatedBuffers, communicator: communicator)
                if !repaired.isEmpty {
                    replica.model.parametersChanged()
                    reporter.say("warning: step \(progress.step): replicas of ranks \(repaired) differed from rank 0 and were repaired")
                }
            }
            if let every = options.evalEvery, progress.step % every == 0, progress.step < plan.totalSteps {
                _ = try evaluateNow(replica, &progress, reporter: reporter)
            }
            if outcome.stopRequested {
                summary.stoppedBySignal = true
                summary.finalCheckpoint = try checkpoints.write(replica, plan: plan, progress: progress, reporter: reporter)
                break
            }
            if checkpoints.isDue(afterStep: progress.step, totalSteps: plan.totalSteps) {
                summary.finalCheckpoint = try checkpoints.write(replica, plan: plan, progress: progress, reporter: reporter)
            }
        }
        summary.trainSeconds = Date().timeIntervalSince(started)
        if !summary.stoppedBySignal {
            summary.finalEvaluation = try evaluateNow(replica, &progress, reporter: reporter)
            // The last step is always checkpointed: OUTPUT/checkpoint-<last step> is the trained model.
            summary.finalCheckpoint = try checkpoints.write(replica, plan: plan, progress: progress, reporter: reporter)
        }
        if options.debug { reporter.say("phase totals: \(progress.phaseTotals.line(decimals: 2))") }
        return summary
    }

    // MARK: start

    /// The pretrained model (a classifier initialised from the seed when absent), with the
    /// dropout of --dropout, wrapped in this rank's replica.
    private func makeReplica() throws -> (replica: Replica, loaded: LoadReport, maxSequenceLength: Int) {
        var (model, loadReport) = try loadModelOnRoot(options.modelDirectory, labelCount: data.labels.count, seed: UInt64(options.seed),
                                                      ignoreMismatchedSizes: options.ignoreMismatchedSizes, compute: compute,
                                                      communicator: communicator)
        return try collectively(communicator) {
            let maxSequenceLength = try resolvedSequenceLength(options.maxSequenceLength, config: model.config,
                                                               modelDirectory: options.modelDirectory)
            if let dropout = options.dropout {
                var config = model.config
                config.hiddenDropoutProb = dropout
                config.attentionDropoutProb = dropout
                try config.validate(file: "--dropout")
                let replaced = BertForSequenceClassification(config: config, labelCount: data.labels.count, compute: compute)
                replaced.parameters.copy(from: model.parameters)
                model = replaced
            }
            model.checkFinite = options.debug
            let replica = try Replica(model: model, hyperparameters: options.adamHyperparameters, communicator: communicator,
                                      options: options)
            return (replica, loadReport, maxSequenceLength)
        }
    }

    /// Fresh (rank 0's weights to everyone) or from the newest complete checkpoint of --output.
    private func start(_ replica: Replica, loaded: LoadReport, plan: TrainingPlan, checkpoints: CheckpointPolicy) throws -> Progress {
        var step = 0
        var position = SamplePosition(epoch: 0, samplesConsumed: 0)
        if options.resume, let resumed = try checkpoints.resume(into: replica, log: log) {
            step = resumed.step
            position = SamplePosition(epoch: resumed.epoch, samplesConsumed: resumed.samplesConsumedInEpoch)
            if isRoot { log("resumed from \(CheckpointFolder.name(step: resumed.step)) (step \(resumed.step) of \(plan.totalSteps), written by \(resumed.worldSize) rank(s)\(resumed.shardOptimizer ? " with a sharded optimizer" : ""))") }
        } else {
            if !options.resume { checkpoints.announce(nil) }
            try communicator.broadcast(replica.model.parameters.buffer, root: 0)
            replica.model.parametersChanged()
            if isRoot && !loaded.initialized.isEmpty {
                log("initialised from seed \(options.seed) (not in the checkpoint): \(loaded.initialized.joined(separator: ", "))")
            }
            if isRoot && !loaded.reinitialized.isEmpty {
                log("re-initialised from seed \(options.seed) for \(data.labels.count) labels (--ignore-mismatched-sizes): \(loaded.reinitialized.joined(separator: "; "))")
            }
        }
        if isRoot {
            log("training \(options.modelDirectory.lastPathComponent): \(data.train.count) examples, \(plan.totalSteps) steps of \(plan.globalBatchSize) "
                + "over \(communicator.worldSize) rank(s), micro-batch \(plan.microBatchSize), \(replica.model.layout.totalCount) parameters; Adam state "
                + String(format: "%.1f MB per rank", Double(2 * 4 * replica.optimizer.range.count) / 1e6)
                + (options.shardOptimizer ? " (sharded 1/\(communicator.worldSize))" : ""))
        }
        return Progress(step: step, batches: BatchCursor(plan: plan, position: position), learningRate: plan.schedule.learningRate(atStep: step))
    }

    // MARK: one step

    /// One optimizer step over this rank's contiguous part of the global batch, in micro-batches.
    private func step(_ replica: Replica, _ progress: inout Progress) throws -> Replica.Outcome {
        let (rankBatch, order) = progress.batches.current(rank: communicator.rank, worldSize: communicator.worldSize)
        let learningRate = progress.batches.plan.schedule.learningRate(atStep: progress.step)
        let train = data.train, step = progress.step, duringStep = duringStep
        let outcome = try replica.step(
            microBatchCount: rankBatch.microBatchCount, globalBatchSize: rankBatch.globalRange.count, stepIndex: progress.step,
            learningRate: learningRate, maxGradNorm: options.maxGradNorm,
            dropout: DropoutContext(seed: UInt64(options.seed), step: progress.step), stopRequested: stopRequested()) { micro, batch in
                duringStep?(step)
                batch.append(micro: micro, of: rankBatch, order: order, from: train)
            }
        progress.batches.advance()
        progress.learningRate = learningRate
        progress.step += 1
        progress.phaseTotals.add(outcome.phaseSeconds)
        return outcome
    }

    /// The non-finite policy: a skipped step is reported; too many in a row stop the run,
    /// naming where they began. A good step becomes the recent metrics.
    private func apply(_ outcome: Replica.Outcome, to progress: inout Progress, summary: inout RunSummary, reporter: Reporter) throws {
        let step = progress.step
        guard outcome.skipped else {
            progress.consecutiveSkipped = 0
            progress.firstNonFinite = nil
            let examples = max(outcome.examples, 1)
            progress.recentMetrics = [.init(name: "train/loss", value: outcome.lossSum / examples, step: step),
                                      .init(name: "train/accuracy", value: outcome.correct / examples, step: step),
                                      .init(name: "train/grad_norm", value: outcome.gradientNorm, step: step)]
            return
        }
        summary.skippedSteps += 1
        progress.consecutiveSkipped += 1
        let firstNonFinite = progress.firstNonFinite ?? "step \(step): \(outcome.nonFiniteWhere)"
        progress.firstNonFinite = firstNonFinite
        reporter.say("warning: step \(step) skipped on every rank: non-finite gradient (\(outcome.nonFiniteWhere))")
        if progress.consecutiveSkipped >= options.maxConsecutiveNonFiniteSteps {
            throw TrainingError.diverged("training diverged: \(progress.consecutiveSkipped) consecutive steps had non-finite gradients, first at \(firstNonFinite); lower --lr, raise --warmup-ratio or check the data (--debug names the first layer)")
        }
    }

    // MARK: evaluation

    /// Evaluates on --eval (when given) and reports; the metrics join the recent metrics.
    private func evaluateNow(_ replica: Replica, _ progress: inout Progress, reporter: Reporter) throws -> ClassificationMetrics? {
        guard let examples = data.eval else { return nil }
        let metrics = try evaluate(model: replica.model, examples: examples, labels: data.labels.names, communicator: communicator,
                                   batchSize: options.evalBatchSize, batch: &replica.evaluationBatch)
        progress.recentMetrics += [.init(name: "eval/accuracy", value: metrics.accuracy, step: progress.step),
                                   .init(name: "eval/loss", value: metrics.loss, step: progress.step)]
        try reporter.evaluation(metrics, step: progress.step)
        return metrics
    }
}

/// --max-seq-len when not given.
public let defaultMaxSequenceLength = 128

/// The max sequence length a run uses: `requested` (--max-seq-len), which must fit the model's
/// position table (an error before any data is tokenised); without it 128, or
/// max_position_embeddings when the model has fewer positions (as HF run_classification caps
/// max_seq_length at the model's maximum).
public func resolvedSequenceLength(_ requested: Int?, config: BertConfig, modelDirectory: URL) throws -> Int {
    guard let requested else { return min(defaultMaxSequenceLength, config.maxPositionEmbeddings) }
    guard requested <= config.maxPositionEmbeddings else {
        throw TrainingError.invalidInput("--max-seq-len \(requested) is longer than the model's max_position_embeddings \(config.maxPositionEmbeddings) (\(modelDirectory.appendingPathComponent("config.json").path)); use --max-seq-len \(config.maxPositionEmbeddings) or less")
    }
    return requested
}

public let bertDistVersion = "0.1.0"

/// `bert-dist train` on one rank: checks the BLAS kernels and what can be checked before any
/// work (--output, the model's config against --max-seq-len), reads the data, trains. Nothing is
/// written before the data has been read (the output folder is created after it).
public func runTraining(_ options: TrainingOptions, runtime: Runtime, communicator: any Communicator,
                        log: @escaping (String) -> Void, checkpointNote: @escaping (URL?) -> Void = { _ in }) throws -> RunSummary {
    var options = options
    if let output = options.outputDirectory { try CheckpointPolicy.checkOutputFolder(output, communicator: communicator) }
    // Rank 0 alone has the model folder: it settles the length, the others learn it.
    var length = try collectively(communicator) { () throws -> Int64 in
        try BLASSetup.selfTest()
        guard communicator.rank == 0 else { return 0 }
        return Int64(try resolvedSequenceLength(options.maxSequenceLength, config: BertConfig.load(modelDirectory: options.modelDirectory),
                                                modelDirectory: options.modelDirectory))
    }
    try withUnsafeMutableBytes(of: &length) { try communicator.broadcast($0, root: 0) }
    options.maxSequenceLength = Int(length)
    let data = try DataLoading.prepare(options, communicator: communicator, log: log)
    let run = TrainingRun(options: options, runtime: runtime, communicator: communicator, data: data, log: log)
    run.checkpointNote = checkpointNote
    return try run.run()
}
