import Distributed
import Foundation

/// Every collective of the communication layer on awkward sizes, verified against values computed
/// independently: each rank fills its buffers with values derived from (rank, index), and the
/// expected sum of index i is formed here in rank order, so the synchroniser must match it bit for bit.
struct CommunicationChecks {
    let communicator: any Communicator

    /// Counts the checks made and records the mismatches (prefixed with the rank).
    final class Log {
        var checkCount = 0
        var failures: [String] = []
        let rank: Int
        init(rank: Int) { self.rank = rank }
        func expect(_ condition: Bool, _ failure: @autoclosure () -> String) {
            checkCount += 1
            if !condition { failures.append("rank \(rank): \(failure())") }
        }
    }

    /// The number of checks made on this rank and the mismatches found (empty when all is right).
    func run() throws -> (checkCount: Int, failures: [String], sumChecksum: UInt64) {
        let log = Log(rank: rank)
        try checkBarrierAndBroadcast(log)
        try checkReductions(log)
        try checkGathers(log)
        // (floats, bucket floats): empty arena; arena smaller than the world (shards of size 0 from
        // 4 ranks on); buckets of one float; buckets not dividing the arena; one bucket; bucket larger
        // than the arena; several MB with odd sizes.
        let cases = [(0, 16), (3, 1), (1000, 7), (1000, 64), (1001, 1001), (1001, 5000), (100_003, 10_000), ((1 << 20) + 5, 250_000)]
        for (floats, bucketFloats) in cases {
            for shardOptimizer in [false, true] {
                try checkSynchronizer(floats: floats, bucketFloats: bucketFloats, shardOptimizer: shardOptimizer, log)
            }
        }
        for (floats, chunkFloats) in [(0, 16), (3, 1), (17, 4), (100_003, 1000), (100_003, 1 << 20)] {
            try checkGatherParameters(floats: floats, chunkFloats: chunkFloats, log)
        }
        for compression in GradientCompression.allCases {
            for shardOptimizer in [false, true] {
                try checkSparseRows(compression: compression, shardOptimizer: shardOptimizer, log)
            }
        }
        try checkReplicaRepair(log)
        let sumChecksum = try checkSameResultOnEveryRank(log)
        return (log.checkCount, log.failures, sumChecksum)
    }

    private var rank: Int { communicator.rank }
    private var worldSize: Int { communicator.worldSize }

    private func checkBarrierAndBroadcast(_ log: Log) throws {
        try communicator.barrier()
        for root in 0 ..< worldSize {
            for count in [0, 1, 13, 4099] {
                var bytes = [UInt8](repeating: UInt8(rank), count: count)
                if rank == root { for index in 0 ..< count { bytes[index] = UInt8(truncatingIfNeeded: 31 * root + index) } }
                try bytes.withUnsafeMutableBytes { try communicator.broadcast($0, root: root) }
                log.expect(bytes == (0 ..< count).map { UInt8(truncatingIfNeeded: 31 * root + $0) },
                           "broadcast of \(count) bytes from rank \(root): wrong bytes")
            }
        }
    }

    private func checkReductions(_ log: Log) throws {
        func contribution(_ rank: Int) -> [Double] { [Double(rank) * 0.1 + 1e15 * Double(rank % 2 == 0 ? 1 : -1), Double(rank), -Double(rank) / 3] }
        let values = contribution(rank)
        var expectedSum = contribution(0)
        for other in 1 ..< worldSize { for index in 0 ..< 3 { expectedSum[index] += contribution(other)[index] } }
        let sum = try communicator.allReduce(values, .sum)
        log.expect(sum.map(\.bitPattern) == expectedSum.map(\.bitPattern), "allReduce sum: \(sum) != \(expectedSum)")
        let maximum = try communicator.allReduce(values, .max)
        let expectedMaximum = (0 ..< 3).map { index in (0 ..< worldSize).map { contribution($0)[index] }.max()! }
        log.expect(maximum == expectedMaximum, "allReduce max: \(maximum) != \(expectedMaximum)")
        let minimum = try communicator.allReduce(values, .min)
        let expectedMinimum = (0 ..< 3).map { index in (0 ..< worldSize).map { contribution($0)[index] }.min()! }
        log.expect(minimum == expectedMinimum, "allReduce min: \(minimum) != \(expectedMinimum)")
        log.expect(try communicator.anyRank(rank == worldSize - 1), "anyRank missed the last rank's flag")
        log.expect(try communicator.allReduce(rank == 0 ? Double.nan : 0, .max).isNaN, "allReduce max lost a NaN")
    }

    private func checkGathers(_ log: Log) throws {
        let words = try communicator.allGather(UInt64(rank) << 40 | 7)
        log.expect(words == (0 ..< worldSize).map { UInt64($0) << 40 | 7 }, "allGather of UInt64: \(words)")
        let strings = try communicator.allGather(bytes: [UInt8](repeating: UInt8(rank), count: rank % 3))
        log.expect(strings == (0 ..< worldSize).map { [UInt8](repeating: UInt8($0), count: $0 % 3) },
                   "allGather of byte strings: \(strings)")
    }

    private func checkSynchronizer(floats: Int, bucketFloats: Int, shardOptimizer: Bool, _ log: Log) throws {
        let arena = UnsafeMutableBufferPointer<Float>.allocate(capacity: floats)
        defer { arena.deallocate() }
        let synchronizer = try GradientSynchronizer(communicator: communicator, gradients: arena,
                                                    bucketFloats: bucketFloats, shardOptimizer: shardOptimizer)
        let checked = shardOptimizer ? synchronizer.layout.range(of: rank) : 0 ..< floats
        for step in 0 ..< 2 {
            // Step 1 posts its receives before the arena is written, as training does.
            if step == 1 { try synchronizer.postReceives() }
            for index in 0 ..< floats { arena[index] = checkValue(rank: rank, index: index, step: step) }
            let layerCount = 6
            for layer in stride(from: layerCount - 1, through: 0, by: -1) {
                try synchronizer.gradientsReady(downTo: floats * layer / layerCount)
                try synchronizer.progress()
            }
            try synchronizer.finish()
            var mismatches = 0, firstMismatch = -1
            for index in checked {
                var expected = checkValue(rank: 0, index: index, step: step)
                for other in 1 ..< max(worldSize, 1) { expected += checkValue(rank: other, index: index, step: step) }
                if arena[index].bitPattern != expected.bitPattern {
                    mismatches += 1
                    if firstMismatch < 0 { firstMismatch = index }
                }
            }
            log.expect(mismatches == 0,
                       "GradientSynchronizer(\(floats) floats, buckets of \(bucketFloats), shardOptimizer: \(shardOptimizer)) "
                           + "step \(step): \(mismatches) floats differ from the rank-order sum, first at index \(firstMismatch)")
        }
    }

    /// Two sparse tables (rows of 5) around dense floats; rank r touches rows where (row + r) % 3
    /// == 0, plus every row of table 1 on the last rank; untouched rows are +0. Expected: the
    /// rank-order sum with +0 for untouched rows, with bf16 rounding (ties to even, from the two
    /// neighbours) of each input and of the sum for `.bf16`; sharded: own shard and every table row.
    private func checkSparseRows(compression: GradientCompression, shardOptimizer: Bool, _ log: Log) throws {
        let tables = [SparseRowTable(range: 0 ..< 5000, rowLength: 5), SparseRowTable(range: 5003 ..< 5503, rowLength: 5)]
        let floats = 5510
        func table(of index: Int) -> (Int, Int)? {
            for (t, table) in tables.enumerated() where table.range.contains(index) { return (t, (index - table.range.lowerBound) / 5) }
            return nil
        }
        func touched(rank: Int, table: Int, row: Int) -> Bool { (row + rank) % 3 == 0 || (table == 1 && rank == worldSize - 1) }
        func value(rank: Int, index: Int) -> Float {
            if let (t, row) = table(of: index), !touched(rank: rank, table: t, row: row) { return 0 }
            return checkValue(rank: rank, index: index, step: 3)
        }
        func rounded(_ value: Float) -> Float { compression == .bf16 ? referenceBFloat16(value) : value }
        var options = GradientSyncOptions()
        options.bucketFloats = 97
        options.messageFloats = 64
        options.shardOptimizer = shardOptimizer
        options.compression = compression
        options.sparseTables = tables
        let arena = UnsafeMutableBufferPointer<Float>.allocate(capacity: floats)
        defer { arena.deallocate() }
        let synchronizer = try GradientSynchronizer(communicator: communicator, gradients: arena, options: options)
        for index in 0 ..< floats { arena[index] = value(rank: rank, index: index) }
        for (t, sparse) in tables.enumerated() {
            for row in 0 ..< sparse.rowCount where touched(rank: rank, table: t, row: row) { synchronizer.markRow(table: t, row: row) }
        }
        for layer in stride(from: 3, through: 0, by: -1) {
            try synchronizer.gradientsReady(downTo: floats * layer / 4)
            try synchronizer.progress()
        }
        try synchronizer.finish()
        let own = synchronizer.layout.range(of: rank)
        var mismatches = 0, firstMismatch = -1
        for index in 0 ..< floats where !shardOptimizer || own.contains(index) || table(of: index) != nil {
            var expected = rounded(value(rank: 0, index: index))
            for other in 1 ..< max(worldSize, 1) { expected += rounded(value(rank: other, index: index)) }
            expected = rounded(expected)
            if arena[index].bitPattern != expected.bitPattern {
                mismatches += 1
                if firstMismatch < 0 { firstMismatch = index }
            }
        }
        log.expect(mismatches == 0, "sparse rows (\(compression), shardOptimizer: \(shardOptimizer)): \(mismatches) floats differ "
                       + "from the rank-order sum, first at index \(firstMismatch)")
    }

    private func checkGatherParameters(floats: Int, chunkFloats: Int, _ log: Log) throws {
        let layout = ShardLayout(totalCount: floats, worldSize: worldSize)
        let own = layout.range(of: rank)
        var parameters = (0 ..< floats).map { own.contains($0) ? checkValue(rank: 99, index: $0, step: 0) : Float(rank) }
        try parameters.withUnsafeMutableBufferPointer { try communicator.gatherParameters($0, layout: layout, chunkFloats: chunkFloats) }
        log.expect(parameters.map(\.bitPattern) == (0 ..< floats).map { checkValue(rank: 99, index: $0, step: 0).bitPattern },
                   "gatherParameters of \(floats) floats in chunks of \(chunkFloats): wrong values")
    }

    private func checkReplicaRepair(_ log: Log) throws {
        var parameters = (0 ..< 1003).map { checkValue(rank: 0, index: $0, step: 5) }
        var moments = (0 ..< 17).map { checkValue(rank: 0, index: $0, step: 6) }
        let perturbed = worldSize > 1 ? [worldSize - 1] : []
        if perturbed.contains(rank) { parameters[1002] = parameters[1002].nextUp; moments[0] = -moments[0] }
        let differing = try parameters.withUnsafeMutableBufferPointer { parameterBuffer in
            try moments.withUnsafeMutableBufferPointer { momentBuffer in
                try ensureReplicasMatch(buffers: [parameterBuffer, momentBuffer], communicator: communicator)
            }
        }
        log.expect(differing == perturbed, "ensureReplicasMatch reported \(differing), expected \(perturbed)")
        log.expect(parameters == (0 ..< 1003).map { checkValue(rank: 0, index: $0, step: 5) }
                       && moments == (0 ..< 17).map { checkValue(rank: 0, index: $0, step: 6) },
                   "ensureReplicasMatch did not repair the buffers from rank 0")
    }

    /// The unsharded synchroniser leaves identical bits on every rank (compared by checksum). Returns
    /// the checksum, which --check prints so that MPI and simulated runs can be compared directly.
    private func checkSameResultOnEveryRank(_ log: Log) throws -> UInt64 {
        let floats = 50_001
        let arena = UnsafeMutableBufferPointer<Float>.allocate(capacity: floats)
        defer { arena.deallocate() }
        for index in 0 ..< floats { arena[index] = checkValue(rank: rank, index: index, step: 9) }
        let synchronizer = try GradientSynchronizer(communicator: communicator, gradients: arena, bucketFloats: 4096, shardOptimizer: false)
        try synchronizer.finish()
        let sums = try communicator.allGather(checksum(UnsafeBufferPointer(arena)))
        log.expect(Set(sums).count == 1, "ranks hold different gradient sums: checksums \(sums)")
        return sums[0]
    }

    /// A Float derived from (rank, index, step): random sign and mantissa, exponent in 2^-8 ... 2^8,
    /// so that a different order of addition changes the rounded sum.
    private func checkValue(rank: Int, index: Int, step: Int) -> Float {
        var state = UInt64(truncatingIfNeeded: rank) &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(truncatingIfNeeded: index) &* 0xBF58_476D_1CE4_E5B9
            ^ UInt64(truncatingIfNeeded: step) &* 0x94D0_49BB_1331_11EB
        state = (state ^ (state >> 30)) &* 0xBF58_476D_1CE4_E5B9
        state = (state ^ (state >> 27)) &* 0x94D0_49BB_1331_11EB
        state ^= state >> 31
        let bits = UInt32(state & 1) << 31 | UInt32(127 - 8 + Int((state >> 1) % 17)) << 23 | UInt32((state >> 8) & 0x7F_FFFF)
        return Float(bitPattern: bits)
    }
}


/// Round to the nearest bf16, ties to even, computed from the two neighbours (an implementation
/// independent of the synchroniser's bit arithmetic).
func referenceBFloat16(_ value: Float) -> Float {
    if value.isNaN { return value }
    let down = Float(bitPattern: value.bitPattern & 0xFFFF_0000)
    let up = Float(bitPattern: (value.bitPattern & 0xFFFF_0000) &+ 0x1_0000)
    if down == value { return value }
    let below = abs(Double(value) - Double(down))
    let above = up.isInfinite ? Double(value.ulp) * 65536 - below : abs(Double(up) - Double(value))
    if below != above { return below < above ? down : up }
    return (down.bitPattern >> 16) & 1 == 0 ? down : up
}
