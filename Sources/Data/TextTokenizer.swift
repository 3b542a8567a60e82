import Foundation

/// What every tokenizer of the encoder families does for the data path: the ids Hugging Face's
/// `AutoTokenizer` (transformers 5) gives for `tokenizer(text, truncation=True, max_length=N)`
/// and for a pair `tokenizer([A], [B], truncation=True, max_length=N)`, specials included.
///
/// Implemented by `BertTokenizer` (WordPiece: bert, distilbert, electra) and
/// `PipelineTokenizer` (byte-level BPE: roberta; Unigram: xlm-roberta, camembert; any
/// tokenizer.json made of the pieces it reads). `loadTextTokenizer(modelDirectory:modelType:)`
/// picks the one a model folder holds.
///
/// Implementations are immutable after loading (their caches are behind locks), so one
/// tokenizer can be shared by threads.
public protocol TextTokenizer: AnyObject, Sendable {
    /// Appends the ids of one UTF-8 text: the family's template around the text's tokens,
    /// which are cut so that at most `maxLength` ids are appended. No allocation when `ids` has
    /// room for `maxLength` more. Requires `maxLength >= minimumMaxLength.single`.
    func encode(utf8 text: UnsafeBufferPointer<UInt8>, maxLength: Int, appendingTo ids: inout [Int32])

    /// Appends the ids of a text pair (template for pairs, `longest_first` truncation to
    /// `maxLength`, as HF's batch call `tokenizer([A], [B], ...)` does, which training scripts
    /// make: an empty B is still a pair; HF's single call `encode(A, "")` treats an empty B as
    /// no pair, a quirk callers reproduce themselves) and returns where the
    /// token type 1 segment starts, counted from the first appended id; the count of appended
    /// ids when every token type is 0 (RoBERTa, XLM-R, CamemBERT). Requires
    /// `maxLength >= minimumMaxLength.pair`.
    @discardableResult
    func encodePair(utf8 first: UnsafeBufferPointer<UInt8>, utf8 second: UnsafeBufferPointer<UInt8>, maxLength: Int,
                    appendingTo ids: inout [Int32]) -> Int

    /// The ids the model and the batches need.
    var specialTokenIds: SpecialTokenIds { get }
    /// One more than the largest id the tokenizer can produce (model vocabulary and added
    /// tokens): every id is below it.
    var vocabularySize: Int { get }
    /// The special tokens a single text and a pair get: `maxLength` must be at least these.
    var minimumMaxLength: (single: Int, pair: Int) { get }
    /// A hash of everything that decides the ids (vocabulary, merges or scores, normalizer,
    /// pre-tokenizer, added tokens, template): the token cache is keyed by it.
    var fingerprint: UInt64 { get }
    /// The files of the model folder the tokenizer was read from that a checkpoint copies, so
    /// that `AutoTokenizer.from_pretrained(checkpoint)` loads the same tokenizer (the
    /// checkpoint's `config.json` must carry the same `model_type`).
    var tokenizerFiles: [URL] { get }
}

/// The special ids of a tokenizer. `classifier` is the first id of every sequence ([CLS] or
/// <s>), `separator` the one that ends a text ([SEP] or </s>).
public struct SpecialTokenIds: Sendable, Equatable {
    public var classifier: Int32
    public var separator: Int32
    public var padding: Int32
    public var unknown: Int32?

    public init(classifier: Int32, separator: Int32, padding: Int32, unknown: Int32?) {
        self.classifier = classifier
        self.separator = separator
        self.padding = padding
        self.unknown = unknown
    }
}

extension TextTokenizer {
    /// The ids of `text` (template included), at most `maxLength`.
    public func encode(_ text: String, maxLength: Int) -> [Int32] {
        var ids: [Int32] = []
        ids.reserveCapacity(min(maxLength, text.utf8.count + 4))
        var text = text
        text.withUTF8 { encode(utf8: $0, maxLength: maxLength, appendingTo: &ids) }
        return ids
    }

    /// The ids of the pair and their token type ids (0, then 1 from where B's segment starts).
    public func encodePair(_ first: String, _ second: String, maxLength: Int) -> (ids: [Int32], tokenTypeIds: [Int32]) {
        var ids: [Int32] = []
        ids.reserveCapacity(maxLength)
        var first = first, second = second
        let secondStart = first.withUTF8 { a in
            second.withUTF8 { b in encodePair(utf8: a, utf8: b, maxLength: maxLength, appendingTo: &ids) }
        }
        return (ids, (0..<ids.count).map { Int32($0 >= secondStart ? 1 : 0) })
    }
}

extension TextTokenizer {
    /// Throws when `maxLength` (the option `option`) cannot hold the special tokens of a single
    /// text, or of a pair: 3 for BERT's [CLS] A [SEP] B [SEP], 4 for RoBERTa's <s> A </s></s> B </s>.
    /// Callers check before they read any text.
    public func checkMaxLength(_ maxLength: Int, pairs: Bool, option: String = "--max-seq-len") throws {
        let minimum = pairs ? minimumMaxLength.pair : minimumMaxLength.single
        guard maxLength < minimum else { return }
        throw DataError("\(pairs ? "text pairs need" : "a text needs") a max sequence length of at least \(minimum) (the tokenizer's special tokens alone), this run has \(maxLength); use \(option) \(minimum) or more")
    }
}

/// How many tokens of each text `longest_first` keeps within `budget`, given their lengths
/// (tokenizers' truncate_encodings, LongestFirst, on the texts without special tokens): nothing
/// is cut when both fit; else when the shorter fits in half the budget it is kept whole and the
/// longer gets the rest; else each gets half, the longer one (the second on a tie) the odd one.
func longestFirstLengths(_ first: Int, _ second: Int, budget: Int) -> (Int, Int) {
    if first + second <= budget { return (first, second) }
    let swapped = first > second
    var shorter = min(first, second)
    var longer: Int
    if shorter > budget {
        longer = shorter
    } else {
        longer = max(shorter, budget - shorter)
    }
    if shorter + longer > budget {
        shorter = budget / 2
        longer = shorter + budget % 2
    }
    return swapped ? (longer, shorter) : (shorter, longer)
}

// MARK: - BertTokenizer as a TextTokenizer

extension BertTokenizer: TextTokenizer {
    public var specialTokenIds: SpecialTokenIds {
        SpecialTokenIds(classifier: classifierTokenId, separator: separatorTokenId, padding: paddingTokenId,
                        unknown: unknownTokenId)
    }

    public var vocabularySize: Int {
        max(vocabulary.count, Int(literalTokens.map(\.id).max() ?? -1) + 1)
    }

    public var minimumMaxLength: (single: Int, pair: Int) { (2, 3) }
}
