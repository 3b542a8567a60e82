import Foundation

/// A SHA-256 digest: 32 bytes.
public struct SHA256Digest: Equatable, Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]  // 32

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 32, "a SHA-256 digest has 32 bytes, got \(bytes.count)")
        self.bytes = bytes
    }

    /// Lower-case hexadecimal, 64 characters (as `sha256sum` prints it).
    public var hex: String {
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        var characters = [UInt8]()
        characters.reserveCapacity(64)
        for byte in bytes {
            characters.append(digits[Int(byte >> 4)])
            characters.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: characters, as: UTF8.self)
    }

    /// Parses 64 hexadecimal characters; nil if `hex` is not that.
    public init?(hex: String) {
        let characters = Array(hex.utf8)
        guard characters.count == 64 else { return nil }
        func nibble(_ character: UInt8) -> UInt8? {
            switch character {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return character - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return character - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return character - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        var bytes = [UInt8]()
        bytes.reserveCapacity(32)
        for index in stride(from: 0, to: 64, by: 2) {
            guard let high = nibble(characters[index]), let low = nibble(characters[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        self.bytes = bytes
    }

    public var description: String { hex }
}

/// SHA-256 (FIPS 180-4), streaming: `update` any number of times, then `finalize`.
public struct SHA256: Sendable {
    // Hash state h0..h7.
    private var h0: UInt32 = 0x6a09e667
    private var h1: UInt32 = 0xbb67ae85
    private var h2: UInt32 = 0x3c6ef372
    private var h3: UInt32 = 0xa54ff53a
    private var h4: UInt32 = 0x510e527f
    private var h5: UInt32 = 0x9b05688c
    private var h6: UInt32 = 0x1f83d9ab
    private var h7: UInt32 = 0x5be0cd19
    /// Bytes of an incomplete 64-byte block waiting for more input; always 64 long.
    private var pendingBlock = [UInt8](repeating: 0, count: 64)
    private var pendingCount = 0
    /// Total message length so far, in bytes.
    private var messageByteCount: UInt64 = 0

    public init() {}

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard var input = bytes.baseAddress, bytes.count > 0 else { return }
        var remaining = bytes.count
        messageByteCount &+= UInt64(remaining)

        // Top up a partial block first.
        if pendingCount > 0 {
            let taken = min(64 - pendingCount, remaining)
            pendingBlock.withUnsafeMutableBytes { block in
                (block.baseAddress! + pendingCount).copyMemory(from: input, byteCount: taken)
            }
            pendingCount += taken
            input += taken
            remaining -= taken
            if pendingCount < 64 { return }
            let block = pendingBlock  // a second reference, so `self` can be mutated while reading it
            block.withUnsafeBytes { compressBlocks($0.baseAddress!, blockCount: 1) }
            pendingCount = 0
        }

        // Whole blocks straight from the caller's buffer.
        let wholeBlockCount = remaining / 64
        if wholeBlockCount > 0 {
            compressBlocks(input, blockCount: wholeBlockCount)
            input += wholeBlockCount * 64
            remaining -= wholeBlockCount * 64
        }

        // Keep the tail for later.
        if remaining > 0 {
            pendingBlock.withUnsafeMutableBytes { block in
                block.baseAddress!.copyMemory(from: input, byteCount: remaining)
            }
            pendingCount = remaining
        }
    }

    /// The digest of everything passed to `update` so far. Does not change `self`, so hashing can go on.
    public func finalize() -> SHA256Digest {
        var copy = self
        let messageBitCount = messageByteCount &* 8
        // Padding: 0x80, zeros up to 56 mod 64, then the bit length as a big-endian UInt64.
        let paddingCount = (pendingCount < 56 ? 56 : 120) - pendingCount
        var padding = [UInt8](repeating: 0, count: paddingCount + 8)
        padding[0] = 0x80
        for index in 0..<8 {
            padding[paddingCount + index] = UInt8(truncatingIfNeeded: messageBitCount >> (56 - 8 * UInt64(index)))
        }
        copy.update(padding)
        precondition(copy.pendingCount == 0)
        var digest = [UInt8]()
        digest.reserveCapacity(32)
        for word in [copy.h0, copy.h1, copy.h2, copy.h3, copy.h4, copy.h5, copy.h6, copy.h7] {
            digest.append(UInt8(truncatingIfNeeded: word >> 24))
            digest.append(UInt8(truncatingIfNeeded: word >> 16))
            digest.append(UInt8(truncatingIfNeeded: word >> 8))
            digest.append(UInt8(truncatingIfNeeded: word))
        }
        return SHA256Digest(bytes: digest)
    }

    public static func hash(_ bytes: [UInt8]) -> SHA256Digest {
        var hasher = SHA256()
        hasher.update(bytes)
        return hasher.finalize()
    }

    public static func hash(_ bytes: UnsafeRawBufferPointer) -> SHA256Digest {
        var hasher = SHA256()
        hasher.update(bytes)
        return hasher.finalize()
    }

    /// Hashes a file by streaming it in 4 MiB chunks (constant memory whatever the file size).
    public static func hash(fileAt url: URL) throws -> SHA256Digest {
        let path = url.path
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        if descriptor < 0 {
            throw StorageError.systemCall("opening", path: path, errorNumber: errno)
        }
        defer { close(descriptor) }
        let chunkByteCount = 4 << 20
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkByteCount, alignment: 64)
        defer { chunk.deallocate() }
        var hasher = SHA256()
        while true {
            let readCount = read(descriptor, chunk.baseAddress!, chunkByteCount)
            if readCount < 0 {
                if errno == EINTR { continue }
                throw StorageError.systemCall("reading", path: path, errorNumber: errno)
            }
            if readCount == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: chunk[0..<readCount]))
        }
        return hasher.finalize()
    }

    // MARK: - Compression function

    /// Round constants: the first 32 bits of the fractional parts of the cube roots of the first 64 primes.
    private static let roundConstants: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    @inline(__always)
    private static func rotateRight(_ value: UInt32, _ count: UInt32) -> UInt32 {
        (value &>> count) | (value &<< (32 &- count))
    }

    /// One SHA-256 round (FIPS 180-4 section 6.2.2 step 3) written for fixed registers: instead of
    /// moving h<-g<-f<-e<-d+T1 and d<-c<-b<-a<-T1+T2, it updates d and h in place and the caller
    /// rotates which variable plays which role. `constantPlusWord` is K[t] + W[t].
    @inline(__always)
    private static func round(_ a: UInt32, _ b: UInt32, _ c: UInt32, _ d: inout UInt32,
                              _ e: UInt32, _ f: UInt32, _ g: UInt32, _ h: inout UInt32,
                              _ constantPlusWord: UInt32) {
        let bigSigma1 = rotateRight(e, 6) ^ rotateRight(e, 11) ^ rotateRight(e, 25)
        let choose = g ^ (e & (f ^ g))  // (e & f) ^ (~e & g)
        let temporary1 = h &+ bigSigma1 &+ choose &+ constantPlusWord
        let bigSigma0 = rotateRight(a, 2) ^ rotateRight(a, 13) ^ rotateRight(a, 22)
        let majority = (a & b) | (c & (a | b))  // (a & b) ^ (a & c) ^ (b & c)
        d = d &+ temporary1
        h = temporary1 &+ bigSigma0 &+ majority
    }

    /// Processes `blockCount` consecutive 64-byte blocks starting at `blocks` (any alignment).
    private mutating func compressBlocks(_ blocks: UnsafeRawPointer, blockCount: Int) {
        Self.roundConstants.withUnsafeBufferPointer { constants in
            withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) { schedule in  // message schedule w[0..<64]
                let k = constants.baseAddress!
                let w = schedule.baseAddress!
                var a0 = h0, b0 = h1, c0 = h2, d0 = h3, e0 = h4, f0 = h5, g0 = h6, hh0 = h7
                for blockIndex in 0..<blockCount {
                    let block = blocks + blockIndex * 64
                    for t in 0..<16 {
                        w[t] = UInt32(bigEndian: block.loadUnaligned(fromByteOffset: t * 4, as: UInt32.self))
                    }
                    for t in 16..<64 {
                        let x = w[t - 15], y = w[t - 2]
                        let sigma0 = Self.rotateRight(x, 7) ^ Self.rotateRight(x, 18) ^ (x &>> 3)
                        let sigma1 = Self.rotateRight(y, 17) ^ Self.rotateRight(y, 19) ^ (y &>> 10)
                        w[t] = w[t - 16] &+ sigma0 &+ w[t - 7] &+ sigma1
                    }
                    var a = a0, b = b0, c = c0, d = d0, e = e0, f = f0, g = g0, h = hh0
                    // Eight rounds per iteration with the roles of a...h rotated by hand instead of
                    // shuffling eight variables every round (about 1.4x faster, same result).
                    var t = 0
                    while t < 64 {
                        Self.round(a, b, c, &d, e, f, g, &h, k[t] &+ w[t])
                        Self.round(h, a, b, &c, d, e, f, &g, k[t + 1] &+ w[t + 1])
                        Self.round(g, h, a, &b, c, d, e, &f, k[t + 2] &+ w[t + 2])
                        Self.round(f, g, h, &a, b, c, d, &e, k[t + 3] &+ w[t + 3])
                        Self.round(e, f, g, &h, a, b, c, &d, k[t + 4] &+ w[t + 4])
                        Self.round(d, e, f, &g, h, a, b, &c, k[t + 5] &+ w[t + 5])
                        Self.round(c, d, e, &f, g, h, a, &b, k[t + 6] &+ w[t + 6])
                        Self.round(b, c, d, &e, f, g, h, &a, k[t + 7] &+ w[t + 7])
                        t += 8
                    }
                    a0 = a0 &+ a; b0 = b0 &+ b; c0 = c0 &+ c; d0 = d0 &+ d
                    e0 = e0 &+ e; f0 = f0 &+ f; g0 = g0 &+ g; hh0 = hh0 &+ h
                }
                h0 = a0; h1 = b0; h2 = c0; h3 = d0; h4 = e0; h5 = f0; h6 = g0; h7 = hh0
            }
        }
    }
}
