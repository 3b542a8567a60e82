import Data
import Distributed
import Foundation
import Model
import Options

// Every command that computes (train, eval, predict, bench) starts from one RunSetup, made in
// this file. Rank 0 alone reads the model folder and the data files, and decides what the run
// is: the RunDescription. The other ranks receive it in one broadcast, build the same model
// from it, then receive the examples (and, when the command says so, the weights) — so the
// hosts of a cluster need not share a file system (only the binary must be on every host).

/// What rank 0 decides about a run, the same on every rank: sent once, as JSON, before anything
/// else of the run. A new fact the ranks must agree on (an encoder family, a task, a tokenizer)
/// is one more field here, nothing else.
public struct RunDescription: Codable, Sendable, Equatable {
    /// The model every rank builds (config.json as read, with --dropout applied for training);
    /// its `family` (config.json's model_type) is the encoder family every rank builds.
    public var config: BertConfig
    /// The classes, in id order, and where their names come from (--labels, a data file, a checkpoint).
    public var labelNames: [String]
    public var labelOrigin: String
    /// What the model learns (problem type, class weights, threshold): its loss and metrics.
    public var task = RunTask()
    /// The longest tokenised example, [CLS] and [SEP] included.
    public var maxSequenceLength: Int
    /// Identifies the training data (checkpoints record it; a resume on other data is refused).
    public var trainFingerprint = ""
    /// Which example sets follow the description: the rows to train (or time) on, the rows to evaluate.
    public var hasTrainExamples = false
    public var hasEvalExamples = false

    /// Rank 0 starts a description from the model's config: `requestedSequenceLength` (--max-seq-len,
    /// or the bench's --seq-len) must fit the model's position table (an error before any data is
    /// tokenised); without it 128, or the longest sequence the positions allow when that is
    /// shorter (as HF run_classification caps max_seq_length: max_position_embeddings, less
    /// pad_token_id + 1 for RoBERTa's). The labels come later, from the data or the checkpoint.
    public init(config: BertConfig, requestedSequenceLength: Int?, option: String = "--max-seq-len", modelDirectory: URL) throws {
        let longest = config.maxSequenceLength
        if let requested = requestedSequenceLength, requested > longest {
            let positions = longest == config.maxPositionEmbeddings ? "max_position_embeddings \(longest)"
                : "\(longest) positions (max_position_embeddings \(config.maxPositionEmbeddings) less pad_token_id + 1)"
            throw TrainingError.invalidInput("\(option) \(requested) is longer than the model's \(positions) (\(modelDirectory.appendingPathComponent("config.json").path)); use \(option) \(longest) or less")
        }
        self.config = config
        labelNames = []
        labelOrigin = ""
        maxSequenceLength = requestedSequenceLength ?? min(SequenceOptions.defaultMaxSequenceLength, longest)
    }
}

/// One rank's view of a run: what rank 0 decided, the model (rank 0's architecture; rank 0's
/// weights once `shareWeights` has run), and the examples, on every rank.
public struct RunSetup {
    public let description: RunDescription
    public let labels: LabelSet
    public let model: BertForSequenceClassification
    /// The rows to train on (train), or to time (bench).
    public let train: (any TokenizedExamples)?
    /// The rows to evaluate (train --eval, eval), or to predict (predict --data: their labels not read).
    public let eval: (any TokenizedExamples)?
    /// What rank 0 alone keeps (nil on the other ranks).
    public let root: RootInputs?

    /// Rank 0's weights on every rank (eval and bench at once; training when it starts fresh —
    /// a resume sends the checkpoint's instead).
    public func shareWeights(communicator: any Communicator) throws {
        try communicator.broadcast(model.parameters.buffer, root: 0)
        model.parametersChanged()
    }
}

/// What rank 0 read that only it needs: the tokenizer (predict), the files every checkpoint
/// carries, what loading initialised.
public struct RootInputs {
    public var tokenizer: (any TextTokenizer)?
    public var modelFiles: ModelFiles?
    public var loadReport = LoadReport()
}

/// Rank 0's part of a setup, before it is shared.
struct RootSetup {
    var description: RunDescription
    var labels: LabelSet
    var model: BertForSequenceClassification
    var train: TokenizedDataset?
    var eval: TokenizedDataset?
    var inputs = RootInputs()

    init(description: RunDescription, labels: LabelSet, model: BertForSequenceClassification,
         train: TokenizedDataset? = nil, eval: TokenizedDataset? = nil, inputs: RootInputs = RootInputs()) {
        var description = description
        description.labelNames = labels.names
        description.labelOrigin = labels.origin
        description.hasTrainExamples = train != nil
        description.hasEvalExamples = eval != nil
        (self.description, self.labels, self.model, self.train, self.eval, self.inputs) = (description, labels, model, train, eval, inputs)
    }
}

extension RunSetup {
    /// A setup of this process alone (predict): rank 0's part as it is.
    init(_ root: RootSetup) {
        self.init(description: root.description, labels: root.labels, model: root.model, train: root.train, eval: root.eval, root: root.inputs)
    }

    /// The collective every setup is: rank 0 runs `load` (the ranks agree it succeeded before
    /// anything is sent), then sends the description, then the examples. The other ranks build
    /// the model from the description (`forwardOnly`: no gradient arena, for eval), on `compute`.
    static func share(forwardOnly: Bool = false, compute: Compute, communicator: any Communicator,
                      _ load: () throws -> RootSetup) throws -> RunSetup {
        let root = try collectively(communicator) { () throws -> (RootSetup, [UInt8])? in
            guard communicator.rank == 0 else { return nil }
            let root = try load()
            return (root, Array(try JSONEncoder().encode(root.description)))
        }
        let encoded = try communicator.broadcast(bytes: root?.1 ?? [], root: 0)
        if let root = root?.0 {
            root.model.task = root.description.task.loss
            if root.train != nil { _ = try shareExamples(root.train, communicator: communicator) }
            if root.eval != nil { _ = try shareExamples(root.eval, communicator: communicator) }
            return RunSetup(root)
        }
        let description = try JSONDecoder().decode(RunDescription.self, from: Data(encoded))
        try description.config.validate(file: "the config of rank 0")
        let labels = try description.task.labelSet(names: description.labelNames, origin: description.labelOrigin)
        let model = BertForSequenceClassification(config: description.config, labelCount: labels.count, compute: compute, forwardOnly: forwardOnly)
        model.task = description.task.loss
        let train = description.hasTrainExamples ? try shareExamples(nil, communicator: communicator) : nil
        let eval = description.hasEvalExamples ? try shareExamples(nil, communicator: communicator) : nil
        return RunSetup(description: description, labels: labels, model: model, train: train, eval: eval, root: nil)
    }
}

/// Rank 0's examples on every rank: rank 0 keeps its own (e.g. its mapped token cache), the
/// others receive its bytes in the token cache layout once (token ids, token types, labels and
/// label names) and check them as a cache file is checked. Every rank receives the whole set
/// (each then reads its share of every batch).
func shareExamples(_ dataset: TokenizedDataset?, communicator: any Communicator) throws -> TokenizedDataset {
    let isRoot = communicator.rank == 0
    var byteCount = UInt64(isRoot ? dataset?.serializedBytes.count ?? 0 : 0)
    try withUnsafeMutableBytes(of: &byteCount) { try communicator.broadcast($0, root: 0) }
    if isRoot, let dataset {
        // A broadcast only reads the root's buffer (the mapped cache file is read-only memory).
        try communicator.broadcast(UnsafeMutableRawBufferPointer(mutating: dataset.serializedBytes), root: 0)
        return dataset
    }
    let received = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(byteCount), alignment: 16)
    defer { received.deallocate() }
    try communicator.broadcast(received, root: 0)
    return try TokenizedDataset.deserialize(UnsafeRawBufferPointer(received), source: "the examples received from rank 0")
}

// MARK: - the setups of the commands

extension RunSetup {
    /// `bert-dist train`: rank 0 reads the config (and settles the sequence length), the
    /// tokenizer, the training and eval files through their token caches (in `cacheDirectory`),
    /// then the pretrained model with a classifier for the data's labels.
    public static func forTraining(_ options: TrainingOptions, cacheDirectory: URL?, compute: Compute, communicator: any Communicator,
                                   log: (String) -> Void) throws -> RunSetup {
        try forTraining(options, compute: compute, communicator: communicator) { description in
            let directory = options.model.directory
            let tokenizer = try loadTextTokenizer(modelDirectory: directory, modelType: description.config.family.rawValue)
            let files = try DataLoading.modelFiles(modelDirectory: directory, tokenizer: tokenizer)
            let labelFormat = try RunTask.labelFormat(options.task, modelConfig: files.config,
                                                      configFile: directory.appendingPathComponent("config.json").path)
            func read(_ url: URL, _ labels: LabelRule, _ labelFormat: LabelFormat) throws -> TokenizedDataset {
                try DataLoading.examples(url, columns: options.data.columns.columns, labels: labels, labelFormat: labelFormat,
                                         tokenizer: tokenizer, maxLength: description.maxSequenceLength, skipBadRows: options.data.skipBadRows,
                                         cacheDirectory: cacheDirectory, log: log)
            }
            let train = try read(options.trainFile, options.labels.map { .fixed($0) } ?? .fromData, labelFormat)
            log(train.problemType == .regression ? "regression targets from \(options.trainFile.path)"
                : "\(train.labelSet.count) labels from \(train.labelSet.origin): \(train.labelSet)"
                  + (train.problemType == .multiLabelClassification ? " (multi-label)" : ""))
            // The eval file must use the training labels and task.
            let eval = try options.evalFile.map {
                try read($0, .fixed(train.labelSet), LabelFormat(problemType: train.problemType, separator: labelFormat.separator))
            }
            return (train, eval, files)
        }
    }

    /// The training setup once rank 0 has `readExamples(description)` (the config read and the
    /// sequence length settled): its train and eval
    /// examples and the files checkpoints carry (tests give synthetic examples here). The model
    /// is the folder's, with a classifier for the training labels (initialised from --seed when
    /// absent, or when it has another label count and --ignore-mismatched-sizes), and --dropout.
    static func forTraining(_ options: TrainingOptions, compute: Compute, communicator: any Communicator,
                            readExamples: (RunDescription) throws -> (train: TokenizedDataset, eval: TokenizedDataset?, files: ModelFiles)) throws -> RunSetup {
        try share(compute: compute, communicator: communicator) {
            let directory = options.model.directory
            // Settled before any data is read: a --max-seq-len the model cannot take is an error first.
            var description = try RunDescription(config: try BertConfig.load(modelDirectory: directory),
                                                 requestedSequenceLength: options.data.sequence.maxSequenceLength, modelDirectory: directory)
            let (train, eval, files) = try readExamples(description)
            description.task = try RunTask.forTraining(options.task, train: train)
            var model: BertForSequenceClassification, report: LoadReport
            do {
                (model, report) = try BertForSequenceClassification.load(modelDirectory: directory, labelCount: train.labelSet.count,
                                                                         seed: UInt64(options.seed), ignoreMismatchedSizes: options.ignoreMismatchedSizes,
                                                                         compute: compute)
            } catch ModelError.tensor(let file, let tensor, let reason) where tensor.hasPrefix("classifier.") && reason.hasPrefix("shape") {
                // The folder's head was fine-tuned for another label set: say how to start a new one.
                throw TrainingError.invalidInput("\(file): tensor \(tensor): \(reason); to train a new classifier head for these labels instead (initialised from --seed), add --ignore-mismatched-sizes")
            }
            if let dropout = options.dropout {
                var config = model.config
                config.hiddenDropoutProb = dropout
                config.attentionDropoutProb = dropout
                try config.validate(file: "--dropout")
                let replaced = BertForSequenceClassification(config: config, labelCount: model.labelCount, compute: compute)
                replaced.parameters.copy(from: model.parameters)
                model = replaced
            }
            description.config = model.config
            description.trainFingerprint = DataLoading.fingerprint(of: train)
            return RootSetup(description: description, labels: train.labelSet, model: model, train: train, eval: eval,
                             inputs: RootInputs(tokenizer: nil, modelFiles: files, loadReport: report))
        }
    }

    /// `bert-dist eval`: rank 0 loads the checkpoint (its labels are the classes) and reads the
    /// data file through its token cache; the weights are shared at once.
    public static func forEvaluation(_ options: EvaluationOptions, cacheDirectory: URL?, compute: Compute, communicator: any Communicator,
                                     log: (String) -> Void) throws -> RunSetup {
        let setup = try share(forwardOnly: true, compute: compute, communicator: communicator) {
            var root = try RootSetup(checkpoint: options.checkpoint.folder, requestedSequenceLength: options.data.sequence.maxSequenceLength,
                                     compute: compute)
            root.description.task.threshold = options.labels.threshold
            let labelFormat = LabelFormat(problemType: root.description.task.problemType, separator: options.labels.labelSeparator)
            root.eval = try DataLoading.examples(options.dataFile, columns: options.data.columns.columns, labels: .fixed(root.labels),
                                                 labelFormat: labelFormat, tokenizer: root.inputs.tokenizer!,
                                                 maxLength: root.description.maxSequenceLength, skipBadRows: options.data.skipBadRows,
                                                 cacheDirectory: cacheDirectory, log: log)
            root.description.hasEvalExamples = true
            return root
        }
        try setup.shareWeights(communicator: communicator)
        return setup
    }

    /// `bert-dist predict`, in this process alone: the checkpoint and its tokenizer (`threshold`:
    /// multi-label's).
    public static func forPrediction(checkpoint: URL, sequence: SequenceOptions, threshold: Double = 0.5, compute: Compute) throws -> RunSetup {
        var root = try RootSetup(checkpoint: checkpoint, requestedSequenceLength: sequence.maxSequenceLength, compute: compute)
        root.description.task.threshold = threshold
        return RunSetup(root)
    }

    /// `bert-dist bench`: rank 0 reads the config (the bench's --seq-len must fit it), makes the
    /// rows (synthetic, or the data file's) and the model (the folder's, or random from the
    /// config alone); the weights are shared at once.
    public static func forBenchmark(_ options: BenchmarkOptions, compute: Compute, communicator: any Communicator) throws -> RunSetup {
        let setup = try share(compute: compute, communicator: communicator) {
            let directory = options.model.directory
            let config = try BertConfig.load(modelDirectory: directory)
            let description = try RunDescription(config: config, requestedSequenceLength: options.sequenceLength, option: "--seq-len",
                                                 modelDirectory: directory)
            // The classifier has the data's labels; synthetic rows take the folder's (HF's default 2 without one).
            let folderLabels = options.randomWeights ? config.labelNames?.count : try BertForSequenceClassification.labelCount(modelDirectory: directory)
            let examples = try benchmarkExamples(options, sequenceLength: description.maxSequenceLength, config: config,
                                                 syntheticLabelCount: folderLabels ?? 2)
            let model: BertForSequenceClassification
            if options.randomWeights {
                model = BertForSequenceClassification(config: config, labelCount: examples.labelSet.count, compute: compute)
                model.initializeRandomly(seed: 1)
            } else {
                // A head of another size is replaced: the bench times steps, it trains nothing.
                model = try BertForSequenceClassification.load(modelDirectory: directory, labelCount: examples.labelSet.count, seed: 1,
                                                               ignoreMismatchedSizes: true, compute: compute).0
            }
            return RootSetup(description: description, labels: examples.labelSet, model: model, train: examples)
        }
        try setup.shareWeights(communicator: communicator)
        return setup
    }
}

extension RootSetup {
    /// Rank 0's part for eval and predict: the trained classifier of `path` (see InferenceModel).
    init(checkpoint path: URL, requestedSequenceLength: Int?, compute: Compute) throws {
        let checkpoint = try InferenceModel.load(path, compute: compute)
        var description = try RunDescription(config: checkpoint.model.config, requestedSequenceLength: requestedSequenceLength,
                                             modelDirectory: checkpoint.folder)
        description.task = RunTask(problemType: checkpoint.problemType)
        self.init(description: description, labels: checkpoint.labels, model: checkpoint.model,
                  inputs: RootInputs(tokenizer: checkpoint.tokenizer))
    }
}
