import CMPI
#if canImport(Glibc)
import Glibc
#endif

/// A group of `worldSize` ranks that exchange flat buffers: the MPI world (`MPICommunicator`) or
/// N threads of one process (`InProcessGroup`). Distributed knows bytes and `Float`s, not BERT.
///
/// Collectives (barrier, broadcast, allGather and everything built on them) must be called by every
/// rank in the same order, like MPI collectives. Point-to-point transfers are matched by
/// (source, destination, tag) in posting order, so non-blocking transfers may complete in any order.
/// Every throwing call names the operation (the MPI function for `MPICommunicator`) and the rank.
public protocol Communicator: AnyObject {
    /// This rank, 0 ..< worldSize.
    var rank: Int { get }
    var worldSize: Int { get }

    /// Returns once every rank has entered the barrier.
    func barrier() throws

    /// Copies `bytes` of rank `root` into `bytes` of every other rank (all ranks pass the same count).
    func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws

    /// Every rank contributes `contribution.count` bytes (the same count on all ranks); `result`
    /// (worldSize * contribution.count bytes) receives rank 0's bytes, then rank 1's, ...
    /// The building block of the small reductions and gathers in the extension below.
    func allGather(_ contribution: UnsafeRawBufferPointer, into result: UnsafeMutableRawBufferPointer) throws

    /// Starts sending `bytes` to `destination`. The buffer must not change until the request completes.
    /// (Floats, bf16 words and row ids all travel as bytes; `startSend(_: UnsafeBufferPointer<Float>...)`
    /// in the extension below is the Float form.)
    func startSend(bytes: UnsafeRawBufferPointer, to destination: Int, tag: Int) throws -> TransferRequest
    /// Starts receiving exactly `bytes.count` bytes from `source` into `bytes`
    /// (not to be read until the request completes).
    func startReceive(bytes: UnsafeMutableRawBufferPointer, from source: Int, tag: Int) throws -> TransferRequest
    /// True when every request has completed (they are then marked completed); never blocks.
    /// With MPI this is MPI_Testall, which also advances pending transfers (see GradientSynchronizer).
    /// (Buffer-pointer form so callers can keep requests in preallocated or stack memory; the
    /// extension below offers the same for arrays.)
    func testAll(_ requests: UnsafeMutableBufferPointer<TransferRequest>) throws -> Bool
    /// Blocks until every request has completed.
    func waitAll(_ requests: UnsafeMutableBufferPointer<TransferRequest>) throws

    /// Background progress of pending transfers while the caller computes (MPI: `MPIProgressThread`,
    /// when the communicator was made with one): on between the first transfer of a gradient sum
    /// and its end, off otherwise. A no-op where transfers need no help (the in-process group).
    func setBackgroundProgress(_ active: Bool)

    /// Ends the whole job (every rank) with a non-zero status after printing `message` on stderr:
    /// MPI_Abort for MPI, process exit for the in-process group. Use it when a rank cannot continue
    /// and its peers might otherwise wait for it forever.
    func abort(message: String) -> Never
}

/// A pending point-to-point transfer. Value type: stored in preallocated arrays by the
/// gradient synchroniser, so starting a transfer does not allocate on the MPI path.
public struct TransferRequest {
    enum Handle {
        case completed
        /// Open MPI's MPI_Request is a pointer to its request struct.
        case mpi(MPI_Request?)
        case inProcess(InProcessTransfer)
    }
    var handle: Handle

    public var isCompleted: Bool {
        if case .completed = handle { return true }
        return false
    }

    public static var completed: TransferRequest { TransferRequest(handle: .completed) }
}

/// Reductions of small arrays of `Double`s (metrics, collective decisions).
public enum ReductionOperation: Sendable {
    case sum, max, min
}

/// An error of a distributed operation; `description` names the operation (the MPI call for MPI)
/// and the rank, e.g. `rank 1: MPI_Isend (to rank 0, 16384 bytes, tag 3) failed: MPI_ERR_TRUNCATE: ...`.
public struct CommunicationError: Error, CustomStringConvertible {
    public var rank: Int
    public var operation: String
    public var reason: String

    public init(rank: Int, operation: String, reason: String) {
        self.rank = rank
        self.operation = operation
        self.reason = reason
    }

    public var description: String { "rank \(rank): \(operation) failed: \(reason)" }
}

extension Communicator {
    public func setBackgroundProgress(_ active: Bool) {}

    /// Starts sending `floats` to `destination` (as bytes). The buffer must not change until the request completes.
    public func startSend(_ floats: UnsafeBufferPointer<Float>, to destination: Int, tag: Int) throws -> TransferRequest {
        try startSend(bytes: UnsafeRawBufferPointer(floats), to: destination, tag: tag)
    }

    /// Starts receiving exactly `floats.count` floats from `source` into `floats`.
    public func startReceive(_ floats: UnsafeMutableBufferPointer<Float>, from source: Int, tag: Int) throws -> TransferRequest {
        try startReceive(bytes: UnsafeMutableRawBufferPointer(floats), from: source, tag: tag)
    }

    public func testAll(_ requests: inout [TransferRequest]) throws -> Bool {
        try requests.withUnsafeMutableBufferPointer { try testAll($0) }
    }

    public func waitAll(_ requests: inout [TransferRequest]) throws {
        try requests.withUnsafeMutableBufferPointer { try waitAll($0) }
    }

    /// Element-wise reduction of `values` over all ranks; every rank gets the same result.
    /// Implemented as an allgather followed by a local reduction in rank order 0, 1, ..., N-1, so
    /// the result is bit-identical on every rank and identical between MPI and the in-process group
    /// (a tree-shaped MPI_Allreduce would not be). `max` and `min` propagate NaN: if any rank
    /// contributes NaN at an index, the result there is NaN (useful for "any rank saw NaN").
    /// Every rank must pass the same number of values.
    public func allReduce(_ values: [Double], _ operation: ReductionOperation) throws -> [Double] {
        var reduced = values
        try reduced.withUnsafeMutableBufferPointer { try allReduce(inPlace: $0, operation) }
        return reduced
    }

    /// `allReduce` without heap allocation (for small counts: the gathered values live on the
    /// stack): `values` is replaced by the reduction. Keep the buffer across steps.
    public func allReduce(inPlace values: UnsafeMutableBufferPointer<Double>, _ operation: ReductionOperation) throws {
        let count = values.count
        try withUnsafeTemporaryAllocation(of: Double.self, capacity: count * worldSize) { gathered in
            try allGather(UnsafeRawBufferPointer(values), into: UnsafeMutableRawBufferPointer(gathered))
            for index in 0 ..< count { values[index] = gathered[index] }
            for sourceRank in 1 ..< max(worldSize, 1) {
                for index in 0 ..< count {
                    let value = gathered[sourceRank * count + index]
                    switch operation {
                    case .sum: values[index] += value
                    case .max: values[index] = (values[index].isNaN || value.isNaN) ? .nan : Swift.max(values[index], value)
                    case .min: values[index] = (values[index].isNaN || value.isNaN) ? .nan : Swift.min(values[index], value)
                    }
                }
            }
        }
    }

    public func allReduce(_ value: Double, _ operation: ReductionOperation) throws -> Double {
        try allReduce([value], operation)[0]
    }

    /// True on every rank if `flag` is true on any rank (e.g. "saw NaN", "stop requested").
    public func anyRank(_ flag: Bool) throws -> Bool {
        try allReduce(flag ? 1 : 0, .max) != 0
    }

    /// Every rank's `values` (same count on all ranks), indexed by rank.
    public func allGather(_ values: [UInt64]) throws -> [[UInt64]] {
        let count = values.count
        var gathered = [UInt64](repeating: 0, count: count * worldSize)
        try values.withUnsafeBytes { contribution in
            try gathered.withUnsafeMutableBytes { result in
                try allGather(contribution, into: result)
            }
        }
        return (0 ..< worldSize).map { Array(gathered[$0 * count ..< ($0 + 1) * count]) }
    }

    /// Every rank's `value`, indexed by rank.
    public func allGather(_ value: UInt64) throws -> [UInt64] {
        try allGather([value]).map { $0[0] }
    }

    /// Every rank's byte string (lengths may differ between ranks), indexed by rank.
    public func allGather(bytes: [UInt8]) throws -> [[UInt8]] {
        let lengths = try allGather(UInt64(bytes.count)).map { Int($0) }
        let longest = lengths.max() ?? 0
        var padded = bytes + [UInt8](repeating: 0, count: longest - bytes.count)
        var gathered = [UInt8](repeating: 0, count: longest * worldSize)
        if longest > 0 {
            try padded.withUnsafeMutableBytes { contribution in
                try gathered.withUnsafeMutableBytes { result in
                    try allGather(UnsafeRawBufferPointer(contribution), into: result)
                }
            }
        }
        padded.removeAll()
        return (0 ..< worldSize).map { Array(gathered[$0 * longest ..< $0 * longest + lengths[$0]]) }
    }

    /// Broadcast of a Float buffer from `root` (same count on all ranks).
    public func broadcast(_ floats: UnsafeMutableBufferPointer<Float>, root: Int) throws {
        try broadcast(UnsafeMutableRawBufferPointer(floats), root: root)
    }

    /// After a sharded (ZeRO-1) optimizer step each rank holds up-to-date values only in its own
    /// shard `layout.range(of: rank)`; this copies every shard to every rank, so that all ranks end
    /// with the full, identical `parameters`. Any Float arena of the layout works (parameters, Adam
    /// moments for a consolidated checkpoint, ...).
    /// Each shard moves in messages of at most `chunkFloats` floats (1 MB: see "Messages" in
    /// GradientSynchronizer). Makes its own request list; in a training step use the form with
    /// `requests`, which keeps one across steps.
    public func gatherParameters(_ parameters: UnsafeMutableBufferPointer<Float>, layout: ShardLayout,
                                 chunkFloats: Int = GradientSynchronizer.defaultMessageFloats) throws {
        var requests: [TransferRequest] = []
        try gatherParameters(parameters, layout: layout, chunkFloats: chunkFloats, requests: &requests)
    }

    /// `gatherParameters` keeping its requests in `requests` (emptied first; no allocation once
    /// its capacity has grown to the number of messages).
    public func gatherParameters(_ parameters: UnsafeMutableBufferPointer<Float>, layout: ShardLayout,
                                 chunkFloats: Int = GradientSynchronizer.defaultMessageFloats,
                                 requests: inout [TransferRequest]) throws {
        try gatherParameters(parameters, layout: layout, chunkFloats: chunkFloats, pieceFloats: nil, requests: &requests) { _ in }
    }
}

/// Tags of the point-to-point transfers this module makes. Gradient buckets use two tags each
/// (reduce phase, gather phase) so that phases of different buckets can complete in any order.
enum TransferTag {
    static let parameterGather = 0
    /// Chunks streamed to or from the root (RootStreams.swift).
    static let rootStream = 1
    /// The sparse rows of a gradient sum (SparseRowExchange): their count, ids and values.
    static let sparseCount = 2
    static let sparseIds = 3
    static let sparseRows = 4
    static func bucketReduce(_ bucketIndex: Int) -> Int { 5 + 2 * bucketIndex }
    static func bucketGather(_ bucketIndex: Int) -> Int { 6 + 2 * bucketIndex }
}

/// Seconds on a monotonic clock, for durations.
func monotonicSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
}
