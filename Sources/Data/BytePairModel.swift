import Foundation

/// A BPE model as Hugging Face's tokenizers runs it (`models.BPE`): a word starts as one symbol
/// per character (looked up in the vocabulary; unknown characters become byte-fallback tokens,
/// the unknown token or nothing), then the adjacent pair of lowest merge rank is merged, the
/// leftmost first, until no pair has a merge.
///
/// With a byte-level pre-tokenizer (RoBERTa) the characters are the byte-level characters of the
/// word's bytes, so the initial symbols come from a 256-entry table and words are cached by their
/// raw bytes.
final class BytePairModel: Sendable {
    /// Token of each id ("" where no token has the id).
    let tokens: [String]
    /// Token bytes -> id (by bytes: Swift's String equality would merge canonically equivalent
    /// tokens).
    let vocabulary: [[UInt8]: Int32]
    /// Merges in rank order, as (left id, right id, merged id).
    let merges: [(left: Int32, right: Int32, merged: Int32)]
    let unknownId: Int32?
    let fuseUnknown: Bool
    let byteFallback: Bool
    let ignoreMerges: Bool
    let continuingSubwordPrefix: String
    let endOfWordSuffix: String
    /// Words are byte-level: each byte is one character (`ByteLevel.byteLevelCharacters`).
    let byteLevel: Bool

    let mergeTable: MergeTable
    /// Id of the byte-level character of each byte, or -1.                          (256)
    let byteSymbolIds: [Int32]
    /// Id of each one-character token, for words that are not byte-level.
    let characterIds: [UInt32: Int32]
    /// Id of each byte-fallback token <0xXX>, or -1.                                 (256)
    let byteFallbackIds: [Int32]
    let cache = WordCache()

    /// The longest `continuing_subword_prefix` or `end_of_word_suffix` read (bytes).
    static let affixLimit = 64

    /// `merges`: pairs of tokens in rank order. Throws when a merge names a token that is not in
    /// the vocabulary or makes one that is not (as tokenizers refuses such a file).
    /// `vocabulary`: (token, id) in file order; a token given twice keeps its later id.
    init(vocabulary: [(String, Int32)], merges: [(String, String)], unknownToken: String?, fuseUnknown: Bool,
         byteFallback: Bool, ignoreMerges: Bool, continuingSubwordPrefix: String, endOfWordSuffix: String,
         byteLevel: Bool, source: String) throws {
        guard !vocabulary.isEmpty else { throw DataError("\(source): the BPE model has an empty vocabulary") }
        // With byte fallback every character can become one symbol per byte of prefix + character
        // + suffix: a long prefix would make each word's symbols gigabytes.
        for (name, value) in [("continuing_subword_prefix", continuingSubwordPrefix), ("end_of_word_suffix", endOfWordSuffix)]
        where value.utf8.count > Self.affixLimit {
            throw DataError("\(source): the \(name) is \(value.utf8.count) bytes long; bert-dist reads up to \(Self.affixLimit) (\"##\" or \"</w>\" in real files)")
        }
        // Ids index a dense table: refuse a file whose ids leave most of it empty (a damaged id
        // would otherwise ask for gigabytes).
        let largest = Int(vocabulary.map(\.1).max() ?? -1)
        guard largest < 2 * vocabulary.count + 65_536 else {
            throw DataError("\(source): a vocabulary id is \(largest) for \(vocabulary.count) tokens; the ids of a vocabulary run from 0 to about its size")
        }
        var tokens = [String](repeating: "", count: largest + 1)
        for (token, id) in vocabulary {
            guard id >= 0 else { throw DataError("\(source): vocabulary entry \"\(token.prefix(40))\" has a negative id") }
            tokens[Int(id)] = token
        }
        self.tokens = tokens
        var byBytes: [[UInt8]: Int32] = [:]
        byBytes.reserveCapacity(vocabulary.count)
        for (token, id) in vocabulary { byBytes[Array(token.utf8)] = id }
        self.vocabulary = byBytes
        func lookup(_ token: some StringProtocol) -> Int32? { byBytes[Array(token.utf8)] }
        var resolved: [(left: Int32, right: Int32, merged: Int32)] = []
        resolved.reserveCapacity(merges.count)
        for (rank, (left, right)) in merges.enumerated() {
            guard let leftId = lookup(left), let rightId = lookup(right) else {
                throw DataError("\(source): merge \(rank + 1) (\"\(left.prefix(40))\" \"\(right.prefix(40))\") names a token that is not in the vocabulary")
            }
            // (tokenizers drops the prefix's byte length from the right token, whatever it holds)
            let prefixLength = continuingSubwordPrefix.utf8.count
            guard right.utf8.count >= prefixLength else {
                throw DataError("\(source): merge \(rank + 1) has a right token shorter than the continuing_subword_prefix")
            }
            let merged = Array(left.utf8) + Array(right.utf8).dropFirst(prefixLength)
            guard let mergedId = byBytes[merged] else {
                throw DataError("\(source): merge \(rank + 1) makes \"\(String(decoding: merged, as: UTF8.self).prefix(40))\", which is not in the vocabulary")
            }
            resolved.append((leftId, rightId, mergedId))
        }
        self.merges = resolved
        mergeTable = MergeTable(resolved)
        if let unknownToken {
            guard let id = lookup(unknownToken) else {
                throw DataError("\(source): the unknown token \"\(unknownToken)\" is not in the vocabulary")
            }
            unknownId = id
        } else {
            unknownId = nil
        }
        self.fuseUnknown = fuseUnknown
        self.byteFallback = byteFallback
        self.ignoreMerges = ignoreMerges
        self.continuingSubwordPrefix = continuingSubwordPrefix
        self.endOfWordSuffix = endOfWordSuffix
        self.byteLevel = byteLevel
        byteSymbolIds = (0..<256).map { byte in
            lookup(String(Unicode.Scalar(ByteLevel.byteLevelCharacters[byte])!)) ?? -1
        }
        var characterIds: [UInt32: Int32] = [:]
        for (token, id) in vocabulary where token.unicodeScalars.count == 1 {
            characterIds[token.unicodeScalars.first!.value] = id
        }
        self.characterIds = characterIds
        byteFallbackIds = (0..<256).map { byte in
            lookup(String(format: "<0x%02X>", byte)) ?? -1
        }
    }

    /// The id of a token, compared byte by byte.
    func id(of token: String) -> Int32? { vocabulary[Array(token.utf8)] }

    /// Appends the ids of one word (a piece of the pre-tokenizer; byte-level or plain UTF-8).
    func encodeWord(_ word: UnsafeBufferPointer<UInt8>, appendingTo ids: inout [Int32]) {
        if word.isEmpty { return }
        cache.encode(word, appendingTo: &ids) { ids in
            if ignoreMerges, let id = wholeWordId(word) {
                ids.append(id)
                return
            }
            // At most one symbol per character (a known one, or one unknown), more with byte
            // fallback: <0xXX> for each byte of the looked-up string (prefix and suffix included,
            // 2 bytes per byte-level character).
            let symbolsPerCharacter = byteFallback ? 2 + continuingSubwordPrefix.utf8.count + endOfWordSuffix.utf8.count : 1
            let capacity = word.count * symbolsPerCharacter + 1
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: capacity) { symbols in
                let count = initialSymbols(word, into: symbols)
                mergeAll(symbols: symbols, count: count, appendingTo: &ids)
            }
        }
    }

    /// The vocabulary id of the whole word as one token (for `ignore_merges`).
    private func wholeWordId(_ word: UnsafeBufferPointer<UInt8>) -> Int32? {
        if byteLevel {
            var string = ""
            for byte in word { string.unicodeScalars.append(Unicode.Scalar(ByteLevel.byteLevelCharacters[Int(byte)])!) }
            return vocabulary[Array(string.utf8)]
        }
        return vocabulary[Array(word)]
    }

    /// Writes the symbols a word starts as (tokenizers' merge_word before merging) and returns
    /// their count.
    private func initialSymbols(_ word: UnsafeBufferPointer<UInt8>, into symbols: UnsafeMutableBufferPointer<Int32>) -> Int {
        var count = 0
        var pendingUnknown = false   // an unknown symbol not yet written (fused with the next ones)
        func flushUnknown() {
            if pendingUnknown, let unknownId {
                symbols[count] = unknownId
                count += 1
            }
            pendingUnknown = false
        }
        let simple = continuingSubwordPrefix.isEmpty && endOfWordSuffix.isEmpty
        var index = 0
        while index < word.count {
            // One character: one byte (byte-level) or one UTF-8 scalar.
            let length = byteLevel ? 1 : ByteLevel.scalar(word, at: index).length
            let isFirst = index == 0, isLast = index + length >= word.count
            var id: Int32 = -1
            var lookup: String? = nil   // the string looked up, when not the simple case
            if simple {
                if byteLevel {
                    id = byteSymbolIds[Int(word[index])]
                } else {
                    id = characterIds[ByteLevel.scalar(word, at: index).value] ?? -1
                }
            } else {
                var string = isFirst ? "" : continuingSubwordPrefix
                if byteLevel {
                    string.unicodeScalars.append(Unicode.Scalar(ByteLevel.byteLevelCharacters[Int(word[index])])!)
                } else {
                    string += String(decoding: UnsafeBufferPointer(rebasing: word[index..<(index + length)]), as: UTF8.self)
                }
                if isLast { string += endOfWordSuffix }
                id = vocabulary[Array(string.utf8)] ?? -1
                lookup = string
            }
            if id >= 0 {
                flushUnknown()
                symbols[count] = id
                count += 1
                index += length
                continue
            }
            if byteFallback {
                // <0xXX> for every byte of what was looked up, when all of them exist.
                let bytes = lookup.map { Array($0.utf8) } ?? characterBytes(word, index, length)
                if bytes.allSatisfy({ byteFallbackIds[Int($0)] >= 0 }) {
                    // (tokenizers adds these without flushing a pending unknown first)
                    for byte in bytes {
                        symbols[count] = byteFallbackIds[Int(byte)]
                        count += 1
                    }
                    index += length
                    continue
                }
            }
            if unknownId != nil {
                if pendingUnknown && !fuseUnknown { flushUnknown() }
                pendingUnknown = true
            }
            index += length
        }
        flushUnknown()
        return count
    }

    /// The bytes of the character at `index`: the byte-level character's UTF-8 for byte-level
    /// words (what tokenizers looks up), the scalar's own bytes otherwise.
    private func characterBytes(_ word: UnsafeBufferPointer<UInt8>, _ index: Int, _ length: Int) -> [UInt8] {
        if byteLevel {
            return Array(String(Unicode.Scalar(ByteLevel.byteLevelCharacters[Int(word[index])])!).utf8)
        }
        return Array(word[index..<(index + length)])
    }

    /// tokenizers' Word::merge_all without dropout: a heap of (rank, position) pairs; the pair
    /// of lowest rank (then leftmost) is merged, its new neighbours pushed; stale entries skipped.
    private func mergeAll(symbols: UnsafeMutableBufferPointer<Int32>, count: Int, appendingTo ids: inout [Int32]) {
        if count == 0 { return }
        if count == 1 {
            ids.append(symbols[0])
            return
        }
        withUnsafeTemporaryAllocation(of: Int32.self, capacity: 2 * count) { links in
            withUnsafeTemporaryAllocation(of: MergeCandidate.self, capacity: 3 * count + 1) { heapStorage in
                let previous = links.baseAddress!
                let next = links.baseAddress! + count
                for index in 0..<count {
                    previous[index] = Int32(index - 1)
                    next[index] = index + 1 < count ? Int32(index + 1) : -1
                }
                var heap = MergeHeap(storage: heapStorage.baseAddress!)
                for index in 0..<(count - 1) {
                    if let merge = mergeTable.find(symbols[index], symbols[index + 1]) {
                        heap.push(MergeCandidate(rank: merge.rank, position: Int32(index), merged: merge.merged))
                    }
                }
                // A merged-away symbol has id -1.
                while let top = heap.pop() {
                    let position = Int(top.position)
                    if symbols[position] < 0 { continue }
                    let right = Int(next[position])
                    if right < 0 { continue }
                    guard let current = mergeTable.find(symbols[position], symbols[right]), current.merged == top.merged else {
                        continue  // stale
                    }
                    symbols[position] = top.merged
                    symbols[right] = -1
                    let afterRight = next[right]
                    next[position] = afterRight
                    if afterRight >= 0 { previous[Int(afterRight)] = Int32(position) }
                    let before = previous[position]
                    if before >= 0, let merge = mergeTable.find(symbols[Int(before)], top.merged) {
                        heap.push(MergeCandidate(rank: merge.rank, position: before, merged: merge.merged))
                    }
                    if afterRight >= 0, let merge = mergeTable.find(top.merged, symbols[Int(afterRight)]) {
                        heap.push(MergeCandidate(rank: merge.rank, position: Int32(position), merged: merge.merged))
                    }
                }
                var index = 0
                while index >= 0 && index < count {
                    ids.append(symbols[index])
                    index = Int(next[index])
                }
            }
        }
    }
}

struct MergeCandidate {
    var rank: UInt32
    var position: Int32
    var merged: Int32

    @inline(__always)
    func precedes(_ other: MergeCandidate) -> Bool {
        rank != other.rank ? rank < other.rank : position < other.position
    }
}

/// A binary min-heap of merge candidates in caller-provided memory (room for every push).
struct MergeHeap {
    let storage: UnsafeMutablePointer<MergeCandidate>
    var count = 0

    mutating func push(_ candidate: MergeCandidate) {
        var index = count
        count += 1
        while index > 0 {
            let parent = (index - 1) / 2
            if !candidate.precedes(storage[parent]) { break }
            storage[index] = storage[parent]
            index = parent
        }
        storage[index] = candidate
    }

    mutating func pop() -> MergeCandidate? {
        if count == 0 { return nil }
        let top = storage[0]
        count -= 1
        if count > 0 {
            let last = storage[count]
            var index = 0
            while true {
                let left = 2 * index + 1
                if left >= count { break }
                var child = left
                if left + 1 < count && storage[left + 1].precedes(storage[left]) { child = left + 1 }
                if !storage[child].precedes(last) { break }
                storage[index] = storage[child]
                index = child
            }
            storage[index] = last
        }
        return top
    }
}

/// (left id, right id) -> (rank, merged id), open addressing. A pair listed twice keeps its
/// later rank, as tokenizers' hash map does.
struct MergeTable: Sendable {
    private var keys: [UInt64]       // left << 32 | right; UInt64.max = empty
    private var ranks: [UInt32]
    private var mergedIds: [Int32]
    private let mask: Int

    init(_ merges: [(left: Int32, right: Int32, merged: Int32)]) {
        var capacity = 16
        while capacity < 2 * merges.count + 2 { capacity *= 2 }
        mask = capacity - 1
        keys = [UInt64](repeating: .max, count: capacity)
        ranks = [UInt32](repeating: 0, count: capacity)
        mergedIds = [Int32](repeating: -1, count: capacity)
        for (rank, merge) in merges.enumerated() {
            let key = MergeTable.key(merge.left, merge.right)
            var index = MergeTable.slot(key, mask)
            while keys[index] != .max && keys[index] != key { index = (index + 1) & mask }
            keys[index] = key
            ranks[index] = UInt32(rank)
            mergedIds[index] = merge.merged
        }
    }

    @inline(__always)
    static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }

    @inline(__always)
    static func slot(_ key: UInt64, _ mask: Int) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    @inline(__always)
    func find(_ left: Int32, _ right: Int32) -> (rank: UInt32, merged: Int32)? {
        let key = MergeTable.key(left, right)
        var index = MergeTable.slot(key, mask)
        return keys.withUnsafeBufferPointer { keys in
            while true {
                let found = keys[index]
                if found == key { return (ranks[index], mergedIds[index]) }
                if found == .max { return nil }
                index = (index + 1) & mask
            }
        }
    }
}
