/// How a flat arena of `totalCount` floats is divided into `worldSize` contiguous shards, one per
/// rank, in rank order: the optimizer shard of ZeRO-1 and the part of each gradient bucket a rank
/// sums. Shards are balanced in units of `alignment` floats (16 floats = 64 bytes, one cache line
/// and a whole number of SIMD vectors), so they differ by at most one unit; only the last non-empty
/// shard may end on a partial unit. When the arena has fewer units than ranks, some shards are
/// empty (for example 2 units over 4 ranks: ranks 1 and 3 get one unit each). The shards cover 0 ..< totalCount exactly, without overlap.
public struct ShardLayout: Sendable, Equatable, CustomStringConvertible {
    public let totalCount: Int
    public let worldSize: Int
    public let alignment: Int
    /// worldSize + 1 boundaries: shard r is boundaries[r] ..< boundaries[r + 1].
    public let boundaries: [Int]

    public init(totalCount: Int, worldSize: Int, alignment: Int = 16) {
        precondition(totalCount >= 0 && worldSize >= 1 && alignment >= 1,
                     "ShardLayout needs totalCount >= 0, worldSize >= 1, alignment >= 1")
        self.totalCount = totalCount
        self.worldSize = worldSize
        self.alignment = alignment
        let unitCount = (totalCount + alignment - 1) / alignment
        // Rank r starts at unit floor(r * units / N): sizes differ by at most one unit.
        self.boundaries = (0 ... worldSize).map { shardIndex in
            min(totalCount, (shardIndex * unitCount / worldSize) * alignment)
        }
    }

    /// The floats rank `rank` owns.
    public func range(of rank: Int) -> Range<Int> {
        boundaries[rank] ..< boundaries[rank + 1]
    }

    public var ranges: [Range<Int>] { (0 ..< worldSize).map { range(of: $0) } }

    public var description: String {
        "ShardLayout(\(totalCount) floats over \(worldSize) ranks: \(ranges.map { "\($0.lowerBound)..<\($0.upperBound)" }.joined(separator: ", ")))"
    }
}

extension Communicator {
    /// ZeRO-1's parameter gather with the owner's values made piece by piece: for each piece of
    /// at most `pieceFloats` floats of this rank's shard, in order, `prepare(piece)` runs (the
    /// optimizer's update of that piece) and the piece leaves for every other rank at once, so
    /// that the pieces already made travel while the next is computed (the background progress
    /// is on meanwhile). Ends, like `gatherParameters`, with every shard on every rank.
    /// `pieceFloats` must be a multiple of `chunkFloats` (the receivers cut each shard into
    /// messages of `chunkFloats` from its start, and the messages of one tag match in order);
    /// nil: the whole shard is one piece.
    public func gatherParameters(_ parameters: UnsafeMutableBufferPointer<Float>, layout: ShardLayout,
                                 chunkFloats: Int = GradientSynchronizer.defaultMessageFloats, pieceFloats: Int?,
                                 requests: inout [TransferRequest], prepare: (Range<Int>) throws -> Void) throws {
        guard layout.totalCount == parameters.count, layout.worldSize == worldSize else {
            throw CommunicationError(rank: rank, operation: "gatherParameters",
                                     reason: "shard layout is for \(layout.totalCount) floats on \(layout.worldSize) ranks, "
                                         + "but the buffer has \(parameters.count) floats on \(worldSize) ranks")
        }
        guard chunkFloats >= 1, pieceFloats.map({ $0 >= chunkFloats && $0 % chunkFloats == 0 }) ?? true else {
            throw CommunicationError(rank: rank, operation: "gatherParameters",
                                     reason: "chunkFloats must be at least 1 and pieceFloats a multiple of it")
        }
        let own = layout.range(of: rank)
        guard let base = parameters.baseAddress else { return }  // an empty arena: nothing to make or send
        // Both sides cut the same chunks; messages of one tag between two ranks match in posting order.
        requests.removeAll(keepingCapacity: true)
        for peer in 0 ..< worldSize where peer != rank {
            let range = layout.range(of: peer)
            try startChunkedReceives(self, into: UnsafeMutableRawPointer(base + range.lowerBound), byteCount: 4 * range.count,
                                     from: peer, tag: TransferTag.parameterGather, messageBytes: 4 * chunkFloats, into: &requests)
        }
        var start = own.lowerBound
        while start < own.upperBound {
            let piece = start ..< min(own.upperBound, start + (pieceFloats ?? own.count))
            setBackgroundProgress(!requests.isEmpty)
            try prepare(piece)
            for peer in 0 ..< worldSize where peer != rank {
                try startChunkedSends(self, from: UnsafeRawPointer(base + piece.lowerBound), byteCount: 4 * piece.count, to: peer,
                                      tag: TransferTag.parameterGather, messageBytes: 4 * chunkFloats, into: &requests)
            }
            start = piece.upperBound
        }
        setBackgroundProgress(false)
        if !requests.isEmpty { try waitAll(&requests) }
    }
}
