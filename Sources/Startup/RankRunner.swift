import Distributed
import Foundation
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
            printError("error: \(error)")
            return 1
        }
        let prefix = communicator.rank == 0 ? "" : "rank \(communicator.rank): "
        var watchdog: PeerWatchdog?
        do {
            if let collectiveTimeout, communicator.worldSize > 1 {
                // Before rank 0 reads or tokenises anything: the peers wait for it meanwhile.
                watchdog = try PeerWatchdog.start(communicator: communicator, timeoutSeconds: collectiveTimeout,
                                                  hostName: runtime?.hostName ?? ProcessEnvironment.current.hostName,
                                                  interfaces: ProcessEnvironment.current.mpiNetworkInterfaces,
                                                  response: .call(endProcess))
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
            report(error, prefix: prefix)
            if communicator.worldSize > 1 { communicator.abort(message: "\(prefix)stopping all ranks") }
            try? communicator.finalize()
            return 1
        }
    }

    /// What a tripped watchdog does: the reporter prints its line, and the process ends (from the
    /// watchdog's thread: the main thread may be blocked in MPI for ever). A rank cut off from rank
    /// 0 under mpirun first ends its host's Open MPI daemon, its parent: that orted cannot reach
    /// mpirun (on rank 0's host under launch/train) either, and would otherwise wait about 16
    /// minutes for TCP to give up on its unacknowledged report (docs/cluster-faults.md); SIGTERM
    /// ends it in about a second. The second before lets it forward the line, should mpirun still
    /// be reachable (rank 0 alone frozen). Under srun or on mpirun's own host the parent is not an
    /// orted and is left alone.
    @Sendable private static func endProcess(_ trip: PeerWatchdog.Trip) {
        if trip.isReporter { printError(trip.line) }
        let parent = getppid()
        if trip.silentRanks.contains(0), ProcessEnvironment.programName(of: parent) == "orted" {
            sleep(1)
            kill(parent, SIGTERM)
        }
        _exit(1)
    }

    /// One line on stderr; an agreed failure is printed by the rank that carries its error only.
    private static func report(_ error: any Error, prefix: String) {
        if let failure = error as? AgreedFailure {
            if let error = failure.error { printError("\(prefix)error: \(error)") }
        } else {
            printError("\(prefix)error: \(error)")
        }
    }

    /// For commands that are not distributed (predict, merge, tokenize, data): under a launcher
    /// rank 0 alone runs `body` (once, not N times); the other ranks return at once.
    public static func onRankZeroOnly(_ body: () throws -> Void) throws {
        if ProcessEnvironment.current.isNonZeroRank { return }
        try body()
    }
}

/// stdout from rank 0 only.
public func rootLog(_ communicator: any Communicator) -> @Sendable (String) -> Void {
    let isRoot = communicator.rank == 0
    return { line in
        guard isRoot else { return }
        print(line)
        fflush(nil)
    }
}
