import Foundation
import Synchronization

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

/// A 64-bit hash of a short byte string (cache keys; not for anything an attacker chooses).
@inline(__always)
func hashWordBytes(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
    var hash: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(bytes.count)
    var index = 0
    let count = bytes.count
    if let base = bytes.baseAddress {
        let raw = UnsafeRawPointer(base)
        while index + 8 <= count {
            let word = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: index, as: UInt64.self))
            hash = (hash ^ word) &* 0xBF58_476D_1CE4_E5B9
            hash ^= hash >> 29
            index += 8
        }
    }
    var tail: UInt64 = 0
    var shift: UInt64 = 0
    while index < count {
        tail |= UInt64(bytes[index]) << shift
        shift += 8
        index += 1
    }
    hash = (hash ^ tail) &* 0x94D0_49BB_1331_11EB
    return hash ^ (hash >> 31)
}

/// Word -> token ids, filled while encoding (the BPE merges and the Unigram lattice of a word
/// are computed once). Shared by threads behind a mutex; when full it is emptied, so its memory
/// stays bounded (about 3 MB).
final class WordCache: Sendable {
    struct Slot {
        var hash: UInt64 = 0
        var keyStart: Int32 = 0
        var keyLength: Int32 = -1      // -1: empty slot
        var valueStart: Int32 = 0
        var valueCount: Int32 = 0
    }
    struct State {
        var slots: [Slot]
        var keyBytes: [UInt8] = []
        var values: [Int32] = []
        var count = 0
    }

    static let slotCount = 1 << 16                // power of two
    static let maxEntries = slotCount / 2
    static let maxKeyBytes = 1 << 20
    static let maxValues = 1 << 18
    /// Longer words are not cached (as tokenizers' caches do).
    static let maxKeyLength = 255

    private let state = Mutex(State(slots: [Slot](repeating: Slot(), count: WordCache.slotCount)))

    /// Appends the ids of `word` to `ids`: the cached ones, or those `compute` appends (then cached).
    @inline(__always)
    func encode(_ word: UnsafeBufferPointer<UInt8>, appendingTo ids: inout [Int32], compute: (inout [Int32]) -> Void) {
        let hash = hashWordBytes(word)
        if lookup(word, hash: hash, appendingTo: &ids) { return }
        let start = ids.count
        compute(&ids)
        insert(word, hash: hash, values: ids[start...])
    }

    /// Appends the cached ids of `key` to `ids` and returns true, or returns false.
    func lookup(_ key: UnsafeBufferPointer<UInt8>, hash: UInt64, appendingTo ids: inout [Int32]) -> Bool {
        if key.count > WordCache.maxKeyLength { return false }
        return state.withLock { state -> Bool in
            let mask = WordCache.slotCount - 1
            var index = Int(truncatingIfNeeded: hash) & mask
            while true {
                let slot = state.slots[index]
                if slot.keyLength < 0 { return false }
                if slot.hash == hash && Int(slot.keyLength) == key.count
                    && state.keyBytes.withUnsafeBufferPointer({ stored in
                        memcmp(stored.baseAddress! + Int(slot.keyStart), key.baseAddress!, key.count) == 0 }) {
                    let start = Int(slot.valueStart)
                    ids.append(contentsOf: state.values[start..<(start + Int(slot.valueCount))])
                    return true
                }
                index = (index + 1) & mask
            }
        }
    }

    func insert(_ key: UnsafeBufferPointer<UInt8>, hash: UInt64, values: ArraySlice<Int32>) {
        if key.count > WordCache.maxKeyLength || key.isEmpty { return }
        state.withLock { state in
            if state.count >= WordCache.maxEntries || state.keyBytes.count + key.count > WordCache.maxKeyBytes
                || state.values.count + values.count > WordCache.maxValues {
                // Full: start again (the words of running text come back quickly).
                for index in state.slots.indices { state.slots[index].keyLength = -1 }
                state.keyBytes.removeAll(keepingCapacity: true)
                state.values.removeAll(keepingCapacity: true)
                state.count = 0
            }
            let mask = WordCache.slotCount - 1
            var index = Int(truncatingIfNeeded: hash) & mask
            while state.slots[index].keyLength >= 0 {
                let slot = state.slots[index]
                if slot.hash == hash && Int(slot.keyLength) == key.count
                    && state.keyBytes.withUnsafeBufferPointer({ stored in
                        memcmp(stored.baseAddress! + Int(slot.keyStart), key.baseAddress!, key.count) == 0 }) {
                    return  // another thread put it there first
                }
                index = (index + 1) & mask
            }
            state.slots[index] = Slot(hash: hash, keyStart: Int32(state.keyBytes.count), keyLength: Int32(key.count),
                                      valueStart: Int32(state.values.count), valueCount: Int32(values.count))
            state.keyBytes.append(contentsOf: key)
            state.values.append(contentsOf: values)
            state.count += 1
        }
    }
}
