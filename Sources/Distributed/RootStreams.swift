/// Moving data through one rank (the root, rank 0 in bert-dist) that alone reads and writes
/// files: the others get what they need from it, and send it what it must write, with memory
/// bounded by one chunk on the root (no second copy of a sharded optimizer state).
///
/// All three are collectives: every rank calls them in the same order with the same root.
/// A failure of the root's `produce`/`consume` does not stop the transfer (the peers would wait
/// for chunks forever): the remaining chunks still move, then the root throws the first error;
/// callers let all ranks agree on it (Training's `collectively`).
extension Communicator {
    /// Rank `root`'s bytes on every rank (the other ranks' `bytes` are ignored; lengths may differ).
    public func broadcast(bytes: [UInt8], root: Int) throws -> [UInt8] {
        var length = UInt64(rank == root ? bytes.count : 0)
        try withUnsafeMutableBytes(of: &length) { try broadcast($0, root: root) }
        var result = rank == root ? bytes : [UInt8](repeating: 0, count: Int(length))
        if length > 0 { try result.withUnsafeMutableBytes { try broadcast($0, root: root) } }
        return result
    }

    /// Every rank's `local` floats reach the root in chunks of at most `chunkFloats`: the root
    /// calls `consume(rank, offset, chunk)` for rank 0's floats, then rank 1's, ..., in order
    /// (`offset` counts from the start of that rank's `local`); its own come from `local` directly.
    public func streamToRoot(_ local: UnsafeBufferPointer<Float>, root: Int, chunkFloats: Int,
                             consume: (_ rank: Int, _ offset: Int, _ chunk: UnsafeBufferPointer<Float>) throws -> Void) throws {
        let counts = try allGather(UInt64(local.count)).map { Int($0) }
        let chunk = max(1, chunkFloats)
        guard rank == root else {
            try sendChunks(local, counts[rank], chunk, to: root)
            return
        }
        var firstError: (any Error)?
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: min(chunk, max(counts.max() ?? 0, 1)))
        defer { buffer.deallocate() }
        for source in 0..<worldSize {
            for start in stride(from: 0, to: counts[source], by: chunk) {
                let count = min(chunk, counts[source] - start)
                let piece: UnsafeBufferPointer<Float>
                if source == root {
                    piece = UnsafeBufferPointer(rebasing: local[start..<(start + count)])
                } else {
                    var request = [try startReceive(UnsafeMutableBufferPointer(rebasing: buffer[0..<count]), from: source, tag: TransferTag.rootStream)]
                    try waitAll(&request)
                    piece = UnsafeBufferPointer(rebasing: buffer[0..<count])
                }
                if firstError == nil {
                    do { try consume(source, start, piece) } catch { firstError = error }
                }
            }
        }
        if let firstError { throw firstError }
    }

    /// The reverse: every rank's `local` is filled from the root in chunks of at most
    /// `chunkFloats`; the root calls `produce(rank, offset, chunk)` to fill each chunk of each
    /// rank's `local` (its own directly in `local`). The ranks' counts may differ.
    public func streamFromRoot(into local: UnsafeMutableBufferPointer<Float>, root: Int, chunkFloats: Int,
                               produce: (_ rank: Int, _ offset: Int, _ chunk: UnsafeMutableBufferPointer<Float>) throws -> Void) throws {
        let counts = try allGather(UInt64(local.count)).map { Int($0) }
        let chunk = max(1, chunkFloats)
        guard rank == root else {
            var requests: [TransferRequest] = []
            for start in stride(from: 0, to: counts[rank], by: chunk) {
                let count = min(chunk, counts[rank] - start)
                requests.append(try startReceive(UnsafeMutableBufferPointer(rebasing: local[start..<(start + count)]),
                                                 from: root, tag: TransferTag.rootStream))
            }
            try waitAll(&requests)
            return
        }
        var firstError: (any Error)?
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: min(chunk, max(counts.max() ?? 0, 1)))
        defer { buffer.deallocate() }
        for destination in 0..<worldSize {
            for start in stride(from: 0, to: counts[destination], by: chunk) {
                let count = min(chunk, counts[destination] - start)
                let piece = destination == root ? UnsafeMutableBufferPointer(rebasing: local[start..<(start + count)])
                                                 : UnsafeMutableBufferPointer(rebasing: buffer[0..<count])
                if firstError == nil {
                    do { try produce(destination, start, piece) } catch { firstError = error }
                }
                if firstError != nil { piece.update(repeating: 0) }  // the peers still get every chunk
                if destination != root {
                    var request = [try startSend(UnsafeBufferPointer(piece), to: destination, tag: TransferTag.rootStream)]
                    try waitAll(&request)
                }
            }
        }
        if let firstError { throw firstError }
    }

    /// All of `floats` to `destination`, in chunks matching `streamToRoot`'s receives.
    private func sendChunks(_ floats: UnsafeBufferPointer<Float>, _ count: Int, _ chunk: Int, to destination: Int) throws {
        var requests: [TransferRequest] = []
        for start in stride(from: 0, to: count, by: chunk) {
            requests.append(try startSend(UnsafeBufferPointer(rebasing: floats[start..<min(start + chunk, count)]),
                                          to: destination, tag: TransferTag.rootStream))
        }
        try waitAll(&requests)
    }
}

/// Point to point between two ranks (only those two call, one sending, one receiving; the other
/// ranks go on meanwhile): how a checkpoint folder moves from one rank's disk to another's
/// (Training's CheckpointCopy), one bounded chunk at a time. On the root stream's tag: these
/// transfers never overlap a root stream.
extension Communicator {
    /// `bytes` to `destination`: their count, then the bytes (the receiver calls `receiveBytes`).
    public func sendBytes(_ bytes: [UInt8], to destination: Int) throws {
        var count = UInt64(bytes.count)
        try withUnsafeBytes(of: &count) { try sendChunk($0, to: destination) }
        if !bytes.isEmpty { try bytes.withUnsafeBytes { try sendChunk($0, to: destination) } }
    }

    /// What `sendBytes` of `source` sent.
    public func receiveBytes(from source: Int) throws -> [UInt8] {
        var count: UInt64 = 0
        try withUnsafeMutableBytes(of: &count) { try receiveChunk(into: $0, from: source) }
        var bytes = [UInt8](repeating: 0, count: Int(count))
        if count > 0 { try bytes.withUnsafeMutableBytes { try receiveChunk(into: $0, from: source) } }
        return bytes
    }

    /// One chunk to `destination`, which receives exactly `chunk.count` bytes with `receiveChunk`.
    public func sendChunk(_ chunk: UnsafeRawBufferPointer, to destination: Int) throws {
        var request = [try startSend(bytes: chunk, to: destination, tag: TransferTag.rootStream)]
        try waitAll(&request)
    }

    public func receiveChunk(into chunk: UnsafeMutableRawBufferPointer, from source: Int) throws {
        var request = [try startReceive(bytes: chunk, from: source, tag: TransferTag.rootStream)]
        try waitAll(&request)
    }
}
