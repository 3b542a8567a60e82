import Distributed
import Foundation
import Testing

/// The root-only file I/O paths: variable-length broadcasts, and chunked streams to and from the
/// root whose order, offsets and failure handling every rank can rely on.
@Suite(.timeLimit(.minutes(1)))
struct RootStreamsTests {
    /// Rank r holds counts[r] floats r * 1000 + i.
    static func values(rank: Int, count: Int) -> [Float] { (0..<count).map { Float(rank * 1000 + $0) } }

    @Test(arguments: [(1, 3), (3, 1), (3, 4), (4, 1000)])
    func streamToRootDeliversEveryRanksFloatsInOrder(worldSize: Int, chunkFloats: Int) throws {
        let counts = (0..<worldSize).map { [10, 0, 7, 1][$0 % 4] }
        let received = try InProcessGroup.run(worldSize: worldSize) { communicator -> [[Float]] in
            let local = Self.values(rank: communicator.rank, count: counts[communicator.rank])
            var gathered = [[Float]](repeating: [], count: worldSize)
            var lastOffset = [Int](repeating: -1, count: worldSize)
            try local.withUnsafeBufferPointer { local in
                try communicator.streamToRoot(local, root: 0, chunkFloats: chunkFloats) { rank, offset, chunk in
                    let inOrder = offset == gathered[rank].count && offset > lastOffset[rank] && chunk.count <= chunkFloats
                    #expect(inOrder)
                    lastOffset[rank] = offset
                    gathered[rank] += Array(chunk)
                }
            }
            return gathered
        }
        let expected: [[Float]] = (0..<worldSize).map { Self.values(rank: $0, count: counts[$0]) }
        #expect(received[0] == expected)
        for rank in 1..<worldSize { #expect(received[rank].allSatisfy { $0.isEmpty }, "only the root consumes") }
    }

    @Test(arguments: [(2, 3), (4, 2)])
    func streamFromRootFillsEveryRank(worldSize: Int, chunkFloats: Int) throws {
        let results = try InProcessGroup.run(worldSize: worldSize) { communicator -> [Float] in
            var local = [Float](repeating: -1, count: 3 + 2 * communicator.rank)
            try local.withUnsafeMutableBufferPointer { local in
                try communicator.streamFromRoot(into: local, root: 0, chunkFloats: chunkFloats) { rank, offset, chunk in
                    for i in chunk.indices { chunk[i] = Float(rank * 1000 + offset + i) }
                }
            }
            return local
        }
        for (rank, local) in results.enumerated() { #expect(local == Self.values(rank: rank, count: 3 + 2 * rank)) }
    }

    struct Broken: Error {}

    @Test func aFailingRootStillMovesEveryChunkThenThrowsOnTheRootOnly() throws {
        let outcomes = try InProcessGroup.run(worldSize: 3) { communicator -> (toRoot: Bool, fromRoot: Bool, after: Float) in
            let local = [Float](repeating: 1, count: 9)
            var toRootFailed = false, fromRootFailed = false
            do {
                try local.withUnsafeBufferPointer { local in
                    try communicator.streamToRoot(local, root: 0, chunkFloats: 2) { rank, offset, _ in
                        if rank == 1 && offset == 2 { throw Broken() }
                    }
                }
            } catch is Broken { toRootFailed = true }
            var filled = [Float](repeating: 5, count: 4)
            do {
                try filled.withUnsafeMutableBufferPointer { filled in
                    try communicator.streamFromRoot(into: filled, root: 0, chunkFloats: 3) { rank, _, chunk in
                        if rank == 1 { throw Broken() }
                        chunk.update(repeating: 7)
                    }
                }
            } catch is Broken { fromRootFailed = true }
            // The group is still in step: a collective after both streams works.
            let sum = try communicator.allReduce(Double(communicator.rank), .sum)
            return (toRootFailed, fromRootFailed, Float(sum) + filled[0])
        }
        #expect(outcomes.map(\.toRoot) == [true, false, false])
        #expect(outcomes.map(\.fromRoot) == [true, false, false])
        // Rank 0 filled itself (7), rank 1's produce failed (zeros), rank 2 came after the failure (zeros).
        let after: [Float] = outcomes.map(\.after)
        #expect(after == [10, 3, 3])
    }

    @Test(arguments: [1, 3])
    func bytesOfTheRootReachEveryRank(worldSize: Int) throws {
        let results = try InProcessGroup.run(worldSize: worldSize) { communicator in
            try communicator.broadcast(bytes: communicator.rank == 0 ? Array("config.json of rank 0".utf8) : [9, 9], root: 0)
        }
        #expect(results.allSatisfy { $0 == Array("config.json of rank 0".utf8) })
    }
}
