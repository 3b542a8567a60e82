import Data
import Distributed
import Foundation
import Model

/// A trained classifier ready for eval/predict: a checkpoint folder (verified first), a merged
/// model folder, or a training output folder (its `latest` checkpoint).
public struct InferenceModel {
    public let folder: URL
    public let model: BertForSequenceClassification
    public let tokenizer: BertTokenizer
    public let labels: [String]

    public static func load(_ path: URL, runtime: Runtime) throws -> InferenceModel {
        var folder = path
        let fileManager = FileManager.default
        let latest = path.appendingPathComponent("latest")
        if !fileManager.fileExists(atPath: path.appendingPathComponent("config.json").path),
           let name = try? String(contentsOf: latest, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), !name.isEmpty {
            folder = path.appendingPathComponent(name)  // a training output folder: its newest checkpoint
        }
        if CheckpointFolder.isCheckpoint(folder) { _ = try CheckpointFolder.verify(folder) }
        let (model, _) = try BertForSequenceClassification.load(modelDirectory: folder, labelCount: nil, seed: 0)
        let tokenizer = try BertTokenizer(modelDirectory: folder)
        let names = model.config.labelNames ?? []
        let labels = names.count == model.labelCount ? names : (0..<model.labelCount).map { "LABEL_\($0)" }
        return InferenceModel(folder: folder, model: model, tokenizer: tokenizer, labels: labels)
    }
}

/// `bert-dist eval`: metrics of a checkpoint on a labelled file. Rank 0 alone reads the
/// checkpoint and the data and sends the model and the examples to the other ranks; each rank
/// evaluates a contiguous share, every example counted once.
public func runEvaluation(checkpoint: URL, data: URL, batchSize: Int, maxSequenceLength requested: Int?, skipBadRows: Bool,
                          runtime: Runtime, communicator: any Communicator, log: (String) -> Void) throws -> ClassificationMetrics {
    let local = try collectively(communicator) { () throws -> (InferenceModel, InMemoryExamples, Int)? in
        guard communicator.rank == 0 else { return nil }
        let inference = try InferenceModel.load(checkpoint, runtime: runtime)
        let maxSequenceLength = try resolvedSequenceLength(requested, config: inference.model.config, modelDirectory: inference.folder)
        let labelSet = try LabelSet(names: inference.labels, origin: inference.folder.appendingPathComponent("config.json").path)
        let texts = try LabeledTexts.read(data, labels: .fixed(labelSet), skipBadRows: skipBadRows)
        guard texts.count > 0 else { throw TrainingError.invalidInput("\(data.path): no examples") }
        if texts.skippedRowCount > 0 { log("\(data.lastPathComponent): skipped \(texts.skippedRowCount) bad row(s)") }
        let sequences = (0..<texts.count).map { i in
            var ids: [Int32] = []
            texts.withTextBytes(at: i) { inference.tokenizer.encode(utf8: $0, maxLength: maxSequenceLength, appendingTo: &ids) }
            return ids
        }
        return (inference, InMemoryExamples(sequences: sequences, labels: texts.labels), maxSequenceLength)
    }
    let model = try shareModel(local?.0.model, communicator: communicator)
    try communicator.broadcast(model.parameters.buffer, root: 0)
    let labels = try shareStrings(local?.0.labels ?? [], communicator: communicator)
    let examples = try shareExamples(local?.1, communicator: communicator)
    let maxSequenceLength = Int(try communicator.allReduce(Double(local?.2 ?? 0), .max))
    model.reserve(sequences: batchSize, longestSequence: maxSequenceLength)
    var batch = PackedBatch()
    return try evaluate(model: model, examples: examples, labels: labels, communicator: communicator, batchSize: batchSize, batch: &batch)
}

/// One prediction of `bert-dist predict`.
public struct Prediction {
    public let labelId: Int
    public let label: String
    public let probabilities: [Float]
    public let logits: [Float]
}

extension InferenceModel {
    /// Classifies `texts` (one forward over them all, packed).
    public func predict(_ texts: [String], maxSequenceLength: Int, batch: inout PackedBatch) throws -> [Prediction] {
        batch.removeAll()
        var ids: [Int32] = []
        for (i, text) in texts.enumerated() {
            ids.removeAll(keepingCapacity: true)
            tokenizer.encode(text, maxLength: maxSequenceLength, appendingTo: &ids)
            batch.append(tokens: ids, label: 0, sampleIndex: i)
        }
        try model.forward(batch, dropout: nil)
        let K = model.labelCount
        let logits = Array(model.logits), probabilities = Array(model.probabilities)
        return (0..<texts.count).map { s in
            let p = Array(probabilities[(s * K)..<((s + 1) * K)])
            let best = p.indices.max { p[$0] < p[$1] }!
            return Prediction(labelId: best, label: labels[best], probabilities: p, logits: Array(logits[(s * K)..<((s + 1) * K)]))
        }
    }
}
