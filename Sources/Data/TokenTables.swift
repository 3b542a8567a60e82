import Foundation
import Synchronization

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
