/// A fast 64-bit hash of the bits of one or more Float buffers, for comparing replicas across ranks
/// (parameters, Adam moments). Bits, not values: -0.0 and 0.0 differ, NaN payloads count.
/// The buffers' lengths and order are part of the hash.
///
/// Four independent multiply-rotate lanes over 32-byte stripes, in the style of xxHash64 (not
/// bit-compatible with it), run at several GB/s, so checking 3 x 110 M floats costs well under a
/// second. Not cryptographic: it detects divergence, not tampering.
public func checksum(_ buffers: [UnsafeBufferPointer<Float>]) -> UInt64 {
    var combined: UInt64 = ChecksumPrimes.p5 &* UInt64(buffers.count)
    for (index, buffer) in buffers.enumerated() {
        let digest = checksum(bytes: UnsafeRawBufferPointer(buffer), seed: UInt64(index))
        combined = ChecksumPrimes.avalanche((combined ^ digest) &* ChecksumPrimes.p1 &+ ChecksumPrimes.p4)
    }
    return combined
}

public func checksum(_ buffer: UnsafeBufferPointer<Float>) -> UInt64 {
    checksum([buffer])
}

/// Compares a checksum of `buffers` across all ranks (a collective: every rank calls it with the same
/// buffer sizes). If any rank differs from rank 0, rank 0's buffers are broadcast to every rank,
/// which repairs them, and the ranks that differed are returned (the same list on every rank; empty
/// when all replicas matched). Throws if the ranks' buffer sizes differ: that is not repairable here.
public func ensureReplicasMatch(buffers: [UnsafeMutableBufferPointer<Float>], communicator: any Communicator) throws -> [Int] {
    let localChecksum = checksum(buffers.map { UnsafeBufferPointer($0) })
    let summary = [localChecksum] + buffers.map { UInt64($0.count) }
    let gathered = try communicator.allGather(summary)
    for (otherRank, other) in gathered.enumerated() where other.dropFirst() != gathered[0].dropFirst() {
        throw CommunicationError(rank: communicator.rank, operation: "ensureReplicasMatch",
                                 reason: "rank \(otherRank) has buffers of \(other.dropFirst().map(String.init)) floats, "
                                     + "rank 0 has \(gathered[0].dropFirst().map(String.init))")
    }
    let differing = gathered.indices.filter { gathered[$0][0] != gathered[0][0] }
    if differing.isEmpty { return [] }
    for buffer in buffers {
        try communicator.broadcast(buffer, root: 0)
    }
    return differing
}

enum ChecksumPrimes {
    static let p1: UInt64 = 0x9E37_79B1_85EB_CA87
    static let p2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    static let p3: UInt64 = 0x1656_67B1_9E37_79F9
    static let p4: UInt64 = 0x85EB_CA77_C2B2_AE63
    static let p5: UInt64 = 0x27D4_EB2F_1656_67C5

    @inline(__always) static func rotateLeft(_ value: UInt64, _ bits: UInt64) -> UInt64 {
        (value << bits) | (value >> (64 - bits))
    }

    @inline(__always) static func round(_ lane: UInt64, _ word: UInt64) -> UInt64 {
        rotateLeft(lane &+ word &* p2, 31) &* p1
    }

    @inline(__always) static func avalanche(_ value: UInt64) -> UInt64 {
        var hash = value
        hash ^= hash >> 33
        hash = hash &* p2
        hash ^= hash >> 29
        hash = hash &* p3
        hash ^= hash >> 32
        return hash
    }
}

func checksum(bytes: UnsafeRawBufferPointer, seed: UInt64) -> UInt64 {
    typealias P = ChecksumPrimes
    let byteCount = bytes.count
    var hash: UInt64
    var offset = 0
    if byteCount >= 32, let base = bytes.baseAddress {
        var lane0 = seed &+ P.p1 &+ P.p2, lane1 = seed &+ P.p2, lane2 = seed, lane3 = seed &- P.p1
        let stripeEnd = byteCount - byteCount % 32
        while offset < stripeEnd {
            lane0 = P.round(lane0, base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            lane1 = P.round(lane1, base.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self))
            lane2 = P.round(lane2, base.loadUnaligned(fromByteOffset: offset + 16, as: UInt64.self))
            lane3 = P.round(lane3, base.loadUnaligned(fromByteOffset: offset + 24, as: UInt64.self))
            offset += 32
        }
        hash = P.rotateLeft(lane0, 1) &+ P.rotateLeft(lane1, 7) &+ P.rotateLeft(lane2, 12) &+ P.rotateLeft(lane3, 18)
        hash = (hash ^ P.round(0, lane0)) &* P.p1 &+ P.p4
        hash = (hash ^ P.round(0, lane1)) &* P.p1 &+ P.p4
        hash = (hash ^ P.round(0, lane2)) &* P.p1 &+ P.p4
        hash = (hash ^ P.round(0, lane3)) &* P.p1 &+ P.p4
    } else {
        hash = seed &+ P.p5
    }
    hash &+= UInt64(byteCount)
    while offset + 8 <= byteCount {
        hash ^= P.round(0, bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
        hash = P.rotateLeft(hash, 27) &* P.p1 &+ P.p4
        offset += 8
    }
    while offset + 4 <= byteCount {
        hash ^= UInt64(bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) &* P.p1
        hash = P.rotateLeft(hash, 23) &* P.p2 &+ P.p3
        offset += 4
    }
    while offset < byteCount {
        hash ^= UInt64(bytes[offset]) &* P.p5
        hash = P.rotateLeft(hash, 11) &* P.p1
        offset += 1
    }
    return P.avalanche(hash)
}
