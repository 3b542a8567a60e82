import Data
import Model

/// What the training loop and evaluation need of a data set: token ids (`[CLS] ... [SEP]`, or
/// `[CLS] A [SEP] B [SEP]` for text pairs, already truncated), where each example's second
/// segment starts (token type 1 from there on) and a label per example. Files become this
/// through Data's tokenizer and token cache (tests build theirs with TokenizedDataset.fromTokens).
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
