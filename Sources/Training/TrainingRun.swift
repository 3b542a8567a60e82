import Data
import Distributed
import Foundation
import Model
import Options
import Storage

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
    /// The model, the examples and what rank 0 decided (RunSetup.forTraining).
    let setup: RunSetup
    let log: (String) -> Void
    /// Asked after every step; the ranks agree to stop when any of them says yes.
    let stopRequested: () -> Bool
    /// Told the newest complete checkpoint (nil: none yet) whenever it changes, on every rank
    /// (what a report of a failed peer names).
    var checkpointNote: (URL?) -> Void = { _ in }
    /// Choices of the loop that are not options (tests shorten the straggler window, compare the
    /// dense embedding gradient sum).
    var settings = Settings()

    struct Settings {
        /// Steps over which rank 0 compares the ranks' compute times to name stragglers.
        var stragglerWindow = 20
        /// Consecutive skipped (non-finite) steps after which the run stops with an error.
        var maxConsecutiveNonFiniteSteps = 5
        /// Only the touched rows of the word and position embedding gradients travel (the result
        /// is the dense sum's, bit for bit); false sends the tables whole.
        var sparseEmbeddingGradients = true
        /// Each global batch split into equal example counts instead of by tokens (the model is
        /// the same, float summation order aside).
        var splitByExamples = false
        /// When the optimizer's update runs (the same bits either way).
        var updateSchedule = Replica.UpdateSchedule.overlapped
    }

    public init(options: TrainingOptions, runtime: Runtime, communicator: any Communicator, setup: RunSetup,
                log: @escaping (String) -> Void, stopRequested: @escaping () -> Bool = { StopSignal.requested }) {
        self.options = options
        self.runtime = runtime
        self.communicator = communicator
        self.setup = setup
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
        guard let train = setup.train else { throw TrainingError.invalidInput("training needs a data file (--train)") }
        let replica = try makeReplica()
        let checkpoints = CheckpointPolicy(options: options, communicator: communicator, setup: setup, announce: checkpointNote)
        try checkpoints.prepareOutputFolder()
        let plan = try TrainingPlan(options: options, lengths: (0..<train.count).map { Int32(train.tokens(at: $0).count) },
                                    worldSize: communicator.worldSize, hiddenSize: replica.model.config.hiddenSize,
                                    splitByExamples: settings.splitByExamples)
        replica.updateSchedule = settings.updateSchedule
        replica.reserve(plan, maxSequenceLength: setup.description.maxSequenceLength)
        var progress = try start(replica, plan: plan, checkpoints: checkpoints)

        let reporter = try Reporter(enabled: isRoot, totalSteps: plan.totalSteps, logEvery: options.logEvery,
                                    progress: runtime.progress, tensorBoardDirectory: options.tensorboardDirectory, output: log)
        defer { reporter.finish() }
        var stragglers = StragglerMonitor(hosts: try communicator.allGather(bytes: Array(runtime.hostName.utf8)).map { String(decoding: $0, as: UTF8.self) },
                                          window: settings.stragglerWindow)
        var summary = RunSummary(stepsDone: progress.step, totalSteps: plan.totalSteps)
        let started = Date()
        while progress.step < plan.totalSteps {
            let stepStart = Date()
            let outcome = try step(replica, train, &progress)
            summary.stepsDone = progress.step
            try apply(outcome, to: &progress, summary: &summary, reporter: reporter)
            try reporter.step(progress.step - 1, outcome: outcome, stepSeconds: Date().timeIntervalSince(stepStart))
            if options.debug.debug && isRoot { reporter.say("  step \(progress.step) phases: \(outcome.phaseSeconds.line(decimals: 3))") }
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
        if options.debug.debug { reporter.say("phase totals: \(progress.phaseTotals.line(decimals: 2))") }
        return summary
    }

    // MARK: start

    /// This rank's replica of the setup's model (its optimizer part, its gradient synchroniser).
    private func makeReplica() throws -> Replica {
        setup.model.checkFinite = options.debug.debug
        return try collectively(communicator) {
            try Replica(model: setup.model, hyperparameters: options.optimizer.adamHyperparameters, communicator: communicator,
                        parallel: options.parallel, sparseEmbeddingGradients: settings.sparseEmbeddingGradients)
        }
    }

    /// Fresh (rank 0's weights to everyone) or from the newest complete checkpoint of --output.
    private func start(_ replica: Replica, plan: TrainingPlan, checkpoints: CheckpointPolicy) throws -> Progress {
        var step = 0
        var position = SamplePosition(epoch: 0, samplesConsumed: 0)
        let loaded = setup.root?.loadReport ?? LoadReport()
        if options.checkpoints.resume, let resumed = try checkpoints.resume(into: replica, log: log) {
            step = resumed.step
            position = SamplePosition(epoch: resumed.epoch, samplesConsumed: resumed.samplesConsumedInEpoch)
            if isRoot { log("resumed from \(CheckpointFolder.name(step: resumed.step)) (step \(resumed.step) of \(plan.totalSteps), written by \(resumed.worldSize) rank(s)\(resumed.shardOptimizer ? " with a sharded optimizer" : ""))") }
        } else {
            if !options.checkpoints.resume { checkpoints.announce(nil) }
            try setup.shareWeights(communicator: communicator)
            if isRoot && !loaded.initialized.isEmpty {
                log("initialised from seed \(options.seed) (not in the checkpoint): \(loaded.initialized.joined(separator: ", "))")
            }
            if isRoot && !loaded.reinitialized.isEmpty {
                log("re-initialised from seed \(options.seed) for \(setup.labels.count) labels (--ignore-mismatched-sizes): \(loaded.reinitialized.joined(separator: "; "))")
            }
        }
        if isRoot {
            log("training \(options.model.directory.lastPathComponent): \(plan.sampler.exampleCount) examples, \(plan.totalSteps) steps of \(plan.globalBatchSize) "
                + "over \(communicator.worldSize) rank(s), \(options.parallel.microBatchSize.map { "micro-batch \($0)" } ?? "one micro-batch per rank"), token-balanced, \(replica.model.layout.totalCount) parameters; Adam state "
                + String(format: "%.1f MB per rank", Double(2 * 4 * replica.optimizer.range.count) / 1e6)
                + (options.parallel.shardOptimizer ? " (sharded 1/\(communicator.worldSize))" : ""))
        }
        return Progress(step: step, batches: BatchCursor(plan: plan, position: position), learningRate: plan.schedule.learningRate(atStep: step))
    }

    // MARK: one step

    /// One optimizer step over this rank's share of the global batch (token-balanced), in micro-batches.
    private func step(_ replica: Replica, _ train: any TokenizedExamples, _ progress: inout Progress) throws -> Replica.Outcome {
        let (share, order) = progress.batches.current(rank: communicator.rank)
        let learningRate = progress.batches.plan.schedule.learningRate(atStep: progress.step)
        let outcome = try replica.step(
            microBatchCount: share.microBatchCount, globalBatchSize: share.globalRange.count, stepIndex: progress.step,
            learningRate: learningRate, maxGradNorm: options.optimizer.maxGradNorm,
            dropout: DropoutContext(seed: UInt64(options.seed), step: progress.step), stopRequested: stopRequested()) { micro, batch in
                batch.append(micro: micro, of: share, order: order, from: train)
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
        if progress.consecutiveSkipped >= settings.maxConsecutiveNonFiniteSteps {
            throw TrainingError.diverged("training diverged: \(progress.consecutiveSkipped) consecutive steps had non-finite gradients, first at \(firstNonFinite); lower --lr, raise --warmup-ratio or check the data (--debug names the first layer)")
        }
    }

    // MARK: evaluation

    /// Evaluates on --eval (when given) and reports; the metrics join the recent metrics.
    private func evaluateNow(_ replica: Replica, _ progress: inout Progress, reporter: Reporter) throws -> ClassificationMetrics? {
        guard let examples = setup.eval else { return nil }
        let metrics = try evaluate(model: replica.model, examples: examples, labels: setup.labels.names, communicator: communicator,
                                   batchSize: options.evalBatchSize, batch: &replica.evaluationBatch)
        progress.recentMetrics += [.init(name: "eval/accuracy", value: metrics.accuracy, step: progress.step),
                                   .init(name: "eval/loss", value: metrics.loss, step: progress.step)]
        try reporter.evaluation(metrics, step: progress.step)
        return metrics
    }
}

public let bertDistVersion = "0.1.0"

/// `bert-dist train` on one rank: checks the BLAS kernels and what can be checked before any
/// work (--output, the model's config against --max-seq-len), reads the data, trains. Nothing is
/// written before the data has been read (the output folder is created after it).
public func runTraining(_ options: TrainingOptions, cacheDirectory: URL?, runtime: Runtime, communicator: any Communicator,
                        log: @escaping (String) -> Void, checkpointNote: @escaping (URL?) -> Void = { _ in }) throws -> RunSummary {
    try CheckpointPolicy.checkOutputFolder(options.checkpoints.folder, communicator: communicator)
    try collectively(communicator) { try BLASSetup.selfTest() }
    let setup = try RunSetup.forTraining(options, cacheDirectory: cacheDirectory, compute: runtime.makeCompute(), communicator: communicator, log: log)
    let run = TrainingRun(options: options, runtime: runtime, communicator: communicator, setup: setup, log: log)
    run.checkpointNote = checkpointNote
    return try run.run()
}
