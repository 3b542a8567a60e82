import Data
import Distributed
import Foundation
import Model

/// Everything a training run is configured by (the `bert-dist train` flags; docs/commands.md).
/// The bench steps through the same options: it never writes (no output folder) and its rows
/// are `trainFile` (none: synthetic sequences); training requires both (the command line does).
public struct TrainingOptions: Sendable {
    public var modelDirectory: URL
    public var trainFile: URL?
    public var evalFile: URL?
    public var outputDirectory: URL?

    /// Global batch: split over all ranks, then into micro-batches.
    public var globalBatchSize = 32
    /// Per-rank forward/backward size; nil = the rank's whole shard of the global batch.
    public var microBatchSize: Int?
    public var maxSteps: Int?
    public var epochs: Double?
    public var learningRate = 2e-5
    public var warmupRatio = 0.0
    public var weightDecay = 0.0
    public var maxGradNorm = 1.0
    /// --max-seq-len; nil: 128, capped at the model's max_position_embeddings (resolvedSequenceLength).
    public var maxSequenceLength: Int?
    public var seed = 42
    /// Overrides hidden_dropout_prob and attention_probs_dropout_prob of config.json.
    public var dropout: Float?
    public var optimizer: OptimizerKind = .adamw
    public var schedule: LearningRateSchedule.Shape = .linear
    public var shardOptimizer = false
    public var bucketMegabytes = 25.0
    /// --grad-compression: what the gradient sum sends (bf16 halves the bytes; see GradientCompression).
    public var gradientCompression: GradientCompression = .none
    /// Only the touched rows of the word and position embedding gradients travel (the result is
    /// the dense sum's, bit for bit); false sends the tables whole (for comparisons).
    public var sparseEmbeddingGradients = true
    public var groupByLength = false

    /// How the data files are read (docs/data.md): the columns or keys of a header CSV, TSV or
    /// JSON Lines file (nil: a bare .csv is AG News, .tsv/.jsonl use "text" and "label").
    public var columns: DataColumns?
    /// --labels: the label names and their order (nil: from the training data).
    public var labels: LabelSet?
    public var skipBadRows = false
    /// Rank 0's token cache folder (--cache-dir or the default under ~/.cache); nil where none is
    /// known (ranks other than 0, which read no files).
    public var cacheDirectory: URL?
    /// A classifier in the model folder with another label count is replaced by a new head
    /// (HF's ignore_mismatched_sizes) instead of being an error.
    public var ignoreMismatchedSizes = false

    public var checkpointEvery = 500
    public var keepCheckpoints = 3
    public var resume = false
    public var evalEvery: Int?
    /// Examples per forward pass when evaluating.
    public var evalBatchSize = 64
    public var logEvery = 10
    public var tensorboardDirectory: URL?
    public var consistencyEvery = 100
    /// Steps over which rank 0 compares the ranks' compute times to name stragglers.
    public var stragglerWindow = 20
    /// Consecutive skipped (non-finite) steps after which the run stops with an error.
    public var maxConsecutiveNonFiniteSteps = 5
    /// Single-node debug mode: in-process ranks, NaN/Inf checks everywhere, per-phase times.
    public var debug = false
    public var simulatedRanks = 1

    public init(modelDirectory: URL, trainFile: URL? = nil, evalFile: URL? = nil, outputDirectory: URL? = nil) {
        self.modelDirectory = modelDirectory
        self.trainFile = trainFile
        self.evalFile = evalFile
        self.outputDirectory = outputDirectory
    }

    var adamHyperparameters: AdamHyperparameters { AdamHyperparameters(kind: optimizer, weightDecay: Float(weightDecay)) }
}
