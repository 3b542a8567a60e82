import Data
import Distributed
import Foundation
import Model

/// A trained classifier ready for eval/predict: a checkpoint folder (verified first), a merged
/// model folder, or a training output folder (its `latest` checkpoint).
public struct InferenceModel {
    public let folder: URL
    public let model: BertForSequenceClassification
    /// The checkpoint's tokenizer, the one its config.json's model_type and tokenizer files name.
    public let tokenizer: any TextTokenizer
    /// config.json's id2label (HF's LABEL_0, LABEL_1, ... when it has none for every class;
    /// regression: its one output).
    public let labels: LabelSet
    /// config.json's problem_type (without one: regression for 1 output, else single-label, as HF).
    public let problemType: ProblemType

    /// The classifier of `path`, computing on `compute` (forward only).
    public static func load(_ path: URL, compute: Compute) throws -> InferenceModel {
        var folder = path
        let fileManager = FileManager.default
        var isDirectory: ObjCBool = false
        guard fileManager.fileExists(atPath: path.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw TrainingError.invalidInput("\(path.path): no such folder (expected a checkpoint, a merged model or a training output folder)")
        }
        let latest = path.appendingPathComponent("latest")
        if !fileManager.fileExists(atPath: path.appendingPathComponent("config.json").path),
           let name = try? String(contentsOf: latest, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), !name.isEmpty {
            folder = path.appendingPathComponent(name)  // a training output folder: its newest checkpoint
        }
        if CheckpointFolder.isCheckpoint(folder) { _ = try CheckpointFolder.verify(folder) }
        let (model, _) = try BertForSequenceClassification.load(modelDirectory: folder, labelCount: nil, seed: 0, compute: compute,
                                                                forwardOnly: true)
        let tokenizer = try loadTextTokenizer(modelDirectory: folder, modelType: model.config.family.rawValue)
        let configFile = folder.appendingPathComponent("config.json")
        let problemType = try RunTask.problemType(ofModel: try JSONValue.readFieldsIfPresent(configFile) ?? [:], labelCount: model.labelCount,
                                                  file: configFile.path)
        let names = model.config.labelNames ?? []
        let labels = try RunTask(problemType: problemType).labelSet(
            names: names.count == model.labelCount ? names : LabelSet.defaultNames(count: model.labelCount), origin: configFile.path)
        model.task = RunTask(problemType: problemType).loss
        return InferenceModel(folder: folder, model: model, tokenizer: tokenizer, labels: labels, problemType: problemType)
    }
}

/// `bert-dist eval` on one rank, with the setup of `RunSetup.forEvaluation`: each rank evaluates
/// a contiguous share, every example counted once.
public func runEvaluation(_ setup: RunSetup, batchSize: Int, communicator: any Communicator) throws -> any TaskMetrics {
    guard let examples = setup.eval else { throw TrainingError.invalidInput("eval needs a data file (--data)") }
    setup.model.reserve(sequences: batchSize, longestSequence: setup.description.maxSequenceLength)
    var batch = PackedBatch()
    return try evaluate(model: setup.model, examples: examples, labels: setup.labels, task: setup.description.task,
                        communicator: communicator, batchSize: batchSize, batch: &batch)
}

extension RunSetup {
    /// Predicts `texts`, or the pairs (`texts[i]`, `pairs[i]`) when `pairs` is given (one
    /// forward over them all, packed), with the setup of `RunSetup.forPrediction`. Pairs are
    /// tokenised as for training: `[CLS] A [SEP] B [SEP]` with token types 0 then 1 (the
    /// family's template: RoBERTa's `<s> A </s></s> B </s>`, all type 0), also when B is empty.
    public func predict(_ texts: [String], pairs: [String]? = nil, batch: inout PackedBatch) throws -> [Prediction] {
        precondition(pairs == nil || pairs!.count == texts.count)
        guard let tokenizer = root?.tokenizer else { throw TrainingError.invalidInput("predict needs the checkpoint's tokenizer") }
        let maxSequenceLength = description.maxSequenceLength
        batch.removeAll()
        var ids: [Int32] = []
        for (i, text) in texts.enumerated() {
            ids.removeAll(keepingCapacity: true)
            guard let pairs else {
                var text = text
                text.withUTF8 { tokenizer.encode(utf8: $0, maxLength: maxSequenceLength, appendingTo: &ids) }
                batch.append(tokens: ids, sampleIndex: i)
                continue
            }
            let (pairIds, types) = tokenizer.encodePair(text, pairs[i], maxLength: maxSequenceLength)
            batch.append(tokens: pairIds, tokenTypes: types, sampleIndex: i)
        }
        try model.forward(batch, dropout: nil)
        return predictions(of: model, count: texts.count)
    }

    /// The predictions of the model's last forward (`count` rows), for the task.
    func predictions(of model: BertForSequenceClassification, count: Int) -> [Prediction] {
        let K = model.labelCount, logits = model.logits, probabilities = model.probabilities
        return (0..<count).map { s in
            Prediction(task: description.task, labels: labels, logits: Array(logits[(s * K)..<((s + 1) * K)]),
                       probabilities: Array(probabilities[(s * K)..<((s + 1) * K)]))
        }
    }
}
