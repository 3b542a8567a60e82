import Foundation
import Model
import Storage
import Testing

/// `--bf16` as a user runs it (the CPU's fastest bf16 engine): under mpirun against the debug
/// mode and one rank, fp32 checkpoints, eval; on a CPU without bf16 the one-line error.
extension TrainingEndToEndTests {
    @Test(.enabled(if: BF16Engine.cpuHasBF16, "needs a CPU with AVX512-BF16 or AMX"))
    func bf16UnderMPIRunEqualsTheDebugModeAndOneRankAndCheckpointsStayFP32() throws {
        let one = workspace.output("bf16-n1"), two = workspace.output("bf16-n2"), debug = workspace.output("bf16-debug2")
        try mpirunTrain(ranks: 1, one, ["--bf16"])
        try mpirunTrain(ranks: 2, two, ["--bf16", "--shard-optimizer"])
        try run(binary, trainArguments(debug, ["--bf16", "--debug", "--simulate-ranks", "2", "--shard-optimizer"]))
        // -n 2 and --simulate-ranks 2: the same bits; -n 1: the same model up to the order of fp32 sums
        // and the bf16 roundings a last-bit difference flips (BF16TrainingTests: up to ~3e-4).
        let twoBytes = try Data(contentsOf: two.appendingPathComponent("checkpoint-6/model.safetensors"))
        let debugBytes = try Data(contentsOf: debug.appendingPathComponent("checkpoint-6/model.safetensors"))
        #expect(twoBytes == debugBytes, "--bf16: --debug --simulate-ranks 2 must equal mpirun -n 2 exactly")
        let difference = largestRelativeDifference(try workspace.weights(two, step: 6), try workspace.weights(one, step: 6))
        #expect(difference < 1e-3, "--bf16 -n 2 vs -n 1: \(difference)")
        // The checkpoint holds fp32 tensors (HF-loadable as in fp32).
        let file = try SafeTensorsFile(url: one.appendingPathComponent("checkpoint-6/model.safetensors"))
        #expect(file.records.values.allSatisfy { $0.dtype == .f32 })
        let eval = try run(binary, ["eval", "--checkpoint", one.path, "--data", workspace.test.path, "--json", "--bf16"])
        #expect(eval.standardOutput.contains("\"accuracy\""))
    }

    @Test(.enabled(if: !BF16Engine.cpuHasBF16, "this CPU has bf16 instructions"))
    func bf16WithoutBF16InstructionsIsAOneLineError() throws {
        let process = try RunningProcess(binary, trainArguments(workspace.output("bf16-refused"), ["--bf16"]), environment: nil)
        #expect(process.waitForExit(timeoutSeconds: 60) == 1)
        #expect(process.standardError.trimmingCharacters(in: .whitespacesAndNewlines) == BF16Engine.unsupportedError(cpuHasBF16: false))
    }
}
