import CBF16

// bf16 as the gradient compression sends it: the upper 16 bits of an IEEE fp32, rounded by
// CBF16's bf16_round (the one definition of bert-dist's bf16 rounding): to nearest, ties to
// even, as PyTorch's `tensor.to(torch.bfloat16)` (c10::BFloat16) does it: finite values that
// round past the largest bf16 become infinity, NaN stays a (quiet) NaN, subnormals are rounded
// like any other value (not flushed to zero). Widening is exact.

@inline(__always)
func bfloat16Bits(_ value: Float) -> UInt16 { bf16_round(value) }

@inline(__always)
func widenBFloat16(_ bits: UInt16) -> Float { bf16_widen(bits) }

/// output[i] = bf16(input[i]) for i in 0 ..< count.
func roundToBFloat16(_ input: UnsafePointer<Float>, into output: UnsafeMutablePointer<UInt16>, count: Int) {
    bf16_round_floats(output, input, count)
}

/// output[i] = Float(input[i]) for i in 0 ..< count.
func widenBFloat16(_ input: UnsafePointer<UInt16>, into output: UnsafeMutablePointer<Float>, count: Int) {
    bf16_widen_floats(output, input, count)
}

/// What the gradient sum sends between ranks.
public enum GradientCompression: String, Sendable, CaseIterable {
    /// fp32: the sum is exact fp32 arithmetic in rank order.
    case none
    /// Every rank's gradient is rounded to bf16 before it is sent, the owner adds the bf16 values
    /// in fp32 in rank order and rounds the sum to bf16 again for the way back: every rank ends
    /// with bf16(Σ_r bf16(g_r)) (PyTorch DDP's bf16_compress_hook sends the same bf16 words; it
    /// also adds them in bf16, rounding every partial sum, where this rounds once). Half the
    /// bytes. Applied with one rank too (bf16(g)), so that the gradient means the same for any
    /// number of ranks.
    case bf16
}
