import Foundation
import Testing
import TestSupport

/// The communication layer under a real mpirun (Open MPI 4.1), as a user runs it: collectives
/// verified bit for bit on 2 and 4 ranks (bert-dist-dev bench-comm --check), a rank killed
/// mid-collective, and what signals sent to mpirun or to launch/train do to the ranks (the
/// bert-dist-dev soak); launch/train's command lines. Serialized: the timing assertions need the cores.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct CommunicatorMPITests {
    let binary: URL
    let developmentBinary: URL
    let mpirun: URL

    init() throws {
        binary = try BinaryLocator.bertDist()
        developmentBinary = try BinaryLocator.bertDistDev()
        mpirun = try BinaryLocator.mpirun()
    }

    func mpirunArguments(ranks: Int, _ arguments: [String]) -> [String] {
        BinaryLocator.mpirunTestOptions + ["-n", "\(ranks)", developmentBinary.path] + arguments
    }

    @Test(arguments: [2, 4])
    func benchCommCheckPassesUnderMPIRun(ranks: Int) throws {
        let run = try RunningProcess(mpirun, mpirunArguments(ranks: ranks, ["bench-comm", "--check"]))
        let status = run.waitForExit(timeoutSeconds: 120)
        #expect(status == 0, "stdout: \(run.standardOutput)\nstderr: \(run.standardError)")
        #expect(run.standardOutput.contains("checks passed on each of \(ranks) MPI ranks"), "\(run.standardOutput)")
    }

    /// bert-dist-dev bench on 2 MPI ranks, with the gradient sum and without (each rank its own
    /// world): the JSON report has every phase and the ranks' compute spread, which lies between
    /// 0 and a step.
    @Test(arguments: [[], ["--no-gradient-sync"]])
    func developmentBenchReportsThePhasesAndTheRanksComputeSpread(extra: [String]) throws {
        let workspace = try TinyWorkspace()
        defer { try? FileManager.default.removeItem(at: workspace.root) }
        let run = try RunningProcess(mpirun, mpirunArguments(ranks: 2, ["bench", "--model", workspace.model.path, "--data", workspace.train.path,
                                                                        "--batch-size", "8", "--seq-len", "32", "--steps", "3",
                                                                        "--threads", "1", "--json"] + extra))
        #expect(run.waitForExit(timeoutSeconds: 120) == 0, "stdout: \(run.standardOutput)\nstderr: \(run.standardError)")
        let report = run.standardOutput.split(separator: "\n").last { $0.hasPrefix("{") }
            .flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let step = report?["step_s_median"] as? Double ?? 0
        let spread = report?["rank_compute_spread_s_median"] as? Double ?? -1
        #expect(report?["ranks"] as? Double == 2 && spread >= 0 && spread < step, "\(run.standardOutput)")
        let phases = report?["phases_s_median"] as? [String: Double] ?? [:]
        #expect(Set(phases.keys) == ["data", "forward", "backward", "sync", "norm", "optimizer"], "\(run.standardOutput)")
    }

    /// The debug mode (--simulate-ranks N) sums gradients to the same bits as mpirun -n N.
    @Test func simulatedRanksGiveTheSameGradientSumBitsAsMPIRanks() throws {
        func checksumLine(_ output: String) -> Substring? {
            output.split(separator: "\n").first { $0.contains("checksum of a synchronised gradient arena") }
        }
        let mpi = try RunningProcess(mpirun, mpirunArguments(ranks: 3, ["bench-comm", "--check"]))
        let simulated = try RunningProcess(developmentBinary, ["bench-comm", "--check", "--simulate-ranks", "3"])
        #expect(mpi.waitForExit(timeoutSeconds: 120) == 0, "\(mpi.standardError)")
        #expect(simulated.waitForExit(timeoutSeconds: 120) == 0, "\(simulated.standardError)")
        let mpiLine = checksumLine(mpi.standardOutput), simulatedLine = checksumLine(simulated.standardOutput)
        #expect(mpiLine != nil && mpiLine == simulatedLine, "mpirun: \(mpi.standardOutput)\nsimulated: \(simulated.standardOutput)")
    }

    @Test func benchCommCheckPassesAsAnMPISingletonAndWithSimulatedRanks() throws {
        let singleton = try RunningProcess(developmentBinary, ["bench-comm", "--check"])
        #expect(singleton.waitForExit(timeoutSeconds: 60) == 0, "\(singleton.standardError)")
        #expect(singleton.standardOutput.contains("checks passed on each of 1 MPI ranks"), "\(singleton.standardOutput)")
        let simulated = try RunningProcess(developmentBinary, ["bench-comm", "--check", "--simulate-ranks", "3"])
        #expect(simulated.waitForExit(timeoutSeconds: 60) == 0, "\(simulated.standardError)")
        #expect(simulated.standardOutput.contains("checks passed on each of 3 simulated ranks"), "\(simulated.standardOutput)")
    }

    /// Starts `ranks` soaking ranks (synchroniser steps in a loop) and returns the process and each
    /// rank's pid, once every rank has said it is running.
    func startSoak(ranks: Int, extraArguments: [String] = [], launcher: (URL, [String], [String: String]?)? = nil)
        throws -> (RunningProcess, [Int: Int32])
    {
        let run = if let launcher {
            try RunningProcess(launcher.0, launcher.1, environment: launcher.2)
        } else {
            try RunningProcess(mpirun, mpirunArguments(ranks: ranks, ["soak", "--seconds", "90"] + extraArguments))
        }
        let started = run.waitForOutput(timeoutSeconds: 60) { output in
            (0 ..< ranks).allSatisfy { output.contains("rank \($0) pid ") }
        }
        try #require(started, "ranks did not start: \(run.standardOutput) \(run.standardError)")
        var pids: [Int: Int32] = [:]
        for line in run.standardOutput.split(separator: "\n") {
            let words = line.split(separator: " ")  // soak: rank R pid P host H soaking
            if words.count >= 5, words[1] == "rank", words[3] == "pid", let rank = Int(words[2]), let pid = Int32(words[4]) {
                pids[rank] = pid
            }
        }
        return (run, pids)
    }

    /// Whether `pid` is still a running process, waiting up to 3 s for it to go. A zombie counts as
    /// gone: ranks orphaned by mpirun may stay zombies here because PID 1 of a container need not reap.
    func isAlive(_ pid: Int32) -> Bool {
        let deadline = Date().addingTimeInterval(3)
        while Date() < deadline {
            guard kill(pid, 0) == 0,
                  let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let afterName = stat.range(of: ") ")
            else { return false }
            if stat[afterName.upperBound...].hasPrefix("Z") { return false }
            usleep(50_000)
        }
        return true
    }

    /// Open MPI 4.1 needs no option for this: mpirun sees the rank die, kills the others and exits
    /// with 137 (128 + SIGKILL) naming the rank.
    @Test func aRankKilledDuringACollectiveEndsTheWholeJobWithinSecondsNamingTheRank() throws {
        let (run, pids) = try startSoak(ranks: 4)
        let victim = try #require(pids[2])
        Thread.sleep(forTimeInterval: 0.5)  // well inside the loop of collectives
        let killedAt = Date()
        kill(victim, SIGKILL)
        let status = run.waitForExit(timeoutSeconds: 30)
        let seconds = Date().timeIntervalSince(killedAt)
        let output = run.standardOutput + run.standardError
        #expect(status != nil && status != 0, "job did not fail: \(output)")
        #expect(seconds < 10, "the job took \(seconds) s to end")
        #expect(output.contains("rank 2") && output.contains("signal 9"), "\(output)")
        for (rank, pid) in pids { #expect(!isAlive(pid), "rank \(rank) (pid \(pid)) survived") }
        print("killed rank: mpirun exited \(status.map(String.init) ?? "-") after \(String(format: "%.2f", seconds)) s")
    }

    /// SIGTERM to mpirun: it sends the ranks SIGCONT, then SIGTERM 1 s later, then SIGKILL 1 s after
    /// that (odls_base_sigkill_timeout, default 1), and exits non-zero even if every rank exits 0.
    /// A rank that handles SIGTERM therefore has about 1 s: not enough for a checkpoint.
    @Test func sigtermToMPIRunReachesTheRanksAndKillsThemAboutOneSecondLater() throws {
        let (run, pids) = try startSoak(ranks: 2)  // the ranks report signals but keep running
        let signalledAt = Date()
        kill(run.processIdentifier, SIGTERM)
        let status = run.waitForExit(timeoutSeconds: 30)
        let seconds = Date().timeIntervalSince(signalledAt)
        let output = run.standardOutput
        // Each rank prints the Unix time at which its handler saw the signal (mpirun relays output
        // late while it waits to escalate, so the time of arrival of the line says nothing).
        let arrivals = output.split(separator: "\n").compactMap { line -> Double? in
            guard line.contains("received signal \(SIGTERM) at ") else { return nil }
            return Double(line.split(separator: " ").last ?? "").map { $0 - signalledAt.timeIntervalSince1970 }
        }
        #expect(arrivals.count == 2 && arrivals.allSatisfy { $0 > 0.5 && $0 < 3 }, "SIGTERM reached the ranks after \(arrivals) s")
        #expect(status != nil && status != 0, "mpirun exited \(String(describing: status))")
        for rank in 0 ..< 2 {
            #expect(output.contains("rank \(rank) received signal \(SIGTERM)"), "\(output)")
        }
        // The ranks were killed (they never stop on their own here) within a few seconds.
        #expect(seconds < 10, "mpirun took \(seconds) s")
        for (rank, pid) in pids { #expect(!isAlive(pid), "rank \(rank) (pid \(pid)) survived") }
        let aliveReports = output.split(separator: "\n").filter { $0.contains("alive") }
        print("SIGTERM to mpirun: SIGTERM reached the ranks after \(arrivals.map { String(format: "%.2f", $0) }) s; mpirun exited "
            + "\(status.map(String.init) ?? "-") after \(String(format: "%.2f", seconds)) s; last report: \(aliveReports.last ?? "none")")
    }

    /// SIGUSR1 to mpirun is forwarded to every rank and kills nothing: ranks that stop together
    /// (collective decision) and exit 0 make mpirun exit 0. This is the graceful-stop path.
    @Test func sigusr1ToMPIRunIsForwardedAndAGracefulStopExitsZero() throws {
        let (run, _) = try startSoak(ranks: 2, extraArguments: ["--stop-on-signal"])
        kill(run.processIdentifier, SIGUSR1)
        let status = run.waitForExit(timeoutSeconds: 30)
        #expect(status == 0, "\(run.standardOutput) \(run.standardError)")
        for rank in 0 ..< 2 { #expect(run.standardOutput.contains("rank \(rank) stopping after the current step")) }
    }

    /// launch/train turns SIGTERM (or Ctrl-C) into that SIGUSR1.
    @Test func launchTrainTurnsSigtermIntoAGracefulStopOfEveryRank() throws {
        let launcher = BinaryLocator.repositoryRoot.appendingPathComponent("launch/train")
        var environment = ProcessInfo.processInfo.environment
        environment["BERT_DIST_BIN"] = developmentBinary.path
        environment["BERT_DIST_SUBCOMMAND"] = "soak"
        environment["BERT_DIST_CLUSTER_CONF"] = try writeClusterConf("host localhost slots=2 cores=2\n").path
        let (run, pids) = try startSoak(
            ranks: 2,
            launcher: (launcher, ["-n", "2", "--seconds", "90", "--stop-on-signal"], environment))
        kill(run.processIdentifier, SIGTERM)
        let status = run.waitForExit(timeoutSeconds: 30)
        #expect(status == 0, "\(run.standardOutput) \(run.standardError)")
        for rank in 0 ..< 2 { #expect(run.standardOutput.contains("rank \(rank) stopping after the current step")) }
        for (rank, pid) in pids { #expect(!isAlive(pid), "rank \(rank) (pid \(pid)) survived") }
    }

    // MARK: - launch/train --dry-run

    func writeClusterConf(_ text: String) throws -> URL {
        let url = scratchURL("cluster-\(UUID().uuidString).conf")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// The train options every dry run below passes (bert-dist checks them before anything is placed).
    static let train = ["--model", "m", "--train", "t.csv", "--output", "out"]

    func dryRun(_ arguments: [String], clusterConf: String, environment extra: [String: String] = [:],
                expectedStatus: Int32 = 0) throws -> (command: String, notes: String) {
        let launcher = BinaryLocator.repositoryRoot.appendingPathComponent("launch/train")
        var environment = ProcessInfo.processInfo.environment
        environment["BERT_DIST_CLUSTER_CONF"] = try writeClusterConf(clusterConf).path
        environment["BERT_DIST_BIN"] = binary.path
        environment.removeValue(forKey: "SLURM_JOB_ID")
        for (key, value) in extra { environment[key] = value }
        let run = try RunningProcess(launcher, ["--dry-run"] + arguments, environment: environment)
        let status = run.waitForExit(timeoutSeconds: 30)
        #expect(status == expectedStatus, "\(run.standardError)")
        return (run.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines), run.standardError)
    }

    @Test func launchTrainDryRunPlacesRanksThreadsAndBinding() throws {
        let twoCores = "host localhost slots=2 cores=2\nthreads_per_rank = auto\n"
        let root = geteuid() == 0 ? " --allow-run-as-root" : ""
        let rank = binary.path + " train"

        // More ranks than cores: oversubscribe, no binding, one thread each (--threads, from here).
        let eight = try dryRun(["-n", "8", "--model", "models/minilm", "--train", "a file.csv", "--output", "out"], clusterConf: twoCores)
        #expect(eight.command == "mpirun -n 8\(root) --oversubscribe --bind-to none --stdin none -x BERT_DIST_PROGRESS=lines "
            + "\(rank) --threads 1 --model models/minilm --train a\\ file.csv --output out")

        // One rank on two cores: two threads, bound to both cores.
        let one = try dryRun(["-n", "1"] + Self.train, clusterConf: twoCores)
        #expect(one.command == "mpirun -n 1\(root) --map-by slot:PE=2 --bind-to core --stdin none -x BERT_DIST_PROGRESS=lines \(rank) --threads 2 --model m --train t.csv --output out")

        // The user's --threads wins (and is not given twice); 2 ranks x 3 threads no longer fit: no binding.
        let userThreads = try dryRun(["-n", "2", "--threads", "3"] + Self.train, clusterConf: twoCores)
        #expect(userThreads.command.contains("--bind-to none --stdin none -x BERT_DIST_PROGRESS=lines \(rank) --threads 3 --model m "), "\(userThreads.command)")
        #expect(userThreads.notes.contains("3 thread(s) per rank (--threads)"), "\(userThreads.notes)")
        // OPENBLAS_NUM_THREADS is OpenBLAS's own (bert-dist keeps OpenBLAS single-threaded): it decides nothing here.
        let environmentThreads = try dryRun(["-n", "1"] + Self.train, clusterConf: twoCores, environment: ["OPENBLAS_NUM_THREADS": "1"])
        #expect(environmentThreads.command == one.command)

        // Two hosts: ranks in proportion to slots, a hostfile, the network interface.
        let twoHosts = try dryRun(["-n", "12"] + Self.train, clusterConf: """
            host node01 slots=32 cores=32   # comment
            host node02 slots=16
            network_interface = eth0
            """)
        #expect(twoHosts.command.hasPrefix("mpirun -n 12\(root) --map-by slot:PE=4 --bind-to core --hostfile "))
        #expect(twoHosts.command.contains("--mca btl_tcp_if_include eth0 --mca oob_tcp_if_include eth0"))
        #expect(twoHosts.notes.contains("node01 slots=8") && twoHosts.notes.contains("node02 slots=4"), "\(twoHosts.notes)")
        // Open MPI's daemons probe idle connections to other hosts 5 s after the collective
        // timeout (bert-dist's default unless given); a setting of the user's wins (Open MPI refuses duplicates).
        #expect(twoHosts.command.contains("--mca oob_tcp_keepalive_time 605 --mca oob_tcp_keepalive_intvl 5 --mca oob_tcp_keepalive_probes 2"))
        let hostsConf = "host node01 slots=2\nhost node02 slots=2\nmpirun_options = --mca oob_tcp_keepalive_probes 4\n"
        let timeout = try dryRun(["-n", "4", "--collective-timeout", "60"] + Self.train, clusterConf: hostsConf)
        #expect(timeout.command.contains("--mca oob_tcp_keepalive_time 65 --mca oob_tcp_keepalive_intvl 5 --mca oob_tcp_keepalive_probes 4 "), "\(timeout.command)")
        #expect(!one.command.contains("keepalive"), "a single host has no daemon to lose")

        // Inside SLURM: srun, threads from the CPUs SLURM gives each node.
        // (SLURM_MPI_TYPE: the user's choice of PMI, so that srun --mpi=list is not asked; SlurmTests
        // show the detection under a real Slurm.)
        let slurm = try dryRun(Self.train, clusterConf: twoCores,
                               environment: ["SLURM_JOB_ID": "7", "SLURM_NTASKS": "8", "SLURM_JOB_NUM_NODES": "2", "SLURM_CPUS_ON_NODE": "16",
                                             "SLURM_MPI_TYPE": "pmix"])
        #expect(slurm.command == "srun -n 8 --cpus-per-task=4 --kill-on-bad-exit=1 \(rank) --threads 4 --model m --train t.csv --output out")
        // network_interface reaches the ranks under srun as the environment variable mpirun's --mca sets.
        let slurmInterface = try dryRun(Self.train, clusterConf: twoCores + "network_interface = ib0\n",
                                        environment: ["SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_CPUS_ON_NODE": "4", "SLURM_MPI_TYPE": "pmix"])
        #expect(slurmInterface.command.hasPrefix("OMPI_MCA_btl_tcp_if_include=ib0 srun -n 2 "), "\(slurmInterface.command)")
        #expect(slurmInterface.command.contains(" \(rank) --threads 2 "), "\(slurmInterface.command)")
    }

    @Test func launchTrainRejectsBadInputWithAClearError() throws {
        let launcher = BinaryLocator.repositoryRoot.appendingPathComponent("launch/train")
        var environment = ProcessInfo.processInfo.environment
        environment["BERT_DIST_CLUSTER_CONF"] = try writeClusterConf("host localhost slots=two\n").path
        let badConf = try RunningProcess(launcher, ["--dry-run", "-n", "2"], environment: environment)
        #expect(badConf.waitForExit(timeoutSeconds: 30) == 2)
        #expect(badConf.standardError.contains(":1: slots and cores must be positive numbers or auto"), "\(badConf.standardError)")
        environment["BERT_DIST_CLUSTER_CONF"] = try writeClusterConf("host localhost slots=2\n").path
        environment["BERT_DIST_BIN"] = "/nonexistent/bert-dist"
        let noBinary = try RunningProcess(launcher, ["-n", "2"], environment: environment)
        #expect(noBinary.waitForExit(timeoutSeconds: 30) == 2)
        #expect(noBinary.standardError.contains("bert-dist not found at /nonexistent/bert-dist"), "\(noBinary.standardError)")
        // A mistake in the train options ends here, before any rank is placed, with bert-dist's own message.
        let conf = "host localhost slots=2\n"
        let missing = try dryRun(["-n", "2", "--model", "m"], clusterConf: conf, expectedStatus: 64)
        #expect(missing.command.isEmpty && missing.notes.contains("error: Missing expected argument '--train <file>'"), "\(missing)")
        let badValue = try dryRun(["-n", "2", "--batch-size", "0"] + Self.train, clusterConf: conf, expectedStatus: 64)
        #expect(badValue.notes.contains("--batch-size must be at least 1"), "\(badValue.notes)")
    }
}
