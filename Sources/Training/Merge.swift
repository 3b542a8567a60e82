import Data
import Foundation
import Model
import Storage

/// `bert-dist merge`: one checkpoint (sharded or not) becomes a standalone evaluation model —
/// weights, config and tokenizer files, no optimizer state — after verifying it is complete;
/// several with `average` become the element-wise mean of their weights (same config and
/// tensor names required). The output loads in eval/predict and in HF from_pretrained.
public func merge(checkpoints: [URL], output: URL, average: Bool) throws -> [String] {
    guard !checkpoints.isEmpty else { throw TrainingError.invalidInput("merge needs at least one checkpoint") }
    guard checkpoints.count == 1 || average else {
        throw TrainingError.invalidInput("several checkpoints given: add --average to average their weights, or give one")
    }
    var notes: [String] = []
    var sources: [(folder: URL, model: BertForSequenceClassification, tokenizer: any TextTokenizer)] = []
    for path in checkpoints {
        // One thread, any kernels: merging runs no kernels.
        let inference = try InferenceModel.load(path, compute: Compute(threads: 1))
        if let first = sources.first {
            guard inference.model.config == first.model.config, inference.model.labelCount == first.model.labelCount else {
                throw TrainingError.invalidInput("\(inference.folder.path): config.json differs from \(first.folder.path)'s; only checkpoints of the same model can be averaged")
            }
            let names = try SafeTensorsFile(url: inference.folder.appendingPathComponent("model.safetensors")).records.keys.sorted()
            let firstNames = try SafeTensorsFile(url: first.folder.appendingPathComponent("model.safetensors")).records.keys.sorted()
            guard names == firstNames else {
                throw TrainingError.invalidInput("\(inference.folder.path): tensor names differ from \(first.folder.path)'s (\(Set(names).symmetricDifference(firstNames).sorted().prefix(3).joined(separator: ", ")))")
            }
        }
        sources.append((inference.folder, inference.model, inference.tokenizer))
        notes.append("verified \(inference.folder.path)")
    }
    let result = sources[0].model
    if sources.count > 1 {
        // Mean in Double, element by element, in the order given.
        let count = result.layout.totalCount
        var sum = [Double](repeating: 0, count: count)
        for (_, model, _) in sources {
            let p = model.parameters.base
            for i in 0..<count { sum[i] += Double(p[i]) }
        }
        let n = Double(sources.count)
        for i in 0..<count { result.parameters.base[i] = Float(sum[i] / n) }
    }
    try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
    _ = try writeModelWeights(result, to: output.appendingPathComponent(CheckpointFolder.modelFile))
    // config.json (the family's) and the files the tokenizer was read from, as they are.
    for source in [sources[0].folder.appendingPathComponent("config.json")] + sources[0].tokenizer.tokenizerFiles {
        guard let bytes = FileManager.default.contents(atPath: source.path) else { continue }
        try writeFileAtomically(output.appendingPathComponent(source.lastPathComponent), bytes: Array(bytes))
    }
    notes.append("wrote \(output.path)\(sources.count > 1 ? " (mean of \(sources.count) checkpoints)" : "")")
    return notes
}
