import Data
import Model

/// What the training loop and evaluation need of a data set: token ids (`[CLS] ... [SEP]`, or
/// `[CLS] A [SEP] B [SEP]` for text pairs, already truncated), where each example's second
/// segment starts (token type 1 from there on) and the targets of the task: a class id
/// (single-label), the class ids of the positive labels (multi-label) or a value (regression).
/// Files become this through Data's tokenizer and token cache (tests build theirs with
/// TokenizedDataset.fromTokens).
public protocol TokenizedExamples: Sendable {
    var count: Int { get }
    /// What the targets are, and the K labels (regression: its one output).
    var problemType: ProblemType { get }
    var labelSet: LabelSet { get }
    func tokens(at index: Int) -> UnsafeBufferPointer<Int32>
    /// Token type ids are 0 before this position and 1 from it on: the example's length for a
    /// single text, the position after `[CLS] A [SEP]` for a pair.
    func secondSegmentStart(at index: Int) -> Int
    /// Single-label: the class id.
    func label(at index: Int) -> Int32
    /// Multi-label: the class ids of the positive labels.
    func positiveLabels(at index: Int) -> UnsafeBufferPointer<Int32>
    /// Regression: the target.
    func value(at index: Int) -> Float
}

/// Data's token cache is what training reads.
extension TokenizedDataset: TokenizedExamples {}

extension PackedBatch {
    /// Appends example `index` of `examples` with its token types and its targets (none with
    /// `withTargets` false: prediction); its index keys its dropout masks. No allocation once
    /// the batch has room.
    mutating func append(_ examples: any TokenizedExamples, index: Int, withTargets: Bool = true) {
        let tokens = examples.tokens(at: index)
        switch withTargets ? examples.problemType : nil {
        case .singleLabelClassification?: append(tokens: tokens, label: examples.label(at: index), sampleIndex: index)
        case .multiLabelClassification?:
            append(tokens: tokens, positiveLabels: examples.positiveLabels(at: index), labelCount: examples.labelSet.count, sampleIndex: index)
        case .regression?: append(tokens: tokens, value: examples.value(at: index), sampleIndex: index)
        case nil: append(tokens: tokens, sampleIndex: index)
        }
        // Token types 0 (as appended), then 1 from the second segment on.
        let end = tokenTypeIds.count
        for position in (end - tokens.count + examples.secondSegmentStart(at: index))..<end { tokenTypeIds[position] = 1 }
    }
}
