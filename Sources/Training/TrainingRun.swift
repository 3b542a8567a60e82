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
    public var finalEvaluation: (any TaskMetrics)?
    public var trainSeconds = 0.0
    public var skippedSteps = 0
    /// Early stopping ended the run: the line saying why.
    public var earlyStopReason: String?
    /// OUTPUT/best: the checkpoint with the best --metric-for-best-model, and that value.
    public var bestCheckpoint: URL?
    public var bestMetric: TrainerState.BestMetric?
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
    /// This rank's peer watchdog (MPI ranks of a job of several): its reporter writes an emergency
    /// checkpoint of the last completed step before the job ends (EmergencyCheckpoint).
    var watchdog: PeerWatchdog?
    /// launch/train's record of the attempt before this one (--max-restarts): rank 0 reports the restart.
    var restart: RestartRecord?
    /// Choices of the loop that are not options (tests shorten the straggler window, compare the
    /// dense embedding gradient sum).
    var settings = Settings()
    /// What every checkpoint's training_args.json holds: the resolved options of the command
    /// (`bert-dist train` gives all of its own; by default those of `options`).
    var trainingArguments: [String: JSONValue]

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
        var updateSchedule = Replica.UpdateSchedule.atTheEnd
    }

    public init(options: TrainingOptions, runtime: Runtime, communicator: any Communicator, setup: RunSetup,
                log: @escaping (String) -> Void, stopRequested: @escaping () -> Bool = { StopSignal.requested }) throws {
        self.options = options
        self.runtime = runtime
        self.communicator = communicator
        self.setup = setup
        self.log = log
        self.stopRequested = stopRequested
        trainingArguments = try ResolvedOptions.record(options)
    }

    var isRoot: Bool { communicator.rank == 0 }

    /// training_args.json: the options as given, and where one was left out and the run decides
    /// it, the value it uses (HF's training_args.json likewise holds every value): the sequence
    /// length, dropout (when config.json's two probabilities agree), the steps (and --epochs 1
    /// when neither was given), the problem type, the threads per rank, the direction of
    /// --metric-for-best-model. Options that stay null have no single value: the data format's
    /// own columns, one micro-batch per rank, no evaluation between checkpoints, no early stopping.
    func resolving(_ arguments: [String: JSONValue], _ description: RunDescription, _ plan: TrainingPlan,
                   _ bestModel: BestModelTracker?) -> [String: JSONValue] {
        var resolved = arguments
        func fill(_ key: String, _ value: JSONValue?) {
            if resolved[key] == .null, let value { resolved[key] = value }
        }
        let config = description.config
        fill("max-seq-len", .number(Double(description.maxSequenceLength)))
        fill("dropout", config.hiddenDropoutProb == config.attentionDropoutProb ? ResolvedOptions.optionValue(config.hiddenDropoutProb) : nil)
        if resolved["max-steps"] == .null && resolved["epochs"] == .null { fill("epochs", .number(1)) }
        fill("max-steps", .number(Double(plan.totalSteps)))
        fill("problem-type", .string(description.task.problemType.rawValue))
        fill("threads", .number(Double(runtime.threadsPerRank)))
        fill("greater-is-better", bestModel.map { .bool($0.greaterIsBetter) })
        return resolved
    }

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
        /// The best evaluation so far and the early-stopping count (with --eval).
        var bestModel: BestModelTracker?
        /// The last evaluation, with its step.
        var lastEvaluation: (step: Int, metrics: any TaskMetrics)?
    }

    public func run() throws -> RunSummary {
        guard let train = setup.train else { throw TrainingError.invalidInput("training needs a data file (--train)") }
        let replica = try makeReplica()
        let hosts = try communicator.allGather(bytes: Array(runtime.hostName.utf8)).map { String(decoding: $0, as: UTF8.self) }
        // Checked before any work: the metric must be one the task's evaluation reports.
        let bestModel = try setup.eval.map { _ in try BestModelTracker(options.bestModel, task: setup.description.task.loss) }
        let plan = try TrainingPlan(options: options, lengths: (0..<train.count).map { Int32(train.tokens(at: $0).count) },
                                    worldSize: communicator.worldSize, hiddenSize: replica.model.config.hiddenSize,
                                    splitByExamples: settings.splitByExamples)
        let checkpoints = CheckpointPolicy(options: options, communicator: communicator, setup: setup, hosts: hosts,
                                           trainingArguments: resolving(trainingArguments, setup.description, plan, bestModel),
                                           announce: checkpointNote)
        try checkpoints.prepareOutputFolder()
        if isRoot && options.checkpoints.checkpointMirror && checkpoints.mirrorRank == nil {
            log("warning: --checkpoint-mirror: every rank runs on rank 0's host (\(hosts[0])); no copy is kept on a second host")
        }
        replica.updateSchedule = settings.updateSchedule
        replica.reserve(plan, maxSequenceLength: setup.description.maxSequenceLength)
        var progress = try start(replica, plan: plan, checkpoints: checkpoints, bestModel: bestModel)
        if let watchdog, communicator.worldSize > 1 {
            // From here on a lost peer's reporter saves the last completed step first.
            let emergency = try EmergencyCheckpoint.share(checkpoints, replica: replica, plan: plan)
            if !replica.shardOptimizer { replica.completedStep = checkpoints.completedStep }
            watchdog.setBeforeEnding { emergency.ending(for: $0) }
        }

        let reporter = try Reporter(enabled: isRoot, totalSteps: plan.totalSteps, logEvery: options.logEvery,
                                    progress: runtime.progress, tensorBoardDirectory: options.tensorboardDirectory, output: log)
        reporter.reportsAccuracy = setup.description.task.problemType != .regression
        defer { reporter.finish() }
        var restartReport = isRoot ? restart.map { RestartReport(record: $0, resumedStep: progress.step) } : nil
        if let restartReport {
            log(restartReport.resumeLine)
            printError(launchEvent("resumed", [("step", "\(progress.step)")]))
        }
        try restartReport?.check(step: progress.step, reporter: reporter)
        var stragglers = StragglerMonitor(hosts: hosts, window: settings.stragglerWindow)
        var summary = RunSummary(stepsDone: progress.step, totalSteps: plan.totalSteps)
        let started = Date()
        while progress.step < plan.totalSteps {
            let stepStart = Date()
            let outcome = try step(replica, train, &progress)  // (returns inside the replica's update window)
            summary.stepsDone = progress.step
            do { try apply(outcome, to: &progress, summary: &summary, reporter: reporter) } catch {
                replica.completedStep?.endUpdate(nil)
                throw error
            }
            checkpoints.completed(progress, replica: replica)
            try reporter.step(progress.step - 1, outcome: outcome, stepSeconds: Date().timeIntervalSince(stepStart))
            try restartReport?.check(step: progress.step, reporter: reporter)
            if options.debug.debug && isRoot { reporter.say("  step \(progress.step) phases: \(outcome.phaseSeconds.line(decimals: 3))") }
            if isRoot, let line = stragglers.record(step: progress.step, seconds: replica.lastStepSeconds) { reporter.say(line) }

            if communicator.worldSize > 1 && options.consistencyEvery > 0 && progress.step % options.consistencyEvery == 0 {
                let repaired = try ensureReplicasMatch(buffers: replica.replicatedBuffers, communicator: communicator)
                if !repaired.isEmpty {
                    replica.model.parametersChanged()
                    reporter.say("warning: step \(progress.step): replicas of ranks \(repaired) differed from rank 0 and were repaired")
                }
            }
            var evaluatedIsBest = false
            if let every = options.evalEvery, progress.step % every == 0, progress.step < plan.totalSteps {
                evaluatedIsBest = try evaluateNow(replica, &progress, reporter: reporter)
                // The evaluation moved the best metric or the patience count: an emergency
                // checkpoint of this step must record them (the step is not evaluated again).
                checkpoints.completedStep.publish(checkpoints.snapshot(progress, replica: replica))
            }
            if outcome.stopRequested {
                summary.stoppedBySignal = true
                summary.finalCheckpoint = try checkpoints.write(replica, plan: plan, progress: progress, reporter: reporter)
                break
            }
            // Early stopping ends the loop; the final checkpoint below is this step's.
            if let bestModel = progress.bestModel, bestModel.shouldStop, progress.lastEvaluation?.step == progress.step {
                summary.earlyStopReason = bestModel.stopReason
                reporter.say(bestModel.stopReason)
                break
            }
            // A checkpoint is due, or this evaluation is the best so far: its model must exist as a checkpoint.
            if checkpoints.isDue(afterStep: progress.step, totalSteps: plan.totalSteps) || evaluatedIsBest {
                summary.finalCheckpoint = try checkpoints.write(replica, plan: plan, progress: progress, reporter: reporter)
            }
        }
        summary.trainSeconds = Date().timeIntervalSince(started)
        if !summary.stoppedBySignal {
            // The last step's evaluation (already taken when early stopping ended the run there).
            if setup.eval != nil && progress.lastEvaluation?.step != progress.step {
                _ = try evaluateNow(replica, &progress, reporter: reporter)
            }
            summary.finalEvaluation = progress.lastEvaluation?.metrics
            // The last step is always checkpointed: OUTPUT/checkpoint-<last step> is the trained model.
            summary.finalCheckpoint = try checkpoints.write(replica, plan: plan, progress: progress, reporter: reporter)
        }
        if let best = progress.bestModel?.best {
            summary.bestMetric = best
            summary.bestCheckpoint = checkpoints.output.appendingPathComponent(CheckpointFolder.name(step: best.step))
        }
        try restartReport?.finish(step: progress.step, reporter: reporter)
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
    private func start(_ replica: Replica, plan: TrainingPlan, checkpoints: CheckpointPolicy, bestModel: BestModelTracker?) throws -> Progress {
        var step = 0
        var position = SamplePosition(epoch: 0, samplesConsumed: 0)
        var bestModel = bestModel
        let loaded = setup.root?.loadReport ?? LoadReport()
        if options.checkpoints.resume, let resumed = try checkpoints.resume(into: replica, log: log) {
            // The same data (fingerprint) has this many examples; a position past them was not written by bert-dist.
            guard resumed.samplesConsumedInEpoch < plan.sampler.exampleCount else {
                throw CheckpointError.incompatible(folder: CheckpointFolder.name(step: resumed.step), reason: "records sample \(resumed.samplesConsumedInEpoch) of an epoch of \(plan.sampler.exampleCount) examples; resume from another checkpoint")
            }
            step = resumed.step
            position = SamplePosition(epoch: resumed.epoch, samplesConsumed: resumed.samplesConsumedInEpoch)
            if isRoot { log("resumed from \(CheckpointFolder.name(step: resumed.step)) (step \(resumed.step) of \(plan.totalSteps), written by \(resumed.worldSize) rank(s)\(resumed.shardOptimizer ? " with a sharded optimizer" : ""))") }
            if let note = bestModel?.resume(from: resumed), isRoot { log("note: \(note)") }
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
            if let note = runtime.openBLASNote { log("note: \(note)") }
        }
        if isRoot, let weights = setup.description.task.classWeights {
            log("class weights" + (options.task.classWeights == .balanced ? " (balanced)" : "") + ": "
                + zip(setup.labels.names, weights).map { String(format: "%@ %.4g", $0, $1) }.joined(separator: ", "))
        }
        return Progress(step: step, batches: BatchCursor(plan: plan, position: position), learningRate: plan.schedule.learningRate(atStep: step),
                        bestModel: bestModel)
    }

    // MARK: one step

    /// One optimizer step over this rank's share of the global batch (token-balanced), in micro-batches.
    private func step(_ replica: Replica, _ train: any TokenizedExamples, _ progress: inout Progress) throws -> Replica.Outcome {
        let (share, order) = progress.batches.current(rank: communicator.rank)
        let learningRate = progress.batches.plan.schedule.learningRate(atStep: progress.step)
        let outcome = try replica.step(
            microBatchCount: share.microBatchCount,
            lossDenominator: replica.model.task.lossDenominator(globalBatch: share, order: order, examples: train), stepIndex: progress.step,
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
            progress.recentMetrics = [.init(name: "train/loss", value: outcome.lossDenominator > 0 ? outcome.lossSum / outcome.lossDenominator : 0,
                                            step: step),
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

    /// Evaluates on --eval (when given) and reports; the metrics join the recent metrics and the
    /// best model's record. Returns whether this evaluation is the best so far.
    private func evaluateNow(_ replica: Replica, _ progress: inout Progress, reporter: Reporter) throws -> Bool {
        guard let examples = setup.eval else { return false }
        let metrics = try evaluate(model: replica.model, examples: examples, labels: setup.labels, task: setup.description.task,
                                   communicator: communicator, batchSize: options.evalBatchSize, batch: &replica.evaluationBatch)
        progress.recentMetrics += metrics.scalars.map { .init(name: "eval/\($0.name)", value: $0.value, step: progress.step) }
        let isBest = progress.bestModel?.record(metrics, step: progress.step) ?? false
        progress.lastEvaluation = (progress.step, metrics)
        try reporter.evaluation(metrics, step: progress.step, isBest: isBest)
        return isBest
    }
}

public let bertDistVersion = "0.1.0"

/// `bert-dist train` on one rank: checks the BLAS kernels and what can be checked before any
/// work (--output, the model's config against --max-seq-len), reads the data, trains. Nothing is
/// written before the data has been read (the output folder is created after it).
/// `watchdog`: this rank's (its reporter writes the emergency checkpoint); `restart`: launch/train's
/// record of the failed attempt before this one; `trainingArguments`: what training_args.json
/// records (the command's resolved options; by default those of `options`).
public func runTraining(_ options: TrainingOptions, cacheDirectory: URL?, runtime: Runtime, communicator: any Communicator,
                        log: @escaping (String) -> Void, checkpointNote: @escaping (URL?) -> Void = { _ in },
                        watchdog: PeerWatchdog? = nil, restart: RestartRecord? = nil,
                        trainingArguments: [String: JSONValue]? = nil) throws -> RunSummary {
    try CheckpointPolicy.checkOutputFolder(options.checkpoints.folder, communicator: communicator)
    try collectively(communicator) { try BLASSetup.selfTest() }
    let setup = try RunSetup.forTraining(options, cacheDirectory: cacheDirectory, compute: runtime.makeCompute(), communicator: communicator, log: log)
    let run = try TrainingRun(options: options, runtime: runtime, communicator: communicator, setup: setup, log: log)
    run.checkpointNote = checkpointNote
    run.watchdog = watchdog
    run.restart = restart
    if let trainingArguments { run.trainingArguments = trainingArguments }
    if let cacheDirectory, run.trainingArguments["cache-dir"] == .null { run.trainingArguments["cache-dir"] = .string(cacheDirectory.path) }
    return try run.run()
}

