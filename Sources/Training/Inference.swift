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
    /// config.json's id2label (HF's LABEL_0, LABEL_1, ... when it has none for every class).
    public let labels: LabelSet

    /// The classifier of `path`, computing on `compute`.
    public static func load(_ path: URL, compute: Compute) throws -> InferenceModel {
        var folder = path
        let fileManager = FileManager.default
        let latest = path.appendingPathComponent("latest")
        if !fileManager.fileExists(atPath: path.appendingPathComponent("config.json").path),
           let name = try? String(contentsOf: latest, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), !name.isEmpty {
            folder = path.appendingPathComponent(name)  // a training output folder: its newest checkpoint
        }
        if CheckpointFolder.isCheckpoint(folder) { _ = try CheckpointFolder.verify(folder) }
        let (model, _) = try BertForSequenceClassification.load(modelDirectory: folder, labelCount: nil, seed: 0, compute: compute)
        let tokenizer = try BertTokenizer(modelDirectory: folder)
        let names = model.config.labelNames ?? []
        let labels = try LabelSet(names: names.count == model.labelCount ? names : LabelSet.defaultNames(count: model.labelCount),
                                  origin: folder.appendingPathComponent("config.json").path)
        return InferenceModel(folder: folder, model: model, tokenizer: tokenizer, labels: labels)
    }
}

/// `bert-dist eval`: metrics of a checkpoint on a labelled file. Rank 0 alone reads the
/// checkpoint and the data (through its token cache in `cacheDirectory`; `columns` as for
/// training) and sends the model and the examples to the other ranks; each rank evaluates a
/// contiguous share, every example counted once. The labels are the checkpoint's: a label of
/// the file that is not one of them is a FILE:LINE error.
public func runEvaluation(checkpoint: URL, data: URL, columns: DataColumns?, cacheDirectory: URL?, batchSize: Int,
                          maxSequenceLength requested: Int?, skipBadRows: Bool, runtime: Runtime, communicator: any Communicator,
                          log: (String) -> Void) throws -> ClassificationMetrics {
    let compute = runtime.makeCompute()
    let local = try collectively(communicator) { () throws -> (InferenceModel, TokenizedDataset, Int)? in
        guard communicator.rank == 0 else { return nil }
        let inference = try InferenceModel.load(checkpoint, compute: compute)
        let maxSequenceLength = try resolvedSequenceLength(requested, config: inference.model.config, modelDirectory: inference.folder)
        let examples = try DataLoading.examples(data, columns: columns, labels: .fixed(inference.labels), tokenizer: inference.tokenizer,
                                                maxLength: maxSequenceLength, skipBadRows: skipBadRows, cacheDirectory: cacheDirectory, log: log)
        return (inference, examples, maxSequenceLength)
    }
    let model = try shareModel(local?.0.model, compute: compute, communicator: communicator)
    try communicator.broadcast(model.parameters.buffer, root: 0)
    let examples = try shareExamples(local?.1, communicator: communicator)
    let maxSequenceLength = Int(try communicator.allReduce(Double(local?.2 ?? 0), .max))
    model.reserve(sequences: batchSize, longestSequence: maxSequenceLength)
    var batch = PackedBatch()
    return try evaluate(model: model, examples: examples, labels: examples.labelSet.names, communicator: communicator,
                        batchSize: batchSize, batch: &batch)
}

/// One prediction of `bert-dist predict`.
public struct Prediction {
    public let labelId: Int
    public let label: String
    public let probabilities: [Float]
    public let logits: [Float]
}

extension InferenceModel {
    /// Classifies `texts`, or the pairs (`texts[i]`, `pairs[i]`) when `pairs` is given (one
    /// forward over them all, packed). Pairs are tokenised as for training: `[CLS] A [SEP] B [SEP]`
    /// with token types 0 then 1, also when B is empty.
    public func predict(_ texts: [String], pairs: [String]? = nil, maxSequenceLength: Int, batch: inout PackedBatch) throws -> [Prediction] {
        precondition(pairs == nil || pairs!.count == texts.count)
        batch.removeAll()
        var ids: [Int32] = []
        for (i, text) in texts.enumerated() {
            ids.removeAll(keepingCapacity: true)
            guard let pairs else {
                tokenizer.encode(text, maxLength: maxSequenceLength, appendingTo: &ids)
                batch.append(tokens: ids, label: 0, sampleIndex: i)
                continue
            }
            let (pairIds, types) = tokenizer.encodePair(text, pairs[i], maxLength: maxSequenceLength)
            batch.append(tokens: pairIds, tokenTypes: types, label: 0, sampleIndex: i)
        }
        try model.forward(batch, dropout: nil)
        let K = model.labelCount
        let logits = Array(model.logits), probabilities = Array(model.probabilities)
        return (0..<texts.count).map { s in
            let p = Array(probabilities[(s * K)..<((s + 1) * K)])
            let best = p.indices.max { p[$0] < p[$1] }!
            return Prediction(labelId: best, label: labels.names[best], probabilities: p, logits: Array(logits[(s * K)..<((s + 1) * K)]))
        }
    }
}
