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
