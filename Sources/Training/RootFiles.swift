import Data
import Distributed
import Foundation
import Model

// Rank 0 alone reads the model folder and the data files; the other ranks get what they need
// from it over the communicator, so the hosts of a cluster need not share a file system (only
// the binary must be on every host). Every function here is a collective.

/// The model of `directory` on every rank, computing on `compute`: rank 0 loads it (config.json, model.safetensors, a
/// classifier initialised from `seed` when absent, or when it has another label count and
/// `ignoreMismatchedSizes`), the other ranks build the same model (`shareModel`). The weights are
/// rank 0's only: callers broadcast them (training does when it starts, after a possible resume).
func loadModelOnRoot(_ directory: URL, labelCount: Int?, seed: UInt64, ignoreMismatchedSizes: Bool = false, compute: Compute,
                     communicator: any Communicator) throws -> (model: BertForSequenceClassification, report: LoadReport) {
    let loaded = try collectively(communicator) { () throws -> (BertForSequenceClassification, LoadReport)? in
        guard communicator.rank == 0 else { return nil }
        do {
            return try BertForSequenceClassification.load(modelDirectory: directory, labelCount: labelCount, seed: seed,
                                                          ignoreMismatchedSizes: ignoreMismatchedSizes, compute: compute)
        } catch ModelError.tensor(let file, let tensor, let reason) where tensor.hasPrefix("classifier.") && reason.hasPrefix("shape") {
            // The folder's head was fine-tuned for another label set: say how to start a new one.
            throw TrainingError.invalidInput("\(file): tensor \(tensor): \(reason); to train a new classifier head for these labels instead (initialised from --seed), add --ignore-mismatched-sizes")
        }
    }
    return (try shareModel(loaded?.0, compute: compute, communicator: communicator), loaded?.1 ?? LoadReport())
}

/// Rank 0's model architecture on every rank: rank 0 keeps its model, the others build one
/// from rank 0's config and label count (with rank 0's weights only after a broadcast), on
/// `compute`.
func shareModel(_ model: BertForSequenceClassification?, compute: Compute,
                communicator: any Communicator) throws -> BertForSequenceClassification {
    let config = try communicator.broadcast(bytes: model.map { Array((try? JSONEncoder().encode($0.config)) ?? Data()) } ?? [], root: 0)
    var labels = UInt64(model?.labelCount ?? 0)
    try withUnsafeMutableBytes(of: &labels) { try communicator.broadcast($0, root: 0) }
    if let model { return model }
    return BertForSequenceClassification(config: try BertConfig.decode(Data(config), file: "the config of rank 0"), labelCount: Int(labels),
                                         compute: compute)
}

/// Rank 0's examples on every rank: rank 0 keeps its own (e.g. its mapped token cache), the
/// others receive its bytes in the token cache layout once (token ids, token types, labels and
/// label names) and check them as a cache file is checked.
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
