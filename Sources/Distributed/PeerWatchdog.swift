import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Ends the job when a peer stops answering: a rank that died, froze (SIGSTOP, a hung host) or
/// became unreachable (a cut cable) — the failures that leave MPI waiting forever.
///
/// It counts the silence of peers, not the length of collectives: every rank runs a small thread
/// with its own UDP socket that sends a heartbeat to every other rank each `heartbeatSeconds` and
/// notes when it last heard from each. The thread never calls MPI (MPI is MPI_THREAD_FUNNELED here)
/// and does not depend on the main thread, so a long rank-0 checkpoint write or a slow first step
/// never looks like silence; only a process that cannot run, or a network that cannot carry its
/// datagrams, does. The socket addresses are exchanged once, over MPI, by `start`.
///
/// When a peer has been silent for `timeoutSeconds`, the watchdog of every rank that notices:
///   - names every rank silent at that moment, with its host, in one line (`describeSilence`), plus
///     the caller's note (`setNote`, e.g. the newest complete checkpoint);
///   - the *reporter* — the lowest rank it still hears, itself included (rank 0 on the side of a
///     partition that holds it) — prints the line on stderr, tells the ranks it still hears to end
///     (an `end` datagram) and ends its process (`_exit`, non-zero). The others end quietly when
///     the reporter's `end` arrives, or print the line themselves after `followerGraceSeconds`.
///   So ranks cut off from rank 0 end too (they notice rank 0's silence): no process keeps burning
///   CPU on a cut-off host.
///   Before it tells the others to end, the reporter runs the caller's `setBeforeEnding` hook (the
///   trainer's emergency checkpoint) on a thread of its own, while its watchdog goes on sending
///   heartbeats and `hold` datagrams, which keep the ranks it hears waiting for its `end`.
///
/// A failure the main thread sees first (an MPI call that fails because a peer process died) makes
/// it `suspectPeerFailure()`: the watchdog then trips on a peer silent for `suspectedSilenceSeconds`
/// (a few heartbeats) instead of the whole timeout, so that a dead process is named (and the hook
/// runs) within seconds. A rank that ends with an error of its own `endPeers` first: its peers end
/// quietly instead of reporting it lost. What remains is Open MPI's: its daemon on the cut-off host (the
///   trainer's response ends it) and mpirun, which waits for daemons it cannot reach
///   (launch/train ends it; see docs/cluster-faults.md).
///
///     let watchdog = try PeerWatchdog.start(communicator: communicator, timeoutSeconds: 120,
///                                           hostName: hostName, interfaces: ["eth1"])
///     ... after each complete checkpoint: watchdog.setNote("newest complete checkpoint: \(path)")
///     ... at the end, after the last collective every rank takes part in: watchdog.stop()
///
/// `stop()` says goodbye to the peers (they stop expecting this rank), so it belongs after the last
/// collective of a run, when no peer waits for this rank any more; `deinit` stops too.
/// Thread-safe: `setNote` and `stop` may be called from any thread.
public final class PeerWatchdog: Sendable {
    /// What a watchdog saw when it tripped.
    public struct Trip: Sendable {
        /// The ranks silent longer than the timeout at that moment (this rank's view), ascending.
        public var silentRanks: [Int]
        /// Their hosts, in the order of `silentRanks`, without repeats.
        public var silentHosts: [String]
        /// The longest silence among them, in seconds.
        public var silentSeconds: Double
        public var observerRank: Int
        /// The one line that reports the failure (the reporter's line for a rank ended by the reporter).
        public var line: String
        /// True on the rank that reports; false on one that the reporter ended.
        public var isReporter: Bool
        /// The reporter whose `end` this rank received, or nil.
        public var endedBy: Int?
        /// What the reporter's `setBeforeEnding` hook said (empty elsewhere), for a machine-readable
        /// line of the caller's.
        public var facts: [(key: String, value: String)] = []
    }

    /// What the reporter's hook did before the job ends: `note` is appended to the line (e.g.
    /// "emergency checkpoint of step 57: ..."), `facts` travel in the `Trip`.
    public struct Ending: Sendable {
        public var note: String
        public var facts: [(key: String, value: String)]
        public init(note: String, facts: [(key: String, value: String)] = []) {
            self.note = note
            self.facts = facts
        }
    }

    /// What a tripped watchdog does.
    public enum Response: Sendable {
        /// Print the line on stderr (unless another rank reports it) and end the process with `status`.
        /// The process ends from the watchdog's thread with `_exit`: the main thread may be blocked
        /// in MPI forever, and nothing but the report needs to happen on the way out.
        case printAndExit(status: Int32)
        /// Call the function instead (tests, embedding); the watchdog then stops sending
        /// heartbeats, as an ended process would.
        case call(@Sendable (Trip) -> Void)
    }

    public let timeoutSeconds: Double
    public let heartbeatSeconds: Double
    /// nil for a world of one (nobody to watch).
    let monitor: PeerWatchdogMonitor?

    /// Exchanges the heartbeat addresses with every rank (a collective: all ranks call it, from
    /// the thread that calls the communicator) and starts watching.
    /// - `hostName`: how this rank's host is named in reports (e.g. gethostname()).
    /// - `interfaces`: the network interfaces to be reached on, e.g. the one MPI uses (cluster.conf's
    ///   network_interface), so that the watchdog hears what MPI hears; empty: every interface but
    ///   loopback (loopback when there is no other).
    /// - `heartbeatSeconds`: default min(1 s, timeout / 5).
    /// - `followerGraceSeconds`: how long a rank that is not the reporter waits for the reporter's
    ///   `end` (or its next `hold`) before reporting itself (default min(5 s, timeout)).
    /// - `suspectedSilenceSeconds`: the silence that trips once a failure is suspected (default
    ///   min(timeout, max(3 s, 3 heartbeats)): a live peer's watchdog, busy machine or not, is heard
    ///   in that time; a dead process is not).
    /// - `suspicion`: asked on every turn of the watchdog's loop; true suspects a failure as
    ///   `suspectPeerFailure()` does (e.g. a stop signal: Open MPI signals the survivors of a killed
    ///   rank; a graceful stop with every peer alive trips nothing).
    /// - `endingLimitSeconds`: how long the reporter waits for its `setBeforeEnding` hook.
    /// - `announce`: what the reporter does with its trip once the hook is done and before it ends
    ///   the others (e.g. print the line), which it then holds for `announceSeconds` more (so that a
    ///   launcher's output forwarding, which a first exit may stall, passes the line on first).
    public static func start(communicator: any Communicator, timeoutSeconds: Double, hostName: String,
                             interfaces: [String] = [], heartbeatSeconds: Double? = nil,
                             followerGraceSeconds: Double? = nil, suspectedSilenceSeconds: Double? = nil,
                             suspicion: (@Sendable () -> Bool)? = nil, endingLimitSeconds: Double = 300,
                             announce: (@Sendable (Trip) -> Void)? = nil, announceSeconds: Double = 0,
                             response: Response = .printAndExit(status: 1)) throws -> PeerWatchdog {
        let rank = communicator.rank
        guard timeoutSeconds.isFinite, timeoutSeconds > 0 else {
            throw CommunicationError(rank: rank, operation: "PeerWatchdog.start", reason: "the timeout must be a positive number of seconds, got \(timeoutSeconds)")
        }
        let interval = heartbeatSeconds ?? min(1, timeoutSeconds / 5)
        guard interval.isFinite, interval > 0, interval < timeoutSeconds else {
            throw CommunicationError(rank: rank, operation: "PeerWatchdog.start",
                                     reason: "the heartbeat interval must be positive and shorter than the timeout (\(timeoutSeconds) s), got \(interval)")
        }
        guard communicator.worldSize > 1 else {
            return PeerWatchdog(timeoutSeconds: timeoutSeconds, heartbeatSeconds: interval, monitor: nil)
        }
        // Every rank must reach the allGather below, or its peers would wait there forever: a local
        // failure travels inside the contribution and fails every rank alike.
        var socket: HeartbeatSocket? = nil
        var contribution: [UInt8]
        var localFailure = ""
        do {
            socket = try HeartbeatSocket()
            let addresses = try HeartbeatSocket.localAddresses(interfaces: interfaces)
            contribution = PeerAddresses(token: UInt64.random(in: 1 ... UInt64.max), port: socket!.port,
                                         addresses: addresses, hostName: hostName).encoded()
        } catch {
            localFailure = "\(error)"
            contribution = [0] + Array(localFailure.utf8)
        }
        let gathered = try communicator.allGather(bytes: contribution)
        var peers: [PeerAddresses] = []
        for (peerRank, bytes) in gathered.enumerated() {
            guard let peer = PeerAddresses(decoding: bytes) else {
                let reason = peerRank == rank ? localFailure : String(decoding: bytes.dropFirst(), as: UTF8.self)
                throw CommunicationError(rank: rank, operation: "PeerWatchdog.start", reason: "rank \(peerRank) cannot watch its peers: \(reason)")
            }
            peers.append(peer)
        }
        let monitor = PeerWatchdogMonitor(rank: rank, peers: peers, token: peers[0].token, socket: socket!,
                              timeoutSeconds: timeoutSeconds, heartbeatSeconds: interval,
                              followerGraceSeconds: followerGraceSeconds ?? min(5, timeoutSeconds),
                              suspectedSilenceSeconds: suspectedSilenceSeconds ?? min(timeoutSeconds, max(3, 3 * interval)),
                              suspicion: suspicion, endingLimitSeconds: endingLimitSeconds,
                              announce: announce, announceSeconds: announceSeconds, response: response)
        monitor.launch()
        return PeerWatchdog(timeoutSeconds: timeoutSeconds, heartbeatSeconds: interval, monitor: monitor)
    }

    private init(timeoutSeconds: Double, heartbeatSeconds: Double, monitor: PeerWatchdogMonitor?) {
        self.timeoutSeconds = timeoutSeconds
        self.heartbeatSeconds = heartbeatSeconds
        self.monitor = monitor
    }

    deinit {
        stop()
    }

    /// The text appended to the report, e.g. "newest complete checkpoint: runs/x/checkpoint-40".
    public func setNote(_ note: String) {
        monitor?.note.withLock { $0 = note }
    }

    /// What the reporter does before the job ends (nil: nothing), on a thread of its own while the
    /// watchdog goes on answering; its `Ending` joins the line and the `Trip`. Set it once the state
    /// it saves exists (the trainer: after its first step).
    public func setBeforeEnding(_ hook: (@Sendable (Trip) -> Ending)?) {
        monitor?.beforeEnding.withLock { $0 = hook }
    }

    /// A failure seen outside the watchdog (an MPI call failed): trip on a peer silent for
    /// `suspectedSilenceSeconds` from now on, rather than the timeout.
    public func suspectPeerFailure() {
        monitor?.suspected.store(true, ordering: .sequentiallyConsistent)
    }

    /// How long a suspected failure takes at most to be confirmed (or not): the suspected silence
    /// plus two heartbeats.
    public var confirmationSeconds: Double {
        (monitor?.suspectedSilenceSeconds ?? 0) + 2 * heartbeatSeconds
    }

    /// Whether this watchdog has tripped (its response is then under way).
    public var hasTripped: Bool {
        monitor?.tripped.load(ordering: .sequentiallyConsistent) ?? false
    }

    /// This rank ends with an error of its own: its peers are told to end quietly (an `end`
    /// datagram carrying `reason`) instead of reporting it lost; the watchdog stops.
    public func endPeers(reason: String) {
        monitor?.endPeers(reason: reason)
    }

    /// Stops watching and tells the peers to stop expecting this rank (idempotent; returns once the
    /// watchdog's thread has ended, within about one heartbeat interval).
    public func stop() {
        monitor?.stop(sayGoodbye: true)
    }

    /// The line that reports `silentRanks`: grouped by host, e.g.
    /// `error: ranks 2, 3 on h2 and rank 5 on h3 stopped answering (no heartbeat for 61.2 s, timeout
    /// 60 s; noticed by rank 0 on h1); newest complete checkpoint: runs/x/checkpoint-40`.
    /// `suspected`: the silence tripped once a failure was suspected (`suspectPeerFailure`), before
    /// the timeout.
    public static func describeSilence(silentRanks: [Int], hostNames: [String], silentSeconds: Double,
                                       timeoutSeconds: Double, observerRank: Int, note: String, suspected: Bool = false) -> String {
        var hosts: [String] = []
        var ranksOfHost: [String: [Int]] = [:]
        for rank in silentRanks.sorted() {
            let host = rank < hostNames.count ? hostNames[rank] : "?"
            if ranksOfHost[host] == nil { hosts.append(host) }
            ranksOfHost[host, default: []].append(rank)
        }
        let groups = hosts.map { host in
            let ranks = ranksOfHost[host]!
            return "\(ranks.count == 1 ? "rank" : "ranks") \(rankList(ranks)) on \(host)"
        }
        let who = groups.count <= 2 ? groups.joined(separator: " and ")
            : groups.dropLast().joined(separator: ", ") + " and " + groups.last!
        let observerHost = observerRank < hostNames.count ? hostNames[observerRank] : "?"
        let limit = suspected ? "after a failure of MPI or a stop signal" : "timeout \(formatSeconds(timeoutSeconds)) s"
        var line = "error: \(who) stopped answering (no heartbeat for \(String(format: "%.1f", silentSeconds)) s, "
            + "\(limit); noticed by rank \(observerRank) on \(observerHost))"
        if !note.isEmpty { line += "; " + note }
        return line
    }

    /// "1, 3, 8-15": runs of three or more consecutive ranks as ranges.
    static func rankList(_ ranks: [Int]) -> String {
        var parts: [String] = []
        var index = 0
        while index < ranks.count {
            var end = index
            while end + 1 < ranks.count && ranks[end + 1] == ranks[end] + 1 { end += 1 }
            if end - index >= 2 {
                parts.append("\(ranks[index])-\(ranks[end])")
            } else {
                for position in index ... end { parts.append("\(ranks[position])") }
            }
            index = end + 1
        }
        return parts.joined(separator: ", ")
    }

    private static func formatSeconds(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(format: "%g", seconds)
    }
}

/// What one rank tells the others at start: the job token (rank 0's is used), its heartbeat port,
/// its IPv4 addresses and its host's name. Encoding: 1 (valid), token (8), port (2), address count
/// (2), addresses (4 each, network order), host name (UTF-8); a failed rank sends 0 and its reason.
struct PeerAddresses {
    var token: UInt64
    var port: UInt16
    var addresses: [UInt32]
    var hostName: String

    var endpoints: [HeartbeatEndpoint] { addresses.map { HeartbeatEndpoint(address: $0, port: port) } }

    init(token: UInt64, port: UInt16, addresses: [UInt32], hostName: String) {
        self.token = token
        self.port = port
        self.addresses = addresses
        self.hostName = hostName
    }

    func encoded() -> [UInt8] {
        var bytes: [UInt8] = [1]
        withUnsafeBytes(of: token.littleEndian) { bytes += $0 }
        withUnsafeBytes(of: port.littleEndian) { bytes += $0 }
        withUnsafeBytes(of: UInt16(addresses.count).littleEndian) { bytes += $0 }
        for address in addresses { withUnsafeBytes(of: address) { bytes += $0 } }
        return bytes + Array(hostName.utf8)
    }

    init?(decoding bytes: [UInt8]) {
        guard bytes.count >= 13, bytes[0] == 1 else { return nil }
        let count = bytes.withUnsafeBytes { Int(UInt16(littleEndian: $0.loadUnaligned(fromByteOffset: 11, as: UInt16.self))) }
        guard bytes.count >= 13 + 4 * count else { return nil }
        (token, port, addresses) = bytes.withUnsafeBytes { raw in
            (UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 1, as: UInt64.self)),
             UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 9, as: UInt16.self)),
             (0 ..< count).map { raw.loadUnaligned(fromByteOffset: 13 + 4 * $0, as: UInt32.self) })
        }
        hostName = String(decoding: bytes[(13 + 4 * count)...], as: UTF8.self)
    }
}
