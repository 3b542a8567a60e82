import Data
import Model

/// What the training loop and evaluation need of a data set: token ids (`[CLS] ... [SEP]`, or
/// `[CLS] A [SEP] B [SEP]` for text pairs, already truncated), where each example's second
/// segment starts (token type 1 from there on) and a label per example. Files become this
/// through Data's tokenizer and token cache; tests build it in memory.
public protocol TokenizedExamples: Sendable {
    var count: Int { get }
    func tokens(at index: Int) -> UnsafeBufferPointer<Int32>
    /// Token type ids are 0 before this position and 1 from it on: the example's length for a
    /// single text, the position after `[CLS] A [SEP]` for a pair.
    func secondSegmentStart(at index: Int) -> Int
    func label(at index: Int) -> Int32
}

/// Data's token cache is what training reads.
extension TokenizedDataset: TokenizedExamples {}

/// In-memory examples (tests). The ids live in memory of their own (not an array), so the
/// buffers `tokens(at:)` returns stay valid as long as the examples.
public final class InMemoryExamples: TokenizedExamples, @unchecked Sendable {
    // @unchecked Sendable: immutable after init.
    private let ids: UnsafeMutableBufferPointer<Int32>
    private let offsets: [Int]
    private let segmentStarts: [Int]?
    private let labels: [Int32]

    /// `secondSegmentStarts`: for text pairs, where each example's token type 1 segment starts.
    public init(sequences: [[Int32]], secondSegmentStarts: [Int]? = nil, labels: [Int32]) {
        precondition(sequences.count == labels.count && (secondSegmentStarts?.count ?? labels.count) == labels.count)
        var offsets = [0]
        for s in sequences { offsets.append(offsets.last! + s.count) }
        ids = .allocate(capacity: max(1, offsets.last!))
        for (s, sequence) in sequences.enumerated() {
            _ = UnsafeMutableBufferPointer(rebasing: ids[offsets[s]..<offsets[s + 1]]).initialize(from: sequence)
        }
        self.offsets = offsets
        self.segmentStarts = secondSegmentStarts
        self.labels = labels
    }

    deinit { ids.deallocate() }

    public var count: Int { labels.count }
    public func tokens(at index: Int) -> UnsafeBufferPointer<Int32> {
        UnsafeBufferPointer(rebasing: ids[offsets[index]..<offsets[index + 1]])
    }
    public func secondSegmentStart(at index: Int) -> Int { segmentStarts?[index] ?? (offsets[index + 1] - offsets[index]) }
    public func label(at index: Int) -> Int32 { labels[index] }
}

extension PackedBatch {
    /// Appends example `index` of `examples` with its token types (its index keys its dropout
    /// masks). No allocation once the batch has room.
    mutating func append(_ examples: any TokenizedExamples, index: Int) {
        let tokens = examples.tokens(at: index)
        append(tokens: tokens, label: examples.label(at: index), sampleIndex: index)  // token types 0 ...
        let end = tokenTypeIds.count
        for position in (end - tokens.count + examples.secondSegmentStart(at: index))..<end { tokenTypeIds[position] = 1 }  // ... then 1
    }
}
