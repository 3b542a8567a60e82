import CMPI
import CShims
#if canImport(Glibc)
import Glibc
#endif

/// The MPI world: works under `mpirun -n N` and as an MPI singleton (the plain binary, world size 1).
///
/// Threading: only the thread that created this object (the main thread of the executable) may
/// call it; every method checks this and throws otherwise (`abort` excepted). Other threads
/// (BLAS, kernels, the peer watchdog) never touch MPI. MPI is initialised with
/// MPI_THREAD_FUNNELED, or with MPI_THREAD_MULTIPLE when a background progress thread is asked
/// for (`progressIntervalSeconds`): that thread (MPIProgressThread) is the one other caller of
/// MPI, and it only probes. If the library cannot provide MPI_THREAD_MULTIPLE, there is no
/// progress thread (`setBackgroundProgress` does nothing) and everything else works as before.
///
/// Errors: the world communicator uses MPI_ERRORS_RETURN, so a failing MPI call returns to us and
/// every return code becomes a `CommunicationError` naming the MPI function, its arguments and
/// the rank. (A peer that dies is handled by mpirun, which kills the job and names the rank.)
///
/// Create one per process, call `finalize()` before exit (deinit finalizes as a fallback):
/// under mpirun, a rank that exits without MPI_Finalize makes the whole job fail.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let worldSize: Int
    /// The largest tag point-to-point messages may use (MPI_TAG_UB; at least 32767 by the standard).
    public let maximumTag: Int
    private let initialisingThread: pthread_t
    private var isFinalized = false
    private let progressThread: MPIProgressThread?

    /// Open MPI's request pools start with this many entries (MCA parameter
    /// `pml_ob1_free_list_num`, default 4, grown 64 at a time). (Not the shared-memory
    /// transport's fragment pool: with `btl_vader_free_list_num` 256 the allocation traces of a
    /// one-host run showed only TCP: Open MPI had dropped shared memory silently.) The gradient
    /// sum keeps hundreds of 1 MB messages in flight per step on BERT-base; with the defaults the
    /// pools grew (malloc inside MPI_Isend/MPI_Irecv/MPI_Iprobe) whenever a step happened to have
    /// more in flight than any before, so steps after warm-up still allocated
    /// (benchmarks/check_allocations.sh counts them; benchmarks/communication.md).
    public static let defaultPreallocatedRequests = 1024

    /// Over TCP, messages up to this size go eagerly (`btl_tcp_eager_limit`, default 64 kB,
    /// and `btl_tcp_max_send_size`): the gradient sum's 1 MB messages then need no rendezvous.
    /// With rendezvous, each message's "go ahead" waits on the connection behind the megabytes
    /// already queued for the peer, so with many buckets in flight both ways the two directions
    /// take turns and the sum runs well below the link rate; eagerly it keeps up with
    /// MPI_Allreduce (benchmarks/communication.sh measures both on the namespace cluster,
    /// results in benchmarks/communication.md). The receives are posted before the data can
    /// arrive (GradientSynchronizer: "Receives first"), so eager messages are not buffered.
    public static let defaultEagerMessageBytes = 4 * GradientSynchronizer.defaultMessageFloats + 65536

    /// `progressIntervalSeconds`: start a background progress thread that polls this often while
    /// `setBackgroundProgress(true)` (nil: none). `preallocatedRequests`: the initial size of
    /// Open MPI's request pools; `eagerMessageBytes`: the largest TCP message sent without
    /// rendezvous (nil: Open MPI's defaults).
    public init(progressIntervalSeconds: Double? = nil, preallocatedRequests: Int? = defaultPreallocatedRequests,
                eagerMessageBytes: Int? = defaultEagerMessageBytes) throws {
        var alreadyInitialised: Int32 = 0
        MPI_Initialized(&alreadyInitialised)
        if alreadyInitialised != 0 {
            throw CommunicationError(rank: 0, operation: "MPI_Init_thread",
                                     reason: "MPI is already initialised in this process; create a single MPICommunicator")
        }
        // Open MPI reads its parameters only from the environment (or files) at MPI_Init: a C
        // library demanding a global. A value the user set (environment, mpirun --mca) wins.
        if let preallocatedRequests {
            setenv("OMPI_MCA_pml_ob1_free_list_num", String(preallocatedRequests), 0)
        }
        if let eagerMessageBytes {
            setenv("OMPI_MCA_btl_tcp_eager_limit", String(eagerMessageBytes), 0)
            setenv("OMPI_MCA_btl_tcp_max_send_size", String(eagerMessageBytes), 0)
        }
        var provided: Int32 = 0
        // Errors inside MPI_Init use the default handler (abort), so the code is checked for form only.
        let requested = progressIntervalSeconds == nil ? Int32(MPI_THREAD_FUNNELED) : Int32(MPI_THREAD_MULTIPLE)
        let initCode = MPI_Init_thread(nil, nil, requested, &provided)
        guard initCode == MPI_SUCCESS else {
            throw CommunicationError(rank: 0, operation: "MPI_Init_thread", reason: MPICommunicator.errorString(initCode))
        }
        initialisingThread = pthread_self()
        var worldRank: Int32 = 0, worldCount: Int32 = 0
        // Set the error handler first so that the calls below return their codes to us.
        try MPICommunicator.check(MPI_Comm_set_errhandler(shim_mpi_comm_world(), shim_mpi_errors_return()),
                                  "MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN)", rank: 0)
        try MPICommunicator.check(MPI_Comm_rank(shim_mpi_comm_world(), &worldRank), "MPI_Comm_rank", rank: 0)
        try MPICommunicator.check(MPI_Comm_size(shim_mpi_comm_world(), &worldCount), "MPI_Comm_size", rank: Int(worldRank))
        rank = Int(worldRank)
        worldSize = Int(worldCount)
        guard provided >= Int32(MPI_THREAD_FUNNELED) else {
            throw CommunicationError(rank: rank, operation: "MPI_Init_thread",
                                     reason: "the MPI library provides thread level \(provided), below MPI_THREAD_FUNNELED")
        }
        var tagUpperBound: UnsafeMutablePointer<Int32>? = nil
        var found: Int32 = 0
        try MPICommunicator.check(MPI_Comm_get_attr(shim_mpi_comm_world(), Int32(MPI_TAG_UB), &tagUpperBound, &found),
                                  "MPI_Comm_get_attr(MPI_TAG_UB)", rank: rank)
        maximumTag = (found != 0 && tagUpperBound != nil) ? Int(tagUpperBound!.pointee) : 32767
        if let progressIntervalSeconds, provided >= Int32(MPI_THREAD_MULTIPLE), worldSize > 1 {
            // The probe's tag is never sent (the largest tag; the synchroniser's tags stay far below it).
            progressThread = MPIProgressThread(intervalSeconds: progressIntervalSeconds, probeTag: maximumTag)
        } else {
            progressThread = nil
        }
    }

    public func setBackgroundProgress(_ active: Bool) {
        progressThread?.setActive(active)
    }

    deinit {
        try? finalize()
    }

    /// MPI_Finalize (idempotent). Every rank must call it; afterwards no method may be used.
    public func finalize() throws {
        guard !isFinalized else { return }
        try checkThread("MPI_Finalize")
        progressThread?.stop()
        isFinalized = true
        try check(MPI_Finalize(), "MPI_Finalize")
    }

    public func barrier() throws {
        try checkThread("MPI_Barrier")
        try check(MPI_Barrier(shim_mpi_comm_world()), "MPI_Barrier")
    }

    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws {
        try checkThread("MPI_Bcast")
        try checkRank(root, "MPI_Bcast root")
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        // MPI counts are Int32: send large buffers in chunks of 1 GiB.
        let chunkBytes = 1 << 30
        var offset = 0
        while offset < bytes.count {
            let count = min(chunkBytes, bytes.count - offset)
            try check(MPI_Bcast(base + offset, Int32(count), shim_mpi_byte(), Int32(root), shim_mpi_comm_world()),
                      "MPI_Bcast (\(bytes.count) bytes from rank \(root), chunk at byte \(offset))")
            offset += count
        }
    }

    public func allGather(_ contribution: UnsafeRawBufferPointer, into result: UnsafeMutableRawBufferPointer) throws {
        try checkThread("MPI_Allgather")
        guard result.count == contribution.count * worldSize else {
            throw CommunicationError(rank: rank, operation: "MPI_Allgather",
                                     reason: "result has \(result.count) bytes, expected \(worldSize) x \(contribution.count)")
        }
        guard contribution.count > 0 else { return }
        guard contribution.count <= Int(Int32.max) else {
            throw CommunicationError(rank: rank, operation: "MPI_Allgather", reason: "\(contribution.count) bytes exceed MPI's Int32 count")
        }
        try check(MPI_Allgather(contribution.baseAddress, Int32(contribution.count), shim_mpi_byte(),
                                result.baseAddress, Int32(contribution.count), shim_mpi_byte(), shim_mpi_comm_world()),
                  "MPI_Allgather (\(contribution.count) bytes per rank)")
    }

    public func startSend(bytes: UnsafeRawBufferPointer, to destination: Int, tag: Int) throws -> TransferRequest {
        // The call descriptions are autoclosures: no string is built (no allocation) unless a check fails.
        try checkThread("MPI_Isend (to rank \(destination), \(bytes.count) bytes, tag \(tag))")
        try checkTransfer(count: bytes.count, peer: destination, tag: tag, "MPI_Isend (to rank \(destination), \(bytes.count) bytes, tag \(tag))")
        var request: MPI_Request? = shim_mpi_request_null()
        try check(MPI_Isend(bytes.baseAddress, Int32(bytes.count), shim_mpi_byte(), Int32(destination), Int32(tag),
                            shim_mpi_comm_world(), &request),
                  "MPI_Isend (to rank \(destination), \(bytes.count) bytes, tag \(tag))")
        return TransferRequest(handle: .mpi(request))
    }

    public func startReceive(bytes: UnsafeMutableRawBufferPointer, from source: Int, tag: Int) throws -> TransferRequest {
        try checkThread("MPI_Irecv (from rank \(source), \(bytes.count) bytes, tag \(tag))")
        try checkTransfer(count: bytes.count, peer: source, tag: tag, "MPI_Irecv (from rank \(source), \(bytes.count) bytes, tag \(tag))")
        var request: MPI_Request? = shim_mpi_request_null()
        try check(MPI_Irecv(bytes.baseAddress, Int32(bytes.count), shim_mpi_byte(), Int32(source), Int32(tag),
                            shim_mpi_comm_world(), &request),
                  "MPI_Irecv (from rank \(source), \(bytes.count) bytes, tag \(tag))")
        return TransferRequest(handle: .mpi(request))
    }

    public func testAll(_ requests: UnsafeMutableBufferPointer<TransferRequest>) throws -> Bool {
        try checkThread("MPI_Testall")
        return try completeAll(requests, blocking: false)
    }

    public func waitAll(_ requests: UnsafeMutableBufferPointer<TransferRequest>) throws {
        try checkThread("MPI_Waitall")
        _ = try completeAll(requests, blocking: true)
    }

    /// MPI_Testall / MPI_Waitall over the pending MPI requests of `requests`, in batches of at most
    /// 64 whose handles are copied into a stack buffer (no heap allocation whatever the count:
    /// TransferRequest is not an MPI_Request array). A batch that has not completed ends a test
    /// (every call moves all pending transfers anyway); completed batches are marked completed.
    private func completeAll(_ requests: UnsafeMutableBufferPointer<TransferRequest>, blocking: Bool) throws -> Bool {
        for request in requests {
            if case .inProcess = request.handle {
                throw CommunicationError(rank: rank, operation: blocking ? "MPI_Waitall" : "MPI_Testall",
                                         reason: "request was not made by this MPICommunicator")
            }
        }
        let batchSize = 64
        return try withUnsafeTemporaryAllocation(of: MPI_Request?.self, capacity: batchSize) { handles in
            var start = 0
            while start < requests.count {
                // The next batch of pending requests: their indices' span and their handles.
                var end = start, pendingCount = 0
                while end < requests.count && pendingCount < batchSize {
                    if case .mpi(let handle) = requests[end].handle {
                        handles[pendingCount] = handle
                        pendingCount += 1
                    }
                    end += 1
                }
                if pendingCount > 0 {
                    var allDone: Int32 = 1
                    if blocking {
                        try check(MPI_Waitall(Int32(pendingCount), handles.baseAddress, nil), "MPI_Waitall (\(pendingCount) transfers)")
                    } else {
                        try check(MPI_Testall(Int32(pendingCount), handles.baseAddress, &allDone, nil),
                                  "MPI_Testall (\(pendingCount) transfers)")
                    }
                    if allDone == 0 { return false }
                }
                for index in start ..< end { requests[index].handle = .completed }
                start = end
            }
            return true
        }
    }

    /// One plain blocking MPI_Allreduce (MPI_SUM, in place) of a Float buffer: the baseline that
    /// `bert-dist bench-comm` compares the bucketed GradientSynchronizer against. Its summation order
    /// is Open MPI's (not rank order), so the trainer does not use it for gradients.
    public func allReduceSumInPlace(_ floats: UnsafeMutableBufferPointer<Float>) throws {
        let call = "MPI_Allreduce (MPI_IN_PLACE, \(floats.count) floats, MPI_SUM)"
        try checkThread(call)
        guard floats.count <= Int(Int32.max) else {
            throw CommunicationError(rank: rank, operation: call, reason: "count exceeds MPI's Int32 count")
        }
        try check(MPI_Allreduce(shim_mpi_in_place(), floats.baseAddress, Int32(floats.count), shim_mpi_float(),
                                shim_mpi_sum(), shim_mpi_comm_world()), call)
    }

    /// MPI_Abort on the world: mpirun kills every rank and exits non-zero.
    public func abort(message: String) -> Never {
        writeToStandardError("error: rank \(rank): \(message)\n")
        MPI_Abort(shim_mpi_comm_world(), 1)
        exit(1)  // MPI_Abort does not return; this line keeps the compiler's promise of Never.
    }

    // MARK: - checks

    private func check(_ code: Int32, _ call: @autoclosure () -> String) throws {
        try MPICommunicator.check(code, call(), rank: rank)
    }

    private static func check(_ code: Int32, _ call: @autoclosure () -> String, rank: Int) throws {
        guard code != MPI_SUCCESS else { return }
        throw CommunicationError(rank: rank, operation: call(), reason: errorString(code))
    }

    private func checkThread(_ call: @autoclosure () -> String) throws {
        if pthread_equal(pthread_self(), initialisingThread) == 0 {
            throw CommunicationError(rank: rank, operation: call(),
                                     reason: "called from a thread other than the one that initialised MPI (MPI_THREAD_FUNNELED: only the main thread may call MPI)")
        }
        if isFinalized {
            throw CommunicationError(rank: rank, operation: call(), reason: "MPI has been finalized")
        }
    }

    private func checkRank(_ peer: Int, _ call: @autoclosure () -> String) throws {
        if peer < 0 || peer >= worldSize {
            throw CommunicationError(rank: rank, operation: call(), reason: "rank \(peer) is outside 0..<\(worldSize)")
        }
    }

    private func checkTransfer(count: Int, peer: Int, tag: Int, _ call: @autoclosure () -> String) throws {
        try checkRank(peer, call())
        if count > Int(Int32.max) {
            throw CommunicationError(rank: rank, operation: call(), reason: "count exceeds MPI's Int32 count")
        }
        if tag < 0 || tag > maximumTag {
            throw CommunicationError(rank: rank, operation: call(),
                                     reason: "tag outside 0...\(maximumTag) (MPI_TAG_UB); use larger gradient buckets")
        }
    }

    private static func errorString(_ code: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: Int(MPI_MAX_ERROR_STRING) + 1)
        var length: Int32 = 0
        if MPI_Error_string(code, &buffer, &length) != MPI_SUCCESS { return "MPI error code \(code)" }
        let text = String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return "\(text) (MPI error code \(code))"
    }
}

func writeToStandardError(_ text: String) {
    var text = text
    text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}
