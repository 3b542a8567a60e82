import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The thread of a `PeerWatchdog`: sends heartbeats, notes when each peer was last heard, and
/// trips when one has been silent longer than the timeout (see PeerWatchdog for what tripping does).
///
/// Everything but `note` and the stop request belongs to the watchdog's thread alone. Its steady
/// state (heartbeats, datagrams, silence checks) allocates nothing: the trainer counts every heap
/// allocation of the process per step (benchmarks/check_allocations.sh); only tripping does.
/// @unchecked Sendable: the thread-owned state is touched by that thread only; `note`,
/// `beforeEnding` and `endReason` are Mutexes, the stop request, `suspected` and `tripped` Atomics,
/// and the socket is safe to send on from two threads (stop's wake-up, the ending hook's).
final class PeerWatchdogMonitor: @unchecked Sendable {
    let rank: Int
    let peers: [PeerAddresses]
    let token: UInt64
    let socket: HeartbeatSocket
    let timeoutSeconds: Double
    let heartbeatSeconds: Double
    let followerGraceSeconds: Double
    let suspectedSilenceSeconds: Double
    let suspicion: (@Sendable () -> Bool)?
    let endingLimitSeconds: Double
    let announce: (@Sendable (PeerWatchdog.Trip) -> Void)?
    let announceSeconds: Double
    let response: PeerWatchdog.Response
    let note = Mutex<String>("")
    let beforeEnding = Mutex<(@Sendable (PeerWatchdog.Trip) -> PeerWatchdog.Ending)?>(nil)
    /// A failure was seen outside the watchdog: trip on `suspectedSilenceSeconds` of silence.
    let suspected = Atomic<Bool>(false)
    /// Set when this watchdog trips (before its response).
    let tripped = Atomic<Bool>(false)
    /// What `endPeers` tells the peers.
    private let endReason = Mutex<String>("")
    /// Every peer's addresses (its own entry unused), made once.
    private let endpoints: [[HeartbeatEndpoint]]

    private enum StopRequest: Int { case none = 0, goodbye = 1, silent = 2, endPeers = 3 }
    private let stopRequest = Atomic<Int>(StopRequest.none.rawValue)
    private let threadEnded = DispatchSemaphore(value: 0)
    private let joined = Atomic<Bool>(false)

    // The watchdog thread's own state.
    /// When each peer was last heard (monotonic seconds); this rank's own entry is unused.
    private var lastHeard: [Double]
    /// Peers that said goodbye (and this rank itself): not expected to answer.
    private var notExpected: [Bool]
    private var nextHeartbeat = 0.0
    private let packet = UnsafeMutableRawBufferPointer.allocate(byteCount: HeartbeatPacket.capacity, alignment: 8)
    private let received = UnsafeMutableRawBufferPointer.allocate(byteCount: HeartbeatPacket.capacity, alignment: 8)

    init(rank: Int, peers: [PeerAddresses], token: UInt64, socket: HeartbeatSocket, timeoutSeconds: Double,
         heartbeatSeconds: Double, followerGraceSeconds: Double, suspectedSilenceSeconds: Double,
         suspicion: (@Sendable () -> Bool)?, endingLimitSeconds: Double, announce: (@Sendable (PeerWatchdog.Trip) -> Void)?,
         announceSeconds: Double, response: PeerWatchdog.Response) {
        self.rank = rank
        self.peers = peers
        self.token = token
        self.socket = socket
        self.timeoutSeconds = timeoutSeconds
        self.heartbeatSeconds = heartbeatSeconds
        self.followerGraceSeconds = followerGraceSeconds
        self.suspectedSilenceSeconds = min(timeoutSeconds, suspectedSilenceSeconds)
        self.suspicion = suspicion
        self.endingLimitSeconds = endingLimitSeconds
        self.announce = announce
        self.announceSeconds = announceSeconds
        self.response = response
        endpoints = peers.map(\.endpoints)
        lastHeard = Array(repeating: 0, count: peers.count)
        notExpected = Array(repeating: false, count: peers.count)
        notExpected[rank] = true
    }

    deinit {
        packet.deallocate()
        received.deallocate()
    }

    func launch() {
        let thread = Thread { [self] in
            run()
            threadEnded.signal()
        }
        thread.name = "peer watchdog"
        thread.start()
    }

    /// Asks the thread to end (with or without a goodbye to the peers) and waits until it has.
    func stop(sayGoodbye: Bool) {
        stop(sayGoodbye ? .goodbye : .silent)
    }

    /// Asks the thread to tell the peers to end quietly (an `end` carrying `reason`) and to end.
    func endPeers(reason: String) {
        endReason.withLock { $0 = reason }
        stop(.endPeers)
    }

    private func stop(_ request: StopRequest) {
        _ = stopRequest.compareExchange(expected: StopRequest.none.rawValue, desired: request.rawValue, ordering: .sequentiallyConsistent)
        wake()
        if !joined.exchange(true, ordering: .sequentiallyConsistent) { threadEnded.wait() }
    }

    /// Wakes the thread from its wait for datagrams (127.0.0.1 reaches a socket bound to all addresses).
    private func wake() {
        withUnsafeTemporaryAllocation(byteCount: HeartbeatPacket.capacity, alignment: 8) { wake in
            let length = HeartbeatPacket.encode(.wake, token: token, rank: rank, into: wake)
            socket.send(UnsafeRawBufferPointer(rebasing: wake[..<length]),
                        to: HeartbeatEndpoint(address: UInt32(0x7F00_0001).bigEndian, port: socket.port))
        }
    }

    private func run() {
        let start = monotonicSeconds()
        for index in lastHeard.indices { lastHeard[index] = start }
        nextHeartbeat = start
        while true {
            switch StopRequest(rawValue: stopRequest.load(ordering: .sequentiallyConsistent)) {
            case .goodbye:
                for _ in 0 ..< 2 { sendToExpectedPeers(.goodbye) }  // two copies: datagrams can be lost
                return
            case .silent:
                return
            case .endPeers:
                let reason = endReason.withLock { $0 }
                let expected = lastHeard.indices.filter { !notExpected[$0] }
                for _ in 0 ..< 3 { send(.end, text: reason, to: expected) }  // three copies: datagrams can be lost
                return
            default:
                break
            }
            let now = monotonicSeconds()
            heartbeatIfDue(now)
            if !suspected.load(ordering: .relaxed), let suspicion, suspicion() { suspected.store(true, ordering: .sequentiallyConsistent) }
            let limit = suspected.load(ordering: .relaxed) ? suspectedSilenceSeconds : timeoutSeconds
            if lastHeard.indices.contains(where: { !notExpected[$0] && now - lastHeard[$0] > limit }) {
                trip(silent: lastHeard.indices.filter { !notExpected[$0] && now - lastHeard[$0] > limit }, now: now,
                     suspected: limit < timeoutSeconds)
                return
            }
            if let (kind, sender, text) = receive(until: nextHeartbeat), kind == .end {
                respond(PeerWatchdog.Trip(silentRanks: [], silentHosts: [], silentSeconds: 0, observerRank: rank,
                                          line: text, isReporter: false, endedBy: sender))
                return
            }
        }
    }

    /// Reports (as the reporter) or waits for the reporter's `end` (as a follower), then responds.
    /// The reporter first runs the `beforeEnding` hook, then `announce` (see `whileHolding`).
    private func trip(silent: [Int], now: Double, suspected: Bool) {
        tripped.store(true, ordering: .sequentiallyConsistent)
        let hostNames = peers.map(\.hostName)
        let silentSeconds = silent.map { now - lastHeard[$0] }.max() ?? 0
        func describe(note: String) -> String {
            PeerWatchdog.describeSilence(silentRanks: silent, hostNames: hostNames, silentSeconds: silentSeconds,
                                         timeoutSeconds: timeoutSeconds, observerRank: rank, note: note, suspected: suspected)
        }
        let line = describe(note: note.withLock { $0 })
        var silentHosts: [String] = []
        for host in silent.map({ hostNames[$0] }) where !silentHosts.contains(host) { silentHosts.append(host) }
        // The ranks this rank still hears; the lowest of them (or this rank) reports.
        let heard = lastHeard.indices.filter { !notExpected[$0] && !silent.contains($0) }
        var trip = PeerWatchdog.Trip(silentRanks: silent, silentHosts: silentHosts, silentSeconds: silentSeconds,
                                     observerRank: rank, line: line, isReporter: heard.allSatisfy { $0 > rank }, endedBy: nil)
        if !trip.isReporter {
            // Keep answering, so that the reporter does not count this rank among the silent ones.
            // A `hold` (the reporter saves a checkpoint first) extends the wait.
            var graceEnd = monotonicSeconds() + followerGraceSeconds
            while monotonicSeconds() < graceEnd && stopRequest.load(ordering: .sequentiallyConsistent) == StopRequest.none.rawValue {
                heartbeatIfDue(monotonicSeconds())
                guard let (kind, sender, text) = receive(until: min(nextHeartbeat, graceEnd)) else { continue }
                if kind == .hold { graceEnd = monotonicSeconds() + followerGraceSeconds }
                if kind == .end {
                    trip.line = text
                    trip.endedBy = sender
                    respond(trip)
                    return
                }
            }
            if stopRequest.load(ordering: .sequentiallyConsistent) != StopRequest.none.rawValue { return }
            trip.isReporter = true  // the reporter said nothing in time: report from here
        }
        let tripSoFar = trip
        if let hook = beforeEnding.withLock({ $0 }), let ending = whileHolding(heard, limit: endingLimitSeconds, { hook(tripSoFar) }) {
            if !ending.note.isEmpty { trip.line = describe(note: ending.note) }
            trip.facts = ending.facts
        }
        if let announce {
            announce(trip)
            _ = whileHolding(heard, limit: announceSeconds) { () -> Bool? in nil }
        }
        for _ in 0 ..< 3 { send(.end, text: trip.line, to: heard) }
        respond(trip)
    }

    /// Runs `work` on a thread of its own (it may take seconds: the reporter's checkpoint write)
    /// while this thread goes on sending heartbeats, and `hold` to the ranks it hears so that they
    /// wait for its `end`; returns its result, or nil past `limit` seconds (a `work` that returns
    /// nil at once holds the ranks for `limit`).
    private func whileHolding<Value>(_ heard: [Int], limit: Double, _ work: @escaping @Sendable () -> Value?) -> Value? {
        let outcome = HeldWork<Value>()
        let thread = Thread { [self] in
            let result = work()
            outcome.lock.lock()
            outcome.result = result
            outcome.finished = result != nil
            outcome.lock.unlock()
            if result != nil { wake() }
        }
        thread.name = "peer watchdog: before ending"
        thread.start()
        let deadline = monotonicSeconds() + limit
        var nextHold = 0.0
        while monotonicSeconds() < deadline {
            outcome.lock.lock()
            let finished = outcome.finished
            outcome.lock.unlock()
            if finished { break }
            let now = monotonicSeconds()
            heartbeatIfDue(now)
            if now >= nextHold {
                send(.hold, text: "", to: heard)
                nextHold = now + heartbeatSeconds
            }
            _ = receive(until: min(nextHeartbeat, nextHold, deadline))
        }
        outcome.lock.lock()
        defer { outcome.lock.unlock() }
        return outcome.result
    }

    private func respond(_ trip: PeerWatchdog.Trip) {
        switch response {
        case .printAndExit(let status):
            if trip.isReporter { writeToStandardError(trip.line + "\n") }
            _exit(status)
        case .call(let function):
            function(trip)
        }
    }

    private func heartbeatIfDue(_ now: Double) {
        guard now >= nextHeartbeat else { return }
        sendToExpectedPeers(.heartbeat)
        nextHeartbeat = now + heartbeatSeconds
    }

    /// To every peer that has not said goodbye.
    private func sendToExpectedPeers(_ kind: HeartbeatPacket.Kind) {
        let length = HeartbeatPacket.encode(kind, token: token, rank: rank, into: packet)
        for peer in lastHeard.indices where !notExpected[peer] { send(UnsafeRawBufferPointer(rebasing: packet[..<length]), to: peer) }
    }

    private func send(_ kind: HeartbeatPacket.Kind, text: String, to ranks: [Int]) {
        let length = HeartbeatPacket.encode(kind, token: token, rank: rank, text: text, into: packet)
        for peer in ranks { send(UnsafeRawBufferPointer(rebasing: packet[..<length]), to: peer) }
    }

    private func send(_ bytes: UnsafeRawBufferPointer, to peer: Int) {
        for endpoint in endpoints[peer] { socket.send(bytes, to: endpoint) }
    }

    /// Waits for datagrams until `deadline` (monotonic seconds), noting heartbeats and goodbyes;
    /// returns at the first datagram that is not one of those (an `end`, a `hold`, a `wake`), or nil
    /// at the deadline.
    private func receive(until deadline: Double) -> (HeartbeatPacket.Kind, Int, String)? {
        while true {
            let now = monotonicSeconds()
            guard now < deadline, let length = socket.receive(into: received, timeoutSeconds: deadline - now) else { return nil }
            guard let (kind, sender, text) = HeartbeatPacket.decode(UnsafeRawBufferPointer(rebasing: received[..<length]), token: token)
            else { continue }
            let known = sender >= 0 && sender < peers.count && sender != rank
            switch kind {
            case .heartbeat where known:
                lastHeard[sender] = monotonicSeconds()
            case .goodbye where known:
                notExpected[sender] = true
            case .end where known, .hold where known, .wake:
                return (kind, sender, text)
            default:
                continue
            }
        }
    }
}

/// The result of `whileHolding`'s work, handed from its thread to the watchdog's.
/// @unchecked Sendable: both fields under `lock`.
private final class HeldWork<Value>: @unchecked Sendable {
    let lock = NSLock()
    var result: Value?
    var finished = false
}
