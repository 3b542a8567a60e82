import ArgumentParser
import Model
import Training

/// --bf16: the arithmetic of the matrix products (train, eval, predict, bench; SPEC "Precision").
struct PrecisionOptions: ParsableArguments {
    @Flag(help: "bf16 matrix products with fp32 accumulation (PyTorch bf16 autocast's arithmetic); weights, gradients, optimizer state and checkpoints stay fp32. Needs a CPU with AVX512-BF16 or AMX (docs/precision.md).")
    var bf16 = false

    var precision: Precision { bf16 ? .bf16 : .fp32 }

    /// Before any work (before MPI, before reading anything), on every rank: --bf16 on a CPU
    /// without bf16 instructions is the one-line error, so a rank on a weaker host stops the job
    /// with a message instead of SIGILL.
    func checkCPU(cpuHasBF16: Bool = BF16Engine.cpuHasBF16) throws {
        guard bf16, let message = BF16Engine.unsupportedError(cpuHasBF16: cpuHasBF16) else { return }
        printError(message)
        throw ExitCode(1)
    }
}
