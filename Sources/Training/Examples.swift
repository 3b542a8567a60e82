import Data
import Model

/// What the training loop and evaluation need of a data set: token ids (`[CLS] ... [SEP]`,
/// already truncated) and a label per example. Files become this through Data's tokenizer and
/// token cache; tests build it in memory.
public protocol TokenizedExamples: Sendable {
    var count: Int { get }
    func tokens(at index: Int) -> UnsafeBufferPointer<Int32>
    func label(at index: Int) -> Int32
}

/// Data's token cache is what training reads.
extension TokenizedDataset: TokenizedExamples {}

/// In-memory examples (tests, predict).
public struct InMemoryExamples: TokenizedExamples, @unchecked Sendable {
    // @unchecked Sendable: immutable after init.
    private let ids: [Int32]
    private let offsets: [Int]
    private let labels: [Int32]

    public init(sequences: [[Int32]], labels: [Int32]) {
        precondition(sequences.count == labels.count)
        var offsets = [0]
        for s in sequences { offsets.append(offsets.last! + s.count) }
        self.ids = sequences.flatMap { $0 }
        self.offsets = offsets
        self.labels = labels
    }

    /// Examples already flat: example i is ids[offsets[i] ..< offsets[i + 1]].
    init(ids: [Int32], offsets: [Int], labels: [Int32]) {
        precondition(offsets.count == labels.count + 1 && offsets.last == ids.count)
        self.ids = ids
        self.offsets = offsets
        self.labels = labels
    }

    public var count: Int { labels.count }
    public func tokens(at index: Int) -> UnsafeBufferPointer<Int32> {
        ids.withUnsafeBufferPointer { UnsafeBufferPointer(rebasing: $0[offsets[index]..<offsets[index + 1]]) }
    }
    public func label(at index: Int) -> Int32 { labels[index] }
}

extension PackedBatch {
    /// Appends example `index` of `examples` (its index keys its dropout masks).
    mutating func append(_ examples: any TokenizedExamples, index: Int) {
        append(tokens: examples.tokens(at: index), label: examples.label(at: index), sampleIndex: index)
    }
}
