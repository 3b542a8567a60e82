import Distributed
import Testing

@Suite(.timeLimit(.minutes(2)))
struct GradientSynchronizerTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var worldSize: Int
        var floatCount: Int
        var bucketFloats: Int
        var testDescription: String { "\(worldSize) ranks, \(floatCount) floats, buckets of \(bucketFloats)" }
    }

    /// World sizes 1, 2, 3, 4, 8; arenas empty, smaller than the world, odd and larger (4099: an
    /// owner's part spans several of the rank-order sum's 1024-float blocks); buckets of one float,
    /// not dividing the arena, equal to it and larger than it.
    static let cases: [Case] = {
        var cases: [Case] = []
        for worldSize in [1, 2, 3, 4, 8] {
            for floatCount in [0, 3, 100, 1001, 4099] {
                for bucketFloats in [1, 7, 64, 1001, 5000]
                where !(bucketFloats == 1 && floatCount > 100) && !(floatCount == 4099 && bucketFloats < 1001) {
                    cases.append(Case(worldSize: worldSize, floatCount: floatCount, bucketFloats: bucketFloats))
                }
            }
        }
        return cases
    }()

    /// Runs two steps (the synchroniser must reset between them), reporting readiness layer by layer
    /// with progress() in between, as the trainer does; returns each rank's arena after each step.
    static func synchronize(_ testCase: Case, shardOptimizer: Bool, layers: Int = 5) throws -> [[[Float]]] {
        try InProcessGroup.run(worldSize: testCase.worldSize) { communicator in
            let rank = communicator.rank
            let arena = FloatArena(count: testCase.floatCount) { testValue(rank: rank, index: $0) }
            let synchronizer = try GradientSynchronizer(communicator: communicator, gradients: arena.buffer,
                                                        bucketFloats: testCase.bucketFloats, shardOptimizer: shardOptimizer)
            var steps: [[Float]] = []
            for step in 0 ..< 2 {
                for index in 0 ..< testCase.floatCount { arena.buffer[index] = testValue(rank: rank, index: index, salt: UInt64(step)) }
                for layer in stride(from: layers - 1, through: 0, by: -1) {
                    try synchronizer.gradientsReady(downTo: testCase.floatCount * layer / layers)
                    try synchronizer.progress()
                }
                try synchronizer.finish()
                steps.append(arena.values)
            }
            return steps
        }
    }

    @Test(arguments: cases)
    func unshardedLeavesTheRankOrderSumEverywhereBitForBit(testCase: Case) throws {
        let results = try Self.synchronize(testCase, shardOptimizer: false)
        for step in 0 ..< 2 {
            let expected = (0 ..< testCase.floatCount).map {
                rankOrderSum(worldSize: testCase.worldSize, index: $0, salt: UInt64(step)).bitPattern
            }
            for rank in 0 ..< testCase.worldSize {
                #expect(results[rank][step].map(\.bitPattern) == expected, "rank \(rank), step \(step)")
            }
        }
    }

    @Test(arguments: cases)
    func shardedLeavesTheRankOrderSumInEachRanksShard(testCase: Case) throws {
        let results = try Self.synchronize(testCase, shardOptimizer: true)
        let layout = ShardLayout(totalCount: testCase.floatCount, worldSize: testCase.worldSize)
        for step in 0 ..< 2 {
            for rank in 0 ..< testCase.worldSize {
                let shard = layout.range(of: rank)
                let expected = shard.map { rankOrderSum(worldSize: testCase.worldSize, index: $0, salt: UInt64(step)).bitPattern }
                #expect(results[rank][step][shard].map(\.bitPattern) == expected, "rank \(rank), step \(step)")
            }
        }
    }

    /// The bit-equality tests above can only fail if the order of addition matters for these values.
    @Test func theTestValuesDependOnSummationOrder() {
        let differing = (0 ..< 1000).filter { index in
            var reversed = testValue(rank: 7, index: index)
            for rank in stride(from: 6, through: 0, by: -1) { reversed += testValue(rank: rank, index: index) }
            return reversed.bitPattern != rankOrderSum(worldSize: 8, index: index).bitPattern
        }
        #expect(differing.count > 100)
    }

    @Test func aBucketStartsOnlyWhenItLiesEntirelyAboveTheReadyOffset() throws {
        // Two ranks, buckets 0..<10, 10..<20, 20..<25. Rank 1 overwrites floats 0..<20 after declaring
        // only 20... ready: the bucket 20..<25 must carry the old values, the others the new ones.
        let results = try InProcessGroup.run(worldSize: 2) { communicator in
            let arena = FloatArena(count: 25) { _ in 1 }
            let synchronizer = try GradientSynchronizer(communicator: communicator, gradients: arena.buffer,
                                                        bucketFloats: 10, shardOptimizer: false)
            try synchronizer.gradientsReady(downTo: 15)  // only 20..<25 lies entirely above 15
            for index in 0 ..< 20 { arena.buffer[index] = 2 }
            try synchronizer.gradientsReady(downTo: 0)
            try synchronizer.finish()
            return arena.values
        }
        for values in results {
            #expect(values == Array(repeating: 4, count: 20) + Array(repeating: 2, count: 5))
        }
    }

    @Test func rejectsAnOffsetOutsideTheArena() throws {
        _ = try InProcessGroup.run(worldSize: 1) { communicator in
            let arena = FloatArena(count: 8) { _ in 0 }
            let synchronizer = try GradientSynchronizer(communicator: communicator, gradients: arena.buffer, shardOptimizer: false)
            #expect(throws: CommunicationError.self) { try synchronizer.gradientsReady(downTo: 9) }
            #expect(throws: CommunicationError.self) {
                try GradientSynchronizer(communicator: communicator, gradients: arena.buffer, bucketFloats: 0, shardOptimizer: false)
            }
        }
    }

    @Test(arguments: [1, 2, 3, 4, 8], [0, 5, 16, 100, 1001])
    func gatherParametersCopiesEveryShardToEveryRank(worldSize: Int, floatCount: Int) throws {
        let layout = ShardLayout(totalCount: floatCount, worldSize: worldSize)
        let results = try InProcessGroup.run(worldSize: worldSize) { communicator in
            let own = layout.range(of: communicator.rank)
            // Own shard: the value the owner computed; elsewhere: stale values of this rank.
            let parameters = FloatArena(count: floatCount) { index in
                own.contains(index) ? testValue(rank: 100, index: index) : testValue(rank: communicator.rank, index: index)
            }
            try communicator.gatherParameters(parameters.buffer, layout: layout, chunkFloats: 7)  // several chunks per shard
            return parameters.values
        }
        let expected = (0 ..< floatCount).map { testValue(rank: 100, index: $0) }
        for values in results { #expect(values == expected) }
    }

    @Test(arguments: [1, 2, 3, 4, 8], [0, 5, 16, 100, 1001])
    func gatherParametersInPiecesSendsWhatEachPieceWasMadeInto(worldSize: Int, floatCount: Int) throws {
        // ZeRO-1's pipelined form: the owner computes its shard piece by piece while earlier pieces travel.
        let layout = ShardLayout(totalCount: floatCount, worldSize: worldSize)
        let results = try InProcessGroup.run(worldSize: worldSize) { communicator in
            let own = layout.range(of: communicator.rank)
            let parameters = FloatArena(count: floatCount) { testValue(rank: communicator.rank, index: $0) }  // stale
            var pieces: [Range<Int>] = [], requests: [TransferRequest] = []
            try communicator.gatherParameters(parameters.buffer, layout: layout, chunkFloats: 7, pieceFloats: 14,
                                              requests: &requests) { piece in
                pieces.append(piece)
                for index in piece { parameters.buffer[index] = testValue(rank: 100, index: index) }
            }
            // The pieces cover the own shard in order, each at most 14 floats.
            #expect(pieces.flatMap { Array($0) } == Array(own) && pieces.allSatisfy { $0.count <= 14 && !$0.isEmpty })
            return parameters.values
        }
        let expected = (0 ..< floatCount).map { testValue(rank: 100, index: $0) }
        for values in results { #expect(values == expected) }
    }
}
