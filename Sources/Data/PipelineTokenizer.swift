import Foundation

/// A token matched in the text before the model sees it (tokenizers' AddedToken): the special
/// tokens (<s>, </s>, <mask>...) and any added by the user.
struct AddedToken: Sendable, Equatable {
    var content: String
    var id: Int32
    var special: Bool
    /// Matched in the normalized text (else in the raw text).
    var normalized: Bool
    /// The match takes the whitespace on its left / right along.
    var leftStrip: Bool
    var rightStrip: Bool
    /// Matched only when not inside a word.
    var singleWord: Bool

    var fingerprintText: String {
        "\(content.debugDescription) \(id) special=\(special) normalized=\(normalized) lstrip=\(leftStrip) rstrip=\(rightStrip) single_word=\(singleWord)"
    }
}

/// One set of added tokens (raw or normalized), matched leftmost-longest as tokenizers'
/// Aho-Corasick automaton does: at the first position where some token starts, the longest one.
struct AddedTokenMatcher: Sendable {
    /// (content bytes, token) of each token, longest first.
    let tokens: [(bytes: [UInt8], token: AddedToken)]
    /// Whether some token starts with each byte.                                   (256)
    let startsWith: [Bool]

    init?(_ tokens: [AddedToken]) {
        let usable = tokens.filter { !$0.content.isEmpty }
        if usable.isEmpty { return nil }
        self.tokens = usable.map { (Array($0.content.utf8), $0) }.sorted { $0.bytes.count > $1.bytes.count }
        var starts = [Bool](repeating: false, count: 256)
        for (bytes, _) in self.tokens { starts[Int(bytes[0])] = true }
        startsWith = starts
    }

    /// A part of a text: either plain text (a byte range) or an added token.
    enum Part {
        case text(Range<Int>)
        case token(Int32)
    }

    /// Cuts `text` into plain parts and added tokens (tokenizers' AddedVocabulary::find_matches),
    /// calling `body` for each part in order; `body` returns false to stop.
    func split(_ text: UnsafeBufferPointer<UInt8>, _ body: (Part) -> Bool) {
        let count = text.count
        var partStart = 0        // start of the plain part not yet reported
        var index = 0
        while index < count {
            guard startsWith[Int(text[index])], let (length, token) = longestToken(text, at: index) else {
                index += 1
                continue
            }
            var start = index, stop = index + length
            if token.singleWord {
                let wordBefore = start > 0 && endsWithWordCharacter(text, before: start)
                let wordAfter = stop < count && isWordCharacter(ByteLevel.scalar(text, at: stop).value)
                if wordBefore || wordAfter {
                    index = stop  // discarded; the search goes on after it
                    continue
                }
            }
            if token.leftStrip {
                while start > partStart {
                    var lead = start - 1
                    while lead > partStart && (text[lead] & 0xC0) == 0x80 { lead -= 1 }
                    guard isWhitespaceValue(ByteLevel.scalar(text, at: lead).value) else { break }
                    start = lead
                }
            }
            if token.rightStrip {
                while stop < count {
                    let (value, scalarLength) = ByteLevel.scalar(text, at: stop)
                    guard isWhitespaceValue(value) else { break }
                    stop += scalarLength
                }
            }
            if partStart < start && !body(.text(partStart..<start)) { return }
            if !body(.token(token.id)) { return }
            partStart = stop
            index = stop
        }
        if partStart < count { _ = body(.text(partStart..<count)) }
    }

    @inline(__always)
    private func longestToken(_ text: UnsafeBufferPointer<UInt8>, at index: Int) -> (Int, AddedToken)? {
        let remaining = text.count - index
        for (bytes, token) in tokens where bytes.count <= remaining && bytes[0] == text[index] {
            var matches = true
            for offset in 1..<bytes.count where text[index + offset] != bytes[offset] {
                matches = false
                break
            }
            if matches { return (bytes.count, token) }
        }
        return nil
    }

    private func endsWithWordCharacter(_ text: UnsafeBufferPointer<UInt8>, before end: Int) -> Bool {
        var lead = end - 1
        while lead > 0 && (text[lead] & 0xC0) == 0x80 { lead -= 1 }
        return isWordCharacter(ByteLevel.scalar(text, at: lead).value)
    }
}

/// Rust regex's Unicode `\w`: alphabetic, marks, decimal digits, connector punctuation, joiners.
func isWordCharacter(_ value: UInt32) -> Bool {
    if value < 0x80 {
        return (value >= 0x30 && value <= 0x39) || (value >= 0x41 && value <= 0x5A) || (value >= 0x61 && value <= 0x7A) || value == 0x5F
    }
    guard let scalar = Unicode.Scalar(value) else { return false }
    let properties = scalar.properties
    if properties.isAlphabetic || properties.isJoinControl { return true }
    switch properties.generalCategory {
    case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
    default: return false
    }
}

/// One step of a tokenizer.json pre-tokenizer (tokenizers' `pre_tokenizers.*`).
enum PreTokenizerStep: Sendable {
    /// Split at whitespace, which is dropped.
    case whitespaceSplit
    /// Spaces become `replacement`, which is put in front of the piece (per `scheme`); then the
    /// piece is cut before every `replacement` (when `split`).
    case metaspace(replacement: [UInt8], scheme: PrependScheme, split: Bool)
    /// GPT-2's regex split (when `useRegex`) after putting a space in front (when
    /// `addPrefixSpace` and the piece does not start with one); the model then sees bytes.
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)

    enum PrependScheme: String, Sendable { case always, first, never }

    var fingerprintText: String {
        switch self {
        case .whitespaceSplit: return "WhitespaceSplit"
        case .metaspace(let replacement, let scheme, let split):
            return "Metaspace \(String(decoding: replacement, as: UTF8.self).debugDescription) \(scheme.rawValue) \(split)"
        case .byteLevel(let addPrefixSpace, let useRegex): return "ByteLevel \(addPrefixSpace) \(useRegex)"
        }
    }
}

/// The model of a tokenizer.json.
enum TokenModel: Sendable {
    case bytePair(BytePairModel)
    case unigram(UnigramModel)
}

/// The special tokens put around one text or a pair (tokenizers' post-processors
/// TemplateProcessing, RobertaProcessing, BertProcessing): a list of pieces, each the first
/// text, the second text or special ids, with its token type.
public struct SpecialTokenTemplate: Sendable, Equatable {
    public enum Piece: Sendable, Equatable {
        case first
        case second
        case special([Int32])
    }
    public struct Item: Sendable, Equatable {
        public var piece: Piece
        public var typeId: Int32
        public init(_ piece: Piece, typeId: Int32 = 0) {
            self.piece = piece
            self.typeId = typeId
        }
    }
    public var single: [Item]
    public var pair: [Item]

    public init(single: [Item], pair: [Item]) {
        self.single = single
        self.pair = pair
    }

    /// `cls A sep` and `cls A sep B sep` with token types 0 then 1 (BertProcessing).
    static func bert(classifier: Int32, separator: Int32) -> SpecialTokenTemplate {
        SpecialTokenTemplate(single: [Item(.special([classifier])), Item(.first), Item(.special([separator]))],
                             pair: [Item(.special([classifier])), Item(.first), Item(.special([separator])),
                                    Item(.second, typeId: 1), Item(.special([separator]), typeId: 1)])
    }

    /// `cls A sep` and `cls A sep sep B sep`, every token type 0 (RobertaProcessing).
    static func roberta(classifier: Int32, separator: Int32) -> SpecialTokenTemplate {
        SpecialTokenTemplate(single: [Item(.special([classifier])), Item(.first), Item(.special([separator]))],
                             pair: [Item(.special([classifier])), Item(.first), Item(.special([separator])),
                                    Item(.special([separator])), Item(.second), Item(.special([separator]))])
    }

    /// No special tokens (a tokenizer.json without a post-processor).
    static let none = SpecialTokenTemplate(single: [Item(.first)], pair: [Item(.first), Item(.second)])

    func specialCount(_ items: [Item]) -> Int {
        items.reduce(0) { count, item in
            if case .special(let ids) = item.piece { return count + ids.count }
            return count
        }
    }

    var fingerprintText: String {
        func text(_ items: [Item]) -> String {
            items.map { item -> String in
                switch item.piece {
                case .first: return "$A:\(item.typeId)"
                case .second: return "$B:\(item.typeId)"
                case .special(let ids): return "\(ids):\(item.typeId)"
                }
            }.joined(separator: " ")
        }
        return "single \(text(single)) pair \(text(pair))"
    }
}

/// A tokenizer built from tokenizers' pieces: added tokens, a normalizer (a list of steps), a
/// pre-tokenizer (a list of steps), a BPE or Unigram model and a special-token template. This is
/// RoBERTa's byte-level BPE, XLM-R's and CamemBERT's Unigram, or any tokenizer.json made of the
/// pieces `TokenizerJSONFile` reads (`loadTextTokenizer` builds them).
///
/// Encoding one text: the raw text is cut at the raw added tokens; each plain part is
/// normalized, cut at the normalized added tokens, pre-tokenized into words, and each word goes
/// through the model (whose per-word results are cached). Reading stops once the template's
/// budget is filled (plus one token, so a pair knows which text is longer).
public final class PipelineTokenizer: TextTokenizer {
    let rawAddedTokens: AddedTokenMatcher?
    let normalizedAddedTokens: AddedTokenMatcher?
    let addedTokens: [AddedToken]
    let normalizer: [NormalizerStep]
    let preTokenizer: [PreTokenizerStep]
    let model: TokenModel
    public let template: SpecialTokenTemplate
    public let specialTokenIds: SpecialTokenIds
    public let vocabularySize: Int
    public let fingerprint: UInt64
    public let tokenizerFiles: [URL]
    /// What was read, for messages: e.g. "RobertaTokenizer (byte-level BPE) from .../tokenizer.json".
    public let summary: String

    public var minimumMaxLength: (single: Int, pair: Int) {
        (template.specialCount(template.single), template.specialCount(template.pair))
    }

    init(addedTokens: [AddedToken], normalizer: [NormalizerStep], preTokenizer: [PreTokenizerStep], model: TokenModel,
         template: SpecialTokenTemplate, specialTokenIds: SpecialTokenIds, files: [URL], summary: String) {
        // (Their order does not change what matches: in one canonical order, the fingerprint
        // depends on the tokens only.)
        let addedTokens = addedTokens.sorted { a, b in
            a.id != b.id ? a.id < b.id : Array(a.content.utf8).lexicographicallyPrecedes(Array(b.content.utf8))
        }
        self.addedTokens = addedTokens
        rawAddedTokens = AddedTokenMatcher(addedTokens.filter { !$0.normalized })
        // A normalized token is matched by its normalized form.
        normalizedAddedTokens = AddedTokenMatcher(addedTokens.filter(\.normalized).map { token in
            var copy = token
            copy.content = String(decoding: PipelineTokenizer.normalize(Array(token.content.utf8), normalizer), as: UTF8.self)
            return copy
        })
        self.normalizer = normalizer
        self.preTokenizer = preTokenizer
        self.model = model
        self.template = template
        self.specialTokenIds = specialTokenIds
        self.tokenizerFiles = files
        self.summary = summary
        var largest: Int32 = -1
        switch model {
        case .bytePair(let bpe): largest = Int32(bpe.tokens.count - 1)
        case .unigram(let unigram): largest = Int32(unigram.pieces.count - 1)
        }
        for token in addedTokens { largest = max(largest, token.id) }
        for item in template.single + template.pair {
            if case .special(let ids) = item.piece { largest = max(largest, ids.max() ?? -1) }
        }
        vocabularySize = Int(largest) + 1

        var hasher = ContentHash64(seed: 0x7069_7065_6C69_6E65)  // "pipeline"
        hasher.update("pipeline v1\n")
        for token in addedTokens { hasher.update(token.fingerprintText + "\n") }
        for step in normalizer { hasher.update("normalizer " + step.fingerprintText + "\n") }
        for step in preTokenizer { hasher.update("pre-tokenizer " + step.fingerprintText + "\n") }
        hasher.update(template.fingerprintText + "\n")
        hasher.update("special \(specialTokenIds)\n")
        switch model {
        case .bytePair(let bpe):
            hasher.update("BPE unk=\(bpe.unknownId.map(String.init) ?? "none") fuse=\(bpe.fuseUnknown) bytes=\(bpe.byteFallback) ignore=\(bpe.ignoreMerges) prefix=\(bpe.continuingSubwordPrefix.debugDescription) suffix=\(bpe.endOfWordSuffix.debugDescription) byteLevel=\(bpe.byteLevel)\n")
            for token in bpe.tokens {
                hasher.update(token)
                hasher.update([0x0A])
            }
            for merge in bpe.merges {
                hasher.update(UInt64(UInt32(bitPattern: merge.left)) << 32 | UInt64(UInt32(bitPattern: merge.right)))
                hasher.update(UInt64(UInt32(bitPattern: merge.merged)))
            }
        case .unigram(let unigram):
            hasher.update("Unigram unk=\(unigram.unknownId) bytes=\(unigram.byteFallback)\n")
            for (piece, score) in unigram.pieces {
                hasher.update(piece)
                hasher.update([0x0A])
                hasher.update(score.bitPattern)
            }
        }
        fingerprint = hasher.finalize()
    }

    /// Applies the normalizer steps in order.
    static func normalize(_ text: [UInt8], _ steps: [NormalizerStep]) -> [UInt8] {
        var current = text
        for step in steps {
            var next: [UInt8] = []
            next.reserveCapacity(current.count + 16)
            current.withUnsafeBufferPointer { step.apply($0, appendingTo: &next) }
            current = next
        }
        return current
    }

    // MARK: - Encoding

    public func encode(utf8 text: UnsafeBufferPointer<UInt8>, maxLength: Int, appendingTo ids: inout [Int32]) {
        let specials = template.specialCount(template.single)
        precondition(maxLength >= specials, "maxLength must leave room for the \(specials) special tokens")
        let budget = maxLength - specials
        for item in template.single {
            switch item.piece {
            case .first, .second:
                let start = ids.count
                tokens(of: text, limit: budget, appendingTo: &ids)
                if ids.count - start > budget { ids.removeLast(ids.count - start - budget) }
            case .special(let specialIds):
                ids.append(contentsOf: specialIds)
            }
        }
    }

    @discardableResult
    public func encodePair(utf8 first: UnsafeBufferPointer<UInt8>, utf8 second: UnsafeBufferPointer<UInt8>, maxLength: Int,
                           appendingTo ids: inout [Int32]) -> Int {
        let specials = template.specialCount(template.pair)
        precondition(maxLength >= specials, "maxLength must leave room for the \(specials) special tokens")
        let budget = maxLength - specials
        // Each text is read until it has one token more than the budget: enough to know whether
        // it fits and which is longer, except when both are over with an odd budget (then the
        // longer gets the odd token, so their lengths are counted).
        var firstTokens: [Int32] = [], secondTokens: [Int32] = []
        firstTokens.reserveCapacity(budget + 8)
        secondTokens.reserveCapacity(budget + 8)
        tokens(of: first, limit: budget + 1, appendingTo: &firstTokens)
        tokens(of: second, limit: budget + 1, appendingTo: &secondTokens)
        var lengths = (firstTokens.count, secondTokens.count)
        if lengths.0 > budget && lengths.1 > budget && budget % 2 == 1 {
            var all: [Int32] = []
            tokens(of: first, limit: Int.max, appendingTo: &all)
            let firstTotal = all.count
            all.removeAll(keepingCapacity: true)
            tokens(of: second, limit: firstTotal + 1, appendingTo: &all)
            lengths = (firstTotal, all.count)
        }
        let (firstKept, secondKept) = longestFirstLengths(lengths.0, lengths.1, budget: budget)
        let start = ids.count
        var secondSegmentStart = -1
        for item in template.pair {
            if item.typeId != 0 && secondSegmentStart < 0 { secondSegmentStart = ids.count - start }
            switch item.piece {
            case .first: ids.append(contentsOf: firstTokens[0..<firstKept])
            case .second: ids.append(contentsOf: secondTokens[0..<secondKept])
            case .special(let specialIds): ids.append(contentsOf: specialIds)
            }
        }
        return secondSegmentStart >= 0 ? secondSegmentStart : ids.count - start
    }

    /// Appends the tokens of `text` (no template) until at least `limit` are out (or the text ends).
    func tokens(of text: UnsafeBufferPointer<UInt8>, limit: Int, appendingTo ids: inout [Int32]) {
        if limit <= 0 { return }
        // Reading stops once `ids` holds `stop` ids.
        let stop = limit > Int.max - ids.count ? Int.max : ids.count + limit
        if let rawAddedTokens {
            var partIsFirst = true
            rawAddedTokens.split(text) { part in
                switch part {
                case .token(let id):
                    ids.append(id)
                case .text(let range):
                    normalizeAndSplit(UnsafeBufferPointer(rebasing: text[range]), startsText: partIsFirst && range.lowerBound == 0,
                                      stop: stop, ids: &ids)
                }
                partIsFirst = false
                return ids.count < stop
            }
        } else {
            normalizeAndSplit(text, startsText: true, stop: stop, ids: &ids)
        }
    }

    private func normalizeAndSplit(_ part: UnsafeBufferPointer<UInt8>, startsText: Bool, stop: Int,
                                   ids: inout [Int32]) {
        if normalizer.isEmpty {
            splitNormalized(part, startsText: startsText, stop: stop, ids: &ids)
            return
        }
        var normalized: [UInt8] = []
        normalized.reserveCapacity(part.count + part.count / 2 + 8)
        normalizer[0].apply(part, appendingTo: &normalized)
        if normalizer.count > 1 {
            normalized = PipelineTokenizer.normalize(normalized, Array(normalizer.dropFirst()))
        }
        normalized.withUnsafeBufferPointer { splitNormalized($0, startsText: startsText, stop: stop, ids: &ids) }
    }

    private func splitNormalized(_ part: UnsafeBufferPointer<UInt8>, startsText: Bool, stop: Int,
                                 ids: inout [Int32]) {
        guard let normalizedAddedTokens else {
            preTokenize(part, step: 0, startsText: startsText, stop: stop, ids: &ids)
            return
        }
        var isFirst = true
        normalizedAddedTokens.split(part) { piece in
            switch piece {
            case .token(let id):
                ids.append(id)
            case .text(let range):
                preTokenize(UnsafeBufferPointer(rebasing: part[range]), step: 0, startsText: startsText && isFirst && range.lowerBound == 0,
                            stop: stop, ids: &ids)
            }
            isFirst = false
            return ids.count < stop
        }
    }

    /// Runs pre-tokenizer steps `step...` on `piece`, then the model on each word.
    /// `startsText`: the piece begins at the start of the original text (prepend scheme "first").
    private func preTokenize(_ piece: UnsafeBufferPointer<UInt8>, step: Int, startsText: Bool, stop: Int,
                             ids: inout [Int32]) {
        if piece.isEmpty || ids.count >= stop { return }
        guard step < preTokenizer.count else {
            switch model {
            case .bytePair(let bpe): bpe.encodeWord(piece, appendingTo: &ids)
            case .unigram(let unigram): unigram.encodeWord(piece, appendingTo: &ids)
            }
            return
        }
        switch preTokenizer[step] {
        case .whitespaceSplit:
            var index = 0
            var wordStart = -1
            while index < piece.count && ids.count < stop {
                let (value, length) = ByteLevel.scalar(piece, at: index)
                if isWhitespaceValue(value) {
                    if wordStart >= 0 {
                        preTokenize(UnsafeBufferPointer(rebasing: piece[wordStart..<index]), step: step + 1,
                                    startsText: startsText && wordStart == 0, stop: stop, ids: &ids)
                        wordStart = -1
                    }
                } else if wordStart < 0 {
                    wordStart = index
                }
                index += length
            }
            if wordStart >= 0 && ids.count < stop {
                preTokenize(UnsafeBufferPointer(rebasing: piece[wordStart..<piece.count]), step: step + 1,
                            startsText: startsText && wordStart == 0, stop: stop, ids: &ids)
            }

        case .metaspace(let replacement, let scheme, let split):
            // Spaces -> replacement, maybe one in front; then cut before each replacement.
            let capacity = replacement.count * (piece.count + 1)
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: capacity) { buffer in
                var count = 0
                let startsWithReplacement = piece.count >= replacement.count
                    && piece[0] != 0x20 && zip(piece, replacement).allSatisfy { $0 == $1 }
                let startsWithSpace = piece[0] == 0x20
                let prepend: Bool
                switch scheme {
                case .always: prepend = !(startsWithReplacement || startsWithSpace)
                case .first: prepend = startsText && !(startsWithReplacement || startsWithSpace)
                case .never: prepend = false
                }
                if prepend {
                    for byte in replacement { buffer[count] = byte; count += 1 }
                }
                for byte in piece {
                    if byte == 0x20 {
                        for replacementByte in replacement { buffer[count] = replacementByte; count += 1 }
                    } else {
                        buffer[count] = byte
                        count += 1
                    }
                }
                let transformed = UnsafeBufferPointer(rebasing: buffer[0..<count])
                guard split else {
                    preTokenize(transformed, step: step + 1, startsText: startsText, stop: stop, ids: &ids)
                    return
                }
                var pieceStart = 0
                var index = 0
                let first = replacement[0]
                while index < count && ids.count < stop {
                    if transformed[index] == first && index + replacement.count <= count
                        && (1..<replacement.count).allSatisfy({ transformed[index + $0] == replacement[$0] }) {
                        if index > pieceStart {
                            preTokenize(UnsafeBufferPointer(rebasing: transformed[pieceStart..<index]), step: step + 1,
                                        startsText: startsText && pieceStart == 0, stop: stop, ids: &ids)
                        }
                        pieceStart = index
                        index += replacement.count
                    } else {
                        index += 1
                    }
                }
                if pieceStart < count && ids.count < stop {
                    preTokenize(UnsafeBufferPointer(rebasing: transformed[pieceStart..<count]), step: step + 1,
                                startsText: startsText && pieceStart == 0, stop: stop, ids: &ids)
                }
            }

        case .byteLevel(let addPrefixSpace, let useRegex):
            let prefix = addPrefixSpace && piece[0] != 0x20
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: piece.count + 1) { buffer in
                var text = piece
                if prefix {
                    buffer[0] = 0x20
                    _ = UnsafeMutableBufferPointer(rebasing: buffer[1...]).initialize(from: piece)
                    text = UnsafeBufferPointer(rebasing: buffer[0..<(piece.count + 1)])
                }
                guard useRegex else {
                    preTokenize(text, step: step + 1, startsText: startsText, stop: stop, ids: &ids)
                    return
                }
                var start = 0
                while start < text.count && ids.count < stop {
                    let end = ByteLevel.pieceEnd(text, from: start)
                    preTokenize(UnsafeBufferPointer(rebasing: text[start..<end]), step: step + 1,
                                startsText: startsText && start == 0, stop: stop, ids: &ids)
                    start = end
                }
            }
        }
    }
}
