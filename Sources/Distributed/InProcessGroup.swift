import Foundation

/// N ranks as N threads of one process: the single-node debug mode (`--simulate-ranks N`) and the
/// unit tests of distributed logic without mpirun.
///
///     let results = try InProcessGroup.run(worldSize: 4) { communicator in
///         ... the same code that runs under mpirun, with `communicator` as its Communicator ...
///     }
///
/// `body` runs once per rank, each on its own thread; `run` returns the per-rank results in rank
/// order, or rethrows the first error a rank threw. When a rank throws (or returns while its peers
/// still wait for it), every collective or transfer the other ranks are blocked in, or start later,
/// fails with an error naming that rank, so no rank hangs on a failed peer.
///
/// Collectives go through shared memory and a reusable barrier; transfers are copied when a send
/// meets its receive. The arithmetic that depends on data (gradient sums, reductions) is the same
/// code as with MPI, so a simulated run equals `mpirun -n N` bit for bit.
public enum InProcessGroup {
    public static func run<Result: Sendable>(
        worldSize: Int,
        _ body: @escaping @Sendable (InProcessCommunicator) throws -> Result
    ) throws -> [Result] {
        guard worldSize >= 1 else {
            throw CommunicationError(rank: 0, operation: "InProcessGroup.run", reason: "worldSize must be at least 1, got \(worldSize)")
        }
        let group = InProcessGroupState(worldSize: worldSize)
        let outcomes = RankOutcomes<Result>(worldSize: worldSize)
        let allFinished = DispatchGroup()
        for rank in 0 ..< worldSize {
            allFinished.enter()
            let thread = Thread {
                let communicator = InProcessCommunicator(rank: rank, group: group)
                do {
                    outcomes.store(try body(communicator), rank: rank)
                } catch {
                    group.fail(rank: rank, error: error)
                }
                group.rankExited(rank)
                allFinished.leave()
            }
            thread.name = "rank \(rank)"
            thread.stackSize = 16 << 20  // the trainer's code runs here: give it a main-thread-sized stack
            thread.start()
        }
        allFinished.wait()
        if let error = group.firstError { throw error }
        return try outcomes.results()
    }
}

/// One simulated rank's view of an `InProcessGroup`.
/// @unchecked Sendable: it only holds immutable values and the group state, which locks itself.
public final class InProcessCommunicator: Communicator, @unchecked Sendable {
    public let rank: Int
    public var worldSize: Int { group.worldSize }
    let group: InProcessGroupState

    init(rank: Int, group: InProcessGroupState) {
        self.rank = rank
        self.group = group
    }

    public func barrier() throws {
        try group.arriveAndWait(rank: rank, operation: "barrier")
    }

    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws {
        let operation = "broadcast (\(bytes.count) bytes from rank \(root))"
        try checkRank(root, operation)
        try group.publishAndWait(rank: rank, buffer: UnsafeRawBufferPointer(bytes), operation: operation)
        var failure: CommunicationError? = nil
        if rank != root {
            let source = group.publishedBuffer(of: root)!
            if source.count == bytes.count {
                if bytes.count > 0 { bytes.baseAddress!.copyMemory(from: source.baseAddress!, byteCount: bytes.count) }
            } else {
                failure = CommunicationError(rank: rank, operation: operation,
                                             reason: "rank \(root) broadcasts \(source.count) bytes but this rank expects \(bytes.count)")
            }
        }
        // Second barrier: the root's buffer must stay untouched until every rank has copied it.
        try group.arriveAndWait(rank: rank, operation: operation)
        if let failure { throw failure }
    }

    public func allGather(_ contribution: UnsafeRawBufferPointer, into result: UnsafeMutableRawBufferPointer) throws {
        let operation = "allGather (\(contribution.count) bytes per rank)"
        guard result.count == contribution.count * worldSize else {
            throw CommunicationError(rank: rank, operation: operation,
                                     reason: "result has \(result.count) bytes, expected \(worldSize) x \(contribution.count)")
        }
        try group.publishAndWait(rank: rank, buffer: contribution, operation: operation)
        var failure: CommunicationError? = nil
        for sourceRank in 0 ..< worldSize {
            let source = group.publishedBuffer(of: sourceRank)!
            guard source.count == contribution.count else {
                failure = CommunicationError(rank: rank, operation: operation,
                                             reason: "rank \(sourceRank) contributes \(source.count) bytes, this rank \(contribution.count)")
                break
            }
            if source.count > 0 {
                (result.baseAddress! + sourceRank * source.count).copyMemory(from: source.baseAddress!, byteCount: source.count)
            }
        }
        try group.arriveAndWait(rank: rank, operation: operation)
        if let failure { throw failure }
    }

    public func startSend(bytes: UnsafeRawBufferPointer, to destination: Int, tag: Int) throws -> TransferRequest {
        let operation = "send (to rank \(destination), \(bytes.count) bytes, tag \(tag))"
        try checkRank(destination, operation)
        return try group.startTransfer(source: rank, destination: destination, tag: tag,
                                       sending: bytes, receiving: nil, byRank: rank, operation: operation)
    }

    public func startReceive(bytes: UnsafeMutableRawBufferPointer, from source: Int, tag: Int) throws -> TransferRequest {
        let operation = "receive (from rank \(source), \(bytes.count) bytes, tag \(tag))"
        try checkRank(source, operation)
        return try group.startTransfer(source: source, destination: rank, tag: tag,
                                       sending: nil, receiving: bytes, byRank: rank, operation: operation)
    }

    public func testAll(_ requests: UnsafeMutableBufferPointer<TransferRequest>) throws -> Bool {
        try group.complete(requests, rank: rank, blocking: false)
    }

    public func waitAll(_ requests: UnsafeMutableBufferPointer<TransferRequest>) throws {
        _ = try group.complete(requests, rank: rank, blocking: true)
    }

    /// Ends the whole process (all simulated ranks), as MPI_Abort ends the whole job.
    public func abort(message: String) -> Never {
        writeToStandardError("error: rank \(rank): \(message)\n")
        exit(1)
    }

    private func checkRank(_ peer: Int, _ operation: @autoclosure () -> String) throws {
        if peer < 0 || peer >= worldSize {
            throw CommunicationError(rank: rank, operation: operation(), reason: "rank \(peer) is outside 0..<\(worldSize)")
        }
    }
}

/// One in-process point-to-point transfer, from the side that is still waiting for its peer.
/// @unchecked Sendable: its mutable state is read and written only under the group's lock.
final class InProcessTransfer: @unchecked Sendable {
    let peer: Int
    var isComplete = false
    init(peer: Int) { self.peer = peer }
}

/// The shared state of an in-process group.
/// @unchecked Sendable: every mutable field is accessed only while holding `condition`.
final class InProcessGroupState: @unchecked Sendable {
    let worldSize: Int
    private let condition = NSCondition()

    // Failure and exits.
    private(set) var firstError: (any Error)? = nil
    private var failureDescription: String? = nil
    private var exitedRanks: [Int] = []

    // The reusable barrier and the buffers each rank publishes for the current collective.
    private var barrierArrivals = 0
    private var barrierGeneration = 0
    private var published: [UnsafeRawBufferPointer?]

    // Point-to-point transfers waiting for their other half, matched in posting order.
    private struct TransferKey: Hashable { let source: Int, destination: Int, tag: Int }
    private struct PendingSend { let bytes: UnsafeRawBufferPointer; let transfer: InProcessTransfer }
    private struct PendingReceive { let bytes: UnsafeMutableRawBufferPointer; let transfer: InProcessTransfer }
    private var pendingSends: [TransferKey: [PendingSend]] = [:]
    private var pendingReceives: [TransferKey: [PendingReceive]] = [:]

    init(worldSize: Int) {
        self.worldSize = worldSize
        published = Array(repeating: nil, count: worldSize)
    }

    func fail(rank: Int, error: any Error) {
        condition.lock()
        if firstError == nil {
            firstError = error
            failureDescription = "rank \(rank) failed: \(error)"
        }
        condition.broadcast()
        condition.unlock()
    }

    func rankExited(_ rank: Int) {
        condition.lock()
        exitedRanks.append(rank)
        condition.broadcast()
        condition.unlock()
    }

    /// The reason a blocked operation can never complete, if any. Caller holds the lock.
    private func blockingFailure(rank: Int, operation: String, waitingFor peers: [Int]?) -> CommunicationError? {
        if let failureDescription {
            return CommunicationError(rank: rank, operation: operation, reason: failureDescription)
        }
        let gone = exitedRanks.filter { peers?.contains($0) ?? true }
        if let exited = gone.first {
            return CommunicationError(rank: rank, operation: operation,
                                      reason: "rank \(exited) has already returned from InProcessGroup.run (mismatched collectives or transfers)")
        }
        return nil
    }

    /// Publishes this rank's buffer for the current collective, then waits until every rank has
    /// arrived. The buffer stays readable by the other ranks until the next `publishAndWait`; so
    /// a collective ends with a plain `arriveAndWait`, after which every rank has finished reading.
    func publishAndWait(rank: Int, buffer: UnsafeRawBufferPointer?, operation: String) throws {
        try waitForAll(rank: rank, operation: operation) { published[rank] = buffer }
    }

    /// The barrier: waits until every rank has arrived.
    func arriveAndWait(rank: Int, operation: String) throws {
        try waitForAll(rank: rank, operation: operation) {}
    }

    private func waitForAll(rank: Int, operation: String, onArrival: () -> Void) throws {
        condition.lock()
        defer { condition.unlock() }
        if let failure = blockingFailure(rank: rank, operation: operation, waitingFor: nil) { throw failure }
        onArrival()
        let generation = barrierGeneration
        barrierArrivals += 1
        if barrierArrivals == worldSize {
            barrierArrivals = 0
            barrierGeneration += 1
            condition.broadcast()
            return
        }
        while barrierGeneration == generation {
            if let failure = blockingFailure(rank: rank, operation: operation, waitingFor: nil) { throw failure }
            condition.wait()
        }
    }

    func publishedBuffer(of rank: Int) -> UnsafeRawBufferPointer? {
        condition.lock()
        defer { condition.unlock() }
        return published[rank]
    }

    /// Starts one half of a transfer (`sending` for a send, `receiving` for a receive). If the other
    /// half is already waiting, the bytes are copied now and the returned request is completed.
    func startTransfer(source: Int, destination: Int, tag: Int,
                       sending: UnsafeRawBufferPointer?, receiving: UnsafeMutableRawBufferPointer?,
                       byRank rank: Int, operation: String) throws -> TransferRequest {
        condition.lock()
        defer { condition.unlock() }
        if let failure = blockingFailure(rank: rank, operation: operation, waitingFor: []) { throw failure }
        let key = TransferKey(source: source, destination: destination, tag: tag)
        if let bytes = sending {
            if var waiting = pendingReceives[key], !waiting.isEmpty {
                let receive = waiting.removeFirst()
                pendingReceives[key] = waiting
                try copy(bytes, into: receive.bytes, rank: rank, operation: operation)
                receive.transfer.isComplete = true
                condition.broadcast()
                return .completed
            }
            let transfer = InProcessTransfer(peer: destination)
            pendingSends[key, default: []].append(PendingSend(bytes: bytes, transfer: transfer))
            return TransferRequest(handle: .inProcess(transfer))
        } else {
            let bytes = receiving!
            if var waiting = pendingSends[key], !waiting.isEmpty {
                let send = waiting.removeFirst()
                pendingSends[key] = waiting
                try copy(send.bytes, into: bytes, rank: rank, operation: operation)
                send.transfer.isComplete = true
                condition.broadcast()
                return .completed
            }
            let transfer = InProcessTransfer(peer: source)
            pendingReceives[key, default: []].append(PendingReceive(bytes: bytes, transfer: transfer))
            return TransferRequest(handle: .inProcess(transfer))
        }
    }

    /// Caller holds the lock. A size mismatch is a programming error of the caller: the whole group fails.
    private func copy(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer,
                      rank: Int, operation: String) throws {
        guard source.count == destination.count else {
            let error = CommunicationError(rank: rank, operation: operation,
                                           reason: "the send has \(source.count) bytes but the receive expects \(destination.count)")
            if firstError == nil { firstError = error; failureDescription = "\(error)" }
            condition.broadcast()
            throw error
        }
        if source.count > 0 { destination.baseAddress!.copyMemory(from: source.baseAddress!, byteCount: source.count) }
    }

    /// testAll (blocking == false) or waitAll (blocking == true).
    func complete(_ requests: UnsafeMutableBufferPointer<TransferRequest>, rank: Int, blocking: Bool) throws -> Bool {
        condition.lock()
        defer { condition.unlock() }
        let operation = blocking ? "waitAll (\(requests.count) transfers)" : "testAll (\(requests.count) transfers)"
        while true {
            var peersStillPending: [Int] = []
            for request in requests {
                switch request.handle {
                case .completed: continue
                case .inProcess(let transfer): if !transfer.isComplete { peersStillPending.append(transfer.peer) }
                case .mpi:
                    throw CommunicationError(rank: rank, operation: operation, reason: "request was not made by this in-process group")
                }
            }
            if peersStillPending.isEmpty {
                for index in requests.indices { requests[index].handle = .completed }
                return true
            }
            if let failure = blockingFailure(rank: rank, operation: operation, waitingFor: peersStillPending) { throw failure }
            if !blocking { return false }
            condition.wait()
        }
    }
}

/// Per-rank results of `InProcessGroup.run`, written by the rank threads.
/// @unchecked Sendable: `values` is accessed only under `lock`.
private final class RankOutcomes<Result: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Result?]

    init(worldSize: Int) { values = Array(repeating: nil, count: worldSize) }

    func store(_ value: Result, rank: Int) {
        lock.lock()
        values[rank] = value
        lock.unlock()
    }

    func results() throws -> [Result] {
        lock.lock()
        defer { lock.unlock() }
        return try values.enumerated().map { rank, value in
            guard let value else {
                throw CommunicationError(rank: rank, operation: "InProcessGroup.run", reason: "rank produced no result")
            }
            return value
        }
    }
}
