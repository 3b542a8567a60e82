import Foundation
import Model
import Storage
import Testing

/// `--bf16` as a user runs it (the CPU's fastest bf16 engine): under mpirun against the debug
/// mode and one rank, fp32 checkpoints, eval and predict; on a CPU without bf16 the one-line error.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct BF16EndToEndTests {
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
         "--batch-size", "8", "--max-steps", "6", "--lr", "1e-3", "--dropout", "0.1", "--threads", "1", "--bf16"] + extra
    }

    @discardableResult
    func run(_ executable: URL, _ arguments: [String], expectedStatus: Int32 = 0) throws -> RunningProcess {
        let process = try RunningProcess(executable, arguments, environment: nil)
        let status = process.waitForExit(timeoutSeconds: 180)
        #expect(status == expectedStatus, "\(arguments.joined(separator: " "))\nstdout: \(process.standardOutput)\nstderr: \(process.standardError)")
        return process
    }

    @Test(.enabled(if: BF16Engine.cpuHasBF16, "needs a CPU with AVX512-BF16 or AMX"))
    func mpirunDebugModeAndOneRankAgreeAndCheckpointsStayFP32() throws {
        let one = workspace.output("bf16-n1"), two = workspace.output("bf16-n2"), debug = workspace.output("bf16-debug2")
        try run(mpirun, BinaryLocator.mpirunTestOptions + ["-n", "1", binary.path] + trainArguments(one))
        try run(mpirun, BinaryLocator.mpirunTestOptions + ["-n", "2", binary.path] + trainArguments(two, ["--shard-optimizer"]))
        try run(binary, trainArguments(debug, ["--debug", "--simulate-ranks", "2", "--shard-optimizer"]))
        // -n 2 and --simulate-ranks 2: the same bits; -n 1: the same model up to the order of fp32 sums.
        let twoBytes = try Data(contentsOf: two.appendingPathComponent("checkpoint-6/model.safetensors"))
        let debugBytes = try Data(contentsOf: debug.appendingPathComponent("checkpoint-6/model.safetensors"))
        #expect(twoBytes == debugBytes, "--bf16: --debug --simulate-ranks 2 must equal mpirun -n 2 exactly")
        let difference = largestRelativeDifference(try workspace.weights(two, step: 6), try workspace.weights(one, step: 6))
        #expect(difference < 1e-5, "--bf16 -n 2 vs -n 1: \(difference)")
        // The checkpoint holds fp32 tensors (HF-loadable as in fp32).
        let file = try SafeTensorsFile(url: one.appendingPathComponent("checkpoint-6/model.safetensors"))
        #expect(file.records.values.allSatisfy { $0.dtype == .f32 })
        let eval = try run(binary, ["eval", "--checkpoint", one.path, "--data", workspace.test.path, "--json", "--bf16"])
        #expect(eval.standardOutput.contains("\"accuracy\""))
    }

    @Test(.enabled(if: !BF16Engine.cpuHasBF16, "this CPU has bf16 instructions"))
    func withoutBF16InstructionsTheFlagIsAOneLineError() throws {
        let process = try run(binary, trainArguments(workspace.output("bf16-refused")), expectedStatus: 1)
        #expect(process.standardError.trimmingCharacters(in: .whitespacesAndNewlines)
                == BF16Engine.unsupportedError(cpuHasBF16: false))
    }
}
