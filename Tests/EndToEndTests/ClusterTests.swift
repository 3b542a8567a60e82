import Foundation
import Testing

/// The namespace cluster itself (Tests/Cluster/cluster.sh): hosts that share no network and no
/// local disk, an MPI job across two of them over TCP, and no namespace left behind.
@Suite(.serialized, .enabled(if: TestCluster.isAvailable, Comment(rawValue: TestCluster.unavailableReason ?? "")),
       .timeLimit(.minutes(3)))
struct ClusterTests {
    /// Each host has its own name, address, cores and local disk; `down` leaves nothing behind.
    @Test func hostsHaveTheirOwnNameAddressCoresAndDiskAndDownLeavesNothing() throws {
        let cluster = try TestCluster(hosts: 2, cpus: ["0", "\(ProcessInfo.processInfo.activeProcessorCount > 1 ? 1 : 0)"])
        defer { cluster.down() }
        let shell = URL(fileURLWithPath: "/bin/sh")
        let script = #"hostname; grep Cpus_allowed_list /proc/self/status | cut -f2; ip -4 -o addr show eth1 | awk '{print $4}'; "#
            + #"echo "written by $(hostname)" > "$0/note"; ls "$0""#
        var seen: [[String]] = []
        for host in 1 ... 2 {
            let run = try cluster.exec(host: host, shell, ["-c", script, cluster.localDisk.path])
            #expect(run.waitForExit(timeoutSeconds: 30) == 0, "\(run.standardError)")
            seen.append(run.standardOutput.split(separator: "\n").map(String.init))
        }
        #expect(seen[0] == ["h1", "0", "10.77.0.1/24", "note"], "\(seen[0])")
        #expect(seen[1].prefix(3) == ["h2", ProcessInfo.processInfo.activeProcessorCount > 1 ? "1" : "0", "10.77.0.2/24"], "\(seen[1])")
        // Each host wrote its own note on its own disk; the shared path outside shows neither.
        for host in 1 ... 2 {
            let note = try String(contentsOf: cluster.disk(host: host).appendingPathComponent("note"), encoding: .utf8)
            #expect(note == "written by h\(host)\n")
        }
        #expect((try? FileManager.default.contentsOfDirectory(atPath: cluster.localDisk.path)) == [])

        #expect(cluster.namespaces().sorted() == ["\(cluster.name)-h1", "\(cluster.name)-h2", "\(cluster.name)-switch"])
        cluster.down()
        #expect(cluster.namespaces().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: cluster.state.path))
    }

    /// `bert-dist-dev bench-comm --check` (every collective, verified bit for bit) under mpirun with
    /// one rank on each of two hosts, over TCP between the namespaces.
    @Test func benchCommCheckPassesAcrossTwoHostsOverTCP() async throws {
        let cluster = try TestCluster(hosts: 2)
        defer { cluster.down() }
        let binary = try BinaryLocator.bertDistDev()
        let arguments = BinaryLocator.mpirunTestOptions + ["-n", "2", "--hostfile", try cluster.hostfile().path, "--display-map"]
            + (try cluster.mpirunOptions()) + [binary.path, "bench-comm", "--check"]
        let started = Date()
        let run = try cluster.exec(host: 1, try BinaryLocator.mpirun(), arguments)
        let status = await run.exitStatus(timeoutSeconds: 120)
        #expect(status == 0, "stdout: \(run.standardOutput)\nstderr: \(run.standardError)")
        #expect(run.standardOutput.contains("checks passed on each of 2 MPI ranks"), "\(run.standardOutput)")
        // One rank on each host.
        #expect(run.standardOutput.contains("Data for node: h1") && run.standardOutput.contains("Data for node: h2"), "\(run.standardOutput)")
        print("bench-comm --check across 2 namespace hosts: \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
        let names = cluster.namespaces()
        cluster.down()
        #expect(names.count == 3 && cluster.namespaces().isEmpty)
    }

    /// A cluster whose owner died (a crashed test run) is removed by the next run; a cluster whose
    /// owner lives is left alone.
    @Test func clustersOfCrashedRunsAreRemovedAndLiveOnesKept() throws {
        let owner = try RunningProcess(URL(fileURLWithPath: "/bin/sleep"), ["60"])
        let stale = "\(TestCluster.prefix)stale-\(owner.processIdentifier)"
        let state = try TestCluster.run(["up", stale, "1", "--owner", "\(owner.processIdentifier)"]).trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? TestCluster.run(["down", stale]) }
        let live = try TestCluster(hosts: 1)
        defer { live.down() }
        kill(owner.processIdentifier, SIGKILL)
        _ = owner.waitForExit(timeoutSeconds: 10)

        let next = try TestCluster(hosts: 1)  // cleans up first
        defer { next.down() }
        let listed = try TestCluster.run(["list"])
        #expect(!listed.contains(stale) && !FileManager.default.fileExists(atPath: state), "\(listed)")
        #expect(live.namespaces().count == 2 && listed.contains(live.name), "the live cluster was removed: \(listed)")
    }
}
