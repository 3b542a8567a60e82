import Foundation
import Storage
import Testing

/// bert-dist under a real one-node Slurm (Debian's slurm-wlm 22.05, MpiDefault=none as shipped;
/// Tests/Cluster/slurm.sh starts and stops it): `salloc ... launch/train` with no extra options,
/// `sbatch launch/slurm.sbatch`, `scancel` (SIGTERM, then SIGKILL after KillWait) leaving a
/// complete checkpoint of the step where it stopped, and a requeued job resuming by itself to the
/// model an uninterrupted run trains. Tiny model (TinyWorkspace), 2 ranks.
@Suite(.serialized, .enabled(if: TestSlurm.isAvailable, Comment(rawValue: TestSlurm.unavailableReason ?? "")),
       .timeLimit(.minutes(5)))
struct SlurmTests {
    static let killWaitSeconds = 10
    let slurm: TestSlurm
    let binary: URL
    let workspace: TinyWorkspace
    let launcher = BinaryLocator.repositoryRoot.appendingPathComponent("launch/train")
    let batchScript = BinaryLocator.repositoryRoot.appendingPathComponent("launch/slurm.sbatch")

    init() throws {
        slurm = try TestSlurm(killWaitSeconds: Self.killWaitSeconds)
        binary = try BinaryLocator.bertDist()
        workspace = try TinyWorkspace()
    }

    func trainArguments(_ output: URL, steps: Int, _ extra: [String] = []) -> [String] {
        ["--model", workspace.model.path, "--train", workspace.train.path, "--output", output.path,
         "--batch-size", "8", "--max-steps", "\(steps)", "--lr", "1e-3", "--warmup-ratio", "0.2",
         "--threads", "1", "--log-every", "10", "--checkpoint-every", "0"] + extra
    }

    /// What launch/train needs from the caller: the binary and a cluster.conf (threads and options
    /// only: under Slurm the hosts come from the allocation).
    func launchEnvironment() throws -> [String: String] {
        let conf = workspace.root.appendingPathComponent("cluster.conf")
        try "host localhost slots=auto cores=auto\nthreads_per_rank = auto\n".write(to: conf, atomically: true, encoding: .utf8)
        return slurm.environment(["BERT_DIST_BIN": binary.path, "BERT_DIST_CLUSTER_CONF": conf.path])
    }

    /// The reference: the same training under a plain `mpirun -n 2`.
    func referenceWeights(steps: Int) async throws -> [String: [Float]] {
        let output = workspace.output("reference-\(steps)")
        let run = try RunningProcess(try BinaryLocator.mpirun(), BinaryLocator.mpirunTestOptions + ["-n", "2", binary.path, "train"]
                                     + trainArguments(output, steps: steps))
        #expect(await run.exitStatus(timeoutSeconds: 180) == 0, "\(run.standardError)")
        return try workspace.weights(output, step: steps)
    }

    /// Submits launch/slurm.sbatch with 2 tasks; returns the job id and its log file.
    func submit(_ trainOptions: [String]) throws -> (job: String, log: URL) {
        let log = workspace.root.appendingPathComponent("job-\(UUID().uuidString).out")
        guard let sbatch = TestCluster.tool("sbatch") else { throw BinaryLocator.NotFound(description: "sbatch not found") }
        let run = try RunningProcess(sbatch, ["--parsable", "--ntasks", "2", "--output", log.path, "--chdir", workspace.root.path,
                                              batchScript.path] + trainOptions, environment: try launchEnvironment())
        #expect(run.waitForExit(timeoutSeconds: 30) == 0, "\(run.standardError)")  // (sbatch returns at once)
        let job = run.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        try #require(!job.isEmpty, "sbatch gave no job id: \(run.standardError)")
        return (job, log)
    }

    func contents(_ log: URL) -> String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    /// The newest complete checkpoint's step (OUTPUT/latest, verified by its trainer_state.pb).
    func latestStep(_ output: URL) throws -> Int {
        let latest = try String(contentsOf: output.appendingPathComponent("latest"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let state = try TrainerState(contentsOf: output.appendingPathComponent(latest).appendingPathComponent("trainer_state.pb"))
        #expect(latest == "checkpoint-\(state.step)")
        return Int(state.step)
    }

    /// Inside `salloc -n 2`, launch/train needs no option: it finds --mpi=pmix, which this Slurm
    /// (MpiDefault=none) needs for Open MPI: a plain `srun` fails in MPI_Init.
    @Test func sallocLaunchTrainNeedsNoOptionsAndTrainsTheSameModelAsMPIRun() async throws {
        let environment = try launchEnvironment()
        let salloc = try #require(TestCluster.tool("salloc"))
        let plain = try RunningProcess(salloc, ["-n", "2", "srun", "-n", "2", try BinaryLocator.bertDistDev().path, "bench-comm", "--check"],
                                       environment: environment)
        #expect(await plain.exitStatus(timeoutSeconds: 60) != 0, "a plain srun worked: the test Slurm is not Debian's default? \(plain.standardOutput)")

        let output = workspace.output("salloc")
        let run = try RunningProcess(salloc, ["-n", "2", launcher.path] + trainArguments(output, steps: 6), environment: environment)
        #expect(await run.exitStatus(timeoutSeconds: 180) == 0, "stdout: \(run.standardOutput)\nstderr: \(run.standardError)")
        #expect(run.standardOutput.contains("over 2 rank(s)") && run.standardOutput.contains("done: 6 steps"), "\(run.standardOutput)")
        let difference = largestRelativeDifference(try workspace.weights(output, step: 6), try await referenceWeights(steps: 6))
        #expect(difference < 1e-5, "salloc vs mpirun: \(difference)")
    }

    /// The example batch script, submitted as is (the train options after it), trains to the end.
    @Test func sbatchOfTheExampleScriptTrainsToTheEnd() async throws {
        let output = workspace.output("sbatch")
        let (job, log) = try submit(trainArguments(output, steps: 6))
        #expect(await slurm.wait(seconds: 120) { !slurm.jobIsListed(job) } != nil, "job \(job) still queued or running: \(contents(log))")
        let text = contents(log)
        #expect(text.contains("done: 6 steps") && text.contains("over 2 rank(s)"), "\(text)")
        #expect(try latestStep(output) == 6)
        #expect(slurm.jobField(job, "JobState") == "COMPLETED" && slurm.jobField(job, "ExitCode") == "0:0", "\(text)")
    }

    /// scancel: Slurm sends SIGTERM; the ranks stop after the current step, write a complete
    /// checkpoint of that step and exit 0 before KillWait's SIGKILL.
    @Test func scancelLeavesACompleteCheckpointOfTheStepWhereItStopped() async throws {
        let output = workspace.output("scancel")
        let (job, log) = try submit(trainArguments(output, steps: 1_000_000))
        #expect(await slurm.wait(seconds: 120) { contents(log).contains("step 50/") } != nil, "no progress: \(contents(log))")
        let cancelledAt = Date()
        try slurm.command("scancel", [job])
        let endedAt = await slurm.wait(seconds: Double(Self.killWaitSeconds) + 30) { !slurm.jobIsListed(job) }
        #expect(endedAt != nil)
        let seconds = (endedAt ?? Date()).timeIntervalSince(cancelledAt)
        let text = contents(log)
        #expect(text.contains("stopped by a signal after step"), "\(text)")
        #expect(!text.contains("xited with exit code"), "a rank failed: \(text)")
        let step = try latestStep(output)
        #expect(step >= 50 && step < 1_000_000 && text.contains("checkpoint written: \(output.path)/checkpoint-\(step)"), "\(text)")
        #expect(seconds < Double(Self.killWaitSeconds), "the job took \(seconds) s, beyond KillWait (\(Self.killWaitSeconds) s)")
        print("scancel: the job ended \(String(format: "%.1f", seconds)) s after scancel (KillWait \(Self.killWaitSeconds) s) with checkpoint-\(step)")
    }

    /// `--max-restarts` inside the allocation: rank 1 killed; the survivor checkpoints the last
    /// completed step, launch/train starts the job again on the same node (it still answers) with
    /// --resume, and the run ends with the model an uninterrupted run trains, no step computed twice.
    @Test func aKilledRankIsRestartedWithinTheAllocation() async throws {
        let steps = 3000
        let expected = try await referenceWeights(steps: steps)
        let output = workspace.output("restart")
        var options = trainArguments(output, steps: steps)
        options[options.count - 1] = "1000"  // --checkpoint-every: few checkpoints, so that only the emergency one is recent
        let (job, log) = try submit(["--max-restarts", "1"] + options + ["--collective-timeout", "4"])
        let binary = binary
        let killedAt = await slurm.wait(seconds: 120) {
            guard contents(log).contains("step 300/") else { return false }
            let victims = rankProcesses(binary, job: job, rank: 1)
            for pid in victims { kill(pid, SIGKILL) }
            return !victims.isEmpty
        }
        #expect(killedAt != nil, "no progress, or no rank 1 to kill: \(contents(log))")
        #expect(await slurm.wait(seconds: 180) { !slurm.jobIsListed(job) } != nil, "\(contents(log))")
        let text = contents(log)
        #expect(text.contains("launch/train: attempt 1 failed") && text.contains("restarting on ") && text.contains("(restart 1 of 1)"), "\(text)")
        #expect(text.contains("launch/train: done after 2 attempts") && text.contains("steps computed twice: 0"), "\(text)")
        #expect(slurm.jobField(job, "JobState") == "COMPLETED" && slurm.jobField(job, "ExitCode") == "0:0", "\(text)")
        let difference = largestRelativeDifference(try workspace.weights(output, step: steps), expected)
        #expect(difference == 0, "restarted run vs uninterrupted: \(difference)")
        let lines = text.split(separator: "\n").filter { $0.hasPrefix("launch/train: ") || $0.contains("back at step") }
        print("srun, rank 1 killed: \(lines.joined(separator: " | "))")
    }

    /// The pids of this machine's processes running `binary` as rank `rank` of Slurm job `job`.
    func rankProcesses(_ binary: URL, job: String, rank: Int) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { pid in
            guard let commandLine = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
                  String(decoding: commandLine.prefix { $0 != 0 }, as: UTF8.self) == binary.path,
                  let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return false }
            let variables = Set(environment.split(separator: 0).map { String(decoding: $0, as: UTF8.self) })
            return variables.contains("SLURM_JOB_ID=\(job)") && variables.contains("PMIX_RANK=\(rank)")
        }
    }

    /// A requeued job (what preemption or a node failure does) continues by itself: the script
    /// adds --resume, and the model at the end is the one an uninterrupted run trains.
    @Test func aRequeuedJobResumesByItselfToTheSameModel() async throws {
        // Long enough that the requeue lands mid-run on a fast quiet machine (the tiny model does
        // ~3000 steps per second: 3000 steps could end before scontrol ran).
        let steps = 20_000
        let expected = try await referenceWeights(steps: steps)
        let output = workspace.output("requeue")
        let (job, log) = try submit(trainArguments(output, steps: steps))
        // Requeued at once, by the waiting thread (a test that waits may resume late: RunningProcess.act).
        let slurm = slurm
        let requeued = await slurm.wait(seconds: 120) {
            guard contents(log).contains("step 200/") else { return false }
            return (try? slurm.command("scontrol", ["requeue", job])) != nil
        }
        #expect(requeued != nil, "no progress, or scontrol requeue failed: \(contents(log))")
        // Slurm holds a requeued job back for a while (Reason=BeginTime); let it start again now.
        _ = await slurm.wait(seconds: 30) { slurm.jobField(job, "JobState") == "PENDING" }
        try slurm.command("scontrol", ["update", "JobId=\(job)", "StartTime=now"])
        #expect(await slurm.wait(seconds: 240) { contents(log).contains("done: ") && !slurm.jobIsListed(job) } != nil, "\(contents(log))")
        let text = contents(log)
        #expect(text.contains("stopped by a signal after step") && text.contains("(restart 1)")
            && text.contains("resumed from checkpoint-"), "\(text)")
        #expect(slurm.jobField(job, "Restarts") == "1")
        let difference = largestRelativeDifference(try workspace.weights(output, step: steps), expected)
        #expect(difference < 1e-5, "requeued run vs uninterrupted: \(difference)")
        let stoppedAt = text.split(separator: "\n").first { $0.contains("stopped by a signal after step") } ?? ""
        print("requeue: \(stoppedAt); resumed; final model vs uninterrupted: largest relative difference \(difference)")
    }
}
