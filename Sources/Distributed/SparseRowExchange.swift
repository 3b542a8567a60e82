/// A gradient table whose rows are zero unless the step's batches used them: the word
/// embeddings (row = token id) and the position embeddings (row = position in the sequence).
public struct SparseRowTable: Sendable, Equatable {
    /// The table's floats in the gradient arena: `rowCount` rows of `rowLength`, row-major.
    public var range: Range<Int>
    public var rowLength: Int

    public init(range: Range<Int>, rowLength: Int) {
        precondition(rowLength >= 1 && range.count % rowLength == 0, "a sparse table must be whole rows of rowLength >= 1 floats")
        self.range = range
        self.rowLength = rowLength
    }

    public var rowCount: Int { range.count / rowLength }
}

/// Sums the rows of sparse tables that some rank touched, sending only those rows and their ids.
///
/// Result, for every row of every table on every rank: exactly what the dense sum in rank order
/// computes, ((g0 + g1) + g2) + ..., where g_r is rank r's row and an untouched row is +0 (the
/// gradients were zeroed and backward never wrote it) — the formula is evaluated as written, with
/// +0 rows for the ranks that did not touch a row, so even -0 and NaN come out as the dense sum's
/// (-0 + +0 = +0). Rows no rank touched stay +0 on every rank, as the dense sum leaves them.
/// With `.bf16` compression each g_r is rounded to bf16 first and the sum is rounded to bf16.
///
/// Per step (driven by GradientSynchronizer):
///   mark(row:) for every row backward will write (before the step's first `startIds`);
///   startIds(): each rank sends every other its count and sorted ids (during backward: the ids
///     are known from the batch);
///   startRows(): once the tables' gradients are final: the rows, packed in id order;
///   finish(): waits, then every rank adds all ranks' rows itself, in rank order (an allgather:
///     no second phase; for N ranks each rank receives N - 1 row sets).
/// The tables must share one row length. Not thread-safe; no heap allocation per step (buffers
/// for the worst case, all rows of every peer, are reserved at init and committed by use).
final class SparseRowExchange {
    let tables: [SparseRowTable]
    let rowLength: Int
    /// Rows over all tables; table t's rows are numbered from firstRow[t] on.
    let rowCount: Int
    private let firstRow: [Int]
    private let communicator: any Communicator
    private let gradients: UnsafeMutableBufferPointer<Float>
    private let compression: GradientCompression
    private let messageBytes: Int
    private var elementSize: Int { compression == .bf16 ? 2 : 4 }

    private enum Phase { case idle, idsSent, rowsSent }
    private var phase = Phase.idle
    private let touched: UnsafeMutableBufferPointer<Bool>
    /// Row ids of rank r at ids[r * rowCount ..< r * rowCount + counts[r]], ascending.
    private let ids: UnsafeMutableBufferPointer<Int32>
    private let counts: UnsafeMutableBufferPointer<Int32>
    /// Rank r's rows (as sent: fp32 or bf16) at rows + r * rowCount * rowLength * elementSize.
    private let rows: UnsafeMutableRawPointer
    private let zeroRow: UnsafeMutableBufferPointer<Float>
    private let sumRow: UnsafeMutableBufferPointer<Float>
    private var cursors: [Int]
    private var countRequests: [TransferRequest] = []
    private var idRequests: [TransferRequest] = []
    private var rowRequests: [TransferRequest] = []
    private var idReceivesPosted = false, rowReceivesPosted = false
    /// Bytes this rank sent in the last step (ids and rows).
    private(set) var sentBytes = 0

    init(tables: [SparseRowTable], communicator: any Communicator, gradients: UnsafeMutableBufferPointer<Float>,
         compression: GradientCompression, messageBytes: Int) throws {
        let rank = communicator.rank
        guard let first = tables.first, tables.allSatisfy({ $0.rowLength == first.rowLength }) else {
            throw CommunicationError(rank: rank, operation: "GradientSynchronizer", reason: "sparse tables must be given and share one row length")
        }
        for table in tables where table.range.lowerBound < 0 || table.range.upperBound > gradients.count {
            throw CommunicationError(rank: rank, operation: "GradientSynchronizer",
                                     reason: "sparse table \(table.range) is outside the arena of \(gradients.count) floats")
        }
        self.tables = tables
        self.communicator = communicator
        self.gradients = gradients
        self.compression = compression
        self.messageBytes = messageBytes
        rowLength = first.rowLength
        var firstRow: [Int] = [], total = 0
        for table in tables { firstRow.append(total); total += table.rowCount }
        self.firstRow = firstRow
        rowCount = total
        let worldSize = communicator.worldSize
        touched = .allocate(capacity: total)
        touched.initialize(repeating: false)
        ids = .allocate(capacity: worldSize * total)
        counts = .allocate(capacity: worldSize)
        counts.initialize(repeating: 0)
        rows = .allocate(byteCount: max(1, worldSize * total * first.rowLength * (compression == .bf16 ? 2 : 4)), alignment: 64)
        zeroRow = .allocate(capacity: first.rowLength)
        zeroRow.initialize(repeating: 0)
        sumRow = .allocate(capacity: first.rowLength)
        cursors = Array(repeating: 0, count: worldSize)
        let peers = worldSize - 1
        countRequests.reserveCapacity(2 * peers)
        idRequests.reserveCapacity(2 * peers * messageCount(total * 4, messageBytes))
        rowRequests.reserveCapacity(2 * peers * messageCount(total * first.rowLength * (compression == .bf16 ? 2 : 4), messageBytes))
    }

    deinit {
        touched.deallocate()
        ids.deallocate()
        counts.deallocate()
        rows.deallocate()
        zeroRow.deallocate()
        sumRow.deallocate()
    }

    /// Row `row` of table `table` will be written by backward this step.
    @inline(__always)
    func mark(table: Int, row: Int) {
        touched[firstRow[table] + row] = true
    }

    var hasStarted: Bool { phase != .idle }

    /// Sends this rank's sorted ids (and their count) to every peer and starts receiving theirs.
    func startIds() throws {
        precondition(phase == .idle)
        let rank = communicator.rank, worldSize = communicator.worldSize
        // Sorted by a scan of the marks (no sort, no allocation); the marks are reset for the next step.
        let own = ids.baseAddress! + rank * rowCount
        var count = 0
        for row in 0 ..< rowCount where touched[row] {
            own[count] = Int32(row)
            count += 1
            touched[row] = false
        }
        counts[rank] = Int32(count)
        sentBytes = 0
        countRequests.removeAll(keepingCapacity: true)
        idRequests.removeAll(keepingCapacity: true)
        rowRequests.removeAll(keepingCapacity: true)
        idReceivesPosted = false
        rowReceivesPosted = false
        for peer in 0 ..< worldSize where peer != rank {
            countRequests.append(try communicator.startReceive(bytes: UnsafeMutableRawBufferPointer(start: counts.baseAddress! + peer, count: 4),
                                                               from: peer, tag: TransferTag.sparseCount))
        }
        for peer in 0 ..< worldSize where peer != rank {
            countRequests.append(try communicator.startSend(bytes: UnsafeRawBufferPointer(start: counts.baseAddress! + rank, count: 4),
                                                            to: peer, tag: TransferTag.sparseCount))
            try startChunkedSends(communicator, from: UnsafeRawPointer(own), byteCount: 4 * count, to: peer,
                                  tag: TransferTag.sparseIds, messageBytes: messageBytes, into: &idRequests)
            sentBytes += 4 + 4 * count
        }
        phase = .idsSent
        try progress()
    }

    /// Once the peers' counts have arrived, starts receiving their ids (and rows, once this rank
    /// sends its own). Never blocks: a peer still computing must not hold this rank's backward up.
    func progress() throws {
        if phase != .idle, !idReceivesPosted, try communicator.testAll(&countRequests) { try postIdReceives() }
        if phase == .rowsSent, idReceivesPosted, !rowReceivesPosted { try postRowReceives() }
        if !idRequests.isEmpty { _ = try communicator.testAll(&idRequests) }
        if !rowRequests.isEmpty { _ = try communicator.testAll(&rowRequests) }
    }

    private func postIdReceives() throws {
        let rank = communicator.rank
        for peer in 0 ..< communicator.worldSize where peer != rank {
            try startChunkedReceives(communicator, into: UnsafeMutableRawPointer(ids.baseAddress! + peer * rowCount),
                                     byteCount: 4 * Int(counts[peer]), from: peer, tag: TransferTag.sparseIds,
                                     messageBytes: messageBytes, into: &idRequests)
        }
        idReceivesPosted = true
    }

    /// The peers' rows, sized by their counts (so after `postIdReceives`).
    private func postRowReceives() throws {
        let rank = communicator.rank, rowBytes = rowLength * elementSize
        for peer in 0 ..< communicator.worldSize where peer != rank {
            try startChunkedReceives(communicator, into: rows + peer * rowCount * rowBytes, byteCount: Int(counts[peer]) * rowBytes,
                                     from: peer, tag: TransferTag.sparseRows, messageBytes: messageBytes, into: &rowRequests)
        }
        rowReceivesPosted = true
    }

    /// The tables' gradients are final on this rank: packs its rows and sends them to every peer.
    func startRows() throws {
        if phase == .idle { try startIds() }
        precondition(phase == .idsSent)
        let rank = communicator.rank, worldSize = communicator.worldSize
        let rowBytes = rowLength * elementSize
        let own = rows + rank * rowCount * rowBytes
        let ownIds = ids.baseAddress! + rank * rowCount
        let count = Int(counts[rank])
        for index in 0 ..< count {
            let source = UnsafePointer(rowPointer(Int(ownIds[index])))
            if compression == .bf16 {
                roundToBFloat16(source, into: (own + index * rowBytes).assumingMemoryBound(to: UInt16.self), count: rowLength)
            } else {
                (own + index * rowBytes).assumingMemoryBound(to: Float.self).update(from: source, count: rowLength)
            }
        }
        for peer in 0 ..< worldSize where peer != rank {
            try startChunkedSends(communicator, from: UnsafeRawPointer(own), byteCount: count * rowBytes, to: peer,
                                  tag: TransferTag.sparseRows, messageBytes: messageBytes, into: &rowRequests)
            sentBytes += count * rowBytes
        }
        phase = .rowsSent
        try progress()
    }

    /// Waits for every rank's rows and writes the rank-order sums into the arena. Resets for the next step.
    func finish() throws {
        if phase != .rowsSent { try startRows() }
        if !idReceivesPosted {
            try communicator.waitAll(&countRequests)
            try postIdReceives()
        }
        if !rowReceivesPosted { try postRowReceives() }
        try communicator.waitAll(&countRequests)
        try communicator.waitAll(&idRequests)
        try communicator.waitAll(&rowRequests)
        sumInRankOrder()
        phase = .idle
    }

    /// Float pointer of combined row `row` in the arena.
    private func rowPointer(_ row: Int) -> UnsafeMutablePointer<Float> {
        var table = tables.count - 1
        while firstRow[table] > row { table -= 1 }
        return gradients.baseAddress! + tables[table].range.lowerBound + (row - firstRow[table]) * rowLength
    }

    /// Merges the ranks' sorted id lists; for each row some rank sent, adds the ranks' rows in
    /// rank order (+0 rows for the ranks without it) and stores the sum.
    private func sumInRankOrder() {
        let worldSize = communicator.worldSize, rank = communicator.rank
        let rowBytes = rowLength * elementSize
        for r in 0 ..< worldSize { cursors[r] = 0 }
        let sum = sumRow.baseAddress!
        while true {
            var next = Int32.max
            for r in 0 ..< worldSize where cursors[r] < Int(counts[r]) {
                next = min(next, ids[r * rowCount + cursors[r]])
            }
            if next == Int32.max { break }
            for r in 0 ..< worldSize {
                let has = cursors[r] < Int(counts[r]) && ids[r * rowCount + cursors[r]] == next
                let base = rows + (r * rowCount + (has ? cursors[r] : 0)) * rowBytes
                if compression == .bf16 {
                    let row = base.assumingMemoryBound(to: UInt16.self)
                    if r == 0 {
                        if has { widenBFloat16(row, into: sum, count: rowLength) } else { sum.update(from: zeroRow.baseAddress!, count: rowLength) }
                    } else if has {
                        for i in 0 ..< rowLength { sum[i] += widenBFloat16(row[i]) }
                    } else {
                        for i in 0 ..< rowLength { sum[i] += 0 }  // +0: keeps -0 + +0 = +0 as the dense sum
                    }
                } else {
                    // This rank's own row is read from the arena (equal to what it sent).
                    let row = has ? (r == rank ? UnsafePointer(rowPointer(Int(next))) : UnsafePointer(base.assumingMemoryBound(to: Float.self)))
                                  : UnsafePointer(zeroRow.baseAddress!)
                    if r == 0 { sum.update(from: row, count: rowLength) } else { for i in 0 ..< rowLength { sum[i] += row[i] } }
                }
                if has { cursors[r] += 1 }
            }
            let destination = rowPointer(Int(next))
            if compression == .bf16 {
                for i in 0 ..< rowLength { destination[i] = widenBFloat16(bfloat16Bits(sum[i])) }
            } else {
                destination.update(from: sum, count: rowLength)
            }
        }
    }
}
