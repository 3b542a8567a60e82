import Model

/// Floating-point operations of one training step (forward + backward ≈ 3 × forward) of the
/// sequences whose lengths are given: the matrix products, which are nearly all of the work.
/// "Model FLOP/s" in the reports is this divided by the step time.
public func trainingFLOPs(config: BertConfig, labelCount: Int, sequenceLengths: [Int]) -> Double {
    let C = Double(config.hiddenSize), I = Double(config.intermediateSize)
    let tokens = Double(sequenceLengths.reduce(0, +))
    let squares = sequenceLengths.reduce(0.0) { $0 + Double($1 * $1) }
    // Per layer: Q, K, V and output projections 4·C², feed-forward 2·C·I per token (×2 for
    // multiply-add); attention scores and weighted sum 2·len²·C each.
    let perLayer = 2 * tokens * (4 * C * C + 2 * C * I) + 2 * 2 * squares * C
    let head = 2 * Double(sequenceLengths.count) * (C * C + C * Double(labelCount))
    // ELECTRA's embeddings_project (E -> C) when its embedding_size E is not the hidden size.
    let E = Double(config.embeddingWidth)
    let projection = config.architecture.hasEmbeddingProjection ? 2 * tokens * E * C : 0
    return 3 * (Double(config.layerCount) * perLayer + head + projection)
}
