import Foundation
import Testing
import TestSupport

/// The peer watchdog and launch/train against what the real trainer cannot stage on demand, on a
/// two-host namespace cluster: rank 0 on h1 (with mpirun and launch/train), rank 1 on h2; the job
/// is `bert-dist-dev soak --collective-timeout T --stop-on-signal` (gradient synchroniser steps with
/// a PeerWatchdog, Sources/bert-dist-dev/SoakCommand.swift) started by launch/train. SIGTERM to
/// launch/train during a partition ends the job promptly; a long pause of rank 0 outside
/// collectives (a long checkpoint write) is not a failure. (A cut
/// cable, a frozen host and a killed rank under the real trainer: TrainingFaultClusterTests.)
/// Each test prints the time to exit.
@Suite(.serialized, .enabled(if: TestCluster.isAvailable, Comment(rawValue: TestCluster.unavailableReason ?? "")),
       .timeLimit(.minutes(5)))
struct PeerWatchdogClusterTests {
    static let timeout = 4.0
    let driver: URL
    let launcher = BinaryLocator.repositoryRoot.appendingPathComponent("launch/train")

    init() throws {
        driver = try BinaryLocator.bertDistDev()
    }

    /// launch/train on h1 runs 2 ranks of the soak, which stop together on launch/train's SIGUSR1.
    func startJob(_ cluster: TestCluster, _ extra: [String] = []) throws -> RunningProcess {
        var environment = ProcessInfo.processInfo.environment
        environment["BERT_DIST_BIN"] = driver.path
        environment["BERT_DIST_SUBCOMMAND"] = "soak"
        environment["BERT_DIST_CLUSTER_CONF"] = try cluster.clusterConf().path
        return try cluster.exec(host: 1, launcher, ["-n", "2", "--collective-timeout", "\(Self.timeout)", "--stop-on-signal"] + extra,
                                environment: environment)
    }

    /// Both ranks are in their loop of collectives.
    static let inTheLoop: @Sendable (String) -> Bool = { $0.contains("rank 0 pid") && $0.contains("rank 1 pid") }

    /// The checks every fault shares: the job ends non-zero within the timeout + 30 s and its
    /// output holds `expected`. Returns the seconds to exit.
    func expectJobEnds(_ run: RunningProcess, _ timeline: (actedAt: Date?, exitedAt: Date?), naming expected: [String],
                       _ scenario: String) async -> Double {
        let (status, seconds, output) = await expectFailure(run, timeline, collectiveTimeout: Self.timeout, scenario)
        for text in expected { #expect(output.contains(text), "\(scenario): no '\(text)' in: \(output)") }
        let report = output.split(separator: "\n").first { $0.contains("stopped answering") || $0.contains("noticed that process") }
        print("\(scenario): launch/train exited \(status.map(String.init) ?? "-") \(String(format: "%.1f", seconds)) s after the fault "
            + "(--collective-timeout \(Self.timeout)); report: \(report.map(String.init) ?? "none")")
        return seconds
    }

    /// SIGTERM to launch/train while h2 is cut off: the graceful stop cannot be agreed on (rank 1
    /// cannot answer), so the watchdog ends it; a second SIGTERM ends everything within seconds.
    /// (Each sequence on a thread of its own: see RunningProcess.act.)
    @Test func sigtermToLaunchTrainDuringAPartitionEndsTheJob() async throws {
        let cluster = try TestCluster(hosts: 2)
        defer { cluster.down() }
        let name = cluster.name
        let once = try startJob(cluster)
        let onceTimeline = await once.act(whenOutput: Self.inTheLoop, appearsWithin: 60, {
            sleep(1)  // well inside the loop of collectives
            let cutAt = Date()
            _ = try? TestCluster.run(["cut", name, "h2"])
            sleep(1)
            kill(once.processIdentifier, SIGTERM)
            return cutAt
        }, thenExitWithin: Self.timeout + 60)
        _ = await expectJobEnds(once, onceTimeline, naming: ["rank 1 on h2 stopped answering"], "SIGTERM during a partition")
        try cluster.run(["mend", cluster.name, "h2"])
        #expect(await cluster.noneRunning(host: 2, driver, within: 5))

        let twice = try startJob(cluster)
        let twiceTimeline = await twice.act(whenOutput: Self.inTheLoop, appearsWithin: 60, {
            sleep(1)
            _ = try? TestCluster.run(["cut", name, "h2"])
            sleep(1)
            let signalledAt = Date()
            kill(twice.processIdentifier, SIGTERM)
            usleep(500_000)
            kill(twice.processIdentifier, SIGTERM)
            return signalledAt
        }, thenExitWithin: Self.timeout + 60)
        let seconds = await expectJobEnds(twice, twiceTimeline, naming: ["aborting the job"], "two SIGTERMs during a partition")
        #expect(seconds < 10, "two SIGTERMs took \(seconds) s")
    }

    /// Count silence, not the length of a collective: rank 0 spends 3 timeouts outside collectives
    /// (a long checkpoint write) while rank 1 waits in one; the job ends normally.
    @Test func aLongPauseOfRankZeroIsNotAFailure() async throws {
        let cluster = try TestCluster(hosts: 2)
        defer { cluster.down() }
        let run = try startJob(cluster, ["--seconds", "\(2 + 3 * Self.timeout + 1)", "--rank0-pause", "\(3 * Self.timeout)"])
        let status = await run.exitStatus(timeoutSeconds: 90)
        let output = run.standardOutput + run.standardError
        #expect(status == 0, "\(output)")
        #expect(output.contains("rank 0 pausing") && output.contains("rank 0 done") && output.contains("rank 1 done"), "\(output)")
        #expect(!output.contains("stopped answering"), "\(output)")
    }
}

/// The watchdog's thread allocates nothing in its steady state (heartbeats sent and received,
/// silence checked): the trainer counts every heap allocation of the process per step
/// (benchmarks/check_allocations.sh). Measured with benchmarks/malloc_counter.c preloaded into
/// 2 ranks under mpirun on this machine, while their main threads sleep.
@Suite(.enabled(if: TestCluster.tool("cc") != nil, "needs a C compiler (cc) for benchmarks/malloc_counter.c"),
       .timeLimit(.minutes(2)))
struct PeerWatchdogAllocationTests {
    @Test func theWatchdogAllocatesNothingWhileRunning() throws {
        let driver = try BinaryLocator.bertDistDev()
        let library = scratchURL("malloc-counter-\(UUID().uuidString).so")
        defer { try? FileManager.default.removeItem(at: library) }
        let compile = try RunningProcess(try #require(TestCluster.tool("cc")), ["-O2", "-shared", "-fPIC", "-o", library.path,
            BinaryLocator.repositoryRoot.appendingPathComponent("benchmarks/malloc_counter.c").path, "-ldl"])
        try #require(compile.waitForExit(timeoutSeconds: 60) == 0, "\(compile.standardError)")
        let run = try RunningProcess(try BinaryLocator.mpirun(), BinaryLocator.mpirunTestOptions
            + ["-n", "2", "-x", "LD_PRELOAD=\(library.path)", driver.path, "soak", "--collective-timeout", "2", "--idle-allocations", "3",
               "--seconds", "0"])
        #expect(run.waitForExit(timeoutSeconds: 60) == 0, "\(run.standardError)")
        for rank in 0 ..< 2 {
            #expect(run.standardOutput.contains("rank \(rank) allocations while idle: 0"), "\(run.standardOutput)")
        }
    }
}
