import ArgumentParser
import Foundation
import Training

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Fine-tune a BERT for sequence classification, data-parallel over MPI ranks.",
        discussion: """
            The global batch is split over all ranks and micro-batches; the loss is its mean. \
            Checkpoints go to OUTPUT/checkpoint-STEP; the last step is always checkpointed.
            Data: a .csv is AG News unless a column option is given (then a CSV with a header row), .tsv and \
            .jsonl name their columns/keys with the same options; labels come from the training data \
            (or --labels) and set the classifier's size (docs/data.md).
            Example: mpirun -n 4 bert-dist train --model models/minilm --train train.csv --eval test.csv --output runs/ag
            """)

    @OptionGroup var model: ModelOptions
    @Flag(help: "When the model folder's classifier has another number of labels than the data, train a new head (initialised from --seed) instead of stopping (as HF's from_pretrained(..., ignore_mismatched_sizes=True)).")
    var ignoreMismatchedSizes = false
    @Option(help: "Training data: AG News .csv, a header .csv/.tsv (with the column options) or .jsonl.")
    var train: String
    @Option(help: "Evaluation data, evaluated every --eval-every steps and at the end.")
    var eval: String?
    @OptionGroup var data: DataOptions
    @OptionGroup var checkpoints: CheckpointOptions

    @Option(help: "Global batch size, split over all ranks (and micro-batches).")
    var batchSize = 32
    @Option(help: "Optimizer steps to take (default: --epochs 1).")
    var maxSteps: Int?
    @Option(help: "Passes over the training data (may be fractional).")
    var epochs: Double?
    @OptionGroup var optimizer: OptimizerOptions
    @Option(help: "Seed of the shuffling, dropout masks and a new classifier head.")
    var seed = 42
    @Option(help: "Dropout of hidden states and attention (default: as in config.json).")
    var dropout: Float?
    @Flag(help: "Group examples of similar length in each global batch (like HF's group_by_length).")
    var groupByLength = false

    @OptionGroup var parallel: ParallelOptions
    @OptionGroup var precision: PrecisionOptions
    @Option(help: "Compare parameter/Adam checksums across ranks every N steps (and repair from rank 0; 0: never).")
    var consistencyEvery = 100

    @Option(help: "Evaluate every N steps (and at the end).")
    var evalEvery: Int?
    @Option(help: "Examples per forward pass when evaluating.")
    var evalBatchSize = 64
    @Option(help: "Print a line every N steps when stdout is not a terminal.")
    var logEvery = 10
    @Option(help: "Write TensorBoard scalars into this folder.")
    var tensorboard: String?

    @OptionGroup var faults: FaultOptions
    @OptionGroup var debug: DebugOptions

    func validate() throws {
        for (name, value) in [("--batch-size", batchSize), ("--log-every", logEvery), ("--eval-batch-size", evalBatchSize)] where value < 1 {
            throw ValidationError("\(name) must be at least 1")
        }
        if let maxSteps, maxSteps < 1 { throw ValidationError("--max-steps must be at least 1") }
        if let epochs, !(epochs > 0) { throw ValidationError("--epochs must be positive") }
        if maxSteps != nil && epochs != nil { throw ValidationError("give --max-steps or --epochs, not both") }
        if let dropout, !(0..<1).contains(dropout) { throw ValidationError("--dropout must be in [0, 1)") }
        if let evalEvery, evalEvery < 1 { throw ValidationError("--eval-every must be at least 1") }
        if consistencyEvery < 0 { throw ValidationError("--consistency-every must not be negative") }
    }

    var options: TrainingOptions {
        var o = TrainingOptions(modelDirectory: model.directory, trainFile: URL(fileURLWithPath: train),
                                evalFile: eval.map { URL(fileURLWithPath: $0) }, outputDirectory: URL(fileURLWithPath: checkpoints.output))
        o.globalBatchSize = batchSize
        o.maxSteps = maxSteps
        o.epochs = epochs
        o.learningRate = optimizer.lr
        o.warmupRatio = optimizer.warmupRatio
        o.weightDecay = optimizer.weightDecay
        o.maxGradNorm = optimizer.maxGradNorm
        o.optimizer = optimizer.optimizer
        o.schedule = optimizer.lrSchedule
        o.maxSequenceLength = data.sequence.maxSeqLen
        o.seed = seed
        o.dropout = dropout
        o.groupByLength = groupByLength
        o.columns = data.columns.columns
        o.labels = (try? data.labelSet) ?? nil  // checked by validate()
        o.skipBadRows = data.skipBadRows
        o.ignoreMismatchedSizes = ignoreMismatchedSizes
        parallel.apply(to: &o)
        o.consistencyEvery = consistencyEvery
        o.checkpointEvery = checkpoints.checkpointEvery
        o.keepCheckpoints = checkpoints.keepCheckpoints
        o.resume = checkpoints.resume
        o.evalEvery = evalEvery
        o.evalBatchSize = evalBatchSize
        o.logEvery = logEvery
        o.tensorboardDirectory = tensorboard.map { URL(fileURLWithPath: $0) }
        o.debug = debug.debug
        o.simulatedRanks = debug.simulateRanks ?? 1
        return o
    }

    func run() throws {
        try precision.checkCPU()
        var configured = self.options
        configured.cacheDirectory = try data.cacheDirectory(.current)
        let options = configured
        let runtime = ProcessEnvironment.current.runtime(threads: parallel.threads.threads, simulatedRanks: debug.inProcessRanks,
                                                         precision: precision.precision)
        StopSignal.install()
        let status = RankRunner.run(simulatedRanks: debug.inProcessRanks, collectiveTimeout: faults.collectiveTimeout,
                                    runtime: runtime, progressIntervalSeconds: parallel.progressIntervalSeconds) { communicator, watchdog in
            let log = rootLog(communicator)
            // What a failure report names: the checkpoint to continue from.
            let checkpointNote: (URL?) -> Void = { folder in
                watchdog?.setNote(folder.map { "newest complete checkpoint: \($0.path) (continue with --resume)" } ?? "no complete checkpoint yet")
            }
            let summary = try runTraining(options, runtime: runtime, communicator: communicator, log: log, checkpointNote: checkpointNote)
            guard communicator.rank == 0 else { return }
            if summary.stoppedBySignal {
                log("stopped by a signal after step \(summary.stepsDone) of \(summary.totalSteps); checkpoint written: \(summary.finalCheckpoint?.path ?? "-")")
                log("resume with the same command plus --resume")
            } else {
                var line = "done: \(summary.stepsDone) steps in \(formatDuration(summary.trainSeconds))"
                if summary.skippedSteps > 0 { line += ", \(summary.skippedSteps) skipped (non-finite)" }
                if let metrics = summary.finalEvaluation {
                    line += String(format: "; eval accuracy %.4f loss %.4f on %d examples", metrics.accuracy, metrics.loss, metrics.count)
                }
                log(line)
                log("trained model: \(summary.finalCheckpoint?.path ?? "-")")
            }
        }
        if status != 0 { throw ExitCode(status) }
    }
}
