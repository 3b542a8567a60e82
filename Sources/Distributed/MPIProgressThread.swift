import CMPI
import CShims
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Keeps Open MPI's transfers moving while the main thread computes.
///
/// Open MPI 4.1 (TCP, shared memory) has no progress thread of its own by default: a pending
/// non-blocking transfer moves only while some MPI call runs on the rank. Between the gradient
/// synchroniser's calls (once per encoder layer, 20-100 ms apart) a TCP link stands idle
/// most of the time. This thread, while `setActive(true)`, calls MPI_Iprobe for a tag nobody
/// sends every `intervalSeconds` and sleeps in between: each call runs Open MPI's progress
/// engine (socket reads and writes, rendezvous handshakes) for every pending request. It never
/// touches a request or a buffer; the main thread still owns them all (start, test, wait).
///
/// With it a transfer runs at the link's rate however rarely the main thread calls MPI; without
/// it, at a fraction of that (benchmarks/tcp_messages.sh measures both on the namespace cluster,
/// results in benchmarks/communication.md). Open MPI's own `btl_tcp_progress_thread` does the
/// same for TCP only.
///
/// Needs MPI_THREAD_MULTIPLE (two threads call MPI at once). Inactive it waits on a semaphore
/// (no CPU). No heap allocation after `start`.
/// @unchecked Sendable: its state is atomics and semaphores.
final class MPIProgressThread: @unchecked Sendable {
    let intervalSeconds: Double
    private let probeTag: Int32
    private let active = Atomic<Bool>(false)
    private let stopping = Atomic<Bool>(false)
    private let wake = DispatchSemaphore(value: 0)
    private let ended = DispatchSemaphore(value: 0)

    init(intervalSeconds: Double, probeTag: Int) {
        self.intervalSeconds = intervalSeconds
        self.probeTag = Int32(probeTag)
        let thread = Thread { [self] in
            run()
            ended.signal()
        }
        thread.name = "mpi progress"
        thread.start()
    }

    /// Starts (true) or pauses (false) the polling; cheap, no allocation.
    func setActive(_ on: Bool) {
        if on {
            if !active.exchange(true, ordering: .sequentiallyConsistent) { wake.signal() }
        } else {
            active.store(false, ordering: .sequentiallyConsistent)
        }
    }

    /// Ends the thread and waits for it (before MPI_Finalize).
    func stop() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        wake.signal()
        ended.wait()
    }

    private func run() {
        let nanoseconds = max(1000, Int(intervalSeconds * 1e9))
        var pause = timespec(tv_sec: nanoseconds / 1_000_000_000, tv_nsec: nanoseconds % 1_000_000_000)
        var found: Int32 = 0
        while !stopping.load(ordering: .sequentiallyConsistent) {
            if !active.load(ordering: .sequentiallyConsistent) {
                wake.wait()
                continue
            }
            // The result is ignored: the call is made for its side effect (progress); an error
            // here would show up in the main thread's own calls on the same transfers.
            _ = MPI_Iprobe(MPI_ANY_SOURCE, probeTag, shim_mpi_comm_world(), &found, nil)
            nanosleep(&pause, nil)
        }
    }
}
