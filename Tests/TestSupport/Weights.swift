/// The weights without the attention keys' biases (`...key.bias`, DistilBERT's `...k_lin.bias`),
/// for comparing two trainings: their gradient is 0 in exact arithmetic (softmax ignores a
/// constant added to a row of scores), so they hold rounding noise, which Adam turns into steps
/// of up to the learning rate whatever its size. The noise of one rank's sums and of four ranks'
/// differs, and so do these biases (~1e-3 relative after a few steps of the tiny family models),
/// as in PyTorch (Tests/ModelTests/FamilyParityTests).
public func withoutKeyBiases(_ weights: [String: [Float]]) -> [String: [Float]] {
    weights.filter { !$0.key.hasSuffix("key.bias") && !$0.key.hasSuffix("k_lin.bias") }
}
