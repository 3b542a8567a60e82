import Foundation

/// Token strings and ids, as read from `vocab.txt` or from the WordPiece model of `tokenizer.json`.
public struct Vocabulary: Sendable {
    /// Token of each id; an id nobody names (possible in tokenizer.json) is "".
    public let tokens: [String]
    /// Token -> id. A token listed twice in vocab.txt keeps the later id, as in HF.
    public let ids: [String: Int32]

    public var count: Int { tokens.count }

    public init(tokens: [String]) {
        self.tokens = tokens
        var ids = [String: Int32](minimumCapacity: tokens.count)
        for (id, token) in tokens.enumerated() {
            ids[token] = Int32(id)
        }
        self.ids = ids
    }

    public init(ids: [String: Int32]) throws {
        if let (token, id) = ids.first(where: { $0.value < 0 }) {
            throw DataError("vocabulary: token \"\(token)\" has a negative id \(id)")
        }
        // Ids index a dense table: refuse ids that would leave most of it empty (a damaged id
        // would otherwise ask for gigabytes).
        let largest = Int(ids.values.max() ?? -1)
        guard largest < 2 * ids.count + 65_536 else {
            throw DataError("vocabulary: an id is \(largest) for \(ids.count) tokens; the ids of a vocabulary run from 0 to about its size")
        }
        var tokens = [String](repeating: "", count: largest + 1)
        for (token, id) in ids {
            tokens[Int(id)] = token
        }
        self.tokens = tokens
        self.ids = ids
    }

    /// Reads `vocab.txt`: one token per line, the line number (from 0) is the id. Lines end with
    /// "\n", "\r\n" or "\r" (Python's universal newlines, which HF's loader uses); nothing else is
    /// trimmed.
    public init(vocabFile url: URL) throws {
        let bytes: [UInt8]
        do {
            bytes = [UInt8](try Data(contentsOf: url))
        } catch {
            throw DataError("\(url.path): cannot read the vocabulary (\(describeFileError(error)))")
        }
        var tokens: [String] = []
        tokens.reserveCapacity(bytes.count / 7)
        var start = 0
        var index = 0
        let count = bytes.count
        var lineNumber = 1
        func addLine(_ range: Range<Int>) throws {
            guard let token = String(validating: bytes[range], as: UTF8.self) else {
                throw DataError("\(url.path):\(lineNumber): the vocabulary is not valid UTF-8")
            }
            tokens.append(token)
            lineNumber += 1
        }
        while index < count {
            let byte = bytes[index]
            if byte == 0x0A {
                try addLine(start..<index)
                index += 1
                start = index
            } else if byte == 0x0D {
                try addLine(start..<index)
                index += (index + 1 < count && bytes[index + 1] == 0x0A) ? 2 : 1
                start = index
            } else {
                index += 1
            }
        }
        if start < count {
            try addLine(start..<count)
        }
        if tokens.isEmpty {
            throw DataError("\(url.path): the vocabulary is empty")
        }
        self.init(tokens: tokens)
    }
}

/// A byte trie mapping byte strings to Int32 values: the tokens of WordPiece (longest match)
/// and the pieces of the Unigram model (every piece that starts at a position).
///
/// Edges live in one open-addressing table keyed by (node, byte); the root's children are a
/// dense 256-entry table. Immutable after init; raw pointers freed in deinit so that the hot
/// loops pay neither bounds checks nor reference counting (hence @unchecked Sendable).
final class ByteTrie: @unchecked Sendable {
    /// Value of each node, or -1 when the path to the node is not a key.          (nodeCount)
    let valueOfNode: UnsafeMutablePointer<Int32>
    let nodeCount: Int
    let edgeKeys: UnsafeMutablePointer<UInt64>      // (node << 8 | byte) + 1; 0 = empty
    let edgeChildren: UnsafeMutablePointer<Int32>
    let edgeMask: Int
    let rootChildren: UnsafeMutablePointer<Int32>   // (256), -1 = none

    /// Keys with their values; a key given twice keeps its later value. Empty keys are ignored.
    init(_ entries: [(key: [UInt8], value: Int32)]) {
        var values: [Int32] = [-1]
        let totalBytes = entries.reduce(0) { $0 + $1.key.count }
        var capacity = 1024
        while capacity < 2 * totalBytes + 16 { capacity *= 2 }  // at most half full: short probes
        let mask = capacity - 1
        var keys = [UInt64](repeating: 0, count: capacity)
        var children = [Int32](repeating: -1, count: capacity)
        for (key, value) in entries where !key.isEmpty {
            var node: Int32 = 0
            for byte in key {
                let edge = WordPieceTrie.edgeKey(node, byte)
                var index = WordPieceTrie.slot(edge, mask)
                var found: Int32 = -1
                while keys[index] != 0 {
                    if keys[index] == edge {
                        found = children[index]
                        break
                    }
                    index = (index + 1) & mask
                }
                if found < 0 {
                    found = Int32(values.count)
                    values.append(-1)
                    keys[index] = edge
                    children[index] = found
                }
                node = found
            }
            values[Int(node)] = value
        }
        nodeCount = values.count
        valueOfNode = .allocate(capacity: nodeCount)
        valueOfNode.initialize(from: values, count: nodeCount)
        edgeKeys = .allocate(capacity: capacity)
        edgeKeys.initialize(from: keys, count: capacity)
        edgeChildren = .allocate(capacity: capacity)
        edgeChildren.initialize(from: children, count: capacity)
        edgeMask = mask
        rootChildren = .allocate(capacity: 256)
        rootChildren.initialize(repeating: -1, count: 256)
        let view = self.view
        for byte in 0..<256 {
            rootChildren[byte] = view.child(0, UInt8(byte))
        }
    }

    deinit {
        valueOfNode.deallocate()
        edgeKeys.deallocate()
        edgeChildren.deallocate()
        rootChildren.deallocate()
    }

    /// The tables as a struct of raw pointers, valid while this object lives.
    var view: ByteTrieView {
        ByteTrieView(valueOfNode: valueOfNode, edgeKeys: edgeKeys, edgeChildren: edgeChildren, edgeMask: edgeMask,
                     rootChildren: rootChildren)
    }
}

struct ByteTrieView {
    let valueOfNode: UnsafeMutablePointer<Int32>
    let edgeKeys: UnsafeMutablePointer<UInt64>
    let edgeChildren: UnsafeMutablePointer<Int32>
    let edgeMask: Int
    let rootChildren: UnsafeMutablePointer<Int32>

    @inline(__always)
    func child(_ node: Int32, _ byte: UInt8) -> Int32 {
        let key = WordPieceTrie.edgeKey(node, byte)
        var index = WordPieceTrie.slot(key, edgeMask)
        while true {
            let found = edgeKeys[index]
            if found == key { return edgeChildren[index] }
            if found == 0 { return -1 }
            index = (index + 1) & edgeMask
        }
    }
}

/// The vocabulary arranged for greedy longest-match WordPiece on UTF-8 bytes.
///
/// - A byte trie (`ByteTrie`): walking it from a word's start finds the longest vocabulary
///   token that prefixes the rest of the word in one pass. The two roots used on every word
///   (the empty prefix and the continuation prefix "##") have dense 256-entry tables.
/// - A whole-word table for word-start tokens of at most 16 bytes: most words of running text
///   are one token, and when the whole word is a token greedy matching picks it, so one hash
///   probe settles them.
///
/// Tokens are told apart by their bytes (a token listed twice keeps its later id, as in HF).
/// Immutable after init; its memory is raw pointers freed in deinit, so that the hot loop pays
/// neither bounds checks nor reference counting (hence @unchecked Sendable).
final class WordPieceTrie: @unchecked Sendable {
    /// Token id of each node, or -1 when the path to the node is not a token.
    let tokens: ByteTrie
    /// Dense children of the continuation root: 256 entries, -1 = none.
    let continuationChildren: UnsafeMutablePointer<Int32>
    /// Node reached by the continuation prefix ("##").
    let continuationRoot: Int32

    struct WholeWord {
        var low: UInt64    // bytes 0..<8, zero padded (little-endian)
        var high: UInt64   // bytes 8..<16, zero padded
        var length: Int32  // 0 = empty slot
        var id: Int32
    }
    let wholeWords: UnsafeMutablePointer<WholeWord>
    let wholeWordMask: Int

    init(vocabulary: Vocabulary, continuationPrefix: String) {
        // The prefix's path first (value -1), so that a token spelled like it still gets its id.
        var entries: [(key: [UInt8], value: Int32)] = [(Array(continuationPrefix.utf8), -1)]
        entries.reserveCapacity(vocabulary.count + 1)
        var wordStartIds: [[UInt8]: Int32] = [:]
        for (id, token) in vocabulary.tokens.enumerated() where !token.isEmpty {
            entries.append((Array(token.utf8), Int32(id)))
            wordStartIds[Array(token.utf8)] = Int32(id)
        }
        tokens = ByteTrie(entries)
        let view = tokens.view
        var root: Int32 = 0
        for byte in continuationPrefix.utf8 where root >= 0 {
            root = view.child(root, byte)
        }
        continuationRoot = root
        continuationChildren = .allocate(capacity: 256)
        for byte in 0..<256 {
            continuationChildren[byte] = view.child(root, UInt8(byte))
        }

        var wordCapacity = 1024
        while wordCapacity < 2 * wordStartIds.count { wordCapacity *= 2 }
        wholeWordMask = wordCapacity - 1
        wholeWords = .allocate(capacity: wordCapacity)
        wholeWords.initialize(repeating: WholeWord(low: 0, high: 0, length: 0, id: -1), count: wordCapacity)
        // In id order: the frequent tokens (low ids) get their home slots, the shortest probes.
        for (id, token) in vocabulary.tokens.enumerated() where !token.isEmpty && token.utf8.count <= 16 {
            let bytes = Array(token.utf8)
            guard wordStartIds[bytes] == Int32(id) else { continue }  // listed again later
            let (low, high) = bytes.withUnsafeBufferPointer { WordPieceTrie.packWord($0.baseAddress!, $0.count) }
            var index = WordPieceTrie.wordSlot(low, high, bytes.count, wholeWordMask)
            while wholeWords[index].length != 0 { index = (index + 1) & wholeWordMask }
            wholeWords[index] = WholeWord(low: low, high: high, length: Int32(bytes.count), id: Int32(id))
        }
    }

    /// The same tables as a struct of raw pointers, for the encoding loop (no reference
    /// counting); valid while this object lives.
    var view: WordPieceTrieView {
        WordPieceTrieView(tokens: tokens.view, continuationChildren: continuationChildren,
                          wholeWords: wholeWords, wholeWordMask: wholeWordMask)
    }

    deinit {
        continuationChildren.deallocate()
        wholeWords.deallocate()
    }

    @inline(__always)
    static func edgeKey(_ node: Int32, _ byte: UInt8) -> UInt64 {
        (UInt64(UInt32(bitPattern: node)) << 8 | UInt64(byte)) &+ 1
    }

    @inline(__always)
    static func slot(_ key: UInt64, _ mask: Int) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 40) & mask
    }

    /// The first `count` (<= 16) bytes at `bytes` as two zero-padded little-endian words.
    @inline(__always)
    static func packWord(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> (UInt64, UInt64) {
        var words: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &words) { $0.baseAddress!.copyMemory(from: bytes, byteCount: count) }
        return (UInt64(littleEndian: words.0), UInt64(littleEndian: words.1))
    }

    @inline(__always)
    static func wordSlot(_ low: UInt64, _ high: UInt64, _ count: Int, _ mask: Int) -> Int {
        var h = (low &* 0x9E37_79B9_7F4A_7C15) ^ (high &* 0xC2B2_AE3D_27D4_EB4F) ^ UInt64(count)
        h ^= h >> 29
        return Int(truncatingIfNeeded: (h &* 0xBF58_476D_1CE4_E5B9) >> 40) & mask
    }

    /// Id of the token spelled exactly by `bytes` from the given root (0: word start), or -1.
    func lookup(_ bytes: UnsafeBufferPointer<UInt8>, from root: Int32) -> Int32 {
        let view = tokens.view
        var node = root
        for byte in bytes {
            node = view.child(node, byte)
            if node < 0 { return -1 }
        }
        return view.valueOfNode[Int(node)]
    }
}

/// Raw-pointer view of a `WordPieceTrie` for the encoding loop.
struct WordPieceTrieView {
    let tokens: ByteTrieView
    let continuationChildren: UnsafeMutablePointer<Int32>
    let wholeWords: UnsafeMutablePointer<WordPieceTrie.WholeWord>
    let wholeWordMask: Int

    var tokenIdOfNode: UnsafeMutablePointer<Int32> { tokens.valueOfNode }
    /// Dense children of the word-start root: 256 entries, -1 = none.
    var wordStartChildren: UnsafeMutablePointer<Int32> { tokens.rootChildren }

    @inline(__always)
    func child(_ node: Int32, _ byte: UInt8) -> Int32 { tokens.child(node, byte) }

    /// Id of the word-start token spelled exactly by the `count` bytes at `bytes`, when
    /// `count <= 16` and there is one; else -1.
    /// `bytes` must have 16 readable bytes (the encoder's word buffer does), whatever `count`.
    @inline(__always)
    func wholeWordId(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> Int32 {
        guard count <= 16 else { return -1 }
        // Two unaligned loads, then clear the bytes past the word.
        let raw = UnsafeRawPointer(bytes)
        var low = UInt64(littleEndian: raw.loadUnaligned(as: UInt64.self))
        var high = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        if count < 8 {
            low &= (1 << UInt64(8 * count)) &- 1
            high = 0
        } else if count < 16 {
            high &= (1 << UInt64(8 * (count - 8))) &- 1
        }
        var index = WordPieceTrie.wordSlot(low, high, count, wholeWordMask)
        while true {
            let entry = wholeWords[index]
            if entry.length == 0 { return -1 }
            if entry.low == low && entry.high == high && Int(entry.length) == count { return entry.id }
            index = (index + 1) & wholeWordMask
        }
    }
}

func describeFileError(_ error: Error) -> String {
    let nsError = error as NSError
    if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain,
       let message = strerror(Int32(underlying.code)) {
        return String(cString: message)
    }
    if nsError.domain == NSCocoaErrorDomain {
        switch nsError.code {
        case NSFileReadNoSuchFileError, NSFileNoSuchFileError: return "no such file"
        case NSFileReadNoPermissionError, NSFileWriteNoPermissionError: return "permission denied"
        default: break
        }
    }
    return nsError.localizedDescription
}
