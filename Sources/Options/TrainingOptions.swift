import ArgumentParser
import Data
import Foundation
import Model

/// Everything a training run is configured by: the `bert-dist train` options (docs/commands.md),
/// parsed straight into this value. Each option is declared once, with its default and help,
/// here or in its group; a new option is one more declaration, read where it is used. (Threads,
/// --bf16 and --collective-timeout are the process's, not the run's: see the command.)
public struct TrainingOptions: ParsableArguments, Sendable {
    @OptionGroup public var model: ModelOptions
    @Flag(help: "When the model folder's classifier has another number of labels than the data, train a new head (initialised from --seed) instead of stopping (as HF's from_pretrained(..., ignore_mismatched_sizes=True)).")
    public var ignoreMismatchedSizes = false
    @Option(name: .customLong("train"), help: ArgumentHelp("Training data: AG News .csv, a header .csv/.tsv (with the column options) or .jsonl.", valueName: "file"),
            transform: fileURL)
    public var trainFile: URL
    @Option(name: .customLong("eval"), help: ArgumentHelp("Evaluation data, evaluated every --eval-every steps and at the end.", valueName: "file"),
            transform: fileURL)
    public var evalFile: URL?
    @OptionGroup public var data: DataOptions
    @Option(help: "The label names in id order, comma separated (default: from the training data, integers as ids 0..max, strings sorted).",
            transform: { try LabelSet(list: $0) })
    public var labels: LabelSet?
    @OptionGroup public var task: TaskOptions
    @OptionGroup public var checkpoints: CheckpointOptions

    @Option(name: .customLong("batch-size"), help: "Global batch size, split over all ranks (and micro-batches).")
    public var globalBatchSize = 32
    @Option(help: "Optimizer steps to take (default: --epochs 1).")
    public var maxSteps: Int?
    @Option(help: "Passes over the training data (may be fractional).")
    public var epochs: Double?
    @OptionGroup public var optimizer: OptimizerOptions
    @Option(help: "Seed of the shuffling, dropout masks and a new classifier head.")
    public var seed = 42
    @Option(help: "Dropout of hidden states and attention (default: as in config.json).")
    public var dropout: Float?
    @Flag(help: "Group examples of similar length in each global batch (like HF's group_by_length).")
    public var groupByLength = false

    @OptionGroup public var parallel: ParallelOptions
    @Option(help: "Compare parameter/Adam checksums across ranks every N steps (and repair from rank 0; 0: never).")
    public var consistencyEvery = 100

    @Option(help: "Evaluate every N steps (and at the end).")
    public var evalEvery: Int?
    @Option(help: "Examples per forward pass when evaluating.")
    public var evalBatchSize = 64
    @Option(help: "Print a line every N steps when stdout is not a terminal.")
    public var logEvery = 10
    @Option(name: .customLong("tensorboard"), help: ArgumentHelp("Write TensorBoard scalars into this folder.", valueName: "dir"), transform: fileURL)
    public var tensorboardDirectory: URL?
    @OptionGroup public var bestModel: BestModelOptions

    @OptionGroup public var debug: DebugOptions
    @Option(name: .customLong(ResolvedOptions.configOption),
            help: ArgumentHelp("Options as a JSON object keyed by long option names, e.g. {\"batch-size\": 32, \"lr\": 3e-5}; the command line overrides them.", valueName: "file.json"))
    public var configFile: String?

    public init() {}

    public func validate() throws {
        for (name, value) in [("--batch-size", globalBatchSize), ("--log-every", logEvery), ("--eval-batch-size", evalBatchSize)] where value < 1 {
            throw ValidationError("\(name) must be at least 1")
        }
        if let maxSteps, maxSteps < 1 { throw ValidationError("--max-steps must be at least 1") }
        if let epochs, !(epochs > 0) { throw ValidationError("--epochs must be positive") }
        if maxSteps != nil && epochs != nil { throw ValidationError("give --max-steps or --epochs, not both") }
        if let dropout, !(0..<1).contains(dropout) { throw ValidationError("--dropout must be in [0, 1)") }
        if let evalEvery, evalEvery < 1 { throw ValidationError("--eval-every must be at least 1") }
        if consistencyEvery < 0 { throw ValidationError("--consistency-every must not be negative") }
        if labels != nil && task.problemType == .regression { throw ValidationError("--labels names classes; regression has none") }
        if evalFile == nil {
            for (name, given) in [("--metric-for-best-model", bestModel.metricForBestModel != "loss"), ("--greater-is-better", bestModel.greaterIsBetter != nil),
                                  ("--early-stopping-patience", bestModel.earlyStoppingPatience != nil)] where given {
                throw ValidationError("\(name) needs evaluation: give --eval FILE (and --eval-every N)")
            }
        }
    }
}

/// The `bert-dist eval` options: a checkpoint, a labelled file, how it is read.
public struct EvaluationOptions: ParsableArguments, Sendable {
    @OptionGroup public var checkpoint: CheckpointInputOptions
    @Option(name: .customLong("data"), help: ArgumentHelp("Labelled data: AG News .csv, a header .csv/.tsv (with the column options) or .jsonl.", valueName: "file"),
            transform: fileURL)
    public var dataFile: URL
    @Option(help: "Examples per forward pass.")
    public var batchSize = 64
    @OptionGroup public var data: DataOptions
    @OptionGroup public var labels: LabelOptions

    public init() {}

    public func validate() throws {
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
    }
}

/// The `bert-dist bench` options. The steps follow the training a `bert-dist train` with the
/// same model, batch and parallel options would take (train's defaults for the rest).
public struct BenchmarkOptions: ParsableArguments, Sendable {
    @OptionGroup public var model: ModelOptions
    @Option(name: .customLong("batch-size"), help: "Global batch size (split over ranks under mpirun).")
    public var globalBatchSize = 8
    @Option(name: .customLong("seq-len"), help: "Synthetic sequence length, or truncation of real rows (default: \(SequenceOptions.defaultMaxSequenceLength), or the model's max_position_embeddings when smaller).")
    public var sequenceLength: Int?
    @Option(name: .customLong("data"), help: ArgumentHelp("Time consecutive real rows of this file instead of synthetic sequences (any data file of train).", valueName: "file"),
            transform: fileURL)
    public var dataFile: URL?
    @OptionGroup public var columns: ColumnOptions
    @Option(help: "Timed steps (after \(BenchmarkOptions.warmupSteps) warm-up steps).")
    public var steps = 20
    @OptionGroup public var parallel: ParallelOptions
    @Flag(help: "Initialise from config.json alone (e.g. to time bert-base without its weights).")
    public var randomWeights = false

    public init() {}

    /// Untimed steps before the timed ones.
    public static let warmupSteps = 3

    public func validate() throws {
        if globalBatchSize < 1 || (sequenceLength ?? 2) < 2 || steps < 1 { throw ValidationError("--batch-size, --steps must be at least 1 and --seq-len at least 2") }
    }
}

/// The `bert-dist predict` options: a checkpoint, and the texts of stdin or of a data file.
public struct PredictionOptions: ParsableArguments, Sendable {
    @OptionGroup public var checkpoint: CheckpointInputOptions
    @Option(name: .customLong("data"), help: ArgumentHelp("Predict every row of this file instead of stdin's lines: AG News .csv, a header .csv/.tsv (with the column options) or .jsonl; its labels, if any, are not read.", valueName: "file"),
            transform: fileURL)
    public var dataFile: URL?
    @Option(name: .customLong("output"), help: ArgumentHelp("With --data: write the predictions here, CSV when the name ends in .csv, else JSON Lines (default: JSON Lines on stdout).", valueName: "file"),
            transform: fileURL)
    public var outputFile: URL?
    @Option(help: "With --data: rows per forward pass on each rank.")
    public var batchSize = 64
    @OptionGroup public var sequence: SequenceOptions
    @OptionGroup public var columns: ColumnOptions
    @OptionGroup public var labels: LabelOptions

    public init() {}

    public func validate() throws {
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if dataFile == nil {
            if outputFile != nil { throw ValidationError("--output needs --data (stdin's predictions go to stdout)") }
            if columns.columns != nil { throw ValidationError("the column options need --data (stdin has one text per line)") }
        }
        if columns.textPairColumn != nil { try sequence.validate(pairs: "--text-pair-column") }
        if let outputFile, !["csv", "jsonl", "json", "ndjson"].contains(outputFile.pathExtension.lowercased()) {
            throw ValidationError("--output \(outputFile.lastPathComponent): name a .csv (CSV) or .jsonl (JSON Lines) file")
        }
    }
}
