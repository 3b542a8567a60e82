// Dropout masks from a counter-based generator keyed by
// (seed, step, global sample index, layer, site, element) — never by rank, micro-batch or the
// position of a sequence in a packed batch. The same global batch therefore gets the same
// masks whatever the number of ranks or micro-batches, and backward recomputes a mask instead
// of storing it.

/// splitmix64's finaliser: a bijective 64-bit mix with good avalanche, used as a hash.
@inline(__always)
func mix64(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// Where dropout happens, for keying masks. Values are part of the mask definition: keep them.
enum DropoutSite: UInt64 {
    case embeddings = 1, attentionProbabilities = 2, attentionOutput = 3, feedForwardOutput = 4, classifier = 5
    /// The first token's state before the head's dense layer (ELECTRA, RoBERTa).
    case classifierInput = 6
}

/// The dropout configuration of one training step.
public struct DropoutContext: Sendable {
    public let seed: UInt64
    public let step: Int
    public init(seed: UInt64, step: Int) {
        self.seed = seed
        self.step = step
    }

    /// The key of one sequence's masks at one site of one layer.
    @inline(__always)
    func key(sample: Int, layer: Int, site: DropoutSite) -> UInt64 {
        let sequence = mix64(mix64(mix64(seed) ^ UInt64(truncatingIfNeeded: step)) ^ UInt64(truncatingIfNeeded: sample))
        return mix64(sequence ^ (UInt64(truncatingIfNeeded: layer) << 8 | site.rawValue))
    }
}

/// In place on `values[0..<count]` (elements `firstElement...` of the keyed mask):
/// zero with probability p, else scale by 1/(1-p). Applied to activations in forward and to
/// their gradients in backward — the same mask, since it is a pure function of the key.
@inline(__always)
func applyDropout(_ values: UnsafeMutablePointer<Float>, count: Int, key: UInt64, firstElement: Int = 0, probability p: Float) {
    if p <= 0 { return }
    // keep when hash >= threshold: P(drop) = threshold / 2^32.
    let threshold = UInt32(min(Double(p) * 4_294_967_296.0, 4_294_967_295.0))
    let scale = 1 / (1 - p)
    for i in 0..<count {
        let h = UInt32(truncatingIfNeeded: mix64(key ^ UInt64(firstElement + i)) >> 32)
        values[i] = h >= threshold ? values[i] * scale : 0
    }
}
