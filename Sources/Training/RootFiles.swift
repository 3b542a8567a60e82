import Data
import Distributed
import Foundation
import Model

// Rank 0 alone reads the model folder and the data files; the other ranks get what they need
// from it over the communicator, so the hosts of a cluster need not share a file system (only
// the binary must be on every host). Every function here is a collective.

/// The model of `directory` on every rank: rank 0 loads it (config.json, model.safetensors, a
/// classifier initialised from `seed` when absent), the other ranks build the same model
/// (`shareModel`). The weights are rank 0's only: callers broadcast them (training does when it
/// starts, after a possible resume).
func loadModelOnRoot(_ directory: URL, labelCount: Int?, seed: UInt64, communicator: any Communicator)
    throws -> (model: BertForSequenceClassification, report: LoadReport) {
    let loaded = try collectively(communicator) { () throws -> (BertForSequenceClassification, LoadReport)? in
        guard communicator.rank == 0 else { return nil }
        return try BertForSequenceClassification.load(modelDirectory: directory, labelCount: labelCount, seed: seed)
    }
    return (try shareModel(loaded?.0, communicator: communicator), loaded?.1 ?? LoadReport())
}

/// Rank 0's model architecture on every rank: rank 0 keeps its model, the others build one
/// from rank 0's config and label count (with rank 0's weights only after a broadcast).
func shareModel(_ model: BertForSequenceClassification?, communicator: any Communicator) throws -> BertForSequenceClassification {
    let config = try communicator.broadcast(bytes: model.map { Array((try? JSONEncoder().encode($0.config)) ?? Data()) } ?? [], root: 0)
    var labels = UInt64(model?.labelCount ?? 0)
    try withUnsafeMutableBytes(of: &labels) { try communicator.broadcast($0, root: 0) }
    if let model { return model }
    return BertForSequenceClassification(config: try BertConfig.decode(Data(config), file: "the config of rank 0"), labelCount: Int(labels))
}

/// Rank 0's examples on every rank: rank 0 keeps its own (e.g. its mapped token cache), the
/// others receive the token ids and labels once and hold them in memory.
func shareExamples(_ examples: (any TokenizedExamples)?, communicator: any Communicator) throws -> any TokenizedExamples {
    var packed: [UInt8] = []
    if communicator.rank == 0, let examples { packed = ExamplesPacking.pack(examples) }
    let received = try communicator.broadcast(bytes: packed, root: 0)
    if communicator.rank == 0, let examples { return examples }
    return try ExamplesPacking.unpack(received)
}

/// Rank 0's strings (label names, fingerprints) on every rank.
func shareStrings(_ strings: [String], communicator: any Communicator) throws -> [String] {
    let joined = try communicator.broadcast(bytes: Array(strings.joined(separator: "\n").utf8), root: 0)
    return joined.isEmpty ? [] : String(decoding: joined, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
}

/// Examples as bytes: count, the count + 1 token offsets, the token ids, the labels (little-endian).
enum ExamplesPacking {
    static func pack(_ examples: any TokenizedExamples) -> [UInt8] {
        var offsets: [Int64] = [0]
        offsets.reserveCapacity(examples.count + 1)
        for i in 0..<examples.count { offsets.append(offsets[i] + Int64(examples.tokens(at: i).count)) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(8 * (examples.count + 2) + 4 * Int(offsets.last!) + 4 * examples.count)
        append(Int64(examples.count), to: &bytes)
        offsets.withUnsafeBytes { bytes.append(contentsOf: $0) }
        for i in 0..<examples.count { bytes.append(contentsOf: UnsafeRawBufferPointer(examples.tokens(at: i))) }
        for i in 0..<examples.count { append(examples.label(at: i), to: &bytes) }
        return bytes
    }

    static func unpack(_ bytes: [UInt8]) throws -> InMemoryExamples {
        func malformed() -> TrainingError { .invalidInput("the examples received from rank 0 are malformed (\(bytes.count) bytes)") }
        return try bytes.withUnsafeBytes { raw in
            guard raw.count >= 8 else { throw malformed() }
            let count = Int(raw.loadUnaligned(as: Int64.self))
            let offsetsEnd = 8 + 8 * (count + 1)
            guard count >= 0, raw.count >= offsetsEnd else { throw malformed() }
            let offsets = (0...count).map { Int(raw.loadUnaligned(fromByteOffset: 8 + 8 * $0, as: Int64.self)) }
            let tokenCount = offsets[count]
            guard raw.count == offsetsEnd + 4 * tokenCount + 4 * count else { throw malformed() }
            let ids = (0..<tokenCount).map { raw.loadUnaligned(fromByteOffset: offsetsEnd + 4 * $0, as: Int32.self) }
            let labelsStart = offsetsEnd + 4 * tokenCount
            let labels = (0..<count).map { raw.loadUnaligned(fromByteOffset: labelsStart + 4 * $0, as: Int32.self) }
            return InMemoryExamples(ids: ids, offsets: offsets, labels: labels)
        }
    }

    private static func append<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }
}
