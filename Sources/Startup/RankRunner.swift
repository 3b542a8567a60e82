import Distributed
import Foundation
import Storage
import Synchronization
import Training

/// Starts and stops the ranks of a distributed command, in this one place: runs `body` once per
/// rank — MPI ranks (also the plain single process, an MPI singleton), or with `simulatedRanks`
/// N threads of this process — and turns failures into one `error: ...` line and a non-zero
/// exit. Errors all ranks agreed on (`AgreedFailure`) exit cleanly; an error on one rank alone
/// aborts the job so that no peer waits for it forever. With `collectiveTimeout`, MPI ranks of a
/// job of several run a PeerWatchdog, which ends the job when a peer falls silent (a dead host,
/// a frozen one, a cut cable: what MPI itself would wait for forever).
public enum RankRunner {
    /// `progressIntervalSeconds`: MPI ranks run a background progress thread that polls this often
    /// while gradients travel (MPICommunicator; nil: none).
    public static func run(simulatedRanks: Int?, collectiveTimeout: Double? = nil, runtime: Runtime? = nil,
                    progressIntervalSeconds: Double? = nil,
                    _ body: @escaping @Sendable (any Communicator, PeerWatchdog?) throws -> Void) -> Int32 {
        if let simulatedRanks {
            do {
                _ = try InProcessGroup.run(worldSize: simulatedRanks) { communicator in
                    // The rank that carries an agreed error prints it, whichever rank's error the group rethrows.
                    do { try body(communicator, nil) } catch let failure as AgreedFailure {
                        report(failure, prefix: "")
                        throw failure
                    }
                }
                return 0
            } catch is AgreedFailure {
                return 1
            } catch {
                report(error, prefix: "")
                return 1
            }
        }
        let communicator: MPICommunicator
        do { communicator = try MPICommunicator(progressIntervalSeconds: progressIntervalSeconds) } catch {
            printError("error: \(errorLine("\(error)"))")
            return 1
        }
        let prefix = communicator.rank == 0 ? "" : "rank \(communicator.rank): "
        var watchdog: PeerWatchdog?
        do {
            if let collectiveTimeout, communicator.worldSize > 1 {
                // Before rank 0 reads or tokenises anything: the peers wait for it meanwhile.
                // A signal makes the watchdog look for a dead peer at once: when a rank dies, Open
                // MPI sends the others SIGCONT, then SIGTERM and SIGKILL odls_base_sigkill_timeout
                // apart (Slurm: SIGCONT and SIGTERM, SIGKILL after KillWait).
                ContinueSignal.install()
                watchdog = try PeerWatchdog.start(communicator: communicator, timeoutSeconds: collectiveTimeout,
                                                  hostName: runtime?.hostName ?? ProcessEnvironment.current.hostName,
                                                  interfaces: ProcessEnvironment.current.mpiNetworkInterfaces,
                                                  suspicion: { StopSignal.requested || ContinueSignal.received },
                                                  announce: announceLoss, announceSeconds: 1, response: .call(endProcess))
            }
            try body(communicator, watchdog)
            // After the last collective: the peers stop expecting this rank.
            watchdog?.stop()
            try communicator.finalize()
            return 0
        } catch let failure as AgreedFailure {
            report(failure, prefix: prefix)
            watchdog?.stop()
            try? communicator.finalize()
            return 1
        } catch {
            if let watchdog, error is CommunicationError { awaitPeerLoss(watchdog) }
            report(error, prefix: prefix)
            if communicator.worldSize > 1 {
                // The peers end quietly rather than report this rank lost (launch/train restarts lost ranks only).
                watchdog?.endPeers(reason: "\(prefix)error: \(error)")
                communicator.abort(message: "\(prefix)stopping all ranks")
            }
            try? communicator.finalize()
            return 1
        }
    }

    /// An MPI call failed: most likely a peer process died (Open MPI resets its connections at
    /// once). The watchdog confirms it within a few heartbeats (a dead process falls silent), and
    /// its response takes over: the report, the emergency checkpoint, the exit; this thread waits
    /// for it. When every peer still answers, the error is this rank's own: back to the caller.
    private static func awaitPeerLoss(_ watchdog: PeerWatchdog) {
        watchdog.suspectPeerFailure()
        let deadline = Date().addingTimeInterval(watchdog.confirmationSeconds)
        while !watchdog.hasTripped && Date() < deadline { usleep(50_000) }
        guard watchdog.hasTripped else { return }
        // (The response ends the process: after at most the follower's grace, or the reporter's hook.)
        let limit = Date().addingTimeInterval(900)
        while Date() < limit { sleep(1) }
    }

    /// What a tripped watchdog does: the reporter prints its line, and the process ends (from the
    /// watchdog's thread: the main thread may be blocked in MPI for ever). A rank cut off from rank
    /// 0 under mpirun first ends its host's Open MPI daemon, its parent: that orted cannot reach
    /// mpirun (on rank 0's host under launch/train) either, and would otherwise wait about 16
    /// minutes for TCP to give up on its unacknowledged report (docs/cluster-faults.md); SIGKILL
    /// ends it at once (SIGTERM would make it signal its ranks and sleep odls_base_sigkill_timeout
    /// twice first, 8 s under launch/train). The second before lets it forward this rank's output,
    /// should mpirun still be reachable (rank 0 alone frozen). Under srun or on mpirun's own host
    /// the parent is not an orted and is left alone. (The reporter's lines were printed by
    /// `announceLoss`.)
    @Sendable private static func endProcess(_ trip: PeerWatchdog.Trip) {
        let parent = getppid()
        if trip.silentRanks.contains(0), ProcessEnvironment.programName(of: parent) == "orted" {
            sleep(1)
            kill(parent, SIGKILL)
        }
        _exit(1)
    }

    /// The reporter's line, and the `lost` line for launch/train (Training's `launchEvent`), a
    /// second before the ranks end: mpirun forwards output promptly until the first rank's exit
    /// sets off its teardown.
    @Sendable private static func announceLoss(_ trip: PeerWatchdog.Trip) {
        printError(trip.line)
        printError(launchEvent("lost", [("ranks", trip.silentRanks.map(String.init).joined(separator: ",")),
                                        ("hosts", trip.silentHosts.joined(separator: ",")),
                                        ("noticed-by", "\(trip.observerRank)")] + trip.facts))
    }

    /// One line on stderr; an agreed failure is printed by the rank that carries its error only.
    private static func report(_ error: any Error, prefix: String) {
        if let failure = error as? AgreedFailure {
            if let error = failure.error { printError("\(prefix)error: \(errorLine("\(error)"))") }
        } else {
            printError("\(prefix)error: \(errorLine("\(error)"))")
        }
    }

    /// For commands that are not distributed (predict, merge, tokenize, data): under a launcher
    /// rank 0 alone runs `body` (once, not N times); the other ranks return at once.
    public static func onRankZeroOnly(_ body: () throws -> Void) throws {
        if ProcessEnvironment.current.isNonZeroRank { return }
        try body()
    }
}

/// SIGCONT (what a launcher sends first when it ends a job: a rank died) noted for the watchdog.
/// A process resumed after a real SIGSTOP notes it too, and its watchdog's look finds nothing
/// amiss when every peer answers.
enum ContinueSignal {
    private static let count = Atomic<Int>(0)

    static var received: Bool { count.load(ordering: .relaxed) > 0 }

    static func install() {
        signal(SIGCONT) { _ in _ = ContinueSignal.count.add(1, ordering: .relaxed) }
    }
}

/// stdout from rank 0 only, a line per call: a path or label from the command line or a data
/// file may hold a line break, which is escaped (`oneLine`) rather than starting a new line.
public func rootLog(_ communicator: any Communicator) -> @Sendable (String) -> Void {
    let isRoot = communicator.rank == 0
    return { line in
        guard isRoot else { return }
        print(oneLine(line))
        fflush(nil)
    }
}
