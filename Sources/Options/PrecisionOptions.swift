import ArgumentParser
import Model

/// --bf16: the arithmetic of the matrix products (train, eval, predict, bench; docs/precision.md).
public struct PrecisionOptions: ParsableArguments, Sendable {
    @Flag(help: "bf16 matrix products with fp32 accumulation (PyTorch bf16 autocast's arithmetic); weights, gradients, optimizer state and checkpoints stay fp32. Needs a CPU with AVX512-BF16 or AMX (docs/precision.md).")
    public var bf16 = false

    public init() {}

    public var precision: Precision { bf16 ? .bf16 : .fp32 }
}
