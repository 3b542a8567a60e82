import Foundation
import Model
import Storage
import TestSupport
import Testing

/// `bert-dist train/eval/predict/merge` as a user runs them: under mpirun, alone, in the debug
/// mode, killed, signalled, resumed on another rank count. Tiny model, real binary.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct TrainingEndToEndTests {
    let binary: URL
    let mpirun: URL
    let workspace: TinyWorkspace

    init() throws {
        binary = try BinaryLocator.bertDist()
        mpirun = try BinaryLocator.mpirun()
        workspace = try TinyWorkspace()
    }

    func trainArguments(_ output: URL, _ extra: [String] = []) -> [String] {
        ["train", "--model", workspace.model.path, "--train", workspace.train.path, "--output", output.path,
         "--batch-size", "8", "--max-steps", "6", "--lr", "1e-3", "--dropout", "0.1", "--warmup-ratio", "0.2",
         "--weight-decay", "0.01", "--threads", "1", "--log-every", "1"] + extra
    }

    /// Runs to completion and expects success.
    @discardableResult
    func run(_ executable: URL, _ arguments: [String], timeout: Double = 180, environment: [String: String]? = nil) throws -> RunningProcess {
        let process = try RunningProcess(executable, arguments, environment: environment)
        let status = process.waitForExit(timeoutSeconds: timeout)
        #expect(status == 0, "\(arguments.joined(separator: " "))\nstdout: \(process.standardOutput)\nstderr: \(process.standardError)")
        return process
    }

    @discardableResult
    func mpirunTrain(ranks: Int, _ output: URL, _ extra: [String] = []) throws -> RunningProcess {
        try run(mpirun, BinaryLocator.mpirunTestOptions + ["-n", "\(ranks)", binary.path] + trainArguments(output, extra))
    }

    @Test func sameModelUnderMPIRunForAnyRankCountAndDebugModeEqualsMPIRun() throws {
        let single = workspace.output("n1")
        try mpirunTrain(ranks: 1, single)
        let expected = try workspace.weights(single, step: 6)
        for (ranks, extra) in [(2, []), (4, ["--shard-optimizer"]), (4, ["--micro-batch-size", "1"])] as [(Int, [String])] {
            let output = workspace.output("n\(ranks)\(extra.joined())")
            let process = try mpirunTrain(ranks: ranks, output, extra)
            let difference = largestRelativeDifference(try workspace.weights(output, step: 6), expected)
            #expect(difference < 1e-5, "-n \(ranks) \(extra): \(difference)")
            // One report stream: rank 0 alone prints the step lines.
            #expect(process.standardOutput.components(separatedBy: "step 6/6").count == 2, "\(process.standardOutput)")
        }
        // The debug mode runs the 4-rank algorithm in one process: bit-identical to mpirun -n 4.
        let debug = workspace.output("debug4")
        let process = try run(binary, trainArguments(debug, ["--debug", "--simulate-ranks", "4", "--shard-optimizer"]))
        #expect(process.standardOutput.contains("phases: data"), "per-phase times: \(process.standardOutput)")
        let mpiBytes = try Data(contentsOf: workspace.output("n4--shard-optimizer").appendingPathComponent("checkpoint-6/model.safetensors"))
        let debugBytes = try Data(contentsOf: debug.appendingPathComponent("checkpoint-6/model.safetensors"))
        #expect(mpiBytes == debugBytes, "--debug --simulate-ranks 4 must equal mpirun -n 4 exactly")
    }

    @Test func aKilledRankEndsTheJobWithinSecondsNamingIt() throws {
        let output = workspace.output("killed")
        let process = try RunningProcess(mpirun, BinaryLocator.mpirunTestOptions + ["-n", "2", binary.path]
                                         + trainArguments(output, ["--max-steps", "100000", "--checkpoint-every", "0"]))
        try #require(process.waitForOutput(timeoutSeconds: 120) { $0.contains("step 2/") }, "\(process.standardError)")
        let ranks = childProcesses(of: process.processIdentifier)
        try #require(ranks.count == 2, "rank pids: \(ranks)")
        let killed = Date()
        kill(ranks[1], SIGKILL)
        let status = process.waitForExit(timeoutSeconds: 30)
        #expect(status != nil && status != 0, "the job must fail, not hang")
        #expect(Date().timeIntervalSince(killed) < 15)
        #expect(process.standardError.contains("rank 1"), "\(process.standardError)")
    }

    @Test func sigtermToOneRankStopsAllWithACheckpointAndExitZero() throws {
        let output = workspace.output("sigterm")
        let process = try RunningProcess(mpirun, BinaryLocator.mpirunTestOptions + ["-n", "2", binary.path]
                                         + trainArguments(output, ["--max-steps", "100000", "--checkpoint-every", "0"]))
        try #require(process.waitForOutput(timeoutSeconds: 120) { $0.contains("step 3/") }, "\(process.standardError)")
        let ranks = childProcesses(of: process.processIdentifier)
        try #require(ranks.count == 2)
        kill(ranks[1], SIGTERM)
        let status = process.waitForExit(timeoutSeconds: 60)
        #expect(status == 0, "\(process.standardOutput)\n\(process.standardError)")
        #expect(process.standardOutput.contains("resume with the same command plus --resume"), "\(process.standardOutput)")
        let latest = try String(contentsOf: output.appendingPathComponent("latest"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let state = try TrainerState(contentsOf: output.appendingPathComponent(latest).appendingPathComponent("trainer_state.pb"))
        #expect(state.step >= 3 && state.worldSize == 2)
    }

    @Test func sigtermToLaunchTrainStopsGracefully() throws {
        let output = workspace.output("launch-sigterm")
        let launcher = BinaryLocator.repositoryRoot.appendingPathComponent("launch/train")
        var environment = ProcessInfo.processInfo.environment
        environment["BERT_DIST_BIN"] = binary.path
        let process = try RunningProcess(launcher, ["-n", "2"] + trainArguments(output, ["--max-steps", "100000", "--checkpoint-every", "0"]).dropFirst(),
                                         environment: environment)
        try #require(process.waitForOutput(timeoutSeconds: 120) { $0.contains("step 3/") }, "\(process.standardError)")
        kill(process.processIdentifier, SIGTERM)
        let status = process.waitForExit(timeoutSeconds: 60)
        #expect(status == 0, "\(process.standardOutput)\n\(process.standardError)")
        #expect(process.standardOutput.contains("stopped by a signal"), "\(process.standardOutput)")
    }

    @Test func killedFourRankRunResumesOnTwoRanksToTheSameModel() throws {
        let uninterrupted = workspace.output("four-ranks")
        try mpirunTrain(ranks: 4, uninterrupted, ["--max-steps", "10", "--checkpoint-every", "2"])
        let expected = try workspace.weights(uninterrupted, step: 10)

        let output = workspace.output("killed-four")
        let process = try RunningProcess(mpirun, BinaryLocator.mpirunTestOptions + ["-n", "4", binary.path]
                                         + trainArguments(output, ["--max-steps", "10", "--checkpoint-every", "2"]))
        let checkpointed = output.appendingPathComponent("checkpoint-4/trainer_state.pb")
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: checkpointed.path) && Date() < deadline { usleep(20_000) }
        for rank in childProcesses(of: process.processIdentifier) { kill(rank, SIGKILL) }
        _ = process.waitForExit(timeoutSeconds: 30)
        try #require(FileManager.default.fileExists(atPath: checkpointed.path))

        let resumed = try mpirunTrain(ranks: 2, output, ["--max-steps", "10", "--checkpoint-every", "2", "--resume"])
        #expect(resumed.standardOutput.contains("resumed from checkpoint-"), "\(resumed.standardOutput)")
        let difference = largestRelativeDifference(try workspace.weights(output, step: 10), expected)
        #expect(difference < 1e-5, "\(difference)")
    }

    @Test func mergeEvalPredictAndAveraging() throws {
        let output = workspace.output("merge")
        try run(binary, trainArguments(output, ["--max-steps", "6", "--checkpoint-every", "2", "--keep-checkpoints", "5",
                                               "--eval", workspace.test.path, "--tensorboard", workspace.output("tb").path]))
        let checkpoints = [2, 4, 6].map { output.appendingPathComponent("checkpoint-\($0)") }

        // One checkpoint -> a standalone model with the same predictions and metrics.
        let merged = workspace.output("merged")
        try run(binary, ["merge", "--output", merged.path, checkpoints[2].path])
        #expect(!FileManager.default.fileExists(atPath: merged.appendingPathComponent("optimizer.safetensors").path))
        let evalCheckpoint = try run(binary, ["eval", "--checkpoint", checkpoints[2].path, "--data", workspace.test.path, "--json"])
        let evalMerged = try run(binary, ["eval", "--checkpoint", merged.path, "--data", workspace.test.path, "--json"])
        #expect(evalCheckpoint.standardOutput == evalMerged.standardOutput)
        let evalTwoRanks = try run(mpirun, BinaryLocator.mpirunTestOptions + ["-n", "3", binary.path, "eval", "--checkpoint", merged.path,
                                                                              "--data", workspace.test.path, "--json"])
        let metrics = try JSONSerialization.jsonObject(with: Data(evalTwoRanks.standardOutput.utf8)) as! [String: Any]
        #expect(metrics["n"] as? Int == 40, "every example counted once on 3 ranks")
        let single = try JSONSerialization.jsonObject(with: Data(evalMerged.standardOutput.utf8)) as! [String: Any]
        #expect((metrics["confusion"] as? [[Int]]) == (single["confusion"] as? [[Int]]))

        let predictions = ["w10 w11 w12", "w40 w41 w42 w43", "w90"]
        func predict(_ folder: URL) throws -> String {
            let process = try RunningProcess(binary, ["predict", "--checkpoint", folder.path, "--json", "--logits"],
                                             standardInput: predictions.joined(separator: "\n") + "\n")
            #expect(process.waitForExit(timeoutSeconds: 60) == 0, "\(process.standardError)")
            return process.standardOutput
        }
        let fromCheckpoint = try predict(checkpoints[2]), fromMerged = try predict(merged)
        #expect(fromCheckpoint == fromMerged && fromCheckpoint.split(separator: "\n").count == 3, "\(fromCheckpoint)")

        // Averaging three checkpoints equals the element-wise mean computed here.
        let averaged = workspace.output("averaged")
        try run(binary, ["merge", "--average", "--output", averaged.path] + checkpoints.map(\.path))
        let result = try SafeTensorsFile(url: averaged.appendingPathComponent("model.safetensors"))
        let inputs = try checkpoints.map { try SafeTensorsFile(url: $0.appendingPathComponent("model.safetensors")) }
        for name in result.records.keys {
            let values = try inputs.map { try $0.floats(name) }
            let mean = (0..<values[0].count).map { i in Float((Double(values[0][i]) + Double(values[1][i]) + Double(values[2][i])) / 3) }
            #expect(try result.floats(name) == mean, "\(name)")
        }

        // TensorBoard: every scalar of SPEC.md, read back with our reader (CRCs checked).
        let eventFile = try FileManager.default.contentsOfDirectory(atPath: workspace.output("tb").path).first { $0.hasPrefix("events.out.tfevents.") }
        let events = try tensorBoardEvents(in: workspace.output("tb").appendingPathComponent(try #require(eventFile)))
        let tags = Set(events.flatMap { $0.scalars.map(\.tag) })
        // (plus the single-label task's F1 averages and MCC, issue 19)
        #expect(tags == ["train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "eval/accuracy", "eval/loss",
                         "eval/f1_macro", "eval/f1_micro", "eval/mcc",
                         "eval/f1/World", "eval/f1/Sports", "eval/f1/Business", "eval/f1/Sci/Tech"])
    }

    /// A user's OPENBLAS_CORETYPE narrower than the CPU's kernels is honoured (the run trains) and
    /// noted once, by rank 0; with --bf16 the products are not OpenBLAS's, so no note.
    @Test func narrowOpenBLASChoiceIsHonouredAndNotedOnce() throws {
        var environment = ProcessInfo.processInfo.environment
        environment["OPENBLAS_CORETYPE"] = "Prescott"   // SSE only: narrower than any CPU with AVX2
        let note = "note: OPENBLAS_CORETYPE=Prescott in the environment selects OpenBLAS's SSE kernels on a CPU that runs"
        let expected = InstructionSet.avx2.isSupported ? 1 : 0
        let process = try run(mpirun, BinaryLocator.mpirunTestOptions + ["-n", "2", binary.path]
                              + trainArguments(workspace.output("prescott"), ["--max-steps", "1"]), environment: environment)
        #expect(process.standardOutput.components(separatedBy: note).count - 1 == expected, "\(process.standardOutput)")
        #expect(FileManager.default.fileExists(atPath: workspace.output("prescott").appendingPathComponent("checkpoint-1/model.safetensors").path))
        if BF16Engine.fastest != .software {
            let bf16 = try run(binary, trainArguments(workspace.output("prescott-bf16"), ["--max-steps", "1", "--bf16"]), environment: environment)
            #expect(!bf16.standardOutput.contains("note: OPENBLAS_CORETYPE"), "\(bf16.standardOutput)")
        }
    }

    /// bench as train: its default length fits the model (the tiny one has 64 positions), a
    /// length that does not is an error naming --seq-len, and a malformed data row is an error
    /// naming its line, not skipped.
    @Test func benchDefaultsFitTheModelAndBadRowsAreErrors() throws {
        let bench = ["bench", "--model", workspace.model.path, "--batch-size", "2", "--steps", "1", "--threads", "1"]
        try run(binary, bench)
        let bad = workspace.root.appendingPathComponent("bench-bad.jsonl")
        try "{\"text\": \"a b\"}\n{\"text\": \n{\"text\": \"c d\"}\n{\"text\": \"e f\"}\n".write(to: bad, atomically: true, encoding: .utf8)
        for (extra, expected) in [(["--seq-len", "100"], "error: --seq-len 100 is longer than the model's max_position_embeddings 64"),
                                  (["--data", bad.path], "error: \(bad.path):2: ")] {
            let process = try RunningProcess(binary, bench + extra)
            #expect(process.waitForExit(timeoutSeconds: 60) == 1)
            #expect(process.standardError.hasPrefix(expected) && process.standardError.split(separator: "\n").count == 1, "\(process.standardError)")
        }
    }

    @Test func badInputIsOneClearLine() throws {
        let broken = workspace.root.appendingPathComponent("broken.csv")
        try "\"1\",\"fine\",\"row\"\n\"7\",\"label out of range\",\"x\"\n".write(to: broken, atomically: true, encoding: .utf8)
        let cases: [(arguments: [String], expected: String)] = [
            (["train", "--model", workspace.model.path, "--train", broken.path, "--output", workspace.output("bad").path],
             "\(broken.path):2:"),
            (["train", "--model", workspace.model.path, "--train", workspace.root.appendingPathComponent("missing.csv").path,
              "--output", workspace.output("bad2").path], "missing.csv"),
            (["eval", "--checkpoint", workspace.root.appendingPathComponent("nothing").path, "--data", workspace.test.path], "nothing"),
            // Found before any work is done: an --output that is a file, a --max-seq-len the model has no positions for.
            (["train", "--model", workspace.model.path, "--train", workspace.train.path, "--output", workspace.test.path],
             "--output \(workspace.test.path) is a file"),
            (["train", "--model", workspace.model.path, "--train", workspace.train.path, "--output", workspace.output("bad3").path,
              "--max-seq-len", "100"], "max_position_embeddings 64"),
        ]
        for (arguments, expected) in cases {
            for ranks in [1, 2] {
                let process = try BinaryLocator.start(binary, ranks: ranks, arguments)
                let status = process.waitForExit(timeoutSeconds: 60)
                #expect(status != nil && status != 0)
                let errorLines = process.standardError.split(separator: "\n").filter { $0.hasPrefix("error: ") || $0.contains("error:") }
                #expect(errorLines.count == 1 && errorLines[0].contains(expected), "\(ranks) rank(s): \(process.standardError)")
                #expect(!process.standardError.contains("Fatal error") && !process.standardError.contains("Stack dump"))
            }
        }
    }
}
