import Foundation
import Testing

/// SPEC "Multi-node" with the real trainer: `bert-dist train` started by launch/train on the
/// two-host namespace cluster (rank 0, mpirun and launch/train on h1; rank 1 on h2), the model,
/// the data and the output on h1's disk only, ZeRO-1 with a checkpoint every 20 steps. At step 60
/// or a little later h2's cable is cut, h2 is frozen (SIGSTOP) or rank 1 is killed. Each must end
/// the job within --collective-timeout + 30 s, non-zero, with one line naming rank 1 on h2 and the
/// newest complete checkpoint; no bert-dist process may keep running on h2 (after a cut no process
/// at all: not even Open MPI's orted); `--resume` on the
/// hosts that are left must then train the model an uninterrupted run trains (bit for bit). The cut
/// runs with `--max-restarts 1 --min-hosts 2`, which must end it the same way, saying why. Each case prints
/// the time to exit. (One after the other, and waiting without holding a thread of the test
/// runner's pool: see RunningProcess.exitStatus.)
@Suite(.serialized, .enabled(if: TestCluster.isAvailable, Comment(rawValue: TestCluster.unavailableReason ?? "")),
       .timeLimit(.minutes(4)))
struct TrainingFaultClusterTests {
    static let timeout = 4.0
    static let steps = 200
    let binary: URL
    let launcher = BinaryLocator.repositoryRoot.appendingPathComponent("launch/train")

    init() throws {
        binary = try BinaryLocator.bertDist()
    }

    typealias Fault = ClusterFault

    static func trainOptions(model: URL, train: URL, output: URL, _ extra: [String] = []) -> [String] {
        ["--model", model.path, "--train", train.path, "--output", output.path, "--batch-size", "8", "--max-steps", "\(steps)",
         "--lr", "1e-3", "--warmup-ratio", "0.1", "--threads", "1", "--log-every", "10", "--checkpoint-every", "20"] + extra
    }

    /// The uninterrupted run: the same training on 2 ranks under a plain mpirun outside the
    /// cluster (computed once for all cases). The resumed runs continue on 2 ranks too: with the
    /// same world size the trainer is bit-exact whatever the hosts (over 400 steps, 1 rank and 2
    /// drift apart by float summation order: ~5e-4 relative after 400 steps).
    static let uninterrupted: Result<[String: [Float]], any Error> = Result {
        let workspace = try TinyWorkspace()
        let output = workspace.output("uninterrupted")
        let run = try RunningProcess(try BinaryLocator.mpirun(), BinaryLocator.mpirunTestOptions + ["-n", "2", try BinaryLocator.bertDist().path, "train"]
                                     + trainOptions(model: workspace.model, train: workspace.train, output: output, ["--shard-optimizer"]))
        guard run.waitForExit(timeoutSeconds: 120) == 0 else {
            throw BinaryLocator.NotFound(description: "the uninterrupted run failed: \(run.standardError)")
        }
        return try workspace.weights(output, step: steps)
    }

    @Test(arguments: Fault.allCases)
    func aFaultEndsTheJobWithinTheTimeoutAndResumeTrainsTheUninterruptedModel(_ fault: Fault) async throws {
        let cluster = try TestCluster(hosts: 2)
        defer { cluster.down() }
        let workspace = try TinyWorkspace()
        let head = cluster.disk(host: 1)
        let (model, train, output) = try cluster.putOnHead(workspace)

        // (After a cut, --max-restarts 1 --min-hosts 2 ends the job as without restarts: only h1 is left.)
        let restarts = fault == .cutCable ? ["--max-restarts", "1", "--min-hosts", "2"] : []
        let job = try cluster.exec(host: 1, launcher, ["-n", "2"] + restarts
                                   + Self.trainOptions(model: model, train: train, output: output, ["--shard-optimizer", "--collective-timeout", "\(Self.timeout)"]),
                                   environment: try cluster.launchEnvironment(binary: binary, hosts: 2))
        // At step 60 (or a little later: the line arrives when rank 0 has printed it), on a thread of its own.
        let (name, binary) = (cluster.name, binary)
        let h2Emptied = Moment()  // after a cut: when no process was left on h2, watched from the cut on
        let timeline = await job.act(whenOutput: { $0.contains("step 60/\(Self.steps)") }, appearsWithin: 90, {
            let faultAt = Date()
            fault.inflict(on: cluster, host: 2, binary: binary)
            if fault == .cutCable {
                Thread.detachNewThread {
                    while !cluster.processes(host: 2).isEmpty && Date().timeIntervalSince(faultAt) < 60 { usleep(100_000) }
                    h2Emptied.record()
                }
            }
            return faultAt
        }, thenExitWithin: Self.timeout + 60)
        let (status, seconds, failureOutput) = await expectFailure(job, timeline, collectiveTimeout: Self.timeout, "\(fault)")
        guard timeline.actedAt != nil else { return }

        // The one line: rank 1 on h2, and the newest complete checkpoint (the one OUTPUT/latest names).
        let naming = fault == .killedRank ? "rank 1 on h2 exited on signal 9" : "rank 1 on h2 stopped answering"
        let report = failureOutput.split(separator: "\n").map(String.init).first { $0.contains(naming) && $0.contains("newest complete checkpoint: ") }
        let latest = try String(contentsOf: head.appendingPathComponent("out/latest"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(report?.contains("newest complete checkpoint: \(output.path)/\(latest) (continue with --resume)") == true,
                "\(fault): no line naming '\(naming)' and \(latest): \(failureOutput)")
        if fault == .cutCable {
            #expect(failureOutput.contains("launch/train: the job failed (status 1); lost h2; 1 host(s) left, fewer than --min-hosts 2; newest complete checkpoint: "),
                    "\(failureOutput)")
        }
        #expect(!cluster.processes(host: 1).contains { $0.program == binary.path || $0.program.hasSuffix("mpirun") },
                "\(fault): left on h1: \(cluster.processes(host: 1))")

        // h2: its rank ends by itself (cut off: its watchdog, which ends h2's orted too; frozen: as soon as it is thawed).
        var cutOff = ""
        switch fault {
        case .cutCable:
            #expect(await cluster.noneRunning(host: 2, within: 5), "left on the cut-off host: \(cluster.processes(host: 2))")
            cutOff = "; nothing left on h2 " + (h2Emptied.time.map { String(format: "%.1f s after the cut", $0.timeIntervalSince(timeline.actedAt!)) } ?? "-")
        case .frozenHost:
            #expect(!cluster.pids(host: 2, running: binary).isEmpty, "h2's rank ended while frozen")
            let afterThaw = await onThreadOfItsOwn { () -> Double? in
                let thawedAt = Date()
                _ = try? TestCluster.run(["thaw", name, "h2"])
                while !cluster.processes(host: 2).isEmpty {
                    if Date().timeIntervalSince(thawedAt) > 10 { return nil }
                    usleep(50_000)
                }
                return Date().timeIntervalSince(thawedAt)
            }
            #expect(afterThaw != nil, "h2's processes did not end within 10 s of the thaw: \(cluster.processes(host: 2))")
            cutOff = String(format: "; nothing left on h2 %.1f s after the thaw", afterThaw ?? .infinity)
        case .killedRank:
            #expect(await cluster.noneRunning(host: 2, within: 5), "left on h2: \(cluster.processes(host: 2))")
        }

        // --resume on the hosts that are left, 2 ranks: both on h1 after a cut or a freeze, one per host after a kill.
        let hostsLeft = fault == .killedRank ? 2 : 1
        let resumed = try cluster.exec(host: 1, launcher, ["-n", "2"] + Self.trainOptions(model: model, train: train, output: output,
                                                                                        ["--shard-optimizer", "--resume"]),
                                       environment: try cluster.launchEnvironment(binary: binary, hosts: hostsLeft))
        #expect(await resumed.exitStatus(timeoutSeconds: 120) == 0, "\(fault): resume: \(resumed.standardOutput) \(resumed.standardError)")
        #expect(resumed.standardOutput.contains("resumed from \(latest) "), "\(fault): \(resumed.standardOutput)")
        let difference = largestRelativeDifference(try workspace.weights(head.appendingPathComponent("out"), step: Self.steps),
                                                   try Self.uninterrupted.get())
        #expect(difference < 1e-5, "\(fault): resumed vs uninterrupted: \(difference)")
        #expect(cluster.processes(host: 2).allSatisfy { $0.program != binary.path })
        print("\(fault) (real training): launch/train exited \(status.map(String.init) ?? "-") \(String(format: "%.1f", seconds)) s after the fault "
            + "(--collective-timeout \(Self.timeout)); report: \(report ?? "none")\(cutOff); resumed from \(latest) with 2 ranks on \(hostsLeft) host(s) "
            + "to step \(Self.steps): largest relative difference to the uninterrupted run \(difference)")
    }

    /// Stragglers on the cluster: h2's rank is paused periodically (SIGSTOP 20 ms, SIGCONT 10 ms)
    /// from its first step; rank 0's report on launch/train's stdout names h2 (rank 1) with its
    /// compute time against the median (with 2 ranks, h1's), and never h1. About 25 ms of compute
    /// per rank and step (the tiny model, 64 rows of 64 tokens per rank), windows of 20 steps.
    @Test func aRankSlowedOnOneHostIsNamedByRankZero() async throws {
        let cluster = try TestCluster(hosts: 2)
        defer { cluster.down() }
        let workspace = try TinyWorkspace()
        let head = cluster.disk(host: 1)
        try FileManager.default.copyItem(at: workspace.model, to: head.appendingPathComponent("model"))
        // Rows of 64 tokens (the tiny model's longest), so that a step computes long enough to be timed.
        let rows = (0..<256).map { row in "\"\(row % 4 + 1)\",\"w5\",\"" + (0..<70).map { "w\(5 + 23 * (row % 4) + ($0 * 7 + row) % 23)" }.joined(separator: " ") + "\"" }
        try (rows.joined(separator: "\n") + "\n").write(to: head.appendingPathComponent("train.csv"), atomically: true, encoding: .utf8)
        let local = cluster.localDisk
        let job = try cluster.exec(host: 1, launcher, ["-n", "2", "--model", local.appendingPathComponent("model").path,
                                                      "--train", local.appendingPathComponent("train.csv").path,
                                                      "--output", local.appendingPathComponent("out").path, "--batch-size", "128",
                                                      "--max-steps", "40", "--threads", "1", "--log-every", "10", "--checkpoint-every", "0"],
                                   environment: try cluster.launchEnvironment(binary: binary, hosts: 2))
        // From the first step on, on a thread of its own (the job is short).
        let pausing = PeriodicPause(stoppedSeconds: 0.020, runningSeconds: 0.010)
        let binary = binary
        let timeline = await job.act(whenOutput: { $0.contains("training model:") }, appearsWithin: 90, {
            if let rank = cluster.pids(host: 2, running: binary).first { pausing.start(pid: rank) }
            return Date()
        }, thenExitWithin: 120)
        pausing.end()
        let status = await job.exitStatus(timeoutSeconds: 1)
        #expect(timeline.actedAt != nil && pausing.started, "the job did not start, or had no rank on h2: \(job.standardOutput) \(job.standardError)")
        #expect(status == 0, "\(job.standardOutput) \(job.standardError)")
        let reports = job.standardOutput.split(separator: "\n").filter { $0.contains("straggler") }.map(String.init)
        #expect(!reports.contains { $0.contains("h1") }, "h1 named: \(reports)")
        for window in ["1-20", "21-40"] {
            let line = reports.first { $0.hasPrefix("warning: straggler over steps \(window): h2 (rank 1) computes ") }
            #expect(line != nil, "steps \(window): no report naming h2 on rank 0's stdout: \(job.standardOutput)")
            // "computes X s per step against a median of Y s; the other rank waits Z s for it"
            let figures = Array((line ?? "").split(whereSeparator: { !"0123456789.".contains($0) }).compactMap { Double($0) }.suffix(3))
            if figures.count == 3 {
                #expect(figures[0] > 1.5 * figures[1] && figures[2] > 0 && line!.contains("the other rank waits"), "\(line!)")
            }
        }
        print("stragglers on 2 hosts x 1 rank, h2's rank paused 20 ms of every 30 ms: "
            + (reports.isEmpty ? "no report" : reports.joined(separator: " | ")))
    }
}

/// A moment one thread records and another reads.
final class Moment: @unchecked Sendable {
    private let lock = NSLock()
    private var recorded: Date?

    func record() {
        lock.lock()
        defer { lock.unlock() }
        recorded = Date()
    }

    var time: Date? {
        lock.lock()
        defer { lock.unlock() }
        return recorded
    }
}

/// Pauses a process periodically (SIGSTOP, then SIGCONT) on a thread of its own from `start`
/// until `end()`, which leaves it running.
final class PeriodicPause: @unchecked Sendable {
    let stoppedSeconds: Double, runningSeconds: Double
    private let lock = NSLock()
    private var ending = false, running = false
    private let ended = DispatchSemaphore(value: 0)

    init(stoppedSeconds: Double, runningSeconds: Double) {
        self.stoppedSeconds = stoppedSeconds
        self.runningSeconds = runningSeconds
    }

    /// Whether `start` ran.
    var started: Bool { locked { running } }

    func start(pid: Int32) {
        locked { running = true }
        Thread.detachNewThread { [self] in
            // (Until the process is gone: a pid that no longer exists is not signalled again.)
            while !locked({ ending }) && kill(pid, 0) == 0 {
                kill(pid, SIGSTOP)
                usleep(UInt32(stoppedSeconds * 1e6))
                kill(pid, SIGCONT)
                usleep(UInt32(runningSeconds * 1e6))
            }
            ended.signal()
        }
    }

    func end() {
        let wasRunning = locked { () -> Bool in
            ending = true
            return running
        }
        if wasRunning { ended.wait() }
    }

    private func locked<Value>(_ body: () -> Value) -> Value {
        lock.lock()
        defer { lock.unlock() }
        return body()
    }
}
