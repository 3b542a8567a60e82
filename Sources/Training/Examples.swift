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

/// In-memory examples (tests, eval). The token ids of all examples live in one buffer allocated
/// once, so the buffers `tokens(at:)` hands out stay valid as long as the examples do.
public struct InMemoryExamples: TokenizedExamples, @unchecked Sendable {
    // @unchecked Sendable: immutable after init.
    private let ids: TokenStorage
    private let offsets: [Int]
    private let labels: [Int32]

    public init(sequences: [[Int32]], labels: [Int32]) {
        precondition(sequences.count == labels.count)
        var offsets = [0]
        for s in sequences { offsets.append(offsets.last! + s.count) }
        self.init(ids: sequences.flatMap { $0 }, offsets: offsets, labels: labels)
    }

    /// Examples already flat: example i is ids[offsets[i] ..< offsets[i + 1]].
    init(ids: [Int32], offsets: [Int], labels: [Int32]) {
        precondition(offsets.count == labels.count + 1 && offsets.last == ids.count)
        self.ids = TokenStorage(ids)
        self.offsets = offsets
        self.labels = labels
    }

    public var count: Int { labels.count }
    public func tokens(at index: Int) -> UnsafeBufferPointer<Int32> {
        UnsafeBufferPointer(rebasing: ids.buffer[offsets[index]..<offsets[index + 1]])
    }
    public func label(at index: Int) -> Int32 { labels[index] }
}

/// Token ids in memory that never moves (unlike an Array's, which is only stable inside
/// `withUnsafeBufferPointer`); freed with the last copy of the examples holding it.
private final class TokenStorage {
    let buffer: UnsafeMutableBufferPointer<Int32>

    init(_ ids: [Int32]) {
        buffer = .allocate(capacity: max(ids.count, 1))
        _ = buffer.initialize(from: ids)
    }

    deinit { buffer.deallocate() }
}

extension PackedBatch {
    /// Appends example `index` of `examples` (its index keys its dropout masks).
    mutating func append(_ examples: any TokenizedExamples, index: Int) {
        append(tokens: examples.tokens(at: index), label: examples.label(at: index), sampleIndex: index)
    }
}
