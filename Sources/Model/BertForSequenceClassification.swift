import Foundation

/// Hugging Face's BertForSequenceClassification, forward and backward by hand over packed
/// sequences. Parameters and gradients are flat arenas laid out by `ParameterLayout`;
/// activations live in one arena sized for the largest micro-batch seen (`reserve`), so a
/// training step allocates nothing once that size has been reached.
public final class BertForSequenceClassification {
    public let config: BertConfig
    public let labelCount: Int
    public let layout: ParameterLayout
    public let parameters: FloatArena
    public let gradients: FloatArena
    /// Scan every activation and gradient for NaN/Inf and throw naming the first place
    /// (the single-node debug mode turns this on).
    public var checkFinite = false

    private var activations: ActivationBuffers
    private var positions: [Int32] = []          // (T) position of each token in its sequence
    private var probabilityOffsets: [Int] = [0]  // (B + 1)
    private let weights: [LayerWeights]
    private let weightGradients: [LayerWeights]

    public init(config: BertConfig, labelCount: Int) {
        self.config = config
        self.labelCount = labelCount
        layout = ParameterLayout(config: config, labelCount: labelCount)
        parameters = FloatArena(count: layout.totalCount)
        gradients = FloatArena(count: layout.totalCount)
        activations = ActivationBuffers(config: config, labelCount: labelCount, tokens: 0, sequences: 0, attentionFloats: 0, longestSequence: 0)
        weights = LayerWeights.all(layout: layout, arena: parameters, layerCount: config.layerCount)
        weightGradients = LayerWeights.all(layout: layout, arena: gradients, layerCount: config.layerCount)
    }

    /// Sizes the activation arena for micro-batches of up to `sequences` sequences of at most
    /// `longestSequence` tokens, so that no step allocates afterwards.
    public func reserve(sequences: Int, longestSequence: Int) {
        let tokens = sequences * longestSequence
        let attention = config.headCount * sequences * longestSequence * longestSequence
        growIfNeeded(tokens: tokens, sequences: sequences, attentionFloats: attention, longestSequence: longestSequence)
        positions.reserveCapacity(tokens)
        probabilityOffsets.reserveCapacity(sequences + 1)
    }

    private func growIfNeeded(tokens: Int, sequences: Int, attentionFloats: Int, longestSequence: Int) {
        let a = activations
        if tokens <= a.tokens && sequences <= a.sequences && attentionFloats <= a.attentionFloats
            && longestSequence <= a.longestSequence { return }
        activations = ActivationBuffers(config: config, labelCount: labelCount,
                                        tokens: max(tokens, a.tokens), sequences: max(sequences, a.sequences),
                                        attentionFloats: max(attentionFloats, a.attentionFloats),
                                        longestSequence: max(longestSequence, a.longestSequence))
    }

    /// (B, K) logits of the last forward.
    public var logits: UnsafeBufferPointer<Float> { UnsafeBufferPointer(start: activations.logits, count: lastSequenceCount * labelCount) }
    /// (B, K) softmax probabilities of the last forward.
    public var probabilities: UnsafeBufferPointer<Float> { UnsafeBufferPointer(start: activations.probabilities, count: lastSequenceCount * labelCount) }
    private var lastSequenceCount = 0

    public struct ForwardResult: Sendable {
        /// Σ over the batch of the cross-entropy loss (not the mean: ranks and micro-batches add up).
        public var lossSum: Double
        /// How many arg-max predictions equal the label.
        public var correctCount: Int
    }

    // MARK: forward

    /// Runs the model on `batch`. With `dropout` (training) the masks are keyed by the context's
    /// seed and step and each sequence's sample index; without it dropout is off (evaluation).
    @discardableResult
    public func forward(_ batch: PackedBatch, dropout: DropoutContext?) throws -> ForwardResult {
        let C = config.hiddenSize, I = config.intermediateSize, H = config.headCount, K = labelCount
        let T = batch.tokenCount, B = batch.sequenceCount
        try prepare(batch)
        lastSequenceCount = B
        let a = activations
        let p = layout
        let params = parameters
        let hiddenDropout = dropout == nil ? 0 : config.hiddenDropoutProb
        let attentionDropout = dropout == nil ? 0 : config.attentionDropoutProb

        try batch.tokenIds.withUnsafeBufferPointer { ids in
        try batch.tokenTypeIds.withUnsafeBufferPointer { types in
        try batch.sampleIndices.withUnsafeBufferPointer { samples in
        try batch.sequenceStarts.withUnsafeBufferPointer { starts in
        try positions.withUnsafeBufferPointer { positions in
        try probabilityOffsets.withUnsafeBufferPointer { probabilityOffsets in
            let sequences = PackedSequences(starts: starts.baseAddress!, count: B, probabilityOffsets: probabilityOffsets.baseAddress!)
            func dropoutPerSequence(_ values: UnsafeMutablePointer<Float>, layer: Int, site: DropoutSite, probability: Float) {
                guard let dropout, probability > 0 else { return }
                for s in 0..<B {
                    let key = dropout.key(sample: samples[s], layer: layer, site: site)
                    applyDropout(values + starts[s] * C, count: (starts[s + 1] - starts[s]) * C, key: key, probability: probability)
                }
            }

            // Embeddings: word + position + token type, LayerNorm, dropout.     (T, C)
            embeddingForward(out: a.embeddingSum, tokenIds: ids.baseAddress!, positions: positions.baseAddress!,
                             tokenTypeIds: types.baseAddress!,
                             wordTable: params.base + p["bert.embeddings.word_embeddings.weight"].offset,
                             positionTable: params.base + p["bert.embeddings.position_embeddings.weight"].offset,
                             tokenTypeTable: params.base + p["bert.embeddings.token_type_embeddings.weight"].offset,
                             tokens: T, hidden: C)
            layerNormForward(out: a.hidden[0], mean: a.embeddingMean, rstd: a.embeddingRstd, input: a.embeddingSum,
                             weight: params.base + p["bert.embeddings.LayerNorm.weight"].offset,
                             bias: params.base + p["bert.embeddings.LayerNorm.bias"].offset,
                             rows: T, columns: C, eps: config.layerNormEps)
            dropoutPerSequence(a.hidden[0], layer: 0, site: .embeddings, probability: hiddenDropout)
            try checked(a.hidden[0], T * C, "embeddings output (forward)")

            for l in 0..<config.layerCount {
                let w = weights[l], x = a.hidden[l], la = a.layers[l]
                // Self-attention: one GEMM for Q, K and V.                    (T, 3C)
                linearForward(out: la.qkv, input: x, weight: w.qkvWeight, bias: w.qkvBias, rows: T, inFeatures: C, outFeatures: 3 * C)
                attentionForward(context: la.context, probabilities: la.probabilities, qkv: la.qkv, sequences: sequences,
                                 hidden: C, heads: H,
                                 dropout: dropout.map { ($0, samples.baseAddress!, l, attentionDropout) },
                                 scratch: a.attentionScratch, scratchStride: a.attentionScratchStride)
                try checked(la.context, T * C, "layer \(l) attention context (forward)")
                // Output projection, dropout, residual, LayerNorm.              (T, C)
                linearForward(out: la.attentionResidual, input: la.context, weight: w.attentionOutputWeight,
                              bias: w.attentionOutputBias, rows: T, inFeatures: C, outFeatures: C)
                dropoutPerSequence(la.attentionResidual, layer: l, site: .attentionOutput, probability: hiddenDropout)
                add(out: la.attentionResidual, la.attentionResidual, x, count: T * C)
                layerNormForward(out: la.attentionNormed, mean: la.attentionMean, rstd: la.attentionRstd,
                                 input: la.attentionResidual, weight: w.attentionNormWeight, bias: w.attentionNormBias,
                                 rows: T, columns: C, eps: config.layerNormEps)
                // Feed-forward: dense, GELU, dense, dropout, residual, LayerNorm.  (T, I) -> (T, C)
                linearForward(out: la.feedForwardPre, input: la.attentionNormed, weight: w.intermediateWeight,
                              bias: w.intermediateBias, rows: T, inFeatures: C, outFeatures: I)
                geluForward(out: la.feedForwardActivated, input: la.feedForwardPre, count: T * I)
                linearForward(out: la.feedForwardResidual, input: la.feedForwardActivated, weight: w.outputWeight,
                              bias: w.outputBias, rows: T, inFeatures: I, outFeatures: C)
                dropoutPerSequence(la.feedForwardResidual, layer: l, site: .feedForwardOutput, probability: hiddenDropout)
                add(out: la.feedForwardResidual, la.feedForwardResidual, la.attentionNormed, count: T * C)
                layerNormForward(out: a.hidden[l + 1], mean: la.outputMean, rstd: la.outputRstd,
                                 input: la.feedForwardResidual, weight: w.outputNormWeight, bias: w.outputNormBias,
                                 rows: T, columns: C, eps: config.layerNormEps)
                try checked(a.hidden[l + 1], T * C, "layer \(l) output (forward)")
            }

            // Pooler: tanh(dense([CLS])), dropout, classifier.              (B, C) -> (B, K)
            let last = a.hidden[config.layerCount]
            for s in 0..<B { (a.clsHidden + s * C).update(from: last + starts[s] * C, count: C) }
            linearForward(out: a.pooled, input: a.clsHidden, weight: params.base + p["bert.pooler.dense.weight"].offset,
                          bias: params.base + p["bert.pooler.dense.bias"].offset, rows: B, inFeatures: C, outFeatures: C)
            tanhForward(out: a.pooled, count: B * C)
            a.pooledDropped.update(from: a.pooled, count: B * C)
            if let dropout, config.effectiveClassifierDropout > 0 {
                for s in 0..<B {
                    let key = dropout.key(sample: samples[s], layer: config.layerCount, site: .classifier)
                    applyDropout(a.pooledDropped + s * C, count: C, key: key, probability: config.effectiveClassifierDropout)
                }
            }
            linearForward(out: a.logits, input: a.pooledDropped, weight: params.base + p["classifier.weight"].offset,
                          bias: params.base + p["classifier.bias"].offset, rows: B, inFeatures: C, outFeatures: K)
            try checked(a.logits, B * K, "classifier logits (forward)")
        }}}}}}
        return batch.labels.withUnsafeBufferPointer { labels in
            let (lossSum, correct) = crossEntropyForward(probabilities: a.probabilities, logits: a.logits,
                                                         labels: labels.baseAddress!, rows: B, classes: K)
            return ForwardResult(lossSum: lossSum, correctCount: correct)
        }
    }

    /// Validates the batch against the config and fills positions and attention offsets.
    private func prepare(_ batch: PackedBatch) throws {
        let B = batch.sequenceCount, T = batch.tokenCount
        precondition(batch.sequenceStarts.count == B + 1 && batch.tokenTypeIds.count == T && batch.sampleIndices.count == B
                     && batch.sequenceStarts.last == T, "inconsistent PackedBatch")
        positions.removeAll(keepingCapacity: true)
        probabilityOffsets.removeAll(keepingCapacity: true)
        probabilityOffsets.append(0)
        var longest = 0
        for s in 0..<B {
            let len = batch.length(of: s)
            guard len >= 1 else { throw ModelError.invalidBatch(reason: "sequence \(s) is empty") }
            guard len <= config.maxPositionEmbeddings else {
                throw ModelError.invalidBatch(reason: "a sequence of \(len) tokens is longer than max_position_embeddings \(config.maxPositionEmbeddings); use a smaller --max-seq-len")
            }
            longest = max(longest, len)
            for position in 0..<len { positions.append(Int32(position)) }
            probabilityOffsets.append(probabilityOffsets[s] + config.headCount * len * len)
        }
        for t in 0..<T {
            let id = batch.tokenIds[t], type = batch.tokenTypeIds[t]
            guard id >= 0 && Int(id) < config.vocabSize else {
                throw ModelError.invalidBatch(reason: "token id \(id) is outside the vocabulary of \(config.vocabSize) (tokenizer and model do not match?)")
            }
            guard type >= 0 && Int(type) < config.typeVocabSize else {
                throw ModelError.invalidBatch(reason: "token type id \(type) is outside type_vocab_size \(config.typeVocabSize)")
            }
        }
        for label in batch.labels where label < 0 || Int(label) >= labelCount {
            throw ModelError.invalidBatch(reason: "label \(label) is outside 0..<\(labelCount)")
        }
        growIfNeeded(tokens: T, sequences: B, attentionFloats: probabilityOffsets[B], longestSequence: longest)
    }

    private func checked(_ values: UnsafePointer<Float>, _ count: Int, _ location: @autoclosure () -> String) throws {
        guard checkFinite else { return }
        for i in 0..<count where !values[i].isFinite { throw ModelError.nonFinite(location: location()) }
    }

    // MARK: backward

    /// Backpropagates the loss of the last `forward(batch, ...)` (same batch, same dropout) and
    /// ADDS the parameter gradients, scaled by `lossScale` (1 / global batch size), into
    /// `gradients`. After each encoder layer (and after the pooler/classifier and the
    /// embeddings) it calls `parametersFinished(offset)`: every gradient at arena offset >=
    /// `offset` is final for this micro-batch — the hook that starts gradient communication.
    public func backward(_ batch: PackedBatch, dropout: DropoutContext?, lossScale: Float,
                         parametersFinished: (Int) throws -> Void = { _ in }) throws {
        let C = config.hiddenSize, I = config.intermediateSize, H = config.headCount, K = labelCount
        let T = batch.tokenCount, B = batch.sequenceCount
        precondition(B == lastSequenceCount, "backward must follow forward of the same batch")
        let a = activations
        let p = layout
        let params = parameters, grads = gradients
        let hiddenDropout = dropout == nil ? 0 : config.hiddenDropoutProb
        let attentionDropout = dropout == nil ? 0 : config.attentionDropoutProb

        try batch.tokenIds.withUnsafeBufferPointer { ids in
        try batch.tokenTypeIds.withUnsafeBufferPointer { types in
        try batch.labels.withUnsafeBufferPointer { labels in
        try batch.sampleIndices.withUnsafeBufferPointer { samples in
        try batch.sequenceStarts.withUnsafeBufferPointer { starts in
        try positions.withUnsafeBufferPointer { positions in
        try probabilityOffsets.withUnsafeBufferPointer { probabilityOffsets in
            let sequences = PackedSequences(starts: starts.baseAddress!, count: B, probabilityOffsets: probabilityOffsets.baseAddress!)
            func dropoutPerSequence(_ values: UnsafeMutablePointer<Float>, layer: Int, site: DropoutSite, probability: Float) {
                guard let dropout, probability > 0 else { return }
                for s in 0..<B {
                    let key = dropout.key(sample: samples[s], layer: layer, site: site)
                    applyDropout(values + starts[s] * C, count: (starts[s + 1] - starts[s]) * C, key: key, probability: probability)
                }
            }

            // Loss and classifier.                                         (B, K)
            crossEntropyBackward(dLogits: a.dLogits, probabilities: a.probabilities, labels: labels.baseAddress!,
                                 rows: B, classes: K, lossScale: lossScale)
            linearBackward(dInput: a.dPooled, dWeight: grads.base + p["classifier.weight"].offset,
                           dBias: grads.base + p["classifier.bias"].offset, dOut: a.dLogits, input: a.pooledDropped,
                           weight: params.base + p["classifier.weight"].offset, rows: B, inFeatures: C, outFeatures: K)
            if let dropout, config.effectiveClassifierDropout > 0 {
                for s in 0..<B {
                    let key = dropout.key(sample: samples[s], layer: config.layerCount, site: .classifier)
                    applyDropout(a.dPooled + s * C, count: C, key: key, probability: config.effectiveClassifierDropout)
                }
            }
            // Pooler.                                                      (B, C)
            tanhBackward(dInOut: a.dPooled, output: a.pooled, count: B * C)
            linearBackward(dInput: a.dClsHidden, dWeight: grads.base + p["bert.pooler.dense.weight"].offset,
                           dBias: grads.base + p["bert.pooler.dense.bias"].offset, dOut: a.dPooled, input: a.clsHidden,
                           weight: params.base + p["bert.pooler.dense.weight"].offset, rows: B, inFeatures: C, outFeatures: C)
            try checked(a.dClsHidden, B * C, "pooler input gradient (backward)")
            try parametersFinished(p.layerStarts[config.layerCount])

            // Only the [CLS] rows of the last hidden state reach the loss.
            a.dHidden.update(repeating: 0, count: T * C)
            for s in 0..<B { (a.dHidden + starts[s] * C).update(from: a.dClsHidden + s * C, count: C) }

            for l in stride(from: config.layerCount - 1, through: 0, by: -1) {
                let w = weights[l], g = weightGradients[l], x = a.hidden[l], la = a.layers[l]
                // a.dHidden = dL/d(layer output).  Output LayerNorm.
                layerNormBackward(dInput: a.dResidual, dWeight: g.outputNormWeight, dBias: g.outputNormBias, dOut: a.dHidden,
                                  input: la.feedForwardResidual, weight: w.outputNormWeight,
                                  mean: la.outputMean, rstd: la.outputRstd, rows: T, columns: C)
                // a.dResidual = dL/d(attentionNormed + dropout(ffn output)).
                a.dTemporary.update(from: a.dResidual, count: T * C)
                dropoutPerSequence(a.dTemporary, layer: l, site: .feedForwardOutput, probability: hiddenDropout)
                linearBackward(dInput: a.dFeedForward, dWeight: g.outputWeight, dBias: g.outputBias, dOut: a.dTemporary,
                               input: la.feedForwardActivated, weight: w.outputWeight, rows: T, inFeatures: I, outFeatures: C)
                geluBackward(dInOut: a.dFeedForward, input: la.feedForwardPre, count: T * I)
                linearBackward(dInput: a.dResidual, dWeight: g.intermediateWeight, dBias: g.intermediateBias,
                               dOut: a.dFeedForward, input: la.attentionNormed, weight: w.intermediateWeight,
                               rows: T, inFeatures: C, outFeatures: I, accumulateInput: true)
                try checked(a.dResidual, T * C, "layer \(l) feed-forward input gradient (backward)")
                // a.dResidual = dL/d(attentionNormed).  Attention LayerNorm.
                layerNormBackward(dInput: a.dHidden, dWeight: g.attentionNormWeight, dBias: g.attentionNormBias,
                                  dOut: a.dResidual, input: la.attentionResidual, weight: w.attentionNormWeight,
                                  mean: la.attentionMean, rstd: la.attentionRstd, rows: T, columns: C)
                // a.dHidden = dL/d(x + dropout(attention output)).
                a.dTemporary.update(from: a.dHidden, count: T * C)
                dropoutPerSequence(a.dTemporary, layer: l, site: .attentionOutput, probability: hiddenDropout)
                linearBackward(dInput: a.dContext, dWeight: g.attentionOutputWeight, dBias: g.attentionOutputBias,
                               dOut: a.dTemporary, input: la.context, weight: w.attentionOutputWeight,
                               rows: T, inFeatures: C, outFeatures: C)
                attentionBackward(dqkv: a.dQKV, dContext: a.dContext, qkv: la.qkv, probabilities: la.probabilities,
                                  sequences: sequences, hidden: C, heads: H,
                                  dropout: dropout.map { ($0, samples.baseAddress!, l, attentionDropout) },
                                  scratch: a.attentionScratch, scratchStride: a.attentionScratchStride)
                try checked(a.dQKV, T * 3 * C, "layer \(l) query/key/value gradient (backward)")
                // Residual branch plus the Q, K, V projections.  a.dHidden = dL/dx.
                linearBackward(dInput: a.dHidden, dWeight: g.qkvWeight, dBias: g.qkvBias, dOut: a.dQKV, input: x,
                               weight: w.qkvWeight, rows: T, inFeatures: C, outFeatures: 3 * C, accumulateInput: true)
                try checked(a.dHidden, T * C, "layer \(l) input gradient (backward)")
                try parametersFinished(p.layerStarts[l])
            }

            // Embeddings: dropout, LayerNorm, scatter into the three tables.
            dropoutPerSequence(a.dHidden, layer: 0, site: .embeddings, probability: hiddenDropout)
            layerNormBackward(dInput: a.dResidual, dWeight: grads.base + p["bert.embeddings.LayerNorm.weight"].offset,
                              dBias: grads.base + p["bert.embeddings.LayerNorm.bias"].offset, dOut: a.dHidden,
                              input: a.embeddingSum, weight: params.base + p["bert.embeddings.LayerNorm.weight"].offset,
                              mean: a.embeddingMean, rstd: a.embeddingRstd, rows: T, columns: C)
            embeddingBackward(dWordTable: grads.base + p["bert.embeddings.word_embeddings.weight"].offset,
                              dPositionTable: grads.base + p["bert.embeddings.position_embeddings.weight"].offset,
                              dTokenTypeTable: grads.base + p["bert.embeddings.token_type_embeddings.weight"].offset,
                              dOut: a.dResidual, tokenIds: ids.baseAddress!, positions: positions.baseAddress!,
                              tokenTypeIds: types.baseAddress!, tokens: T, hidden: C)
            try checked(a.dResidual, T * C, "embeddings gradient (backward)")
            try parametersFinished(0)
        }}}}}}}
    }
}

/// Pointers to one encoder layer's tensors in an arena (parameters or gradients).
struct LayerWeights {
    let qkvWeight, qkvBias: UnsafeMutablePointer<Float>          // (3C, C), (3C)
    let attentionOutputWeight, attentionOutputBias: UnsafeMutablePointer<Float>   // (C, C), (C)
    let attentionNormWeight, attentionNormBias: UnsafeMutablePointer<Float>       // (C)
    let intermediateWeight, intermediateBias: UnsafeMutablePointer<Float>         // (I, C), (I)
    let outputWeight, outputBias: UnsafeMutablePointer<Float>                     // (C, I), (C)
    let outputNormWeight, outputNormBias: UnsafeMutablePointer<Float>             // (C)

    static func all(layout: ParameterLayout, arena: FloatArena, layerCount: Int) -> [LayerWeights] {
        (0..<layerCount).map { l in
            let prefix = "bert.encoder.layer.\(l)."
            func at(_ name: String) -> UnsafeMutablePointer<Float> { arena.base + layout[prefix + name].offset }
            let q = layout[prefix + "attention.self.query.weight"], k = layout[prefix + "attention.self.key.weight"]
            let v = layout[prefix + "attention.self.value.weight"]
            let qb = layout[prefix + "attention.self.query.bias"], kb = layout[prefix + "attention.self.key.bias"]
            let vb = layout[prefix + "attention.self.value.bias"]
            // The fused (3C, C) matrix relies on Q, K, V being adjacent in the layout.
            precondition(k.offset == q.offset + q.count && v.offset == k.offset + k.count
                         && kb.offset == qb.offset + qb.count && vb.offset == kb.offset + kb.count,
                         "query/key/value must be adjacent in the parameter layout")
            return LayerWeights(
                qkvWeight: arena.base + q.offset, qkvBias: arena.base + qb.offset,
                attentionOutputWeight: at("attention.output.dense.weight"), attentionOutputBias: at("attention.output.dense.bias"),
                attentionNormWeight: at("attention.output.LayerNorm.weight"), attentionNormBias: at("attention.output.LayerNorm.bias"),
                intermediateWeight: at("intermediate.dense.weight"), intermediateBias: at("intermediate.dense.bias"),
                outputWeight: at("output.dense.weight"), outputBias: at("output.dense.bias"),
                outputNormWeight: at("output.LayerNorm.weight"), outputNormBias: at("output.LayerNorm.bias"))
        }
    }
}
