import Distributed
import Testing

struct ShardLayoutTests {
    @Test(arguments: [1, 2, 3, 4, 7, 8], [0, 1, 15, 16, 17, 31, 100, 1001, 22_713_216])
    func shardsCoverTheArenaExactlyInRankOrderAndAreBalanced(worldSize: Int, totalCount: Int) {
        let layout = ShardLayout(totalCount: totalCount, worldSize: worldSize)
        let ranges = layout.ranges
        #expect(ranges.count == worldSize)
        #expect(ranges.first?.lowerBound == 0)
        #expect(ranges.last?.upperBound == totalCount)
        for rank in 1 ..< worldSize { #expect(ranges[rank].lowerBound == ranges[rank - 1].upperBound) }
        #expect(ranges.map(\.count).reduce(0, +) == totalCount)
        // Every shard starts on a 16-float boundary; sizes differ by at most one 16-float unit.
        for range in ranges { #expect(range.lowerBound % 16 == 0 || range.isEmpty) }
        let fullUnits = ranges.map { ($0.count + 15) / 16 }
        #expect(fullUnits.max()! - fullUnits.min()! <= 1)
    }

    @Test func anArenaSmallerThanTheWorldLeavesSomeShardsEmpty() {
        let layout = ShardLayout(totalCount: 3, worldSize: 4)
        #expect(layout.ranges.filter { !$0.isEmpty } == [0 ..< 3])
    }
}

struct ChecksumTests {
    @Test func equalContentsAtDifferentAddressesHashEqually() {
        let first = FloatArena(count: 1003) { testValue(rank: 1, index: $0) }
        let second = FloatArena(count: 1003) { testValue(rank: 1, index: $0) }
        #expect(checksum(UnsafeBufferPointer(first.buffer)) == checksum(UnsafeBufferPointer(second.buffer)))
    }

    @Test(arguments: [0, 1, 7, 8, 31, 32, 33, 500, 1000, 1002])
    func flippingAnyOneBitChangesTheChecksum(index: Int) {
        let arena = FloatArena(count: 1003) { testValue(rank: 1, index: $0) }
        let original = checksum(UnsafeBufferPointer(arena.buffer))
        for bit in [0, 1, 22, 23, 31] {
            let saved = arena.buffer[index]
            arena.buffer[index] = Float(bitPattern: saved.bitPattern ^ (1 << UInt32(bit)))
            #expect(checksum(UnsafeBufferPointer(arena.buffer)) != original, "float \(index), bit \(bit)")
            arena.buffer[index] = saved
        }
        #expect(checksum(UnsafeBufferPointer(arena.buffer)) == original)
    }

    @Test func bitsNotValuesCountAndBufferBoundariesCount() {
        let zero = FloatArena(count: 4) { _ in 0 }
        let negativeZero = FloatArena(count: 4) { $0 == 2 ? -0.0 : 0 }
        #expect(checksum(UnsafeBufferPointer(zero.buffer)) != checksum(UnsafeBufferPointer(negativeZero.buffer)))
        let whole = FloatArena(count: 10) { Float($0) }
        let head = UnsafeBufferPointer(rebasing: whole.buffer[0 ..< 4])
        let tail = UnsafeBufferPointer(rebasing: whole.buffer[4 ..< 10])
        #expect(checksum([head, tail]) != checksum([UnsafeBufferPointer(whole.buffer)]))
        #expect(checksum([head, tail]) != checksum([tail, head]))
        let empty = UnsafeBufferPointer<Float>(start: nil, count: 0)
        #expect(checksum([empty]) != checksum([empty, empty]))
    }
}

@Suite(.timeLimit(.minutes(1)))
struct ReplicaConsistencyTests {
    @Test func aPerturbedRankIsReportedAndRepairedFromRankZero() throws {
        let results = try InProcessGroup.run(worldSize: 4) { communicator in
            let rank = communicator.rank
            let parameters = FloatArena(count: 1000) { testValue(rank: 0, index: $0) }
            let moments = FloatArena(count: 37) { testValue(rank: 0, index: $0, salt: 1) }
            if rank == 2 { parameters.buffer[999] = parameters.buffer[999].nextUp }  // one ulp on one float
            if rank == 3 { moments.buffer[0] = -moments.buffer[0] }
            let differing = try ensureReplicasMatch(buffers: [parameters.buffer, moments.buffer], communicator: communicator)
            let differingAfterRepair = try ensureReplicasMatch(buffers: [parameters.buffer, moments.buffer], communicator: communicator)
            return (differing, differingAfterRepair, parameters.values + moments.values)
        }
        let expected = (0 ..< 1000).map { testValue(rank: 0, index: $0) } + (0 ..< 37).map { testValue(rank: 0, index: $0, salt: 1) }
        for (rank, result) in results.enumerated() {
            #expect(result.0 == [2, 3], "rank \(rank)")
            #expect(result.1 == [], "rank \(rank)")
            #expect(result.2.map(\.bitPattern) == expected.map(\.bitPattern), "rank \(rank)")
        }
    }

    @Test func matchingReplicasAreLeftAlone() throws {
        let results = try InProcessGroup.run(worldSize: 3) { communicator in
            let parameters = FloatArena(count: 64) { Float($0) }
            return try ensureReplicasMatch(buffers: [parameters.buffer], communicator: communicator)
        }
        #expect(results == [[], [], []])
    }

    @Test func buffersOfDifferentSizesAreAnErrorNotARepair() throws {
        #expect(throws: CommunicationError.self) {
            _ = try InProcessGroup.run(worldSize: 2) { communicator in
                let parameters = FloatArena(count: communicator.rank == 0 ? 10 : 11) { _ in 0 }
                _ = try ensureReplicasMatch(buffers: [parameters.buffer], communicator: communicator)
            }
        }
    }
}
