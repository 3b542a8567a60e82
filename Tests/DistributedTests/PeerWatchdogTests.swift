@testable import Distributed
import Foundation
import Synchronization
import Testing

/// The peer watchdog in one process: simulated ranks (threads of an InProcessGroup), each with its
/// own watchdog and UDP socket on this machine's addresses. A rank "freezes" by ending its
/// watchdog's thread without a goodbye (`fallSilent`), which is what a SIGSTOP'd or killed process
/// looks like to its peers. The process-ending response and real faults (cut cable, SIGSTOP,
/// kill -9) are tested on the namespace cluster (PeerWatchdogClusterTests).
@Suite(.timeLimit(.minutes(1)))
struct PeerWatchdogTests {
    /// The trips of every rank, with the time (monotonic seconds) each happened.
    final class TripLog: Sendable {
        let entries = Mutex<[(rank: Int, trip: PeerWatchdog.Trip, at: Double)]>([])
        func record(_ trip: PeerWatchdog.Trip, rank: Int) {
            entries.withLock { $0.append((rank, trip, monotonicSeconds())) }
        }
        var all: [(rank: Int, trip: PeerWatchdog.Trip, at: Double)] { entries.withLock { $0 } }
        /// Waits until `count` trips are recorded or `seconds` pass.
        func wait(for count: Int, seconds: Double) {
            let deadline = monotonicSeconds() + seconds
            while entries.withLock({ $0.count }) < count && monotonicSeconds() < deadline { usleep(10_000) }
        }
    }

    static let timeout = 1.0
    static let heartbeat = 0.1

    func startWatchdog(_ communicator: InProcessCommunicator, log: TripLog) throws -> PeerWatchdog {
        let rank = communicator.rank
        let watchdog = try PeerWatchdog.start(communicator: communicator, timeoutSeconds: Self.timeout, hostName: "host\(rank)",
                                              heartbeatSeconds: Self.heartbeat, followerGraceSeconds: 2,
                                              response: .call { log.record($0, rank: rank) })
        watchdog.setNote("newest complete checkpoint: out/checkpoint-\(40 + rank)")
        return watchdog
    }

    @Test func theLineNamesRanksGroupedByHostWithRangesAndTheNote() {
        let hosts = ["h1", "h1", "h2", "h2", "h2", "h2", "h3", "h4"]
        #expect(PeerWatchdog.describeSilence(silentRanks: [1], hostNames: hosts, silentSeconds: 61.26, timeoutSeconds: 60,
                                             observerRank: 0, note: "newest complete checkpoint: out/checkpoint-40")
            == "error: rank 1 on h1 stopped answering (no heartbeat for 61.3 s, timeout 60 s; noticed by rank 0 on h1); "
            + "newest complete checkpoint: out/checkpoint-40")
        #expect(PeerWatchdog.describeSilence(silentRanks: [7, 5, 2, 3, 4], hostNames: hosts, silentSeconds: 2.5, timeoutSeconds: 2.5,
                                             observerRank: 0, note: "")
            == "error: ranks 2-5 on h2 and rank 7 on h4 stopped answering (no heartbeat for 2.5 s, timeout 2.5 s; noticed by rank 0 on h1)")
        #expect(PeerWatchdog.describeSilence(silentRanks: [0, 2, 6], hostNames: hosts, silentSeconds: 10, timeoutSeconds: 10,
                                             observerRank: 7, note: "")
            == "error: rank 0 on h1, rank 2 on h2 and rank 6 on h3 stopped answering (no heartbeat for 10.0 s, timeout 10 s; noticed by rank 7 on h4)")
        #expect(PeerWatchdog.rankList([1, 2, 4, 5, 6, 9]) == "1, 2, 4-6, 9")
    }

    @Test func interfacesAreChosenByNameOrSubnetAsOpenMPITakesThem() throws {
        let tenSeventySeven = try #require(HeartbeatSocket.Subnet("10.77.0.0/24"))
        #expect(tenSeventySeven.contains(UInt32(0x0A4D_0002).bigEndian) && !tenSeventySeven.contains(UInt32(0x0A4D_0102).bigEndian))
        #expect(try #require(HeartbeatSocket.Subnet("0.0.0.0/0")).contains(UInt32(0xC0A8_0001).bigEndian))
        #expect(HeartbeatSocket.Subnet("eth1") == nil && HeartbeatSocket.Subnet("10.77.0/24") == nil && HeartbeatSocket.Subnet("10.0.0.0/33") == nil)
        let loopback = UInt32(0x7F00_0001).bigEndian
        #expect(try HeartbeatSocket.localAddresses(interfaces: ["lo"]) == [loopback])
        #expect(try HeartbeatSocket.localAddresses(interfaces: ["127.0.0.0/8"]) == [loopback])
        let all = try HeartbeatSocket.localAddresses(interfaces: [])
        #expect(!all.isEmpty && (!all.contains(loopback) || all == [loopback]), "loopback chosen beside other interfaces: \(all)")
        // A subnet this machine has no address in (documentation ranges; some sandboxes use one).
        let absent = try #require(["203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24"].first { text in
            !all.contains { HeartbeatSocket.Subnet(text)!.contains($0) }
        })
        #expect(throws: CommunicationError.self) { try HeartbeatSocket.localAddresses(interfaces: [absent]) }
    }

    @Test func startAddressesAndDatagramsRoundTripAndForeignDatagramsAreIgnored() throws {
        let addresses = PeerAddresses(token: 0x0123_4567_89AB_CDEF, port: 40_001,
                                      addresses: [UInt32(0x0A4D_0002).bigEndian, UInt32(0x7F00_0001).bigEndian], hostName: "node-07")
        let decoded = try #require(PeerAddresses(decoding: addresses.encoded()))
        #expect(decoded.token == addresses.token && decoded.port == 40_001 && decoded.hostName == "node-07")
        #expect(decoded.endpoints.map(\.description) == ["10.77.0.2:40001", "127.0.0.1:40001"])
        #expect(PeerAddresses(decoding: [0] + Array("no such interface".utf8)) == nil)

        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: HeartbeatPacket.capacity, alignment: 8)
        defer { buffer.deallocate() }
        let length = HeartbeatPacket.encode(.end, token: 77, rank: 5, text: "error: rank 1 on h2 stopped answering", into: buffer)
        let packet = UnsafeRawBufferPointer(rebasing: buffer[..<length])
        let parsed = try #require(HeartbeatPacket.decode(packet, token: 77))
        #expect(parsed.kind == .end && parsed.rank == 5 && parsed.text == "error: rank 1 on h2 stopped answering")
        #expect(HeartbeatPacket.decode(packet, token: 78) == nil, "a datagram of another job counted")
        #expect(HeartbeatPacket.decode(UnsafeRawBufferPointer(rebasing: buffer[..<19]), token: 77) == nil)
    }

    /// Count silence, not the length of a collective: rank 0 spends 3 timeouts outside any
    /// collective (a long checkpoint write) while the others wait; then the ranks stop at different
    /// times (rank 2 leaves 2 timeouts before the others). Nobody trips.
    @Test func aBusyRankAndStaggeredStopsNeverTrip() throws {
        let log = TripLog()
        _ = try InProcessGroup.run(worldSize: 3) { communicator in
            let watchdog = try startWatchdog(communicator, log: log)
            if communicator.rank == 0 { Thread.sleep(forTimeInterval: 3 * Self.timeout) }
            try communicator.barrier()
            if communicator.rank == 2 { watchdog.stop() } else { Thread.sleep(forTimeInterval: 2 * Self.timeout) }
            watchdog.stop()
        }
        #expect(log.all.isEmpty, "tripped: \(log.all.map(\.trip.line))")
    }

    /// Rank 2 falls silent: rank 0 (the lowest rank still heard) reports it, naming rank 2 and its
    /// host, within the timeout plus a few heartbeats; rank 1 is ended by rank 0's `end`.
    @Test func aSilentRankIsReportedByRankZeroAndTheOthersAreEndedByIt() throws {
        let log = TripLog()
        let silentAt = Mutex<Double>(0)
        _ = try InProcessGroup.run(worldSize: 3) { communicator in
            let watchdog = try startWatchdog(communicator, log: log)
            try communicator.barrier()
            if communicator.rank == 2 {
                silentAt.withLock { $0 = monotonicSeconds() }
                watchdog.fallSilent()
            }
            log.wait(for: 2, seconds: 10)
            watchdog.stop()
        }
        let trips = log.all
        let reporter = try #require(trips.first { $0.rank == 0 }, "rank 0 did not trip: \(trips.map(\.trip.line))")
        #expect(reporter.trip.isReporter && reporter.trip.silentRanks == [2] && reporter.trip.silentHosts == ["host2"])
        #expect(reporter.trip.line.hasPrefix("error: rank 2 on host2 stopped answering (no heartbeat for "))
        #expect(reporter.trip.line.hasSuffix("noticed by rank 0 on host0); newest complete checkpoint: out/checkpoint-40"))
        let seconds = reporter.at - silentAt.withLock { $0 }
        #expect(seconds >= Self.timeout - Self.heartbeat && seconds < Self.timeout + 5 * Self.heartbeat, "tripped after \(seconds) s")
        let follower = try #require(trips.first { $0.rank == 1 }, "rank 1 did not end")
        #expect(!follower.trip.isReporter && follower.trip.endedBy == 0 && follower.trip.line == reporter.trip.line)
        #expect(!trips.contains { $0.rank == 2 })
        print("in-process watchdog: rank 0 reported the silent rank \(String(format: "%.2f", seconds)) s after it fell silent "
            + "(timeout \(Self.timeout) s, heartbeat \(Self.heartbeat) s)")
    }

    /// Rank 0 falls silent (the side of a partition without rank 0): rank 1 reports rank 0, rank 2
    /// is ended by rank 1.
    @Test func whenRankZeroFallsSilentTheLowestRankStillHeardReports() throws {
        let log = TripLog()
        _ = try InProcessGroup.run(worldSize: 3) { communicator in
            let watchdog = try startWatchdog(communicator, log: log)
            try communicator.barrier()
            if communicator.rank == 0 { watchdog.fallSilent() }
            log.wait(for: 2, seconds: 10)
            watchdog.stop()
        }
        let trips = log.all
        let reporter = try #require(trips.first { $0.rank == 1 }, "rank 1 did not trip: \(trips.map(\.trip.line))")
        #expect(reporter.trip.isReporter && reporter.trip.silentRanks == [0])
        #expect(reporter.trip.line.contains("rank 0 on host0 stopped answering") && reporter.trip.line.contains("out/checkpoint-41"))
        let follower = try #require(trips.first { $0.rank == 2 })
        #expect(follower.trip.endedBy == 1 && follower.trip.line == reporter.trip.line)
    }

    /// Two ranks silent at once are named in one line.
    @Test func everyRankSilentAtTheMomentOfTheTripIsNamed() throws {
        let log = TripLog()
        _ = try InProcessGroup.run(worldSize: 4) { communicator in
            let watchdog = try startWatchdog(communicator, log: log)
            try communicator.barrier()
            if communicator.rank >= 2 { watchdog.fallSilent() }
            log.wait(for: 2, seconds: 10)
            watchdog.stop()
        }
        let reporter = try #require(log.all.first { $0.rank == 0 })
        #expect(reporter.trip.silentRanks == [2, 3] && reporter.trip.silentHosts == ["host2", "host3"], "\(reporter.trip.line)")
        #expect(reporter.trip.line.hasPrefix("error: rank 2 on host2 and rank 3 on host3 stopped answering"))
    }

    /// The reporter's hook (the trainer's emergency checkpoint) may take longer than the others'
    /// grace: its `hold` datagrams keep them waiting; then its note replaces the caller's, its
    /// facts travel in the trip, `announce` runs, and only after it the others are ended.
    @Test func theReporterHoldsTheOthersWhileItsHookRunsThenAnnouncesAndEndsThem() throws {
        let log = TripLog()
        let announced = Mutex<[(line: String, at: Double)]>([])
        _ = try InProcessGroup.run(worldSize: 3) { communicator in
            let rank = communicator.rank
            let watchdog = try PeerWatchdog.start(communicator: communicator, timeoutSeconds: Self.timeout, hostName: "host\(rank)",
                                                  heartbeatSeconds: Self.heartbeat, followerGraceSeconds: 0.5,
                                                  announce: { trip in announced.withLock { $0.append((trip.line, monotonicSeconds())) } },
                                                  announceSeconds: 0.3, response: .call { log.record($0, rank: rank) })
            watchdog.setNote("newest complete checkpoint: out/checkpoint-40")
            watchdog.setBeforeEnding { _ in
                Thread.sleep(forTimeInterval: 1.5)  // three times the others' grace
                return PeerWatchdog.Ending(note: "emergency checkpoint of the last completed step: out/checkpoint-47", facts: [("step", "47")])
            }
            try communicator.barrier()
            if rank == 2 { watchdog.fallSilent() }
            log.wait(for: 2, seconds: 15)
            watchdog.stop()
        }
        let trips = log.all
        let reporter = try #require(trips.first { $0.rank == 0 }, "\(trips.map(\.trip.line))")
        #expect(reporter.trip.isReporter && reporter.trip.facts.map(\.key) == ["step"] && reporter.trip.facts.first?.value == "47")
        #expect(reporter.trip.line.hasPrefix("error: rank 2 on host2 stopped answering")
                && reporter.trip.line.hasSuffix("; emergency checkpoint of the last completed step: out/checkpoint-47"), "\(reporter.trip.line)")
        let follower = try #require(trips.first { $0.rank == 1 }, "rank 1 did not end")
        #expect(!follower.trip.isReporter && follower.trip.endedBy == 0 && follower.trip.line == reporter.trip.line,
                "rank 1 reported by itself instead of waiting for rank 0: \(follower.trip.line)")
        let announcement = try #require(announced.withLock { $0 }.first, "nothing announced")
        #expect(announced.withLock { $0.count } == 1 && announcement.line == reporter.trip.line)
        #expect(follower.at >= announcement.at + 0.2, "rank 1 was ended \(follower.at - announcement.at) s after the announcement")
    }

    /// Once a failure is suspected (an MPI call failed, a signal came), a peer silent for the
    /// suspected silence trips, long before the timeout; with every peer answering nothing trips.
    @Test func aSuspectedFailureTripsAfterAShortSilenceAndOnlyThen() throws {
        let log = TripLog()
        let silentAt = Mutex<Double>(0)
        _ = try InProcessGroup.run(worldSize: 3) { communicator in
            let rank = communicator.rank
            let watchdog = try PeerWatchdog.start(communicator: communicator, timeoutSeconds: 10, hostName: "host\(rank)",
                                                  heartbeatSeconds: Self.heartbeat, followerGraceSeconds: 2, suspectedSilenceSeconds: 0.5,
                                                  response: .call { log.record($0, rank: rank) })
            try communicator.barrier()
            watchdog.suspectPeerFailure()
            Thread.sleep(forTimeInterval: 1)  // all alive: nothing trips
            #expect(log.all.isEmpty && !watchdog.hasTripped, "tripped with every peer answering: \(log.all.map(\.trip.line))")
            try communicator.barrier()
            if rank == 2 {
                silentAt.withLock { $0 = monotonicSeconds() }
                watchdog.fallSilent()
            }
            log.wait(for: 2, seconds: 8)
            watchdog.stop()
        }
        let reporter = try #require(log.all.first { $0.rank == 0 }, "\(log.all.map(\.trip.line))")
        let seconds = reporter.at - silentAt.withLock { $0 }
        #expect(seconds < 2 && reporter.trip.silentRanks == [2], "tripped \(seconds) s after rank 2 fell silent (timeout 10 s)")
        #expect(reporter.trip.line.contains("after a failure of MPI or a stop signal; noticed by rank 0 on host0"), "\(reporter.trip.line)")
    }

    /// A rank that fails with an error of its own ends its peers quietly (they do not report it
    /// lost): each trips as ended by it, with its reason.
    @Test func aRankThatFailsOnItsOwnEndsItsPeersQuietly() throws {
        let log = TripLog()
        _ = try InProcessGroup.run(worldSize: 3) { communicator in
            let watchdog = try startWatchdog(communicator, log: log)
            try communicator.barrier()
            if communicator.rank == 2 { watchdog.endPeers(reason: "rank 2: error: disk full") }
            log.wait(for: 2, seconds: 5)
            watchdog.stop()
        }
        let trips = log.all
        #expect(trips.count == 2 && trips.allSatisfy { !$0.trip.isReporter && $0.trip.endedBy == 2 && $0.trip.line == "rank 2: error: disk full" },
                "\(trips.map { ($0.rank, $0.trip.line) })")
    }

    /// A rank that cannot set up its watchdog (no such interface) fails every rank's start with its
    /// reason; nobody waits forever for it.
    @Test func aRankThatCannotStartFailsEveryRanksStartWithItsReason() throws {
        let errors = Mutex<[String]>([])
        _ = try? InProcessGroup.run(worldSize: 3) { communicator in
            do {
                let watchdog = try PeerWatchdog.start(communicator: communicator, timeoutSeconds: 5, hostName: "h",
                                                      interfaces: communicator.rank == 1 ? ["no-such-interface0"] : [],
                                                      response: .call { _ in })
                watchdog.stop()
            } catch {
                errors.withLock { $0.append("\(error)") }
            }
        }
        let messages = errors.withLock { $0 }
        #expect(messages.count == 3, "\(messages)")
        #expect(messages.allSatisfy { $0.contains("rank 1 cannot watch its peers") && $0.contains("no-such-interface0") }, "\(messages)")
    }

    @Test func badTimeoutsAreRefusedAndAWorldOfOneWatchesNobody() throws {
        _ = try InProcessGroup.run(worldSize: 1) { communicator in
            #expect(throws: CommunicationError.self) {
                try PeerWatchdog.start(communicator: communicator, timeoutSeconds: 0, hostName: "h")
            }
            #expect(throws: CommunicationError.self) {
                try PeerWatchdog.start(communicator: communicator, timeoutSeconds: 1, hostName: "h", heartbeatSeconds: 2)
            }
            let watchdog = try PeerWatchdog.start(communicator: communicator, timeoutSeconds: 0.2, hostName: "h")
            Thread.sleep(forTimeInterval: 0.5)  // would have tripped (and exited) if it watched anyone
            watchdog.stop()
        }
    }
}

extension PeerWatchdog {
    /// Ends the watchdog's thread without a goodbye, as a frozen or killed process falls silent.
    func fallSilent() {
        monitor?.stop(sayGoodbye: false)
    }
}
