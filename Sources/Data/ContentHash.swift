/// A fast 64-bit, non-cryptographic hash used for cache keys, the tokenizer fingerprint and the
/// damage check of token caches (never for anything an attacker chooses: use Storage's SHA256).
///
/// The algorithm, so that it can be re-implemented elsewhere: the state starts at
/// `seed ^ 0x243F6A8885A308D3`. Bytes are taken in little-endian 8-byte words; each word `w`
/// updates `state = rotateLeft(state ^ mix(w), 29) &* 0x9E3779B97F4A7C15` with
/// `mix(w) = (w ^ (w >> 31)) &* 0xBF58476D1CE4E5B9`. The final partial word is zero-padded.
/// `finalize` folds in the total byte count and applies the SplitMix64 finalizer.
public struct ContentHash64: Sendable {
    private var state: UInt64
    private var byteCount: UInt64 = 0
    private var pending: UInt64 = 0      // bytes of an incomplete word, little-endian
    private var pendingCount: Int = 0    // 0..<8

    public init(seed: UInt64 = 0) {
        state = seed ^ 0x243F_6A88_85A3_08D3
    }

    @inline(__always)
    private static func mix(_ word: UInt64) -> UInt64 {
        (word ^ (word >> 31)) &* 0xBF58_476D_1CE4_E5B9
    }

    @inline(__always)
    private mutating func absorb(_ word: UInt64) {
        let x = state ^ ContentHash64.mix(word)
        state = ((x << 29) | (x >> 35)) &* 0x9E37_79B9_7F4A_7C15
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        byteCount &+= UInt64(bytes.count)
        var index = 0
        let count = bytes.count
        // Finish an incomplete word first.
        while pendingCount > 0 && pendingCount < 8 && index < count {
            pending |= UInt64(bytes[index]) << (8 * UInt64(pendingCount))
            pendingCount += 1
            index += 1
        }
        if pendingCount == 8 {
            absorb(pending)
            pending = 0
            pendingCount = 0
        }
        while index + 8 <= count {
            let word = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: index, as: UInt64.self))
            absorb(word)
            index += 8
        }
        while index < count {
            pending |= UInt64(bytes[index]) << (8 * UInt64(pendingCount))
            pendingCount += 1
            index += 1
        }
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    public mutating func update(_ string: String) {
        var copy = string
        copy.withUTF8 { update(UnsafeRawBufferPointer($0)) }
    }

    public mutating func update(_ value: UInt64) {
        withUnsafeBytes(of: value.littleEndian) { update($0) }
    }

    public func finalize() -> UInt64 {
        var copy = self
        if copy.pendingCount > 0 {
            copy.absorb(copy.pending)
        }
        var z = copy.state ^ (copy.byteCount &* 0xD6E8_FEB8_6659_FD93)
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        var hasher = ContentHash64(seed: seed)
        hasher.update(bytes)
        return hasher.finalize()
    }

    public static func hash(_ bytes: [UInt8], seed: UInt64 = 0) -> UInt64 {
        bytes.withUnsafeBytes { hash($0, seed: seed) }
    }
}

/// 16 lowercase hex digits.
func hex64(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 16 - digits.count) + digits
}
