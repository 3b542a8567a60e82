import Foundation

/// BERT's WordPiece tokenizer: the same ids as Hugging Face's `BertTokenizer` (transformers 5,
/// i.e. the Rust `tokenizers` pipeline BertNormalizer + BertPreTokenizer + WordPiece +
/// "[CLS] $A [SEP]") for `tokenizer.encode(text, truncation=True, max_length=maxLength)`, and
/// "[CLS] $A [SEP] $B [SEP]" for pairs (`encodePair`).
///
/// The pipeline runs on UTF-8 bytes in one pass: ASCII bytes go through two 128-entry tables
/// (kind, lowercase), other scalars through `ScalarNormalizer` (cached per scalar); words are
/// built in a stack buffer and split by a byte trie (greedy longest match first). Encoding stops
/// as soon as `maxLength - 2` word pieces are out, so long texts cost what their prefix costs.
///
/// Immutable after init (the scalar cache inside is behind a mutex), so one tokenizer can be
/// shared by threads.
public final class BertTokenizer: Sendable {
    public let vocabulary: Vocabulary
    public let options: NormalizerOptions
    /// "##": marks a word piece that continues a word.
    public let continuationPrefix: String
    /// Longer words (in normalized characters) become one [UNK].
    public let maxInputCharactersPerWord: Int
    public let classifierTokenId: Int32   // [CLS]
    public let separatorTokenId: Int32    // [SEP]
    public let paddingTokenId: Int32      // [PAD]
    public let unknownTokenId: Int32      // [UNK]
    /// Tokens matched literally in the raw text before normalization (HF's special/added tokens),
    /// longest first.
    public let literalTokens: [(token: String, id: Int32)]
    /// A hash of everything that decides the ids: vocabulary, options, special tokens. Two
    /// tokenizers with the same fingerprint give the same ids for every text.
    public let fingerprint: UInt64
    /// The files of the model folder the tokenizer was read from (tokenizer.json, vocab.txt,
    /// tokenizer_config.json, special_tokens_map.json: those present); empty when it was built
    /// from a `Vocabulary`.
    public let tokenizerFiles: [URL]

    let normalizer: ScalarNormalizer
    let trie: WordPieceTrie
    let byteTables: ByteTables
    private let literalTokenBytes: [[UInt8]]

    /// Loads the tokenizer of a Hugging Face model folder.
    ///
    /// The vocabulary comes from `tokenizer.json` when present (its WordPiece model and added
    /// tokens), else from `vocab.txt`. The options come from `tokenizer_config.json` when present
    /// (`do_lower_case`, default true; `strip_accents`, default: same as lowercase;
    /// `tokenize_chinese_chars`, default true; the names of the special tokens), which is what
    /// transformers 5's `BertTokenizer.from_pretrained` does; without it, from the BertNormalizer
    /// of `tokenizer.json`.
    public convenience init(modelDirectory: URL) throws {
        let fileManager = FileManager.default
        var isDirectory: ObjCBool = false
        guard fileManager.fileExists(atPath: modelDirectory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw DataError("\(modelDirectory.path): no such model folder (expected a Hugging Face folder with vocab.txt or tokenizer.json)")
        }
        let configURL = modelDirectory.appendingPathComponent("tokenizer_config.json")
        let tokenizerJSONURL = modelDirectory.appendingPathComponent("tokenizer.json")
        let vocabURL = modelDirectory.appendingPathComponent("vocab.txt")
        let config: TokenizerConfig? = fileManager.fileExists(atPath: configURL.path)
            ? try TokenizerConfig(url: configURL) : nil

        if fileManager.fileExists(atPath: tokenizerJSONURL.path) {
            let file = try TokenizerJSON(url: tokenizerJSONURL)
            let options = config?.options ?? file.options
            let specialNames = config ?? TokenizerConfig()
            try self.init(vocabulary: file.vocabulary, options: options,
                          literalTokens: file.addedTokens,
                          unknownToken: file.unknownToken,
                          classifierToken: file.classifierToken ?? specialNames.classifierToken,
                          separatorToken: file.separatorToken ?? specialNames.separatorToken,
                          paddingToken: specialNames.paddingToken,
                          continuationPrefix: file.continuationPrefix,
                          maxInputCharactersPerWord: file.maxInputCharactersPerWord,
                          source: tokenizerJSONURL.path, files: existingTokenizerFiles(in: modelDirectory))
        } else if fileManager.fileExists(atPath: vocabURL.path) {
            let vocabulary = try Vocabulary(vocabFile: vocabURL)
            let config = config ?? TokenizerConfig()
            var literal: [(String, Int32)] = []
            for name in config.specialTokenNames {
                if let id = vocabulary.ids[name], !literal.contains(where: { $0.0 == name }) {
                    literal.append((name, id))
                }
            }
            for (name, id) in config.addedTokens where !literal.contains(where: { $0.0 == name }) {
                literal.append((name, id))
            }
            try self.init(vocabulary: vocabulary, options: config.options, literalTokens: literal,
                          unknownToken: config.unknownToken, classifierToken: config.classifierToken,
                          separatorToken: config.separatorToken, paddingToken: config.paddingToken,
                          source: vocabURL.path, files: existingTokenizerFiles(in: modelDirectory))
        } else {
            throw DataError("\(modelDirectory.path): no vocab.txt or tokenizer.json in the model folder")
        }
    }

    public init(vocabulary: Vocabulary, options: NormalizerOptions = NormalizerOptions(),
                literalTokens: [(String, Int32)] = [],
                unknownToken: String = "[UNK]", classifierToken: String = "[CLS]",
                separatorToken: String = "[SEP]", paddingToken: String = "[PAD]",
                continuationPrefix: String = "##", maxInputCharactersPerWord: Int = 100,
                source: String = "vocabulary", files: [URL] = []) throws {
        func id(_ token: String, _ role: String) throws -> Int32 {
            if let id = vocabulary.ids[token] { return id }
            if let literal = literalTokens.first(where: { $0.0 == token }) { return literal.1 }
            throw DataError("\(source): the \(role) token \"\(token)\" is not in the vocabulary")
        }
        self.vocabulary = vocabulary
        self.options = options
        self.tokenizerFiles = files
        self.continuationPrefix = continuationPrefix
        self.maxInputCharactersPerWord = maxInputCharactersPerWord
        unknownTokenId = try id(unknownToken, "unknown")
        classifierTokenId = try id(classifierToken, "classifier")
        separatorTokenId = try id(separatorToken, "separator")
        paddingTokenId = try id(paddingToken, "padding")
        let literal = literalTokens.filter { !$0.0.isEmpty }
            .sorted { ($0.0.utf8.count, $1.0) > ($1.0.utf8.count, $0.0) }  // longest first, then by name
        self.literalTokens = literal.map { (token: $0.0, id: $0.1) }
        literalTokenBytes = literal.map { Array($0.0.utf8) }
        normalizer = ScalarNormalizer(options: options)
        let trie = WordPieceTrie(vocabulary: vocabulary, continuationPrefix: continuationPrefix)
        self.trie = trie
        let tables = ByteTables()
        for byte in 0..<256 {
            if byte < 128 {
                tables.actions[byte] = normalizer.asciiKinds[byte]
                tables.normalized[byte] = normalizer.asciiNormalized[byte]
                let id = [UInt8(byte)].withUnsafeBufferPointer { trie.lookup($0, from: 0) }
                tables.characterIds[byte] = id >= 0 ? id : unknownTokenId
            } else {
                tables.actions[byte] = ByteTables.nonASCII
            }
        }
        for bytes in literalTokenBytes { tables.actions[Int(bytes[0])] |= ByteTables.literalStart }
        byteTables = tables

        var hasher = ContentHash64(seed: 0x6265_7274_2D77_7063)  // "bert-wpc"
        hasher.update("bert-wordpiece v1\n\(options.description)\n\(continuationPrefix)\n\(maxInputCharactersPerWord)\n")
        for value in [unknownTokenId, classifierTokenId, separatorTokenId, paddingTokenId] {
            hasher.update(UInt64(UInt32(bitPattern: value)))
        }
        for (token, id) in self.literalTokens {
            hasher.update("\(token)\t\(id)\n")
        }
        for token in vocabulary.tokens {
            hasher.update(token)
            hasher.update([0x0A])
        }
        fingerprint = hasher.finalize()
    }

    // MARK: - Encoding

    // (`encode(_:maxLength:) -> [Int32]` and `encodePair(_:_:maxLength:)` on Strings come from
    // TextTokenizer.)

    /// Appends the ids of `text` to `ids`; no allocation when `ids` has room for `maxLength` more.
    public func encode(_ text: String, maxLength: Int, appendingTo ids: inout [Int32]) {
        var text = text
        text.withUTF8 { encode(utf8: $0, maxLength: maxLength, appendingTo: &ids) }
    }

    /// Appends the ids of UTF-8 `text` to `ids`. Invalid UTF-8 bytes are treated as U+FFFD
    /// (which the normalizer removes). Requires `maxLength >= 2`.
    public func encode(utf8 text: UnsafeBufferPointer<UInt8>, maxLength: Int, appendingTo ids: inout [Int32]) {
        precondition(maxLength >= 2, "maxLength must leave room for [CLS] and [SEP]")
        ids.append(classifierTokenId)
        wordPieces(of: text, keeping: maxLength - 2, readingUpTo: maxLength - 2, appendingTo: &ids)
        ids.append(separatorTokenId)
    }

    // MARK: - Text pairs

    /// Appends `[CLS] A [SEP] B [SEP]` (at most `maxLength` ids, `maxLength >= 3`) to `ids` and
    /// returns where B's segment starts, counted from the [CLS]: token type 0 before it, 1 from
    /// it on (B's word pieces and the last [SEP]). No allocation when `ids` has room for
    /// `maxLength` more (plus one).
    ///
    /// Truncation is HF's `longest_first` as the Rust tokenizers library does it (which is what
    /// transformers 5's BertTokenizer runs): with a budget of `maxLength - 3` word pieces, nothing
    /// is cut when both fit; else when the shorter text fits in half the budget it is kept whole
    /// and the longer gets the rest; else each gets half, the longer one (B on a tie) the odd
    /// piece. (The Python tokenizer of transformers 4 cuts one piece at a time and can differ by
    /// one piece when both are long.)
    @discardableResult
    public func encodePair(utf8 first: UnsafeBufferPointer<UInt8>, utf8 second: UnsafeBufferPointer<UInt8>, maxLength: Int,
                           appendingTo ids: inout [Int32]) -> Int {
        precondition(maxLength >= 3, "maxLength must leave room for [CLS], [SEP] and [SEP]")
        let budget = maxLength - 3
        let start = ids.count
        ids.append(classifierTokenId)
        // Each text is read until it has one piece more than the budget: enough to know whether
        // it fits and which text is the longer, except when both are over (below).
        let firstCount = wordPieces(of: first, keeping: budget, readingUpTo: budget + 1, appendingTo: &ids)
        let firstKept = min(firstCount, budget)
        let secondCount = wordPieces(of: second, keeping: budget, readingUpTo: budget + 1, appendingTo: &ids)
        let secondKept = min(secondCount, budget)
        var lengths = (firstCount, secondCount)
        if firstCount > budget && secondCount > budget && budget % 2 == 1 {
            // Both are over: each gets half the budget and the odd piece goes to the longer, so
            // count them properly (only as far as telling which is longer).
            var none: [Int32] = []
            let firstTotal = wordPieces(of: first, keeping: 0, readingUpTo: Int.max, appendingTo: &none)
            let secondTotal = wordPieces(of: second, keeping: 0, readingUpTo: firstTotal + 1, appendingTo: &none)
            lengths = (firstTotal, secondTotal)
        }
        let (firstLength, secondLength) = BertTokenizer.longestFirst(lengths.0, lengths.1, budget: budget)
        // [CLS] A(firstKept) B(secondKept) -> [CLS] A(firstLength) [SEP] B(secondLength) [SEP]
        ids.removeLast(secondKept - secondLength)
        ids.replaceSubrange((start + 1 + firstLength)..<(start + 1 + firstKept), with: CollectionOfOne(separatorTokenId))
        ids.append(separatorTokenId)
        return 2 + firstLength
    }

    /// How many word pieces of each text `longest_first` keeps within `budget`, given their
    /// lengths (`longestFirstLengths`, shared by every tokenizer).
    static func longestFirst(_ first: Int, _ second: Int, budget: Int) -> (Int, Int) {
        longestFirstLengths(first, second, budget: budget)
    }

    /// Appends the first `keep` word pieces of `text` to `ids` and returns how many it found
    /// before it stopped reading, which it does once it has `readingUpTo` of them (the count may
    /// end a few pieces over that, inside the last word).
    @discardableResult
    func wordPieces(of text: UnsafeBufferPointer<UInt8>, keeping keep: Int, readingUpTo limit: Int,
                    appendingTo ids: inout [Int32]) -> Int {
        let wordCapacity = maxInputCharactersPerWord * 4 + 8
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: wordCapacity) { word in
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: wordCapacity) { pieces in
                withUnsafeTemporaryAllocation(of: NormalizedScalar.self, capacity: 32) { expansion in
                    var encoder = Encoder(tokenizer: self, word: word, pieces: pieces, expansion: expansion,
                                          keep: keep, limit: limit)
                    encoder.run(text, ids: &ids)
                    return encoder.emitted
                }
            }
        }
    }

    /// The state of one `encode` call: the word being built and the pieces budget.
    private struct Encoder {
        // unowned(unsafe) and raw-pointer views: the tokenizer outlives the encode call, and the
        // loop pays no reference counting.
        unowned(unsafe) let tokenizer: BertTokenizer
        let trie: WordPieceTrieView
        let actions: UnsafeMutablePointer<UInt8>
        let normalized: UnsafeMutablePointer<UInt8>
        let characterIds: UnsafeMutablePointer<Int32>
        let unknownTokenId: Int32
        let word: UnsafeMutableBufferPointer<UInt8>        // normalized bytes of the current word
        let pieces: UnsafeMutableBufferPointer<Int32>      // word pieces of the current word
        let expansion: UnsafeMutableBufferPointer<NormalizedScalar>
        var wordByteCount = 0
        var wordCharacterCount = 0                         // normalized scalars
        var emitted = 0                                    // word pieces found so far
        let keep: Int                                      // ... of which the first `keep` are appended
        let limit: Int                                     // stop reading once `limit` are found
        let maxCharacters: Int

        init(tokenizer: BertTokenizer, word: UnsafeMutableBufferPointer<UInt8>,
             pieces: UnsafeMutableBufferPointer<Int32>, expansion: UnsafeMutableBufferPointer<NormalizedScalar>,
             keep: Int, limit: Int) {
            self.tokenizer = tokenizer
            self.trie = tokenizer.trie.view
            self.actions = tokenizer.byteTables.actions
            self.normalized = tokenizer.byteTables.normalized
            self.characterIds = tokenizer.byteTables.characterIds
            self.unknownTokenId = tokenizer.unknownTokenId
            self.word = word
            self.pieces = pieces
            self.expansion = expansion
            self.keep = keep
            self.limit = limit
            self.maxCharacters = tokenizer.maxInputCharactersPerWord
        }

        @inline(__always)
        mutating func emit(_ id: Int32, _ ids: inout [Int32]) {
            if emitted < keep { ids.append(id) }
            emitted += 1
        }

        @inline(__always)
        mutating func appendToWord(_ byte: UInt8) {
            if wordCharacterCount < maxCharacters {
                word[wordByteCount] = byte
                wordByteCount += 1
            }
            wordCharacterCount += 1
        }

        @inline(__always)
        mutating func appendScalarToWord(_ value: UInt32) {
            if wordCharacterCount < maxCharacters {
                wordByteCount += writeUTF8(value, to: word.baseAddress! + wordByteCount)
            }
            wordCharacterCount += 1
        }

        /// WordPiece of the current word: greedy longest match; any unmatched rest makes the
        /// whole word one [UNK] (as in HF).
        mutating func flushWord(_ ids: inout [Int32]) {
            guard wordCharacterCount > 0 else { return }
            defer {
                wordByteCount = 0
                wordCharacterCount = 0
            }
            if wordCharacterCount > maxCharacters {
                emit(unknownTokenId, &ids)
                return
            }
            let bytes = UnsafePointer(word.baseAddress!)
            let length = wordByteCount
            // Most words are one token: when the whole word is a token, greedy matching takes it.
            let whole = trie.wholeWordId(bytes, length)
            if whole >= 0 {
                emit(whole, &ids)
                return
            }
            let tokenIdOfNode = trie.tokenIdOfNode
            var pieceCount = 0
            var start = 0
            while start < length {
                let dense = start == 0 ? trie.wordStartChildren : trie.continuationChildren
                var node = dense[Int(bytes[start])]
                var bestEnd = -1
                var bestId: Int32 = -1
                var position = start + 1
                while node >= 0 {
                    let id = tokenIdOfNode[Int(node)]
                    if id >= 0 {
                        bestEnd = position
                        bestId = id
                    }
                    if position == length { break }
                    node = trie.child(node, bytes[position])
                    position += 1
                }
                if bestId < 0 {
                    pieceCount = -1
                    break
                }
                pieces[pieceCount] = bestId
                pieceCount += 1
                start = bestEnd
            }
            if pieceCount < 0 {
                emit(unknownTokenId, &ids)
                return
            }
            for index in 0..<pieceCount {
                emit(pieces[index], &ids)
            }
        }

        /// A character that is a word of its own (punctuation).
        mutating func emitIsolated(_ value: UInt32, _ ids: inout [Int32]) {
            if value < 0x80 {
                emit(characterIds[Int(value)], &ids)
                return
            }
            var buffer: (UInt32, UInt32) = (0, 0)  // 8 bytes of room for one UTF-8 scalar
            let id = withUnsafeMutableBytes(of: &buffer) { raw -> Int32 in
                let base = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
                let count = writeUTF8(value, to: base)
                return tokenizer.trie.lookup(UnsafeBufferPointer(start: base, count: count), from: 0)
            }
            emit(id >= 0 ? id : unknownTokenId, &ids)
        }

        /// Length of the literal (special) token starting at `index`, with its id, or nil.
        @inline(__always)
        func literalToken(at index: Int, in text: UnsafeBufferPointer<UInt8>) -> (length: Int, id: Int32)? {
            for (tokenIndex, bytes) in tokenizer.literalTokenBytes.enumerated() {
                let length = bytes.count
                if index + length > text.count { continue }
                var matches = true
                for offset in 0..<length where text[index + offset] != bytes[offset] {
                    matches = false
                    break
                }
                if matches { return (length, tokenizer.literalTokens[tokenIndex].id) }
            }
            return nil
        }

        mutating func run(_ text: UnsafeBufferPointer<UInt8>, ids: inout [Int32]) {
            let count = text.count
            var index = 0
            while index < count && emitted < limit {
                let byte = text[index]
                var action = actions[Int(byte)]
                if action >= ByteTables.literalStart {
                    if let literal = literalToken(at: index, in: text) {
                        flushWord(&ids)
                        emit(literal.id, &ids)
                        index += literal.length
                        continue
                    }
                    action &= ~ByteTables.literalStart
                }
                switch action {
                case ASCIIKind.word:
                    appendToWord(normalized[Int(byte)])
                    index += 1
                    continue
                case ASCIIKind.whitespace:
                    flushWord(&ids)
                    index += 1
                    continue
                case ASCIIKind.isolated:
                    flushWord(&ids)
                    emit(characterIds[Int(byte)], &ids)
                    index += 1
                    continue
                case ASCIIKind.removed:
                    index += 1
                    continue
                default:
                    break  // non-ASCII
                }
                let (value, length) = decodeUTF8(text, at: index)
                index += length
                let expandedCount = tokenizer.normalizer.normalize(value, into: expansion)
                for position in 0..<expandedCount {
                    let packed = expansion[position]
                    switch scalarKind(packed) {
                    case PieceKind.normal.rawValue:
                        appendScalarToWord(scalarValue(packed))
                    case PieceKind.isolated.rawValue:
                        flushWord(&ids)
                        emitIsolated(scalarValue(packed), &ids)
                    default:
                        flushWord(&ids)
                    }
                }
            }
            flushWord(&ids)
        }
    }
}

/// Per-byte tables of the encoding loop, in fixed memory (no bounds checks, no reference
/// counting in the loop). Written once by the tokenizer's init, read-only afterwards (hence
/// @unchecked Sendable).
final class ByteTables: @unchecked Sendable {
    static let nonASCII: UInt8 = 4
    static let literalStart: UInt8 = 0x80
    /// For each byte: an `ASCIIKind` for ASCII bytes, `nonASCII` otherwise; `| literalStart`
    /// when a literal (special) token starts with this byte.                          (256)
    let actions = UnsafeMutablePointer<UInt8>.allocate(capacity: 256)
    /// Each ASCII byte after normalization (lowercased when the tokenizer lowercases). (128)
    let normalized = UnsafeMutablePointer<UInt8>.allocate(capacity: 128)
    /// Id of each ASCII character as a word of its own (punctuation), or [UNK].       (128)
    let characterIds = UnsafeMutablePointer<Int32>.allocate(capacity: 128)

    init() {
        actions.initialize(repeating: 0, count: 256)
        normalized.initialize(repeating: 0, count: 128)
        characterIds.initialize(repeating: 0, count: 128)
    }

    deinit {
        actions.deallocate()
        normalized.deallocate()
        characterIds.deallocate()
    }
}

/// Decodes the scalar starting at `index` (a non-ASCII lead byte). Invalid or truncated
/// sequences give U+FFFD and consume one byte.
@inline(__always)
func decodeUTF8(_ text: UnsafeBufferPointer<UInt8>, at index: Int) -> (value: UInt32, length: Int) {
    let count = text.count
    let lead = UInt32(text[index])
    @inline(__always) func continuation(_ offset: Int, _ low: UInt8 = 0x80, _ high: UInt8 = 0xBF) -> UInt32? {
        guard index + offset < count else { return nil }
        let byte = text[index + offset]
        guard byte >= low && byte <= high else { return nil }
        return UInt32(byte & 0x3F)
    }
    switch lead {
    case 0xC2...0xDF:
        if let b1 = continuation(1) { return (((lead & 0x1F) << 6) | b1, 2) }
    case 0xE0...0xEF:
        let low: UInt8 = lead == 0xE0 ? 0xA0 : 0x80
        let high: UInt8 = lead == 0xED ? 0x9F : 0xBF
        if let b1 = continuation(1, low, high), let b2 = continuation(2) {
            return (((lead & 0x0F) << 12) | (b1 << 6) | b2, 3)
        }
    case 0xF0...0xF4:
        let low: UInt8 = lead == 0xF0 ? 0x90 : 0x80
        let high: UInt8 = lead == 0xF4 ? 0x8F : 0xBF
        if let b1 = continuation(1, low, high), let b2 = continuation(2), let b3 = continuation(3) {
            return (((lead & 0x07) << 18) | (b1 << 12) | (b2 << 6) | b3, 4)
        }
    default:
        break
    }
    return (0xFFFD, 1)
}

/// Writes the UTF-8 form of a scalar value (at most 4 bytes); returns the byte count.
@inline(__always)
func writeUTF8(_ value: UInt32, to output: UnsafeMutablePointer<UInt8>) -> Int {
    if value < 0x80 {
        output[0] = UInt8(value)
        return 1
    } else if value < 0x800 {
        output[0] = UInt8(0xC0 | (value >> 6))
        output[1] = UInt8(0x80 | (value & 0x3F))
        return 2
    } else if value < 0x10000 {
        output[0] = UInt8(0xE0 | (value >> 12))
        output[1] = UInt8(0x80 | ((value >> 6) & 0x3F))
        output[2] = UInt8(0x80 | (value & 0x3F))
        return 3
    } else {
        output[0] = UInt8(0xF0 | (value >> 18))
        output[1] = UInt8(0x80 | ((value >> 12) & 0x3F))
        output[2] = UInt8(0x80 | ((value >> 6) & 0x3F))
        output[3] = UInt8(0x80 | (value & 0x3F))
        return 4
    }
}
