import Data
import Distributed
import Foundation
import Model
import Options
import Storage

/// One prediction of `bert-dist predict`, for the model's task.
public struct Prediction: Sendable {
    public let problemType: ProblemType
    /// The model's K outputs.
    public let logits: [Float]
    /// Softmax (single-label), sigmoid per label (multi-label), the score (regression).   (K)
    public let probabilities: [Float]
    /// Single-label: the arg-max; multi-label: every label whose probability is above the
    /// threshold, in id order; regression: none.
    public let labelIds: [Int]
    public let labelNames: [String]

    init(task: RunTask, labels: LabelSet, logits: [Float], probabilities: [Float]) {
        problemType = task.problemType
        self.logits = logits
        self.probabilities = probabilities
        switch task.problemType {
        case .singleLabelClassification: labelIds = [probabilities.indices.max { probabilities[$0] < probabilities[$1] }!]
        case .multiLabelClassification: labelIds = probabilities.indices.filter { Double(probabilities[$0]) > task.threshold }
        case .regression: labelIds = []
        }
        labelNames = labelIds.map { labels.names[$0] }
    }

    /// Single-label: the predicted class.
    public var labelId: Int { labelIds[0] }
    public var label: String { labelNames[0] }
    /// Regression: the predicted value.
    public var score: Float { logits[0] }
}

/// How predictions are written, one line per row: plain text, JSON Lines, or CSV (a header row
/// first). docs/commands.md shows each.
public enum PredictionFormat: Sendable {
    /// Single-label `LABEL<TAB>probability`; multi-label `A,B<TAB>pA,pB` (the predicted labels
    /// and their probabilities; none: two empty fields); regression the score.
    case plain
    /// Single-label {"label", "label_id", "probs"}, multi-label {"labels", "probs"}, regression
    /// {"score"}; with `logits` also "logits" (regression: the one output, the score itself).
    case jsonLines(logits: Bool)
    /// Single-label `label` then one column per class (its probability); multi-label `labels`
    /// (joined by `labelSeparator`) then one column per label; regression `score`.
    case csv(labelSeparator: String)

    /// JSON Lines, or CSV for an output file whose name ends in .csv.
    public init(outputFile: URL?, logits: Bool, labelSeparator: String?) {
        if outputFile?.pathExtension.lowercased() == "csv" {
            self = .csv(labelSeparator: labelSeparator ?? ";")
        } else {
            self = .jsonLines(logits: logits)
        }
    }

    /// The line before the predictions (CSV's header), if any.
    public func header(problemType: ProblemType, labels: LabelSet) -> String? {
        guard case .csv = self else { return nil }
        switch problemType {
        case .singleLabelClassification: return (["label"] + labels.names).map(csvField).joined(separator: ",")
        case .multiLabelClassification: return (["labels"] + labels.names).map(csvField).joined(separator: ",")
        case .regression: return "score"
        }
    }

    public func line(_ p: Prediction) -> String {
        let numbers = { (values: [Float]) in values.map { "\($0)" }.joined(separator: ",") }
        switch self {
        case .plain:
            switch p.problemType {
            // A label (config.json's id2label) may hold a line break or a terminal escape: escaped,
            // so that each input still gives one line.
            case .singleLabelClassification: return "\(oneLine(p.label))\t\(String(format: "%.4f", p.probabilities[p.labelId]))"
            case .multiLabelClassification:
                return p.labelNames.map { oneLine($0) }.joined(separator: ",") + "\t" + p.labelIds.map { String(format: "%.4f", p.probabilities[$0]) }.joined(separator: ",")
            case .regression: return "\(p.score)"
            }
        case .jsonLines(let withLogits):
            // docs/commands.md: the keys in this order, one object per line.
            let logits = withLogits ? ",\"logits\":[\(numbers(p.logits))]" : ""
            switch p.problemType {
            case .singleLabelClassification:
                return "{\"label\":\(JSONValue.quote(p.label)),\"label_id\":\(p.labelId),\"probs\":[\(numbers(p.probabilities))]\(logits)}"
            case .multiLabelClassification:
                return "{\"labels\":[\(p.labelNames.map(JSONValue.quote).joined(separator: ","))],\"probs\":[\(numbers(p.probabilities))]\(logits)}"
            case .regression: return "{\"score\":\(p.score)\(logits)}"
            }
        case .csv(let separator):
            switch p.problemType {
            case .singleLabelClassification: return ([csvField(p.label)] + p.probabilities.map { "\($0)" }).joined(separator: ",")
            case .multiLabelClassification:
                return ([csvField(p.labelNames.joined(separator: separator))] + p.probabilities.map { "\($0)" }).joined(separator: ",")
            case .regression: return "\(p.score)"
            }
        }
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
func csvField(_ text: String) -> String {
    guard text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return text }
    return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}

extension RunSetup {
    /// `bert-dist predict --data FILE`: rank 0 loads the checkpoint and reads the file's texts (or
    /// text pairs) with the column options, its labels not read, and tokenises them; every rank
    /// receives the rows and the weights.
    public static func forPrediction(_ options: PredictionOptions, dataFile: URL, compute: Compute, communicator: any Communicator,
                                     log: (String) -> Void) throws -> RunSetup {
        let setup = try share(forwardOnly: true, compute: compute, communicator: communicator) {
            var root = try RootSetup(checkpoint: options.checkpoint.folder, requestedSequenceLength: options.sequence.maxSequenceLength,
                                     compute: compute)
            root.description.task.threshold = options.labels.threshold
            let started = Date()
            let texts = try LabeledTexts.read(dataFile, format: DataFormat(of: dataFile, columns: options.columns.columns), readsLabels: false)
            let maxLength = root.description.maxSequenceLength
            let tokenizer = root.inputs.tokenizer!
            try tokenizer.checkMaxLength(maxLength, pairs: texts.hasPairs)
            root.eval = TokenizedDataset.tokenize(texts, tokenizer: tokenizer, maxLength: maxLength)
            root.description.hasEvalExamples = true
            log(String(format: "read and tokenised %@: %d rows%@ in %.2f s", dataFile.lastPathComponent, texts.count,
                       texts.hasPairs ? " (text pairs)" : "", Date().timeIntervalSince(started)))
            return root
        }
        try setup.shareWeights(communicator: communicator)
        return setup
    }
}

/// `bert-dist predict --data` on one rank, with the setup of `RunSetup.forPrediction(_:dataFile:...)`:
/// rank 0 writes `output` (complete, or not at all: written under a temporary name and renamed
/// at the end), or stdout when it is nil. See `predictRows`.
public func runPrediction(_ setup: RunSetup, batchSize: Int, format: PredictionFormat, output: URL?, communicator: any Communicator,
                          progress: (Int, Int) -> Void = { _, _ in }) throws {
    let writer = try communicator.rank == 0 ? output.map { try AtomicFileWriter(destination: $0) } : nil
    do {
        try predictRows(setup, batchSize: batchSize, format: format, communicator: communicator, write: { text in
            if let writer { try writer.write(Array(text.utf8)) } else { print(text, terminator: ""); fflush(nil) }
        }, progress: progress)
        _ = try writer?.commit()
    } catch {
        writer?.abandon()
        throw error
    }
}

/// The rows of `setup.eval` in rounds of `batchSize` rows per rank (round k: rank r predicts rows
/// k·B·N + r·B ..< +B); after each round rank 0 receives every rank's lines and hands them to
/// `write` in row order, so the output is one line per input row in input order, streamed,
/// whatever the number of ranks. `progress(done, total)` after each round (rank 0).
func predictRows(_ setup: RunSetup, batchSize: Int, format: PredictionFormat, communicator: any Communicator,
                 write: (String) throws -> Void, progress: (Int, Int) -> Void = { _, _ in }) throws {
    guard let rows = setup.eval else { throw TrainingError.invalidInput("predict --data needs rows") }
    let isRoot = communicator.rank == 0, worldSize = communicator.worldSize
    let model = setup.model
    model.reserve(sequences: batchSize, longestSequence: setup.description.maxSequenceLength)
    model.parametersChanged()
    if isRoot, let header = format.header(problemType: setup.description.task.problemType, labels: setup.labels) { try write(header + "\n") }
    var batch = PackedBatch()
    var roundStart = 0
    while roundStart < rows.count {
        let start = min(rows.count, roundStart + communicator.rank * batchSize)
        let end = min(rows.count, start + batchSize)
        var lines = ""
        if start < end {
            batch.removeAll()
            for i in start..<end { batch.append(rows, index: i, withTargets: false) }
            try model.forward(batch, dropout: nil)
            for prediction in setup.predictions(of: model, count: end - start) { lines += format.line(prediction) + "\n" }
        }
        let gathered = try communicator.allGather(bytes: Array(lines.utf8))
        roundStart += batchSize * worldSize
        if isRoot {
            for part in gathered where !part.isEmpty { try write(String(decoding: part, as: UTF8.self)) }
            progress(min(roundStart, rows.count), rows.count)
        }
    }
}
