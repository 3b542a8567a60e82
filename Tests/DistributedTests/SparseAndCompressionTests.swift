import Distributed
import Foundation
import Testing

/// The sparse row exchange against the dense sum, bf16 compression against an independent
/// reference, and the message and bucket cutting, on in-process ranks.
@Suite(.timeLimit(.minutes(2)))
struct SparseAndCompressionTests {
    /// Arena: table 0 (40 rows of 6), dense 0 (37 floats), table 1 (9 rows of 6), dense 1 (20 floats).
    static let rowLength = 6
    static let tables = [SparseRowTable(range: 0 ..< 240, rowLength: 6), SparseRowTable(range: 277 ..< 331, rowLength: 6)]
    static let arenaCount = 351

    /// Rows rank `rank` touches in `step`: a pseudo-random set, with special cases: rank 1 touches
    /// nothing in step 0, the last rank touches every row of table 1, row 0 of table 0 is touched by
    /// every rank, row 39 by none.
    static func touchedRows(rank: Int, worldSize: Int, step: Int, table: Int) -> [Int] {
        if rank == 1 && step == 0 { return [] }
        let count = tables[table].rowCount
        if table == 1 && rank == worldSize - 1 { return Array(0 ..< count) }
        return (0 ..< count).filter { row in
            row == 0 || (row != count - 1 && testValue(rank: rank + 10 * step, index: 1000 * table + row).exponent % 3 == 0)
        }
    }

    /// What backward would leave: touched rows hold values (one -0 and one NaN among them), the rest
    /// of the tables +0, the dense floats values.
    static func fill(_ arena: UnsafeMutableBufferPointer<Float>, rank: Int, worldSize: Int, step: Int) {
        for index in 0 ..< arenaCount { arena[index] = testValue(rank: rank, index: index, salt: UInt64(step)) }
        for (t, table) in tables.enumerated() {
            for index in table.range { arena[index] = 0 }
            for row in touchedRows(rank: rank, worldSize: worldSize, step: step, table: t) {
                for column in 0 ..< rowLength {
                    arena[table.range.lowerBound + row * rowLength + column] = testValue(rank: rank, index: 7 * row + column, salt: UInt64(t + 3 * step))
                }
            }
        }
        // -0 in row 0 of table 0 on every rank that touches it: the dense sum keeps -0 only where
        // every rank does (rank 1 does not in step 0: -0 + +0 = +0). A NaN from the last rank.
        let rows0 = touchedRows(rank: rank, worldSize: worldSize, step: step, table: 0)
        let rows1 = touchedRows(rank: rank, worldSize: worldSize, step: step, table: 1)
        if rows0.first == 0 { arena[0] = -0.0 }
        if rank == worldSize - 1 && rows1.first == 0 { arena[tables[1].range.lowerBound + 1] = .nan }
    }

    /// What backward does to the synchroniser in `step`: fills the arena, marks the touched rows
    /// (`markRows`), reports readiness in 4 layers with progress in between.
    static func backward(_ synchronizer: GradientSynchronizer, _ arena: UnsafeMutableBufferPointer<Float>, rank: Int, worldSize: Int,
                         step: Int, markRows: Bool) throws {
        fill(arena, rank: rank, worldSize: worldSize, step: step)
        if markRows {
            for t in tables.indices {
                for row in touchedRows(rank: rank, worldSize: worldSize, step: step, table: t) { synchronizer.markRow(table: t, row: row) }
            }
        }
        for layer in stride(from: 3, through: 0, by: -1) {
            try synchronizer.gradientsReady(downTo: arenaCount * layer / 4)
            try synchronizer.progress()
        }
    }

    /// Two steps through a synchroniser with `options`, readiness reported in 4 layers; each rank's arenas.
    /// `postReceives`: even ranks post their receives before filling the arena (twice: the second
    /// call must do nothing), odd ranks leave them to gradientsReady.
    static func run(worldSize: Int, _ options: GradientSyncOptions, markRows: Bool, postReceives: Bool = false) throws -> [[[Float]]] {
        try InProcessGroup.run(worldSize: worldSize) { communicator in
            let rank = communicator.rank
            let arena = FloatArena(count: arenaCount) { _ in 0 }
            let synchronizer = try GradientSynchronizer(communicator: communicator, gradients: arena.buffer, options: options)
            var steps: [[Float]] = []
            for step in 0 ..< 2 {
                if postReceives && rank % 2 == 0 {
                    try synchronizer.postReceives()
                    try synchronizer.postReceives()
                }
                try backward(synchronizer, arena.buffer, rank: rank, worldSize: worldSize, step: step, markRows: markRows)
                try synchronizer.finish()
                steps.append(arena.values)
            }
            return steps
        }
    }

    /// What `run` does, but finishing in two halves, as the trainer does: per rank and step, the
    /// arena after `finishReduces` and, for every float, the value it held when `finishGathers`
    /// handed its part over (NaN with payload 1 if never) and how often it was handed over.
    static func runInTwoHalves(worldSize: Int, _ options: GradientSyncOptions)
        throws -> [(afterReduces: [[Float]], handedOver: [[Float]], handedTimes: [[Int]])] {
        try InProcessGroup.run(worldSize: worldSize) { communicator in
            let rank = communicator.rank
            let arena = FloatArena(count: arenaCount) { _ in 0 }
            let synchronizer = try GradientSynchronizer(communicator: communicator, gradients: arena.buffer, options: options)
            var afterReduces: [[Float]] = [], handedOver: [[Float]] = [], handedTimes: [[Int]] = []
            for step in 0 ..< 2 {
                try backward(synchronizer, arena.buffer, rank: rank, worldSize: worldSize, step: step,
                             markRows: !options.sparseTables.isEmpty)
                try synchronizer.finishReduces()
                afterReduces.append(arena.values)
                var values = [Float](repeating: Float(nan: 1, signaling: false), count: arenaCount)
                var times = [Int](repeating: 0, count: arenaCount)
                try synchronizer.finishGathers { part in
                    for index in part {
                        values[index] = arena.buffer[index]
                        times[index] += 1
                    }
                }
                handedOver.append(values)
                handedTimes.append(times)
            }
            return (afterReduces, handedOver, handedTimes)
        }
    }

    @Test(arguments: [1, 2, 3, 4], [false, true])
    func finishInTwoHalvesHandsEveryPartOverOnceAlreadySummed(worldSize: Int, sharded: Bool) throws {
        let layout = ShardLayout(totalCount: Self.arenaCount, worldSize: worldSize)
        for compression in GradientCompression.allCases {
            for sparse in [false, true] {
                let options = Self.options(sparse: sparse, sharded: sharded, compression: compression)
                let whole = try Self.run(worldSize: worldSize, options, markRows: sparse)
                let halves = try Self.runInTwoHalves(worldSize: worldSize, options)
                for rank in 0 ..< worldSize {
                    // Where this rank holds the sum: its shard and the sparse tables (everywhere unsharded).
                    var summed = sharded ? Set(layout.range(of: rank)) : Set(0 ..< Self.arenaCount)
                    if sparse { for table in Self.tables { summed.formUnion(table.range) } }
                    let indices = summed.sorted(), shard = layout.range(of: rank)
                    for step in 0 ..< 2 {
                        let what = "\(compression), sparse \(sparse), rank \(rank), step \(step)"
                        let expected = whole[rank][step]
                        #expect(halves[rank].handedTimes[step] == Array(repeating: 1, count: Self.arenaCount), "\(what): each float once")
                        #expect(indices.map { halves[rank].handedOver[step][$0].bitPattern } == indices.map { expected[$0].bitPattern },
                                "\(what): summed when handed over")
                        #expect(shard.map { halves[rank].afterReduces[step][$0].bitPattern } == shard.map { expected[$0].bitPattern },
                                "\(what): the own shard summed after the reduces")
                    }
                }
            }
        }
    }

    static func options(sparse: Bool, sharded: Bool, compression: GradientCompression = .none) -> GradientSyncOptions {
        var options = GradientSyncOptions()
        options.bucketFloats = 16
        options.messageFloats = 5  // several messages per part
        options.shardOptimizer = sharded
        options.compression = compression
        options.bucketBoundaries = [100, 250, 340]
        if sparse { options.sparseTables = tables }
        return options
    }

    @Test(arguments: [1, 2, 3, 4], [false, true])
    func sparseRowsGiveTheDenseSumBitForBit(worldSize: Int, sharded: Bool) throws {
        let dense = try Self.run(worldSize: worldSize, Self.options(sparse: false, sharded: sharded), markRows: false)
        let sparse = try Self.run(worldSize: worldSize, Self.options(sparse: true, sharded: sharded), markRows: true)
        let layout = ShardLayout(totalCount: Self.arenaCount, worldSize: worldSize)
        for rank in 0 ..< worldSize {
            // Sharded: the dense sum is defined in the own shard; the sparse rows everywhere.
            let checked = sharded ? Array(layout.range(of: rank)) : Array(0 ..< Self.arenaCount)
            for step in 0 ..< 2 {
                #expect(checked.map { sparse[rank][step][$0].bitPattern } == checked.map { dense[rank][step][$0].bitPattern },
                        "rank \(rank), step \(step)")
            }
            if sharded {
                // Every rank holds every summed row, equal to rank 0's.
                for table in Self.tables {
                    #expect(sparse[rank][1][table.range].map(\.bitPattern) == sparse[0][1][table.range].map(\.bitPattern))
                }
            }
        }
        // The cases the test means to cover do occur: -0 kept by a lone rank 0 only in a 1-rank world.
        #expect(sparse[0][0][0].bitPattern == (worldSize > 1 ? Float(0) : -Float(0)).bitPattern)
        #expect(sparse[0][1][0].bitPattern == (-Float(0)).bitPattern)
        #expect(sparse[0][1][Self.tables[1].range.lowerBound + 1].isNaN)
    }

    @Test(arguments: [1, 2, 3, 4], [false, true])
    func receivesPostedBeforeTheStepChangeNothing(worldSize: Int, sharded: Bool) throws {
        for compression in GradientCompression.allCases {
            let options = Self.options(sparse: true, sharded: sharded, compression: compression)
            let late = try Self.run(worldSize: worldSize, options, markRows: true)
            let early = try Self.run(worldSize: worldSize, options, markRows: true, postReceives: true)
            for rank in 0 ..< worldSize {
                for step in 0 ..< 2 {
                    #expect(early[rank][step].map(\.bitPattern) == late[rank][step].map(\.bitPattern),
                            "\(compression), rank \(rank), step \(step)")
                }
            }
        }
    }

    /// bf16(Σ_r bf16(g_r)), the sum in fp32 in rank order, rounding by an independent reference.
    static func expectedCompressed(worldSize: Int, step: Int) -> [Float] {
        var inputs: [[Float]] = []
        for rank in 0 ..< worldSize {
            let arena = FloatArena(count: arenaCount) { _ in 0 }
            fill(arena.buffer, rank: rank, worldSize: worldSize, step: step)
            inputs.append(arena.values)
        }
        return (0 ..< arenaCount).map { index in
            var sum = referenceBFloat16(inputs[0][index])
            for rank in 1 ..< worldSize { sum += referenceBFloat16(inputs[rank][index]) }
            return referenceBFloat16(sum)
        }
    }

    @Test(arguments: [1, 2, 3, 4], [false, true])
    func compressionLeavesTheRoundedSumOfRoundedGradientsOnEveryRank(worldSize: Int, sharded: Bool) throws {
        let results = try Self.run(worldSize: worldSize, Self.options(sparse: true, sharded: sharded, compression: .bf16), markRows: true)
        let layout = ShardLayout(totalCount: Self.arenaCount, worldSize: worldSize)
        for step in 0 ..< 2 {
            let expected = Self.expectedCompressed(worldSize: worldSize, step: step)
            for rank in 0 ..< worldSize {
                var checked = sharded ? Set(layout.range(of: rank)) : Set(0 ..< Self.arenaCount)
                for table in Self.tables { checked.formUnion(table.range) }
                let indices = checked.sorted()
                #expect(indices.map { results[rank][step][$0].bitPattern } == indices.map { expected[$0].bitPattern },
                        "rank \(rank), step \(step)")
            }
        }
    }

    @Test func compressionOfDenseTablesEqualsCompressionOfSparseOnes() throws {
        let dense = try Self.run(worldSize: 3, Self.options(sparse: false, sharded: false, compression: .bf16), markRows: false)
        let sparse = try Self.run(worldSize: 3, Self.options(sparse: true, sharded: false, compression: .bf16), markRows: true)
        #expect(dense[0].map { $0.map(\.bitPattern) } == sparse[0].map { $0.map(\.bitPattern) })
    }

    @Test func bucketsEndAtTheBoundariesAndSkipTheSparseTables() throws {
        _ = try InProcessGroup.run(worldSize: 2) { communicator in
            let arena = FloatArena(count: Self.arenaCount) { _ in 0 }
            let synchronizer = try GradientSynchronizer(communicator: communicator, gradients: arena.buffer,
                                                        options: Self.options(sparse: true, sharded: false))
            let ranges = synchronizer.bucketRanges
            #expect(ranges.first?.lowerBound == 240 && ranges.last?.upperBound == Self.arenaCount)
            #expect(ranges.allSatisfy { $0.count <= 16 && !$0.overlaps(Self.tables[0].range) && !$0.overlaps(Self.tables[1].range) })
            #expect(ranges.contains { $0.upperBound == 250 } && ranges.contains { $0.lowerBound == 250 })
            #expect(ranges.contains { $0.upperBound == 340 } && ranges.contains { $0.upperBound == 277 })
            #expect(ranges.reduce(0) { $0 + $1.count } == Self.arenaCount - 240 - 54)
        }
    }

    @Test func rejectsOverlappingOrOutOfRangeTables() throws {
        _ = try InProcessGroup.run(worldSize: 2) { communicator in
            let arena = FloatArena(count: 100) { _ in 0 }
            for tables in [[SparseRowTable(range: 0 ..< 60, rowLength: 6), SparseRowTable(range: 54 ..< 66, rowLength: 6)],
                           [SparseRowTable(range: 60 ..< 120, rowLength: 6)],
                           [SparseRowTable(range: 0 ..< 60, rowLength: 6), SparseRowTable(range: 60 ..< 100, rowLength: 4)]] {
                var options = GradientSyncOptions()
                options.sparseTables = tables
                #expect(throws: CommunicationError.self) {
                    try GradientSynchronizer(communicator: communicator, gradients: arena.buffer, options: options)
                }
            }
        }
    }

    @Test func bfloat16RoundingIsToNearestEven() {
        let one = Float(1)
        let cases: [(Float, Float)] = [
            (one, one),
            (one + 0x1p-8, one),                       // tie: to the even neighbour 1
            (one + 3 * 0x1p-8, one + 0x1p-6),          // tie: up to the even neighbour
            (one + 0x1p-8 + 0x1p-20, one + 0x1p-7),    // above the tie: up
            (-(one + 3 * 0x1p-8), -(one + 0x1p-6)),
            (.greatestFiniteMagnitude, .infinity),     // rounds past the largest bf16
            (Float(bitPattern: 0x0000_8001), Float(bitPattern: 0x0001_0000)),  // subnormal, not flushed
            (-0.0, -0.0),
        ]
        for (input, expected) in cases {
            #expect(referenceBFloat16(input).bitPattern == expected.bitPattern, "\(input)")
        }
        #expect(referenceBFloat16(.nan).isNaN)
    }
}

/// Round to the nearest bf16, ties to even, computed from the two neighbours (not bit tricks).
func referenceBFloat16(_ value: Float) -> Float {
    if value.isNaN { return value }
    let down = Float(bitPattern: value.bitPattern & 0xFFFF_0000)  // toward zero
    let up = Float(bitPattern: (value.bitPattern & 0xFFFF_0000) &+ 0x1_0000)  // away from zero (may be infinity)
    if down == value { return value }
    let below = abs(Double(value) - Double(down)), above = up.isInfinite ? Double(value.ulp) * 65536 - below : abs(Double(up) - Double(value))
    if below < above { return down }
    if above < below { return up }
    return (down.bitPattern >> 16) & 1 == 0 ? down : up
}
