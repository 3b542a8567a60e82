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
        let size = (ids.values.max() ?? -1) + 1
        var tokens = [String](repeating: "", count: Int(size))
        for (token, id) in ids {
            guard id >= 0 else { throw DataError("vocabulary: token \"\(token)\" has a negative id \(id)") }
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

/// A byte trie over the vocabulary for greedy longest-match WordPiece: walking it from a word's
/// start finds the longest vocabulary token that prefixes the rest of the word in one pass.
///
/// Edges live in one open-addressing hash table keyed by (node, byte); the two roots used on
/// every word (the empty prefix and the continuation prefix "##") have dense 256-entry tables.
struct WordPieceTrie: Sendable {
    /// Token id of each node, or -1 when the path to the node is not a token.
    private(set) var tokenIdOfNode: [Int32] = [-1]
    private var edgeKeys: [UInt64] = []      // (node << 8 | byte) + 1; 0 = empty slot
    private var edgeChildren: [Int32] = []
    private var edgeMask: Int = 0
    private var edgeCount = 0
    /// Dense children of the two roots: 256 entries each, -1 = none.
    private(set) var wordStartChildren: [Int32] = []
    private(set) var continuationChildren: [Int32] = []
    /// Node reached by the continuation prefix ("##").
    private(set) var continuationRoot: Int32 = 0

    init(vocabulary: Vocabulary, continuationPrefix: String) {
        let totalBytes = vocabulary.tokens.reduce(0) { $0 + $1.utf8.count } + continuationPrefix.utf8.count
        var capacity = 1024
        while capacity < 2 * totalBytes + 16 { capacity *= 2 }
        edgeKeys = [UInt64](repeating: 0, count: capacity)
        edgeChildren = [Int32](repeating: -1, count: capacity)
        edgeMask = capacity - 1
        tokenIdOfNode.reserveCapacity(totalBytes + 1)
        // Insert in id order so that a duplicated token keeps its later id, as HF's dictionary does.
        for (id, token) in vocabulary.tokens.enumerated() where !token.isEmpty {
            if vocabulary.ids[token] != Int32(id) { continue }
            var node: Int32 = 0
            for byte in token.utf8 {
                node = childOrInsert(node, byte)
            }
            tokenIdOfNode[Int(node)] = Int32(id)
        }
        var node: Int32 = 0
        for byte in continuationPrefix.utf8 {
            node = childOrInsert(node, byte)
        }
        continuationRoot = node
        wordStartChildren = (0..<256).map { child(0, UInt8($0)) }
        continuationChildren = (0..<256).map { child(continuationRoot, UInt8($0)) }
    }

    @inline(__always)
    private func slot(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 40) & edgeMask
    }

    @inline(__always)
    func child(_ node: Int32, _ byte: UInt8) -> Int32 {
        let key = (UInt64(UInt32(bitPattern: node)) << 8 | UInt64(byte)) &+ 1
        var index = slot(key)
        return edgeKeys.withUnsafeBufferPointer { keys in
            while true {
                let found = keys[index]
                if found == key { return edgeChildren[index] }
                if found == 0 { return -1 }
                index = (index + 1) & edgeMask
            }
        }
    }

    private mutating func childOrInsert(_ node: Int32, _ byte: UInt8) -> Int32 {
        let key = (UInt64(UInt32(bitPattern: node)) << 8 | UInt64(byte)) &+ 1
        var index = slot(key)
        while edgeKeys[index] != 0 {
            if edgeKeys[index] == key { return edgeChildren[index] }
            index = (index + 1) & edgeMask
        }
        let newNode = Int32(tokenIdOfNode.count)
        tokenIdOfNode.append(-1)
        edgeKeys[index] = key
        edgeChildren[index] = newNode
        edgeCount += 1
        return newNode
    }

    /// Id of the token spelled exactly by `bytes` from the given root (0: word start), or -1.
    func lookup(_ bytes: UnsafeBufferPointer<UInt8>, from root: Int32) -> Int32 {
        var node = root
        for byte in bytes {
            node = child(node, byte)
            if node < 0 { return -1 }
        }
        return tokenIdOfNode[Int(node)]
    }
}

func describeFileError(_ error: Error) -> String {
    let nsError = error as NSError
    if nsError.domain == NSCocoaErrorDomain {
        switch nsError.code {
        case NSFileReadNoSuchFileError, NSFileNoSuchFileError: return "no such file"
        case NSFileReadNoPermissionError: return "permission denied"
        default: break
        }
    }
    if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain,
       let message = strerror(Int32(underlying.code)) {
        return String(cString: message)
    }
    return nsError.localizedDescription
}
