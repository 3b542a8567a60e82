import CKernels
import Foundation

/// Hugging Face's BertForSequenceClassification, forward and backward by hand over packed
/// sequences. Parameters and gradients are flat arenas laid out by `ParameterLayout`;
/// activations live in one arena sized for the largest micro-batch seen (`reserve`), so a
/// training step allocates nothing once that size has been reached. Kernels run on the rank's
/// `compute`.
public final class BertForSequenceClassification {
    public let config: BertConfig
    public let labelCount: Int
    public let compute: Compute
    public let layout: ParameterLayout
    public let parameters: FloatArena
    public let gradients: FloatArena
    /// Scan every activation and gradient for NaN/Inf and throw naming the first place
    /// (the single-node debug mode turns this on).
    public var checkFinite = false

    private var activations: ActivationBuffers
    private var probabilityOffsets: [Int] = [0]     // (B + 1) of the H·len² probabilities per sequence
    private var clsProbabilityOffsets: [Int] = [0]  // (B + 1) of the H·len [CLS] probabilities per sequence
    /// Every tensor of `parameters` and of `gradients`.
    private let weights: ModelParameters<UnsafeMutablePointer<Float>>
    private let weightGradients: ModelParameters<UnsafeMutablePointer<Float>>

    public init(config: BertConfig, labelCount: Int, compute: Compute) {
        self.config = config
        self.labelCount = labelCount
        self.compute = compute
        layout = ParameterLayout(config: config, labelCount: labelCount)
        parameters = FloatArena(count: layout.totalCount)
        gradients = FloatArena(count: layout.totalCount)
        activations = ActivationBuffers(config: config, labelCount: labelCount, capacity: ActivationCapacity(), compute: compute)
        weights = layout.views(in: parameters)
        weightGradients = layout.views(in: gradients)
    }

    /// In the last encoder layer only the [CLS] rows reach the pooler, so only their queries,
    /// attention output, LayerNorms and feed-forward are computed (keys and values still cover
    /// every token); the results equal the full computation up to float rounding. Off: every
    /// row, as Hugging Face does (the tests compare the two).
    public var clsOnlyLastLayer = true

    /// Sizes the activation arena for micro-batches of up to `sequences` sequences of at most
    /// `longestSequence` tokens, so that no step allocates afterwards.
    public func reserve(sequences: Int, longestSequence: Int) {
        growIfNeeded(ActivationCapacity(tokens: sequences * longestSequence, sequences: sequences,
                                        attentionFloats: config.headCount * sequences * longestSequence * longestSequence,
                                        longestSequence: longestSequence))
        probabilityOffsets.reserveCapacity(sequences + 1)
        clsProbabilityOffsets.reserveCapacity(sequences + 1)
    }

    private func growIfNeeded(_ needed: ActivationCapacity) {
        if activations.capacity.covers(needed) { return }
        activations = ActivationBuffers(config: config, labelCount: labelCount, capacity: activations.capacity.union(needed),
                                        compute: compute)
    }

    /// (B, K) logits of the last forward.
    public var logits: UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: activations.views.logits, count: lastSequenceCount * labelCount)
    }
    /// (B, K) softmax probabilities of the last forward.
    public var probabilities: UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: activations.views.probabilities, count: lastSequenceCount * labelCount)
    }
    private var lastSequenceCount = 0

    public struct ForwardResult: Sendable {
        /// Σ over the batch of the cross-entropy loss (not the mean: ranks and micro-batches add up).
        public var lossSum: Double
        /// How many arg-max predictions equal the label.
        public var correctCount: Int
    }

    /// Runs `body` with the raw views of a batch every kernel needs.
    private func withBatchPointers<R>(_ batch: PackedBatch, _ body: (BatchPointers) throws -> R) rethrows -> R {
        try batch.tokenIds.withUnsafeBufferPointer { ids in
        try batch.tokenTypeIds.withUnsafeBufferPointer { types in
        try batch.labels.withUnsafeBufferPointer { labels in
        try batch.sampleIndices.withUnsafeBufferPointer { samples in
        try batch.sequenceStarts.withUnsafeBufferPointer { starts in
        try probabilityOffsets.withUnsafeBufferPointer { probabilityOffsets in
        try clsProbabilityOffsets.withUnsafeBufferPointer { clsProbabilityOffsets in
            try body(BatchPointers(ids: ids.baseAddress!, types: types.baseAddress!, labels: labels.baseAddress!,
                                   samples: samples.baseAddress!, starts: starts.baseAddress!,
                                   sequences: PackedSequences(starts: starts.baseAddress!, count: batch.sequenceCount,
                                                              probabilityOffsets: probabilityOffsets.baseAddress!,
                                                              clsProbabilityOffsets: clsProbabilityOffsets.baseAddress!)))
        }}}}}}}
    }

    private struct BatchPointers {
        let ids, types, labels: UnsafePointer<Int32>
        let samples, starts: UnsafePointer<Int>
        let sequences: PackedSequences
    }

    /// The dropout of packed rows (`compact`: one [CLS] row per sequence) at (layer, site).
    private func rowMasks(_ dropout: DropoutContext?, _ layer: Int, _ site: DropoutSite, _ b: BatchPointers,
                          compact: Bool = false) -> bd_row_dropout {
        let a = activations
        let probability = dropout == nil ? 0 : (site == .classifier ? config.effectiveClassifierDropout : config.hiddenDropoutProb)
        return rowDropout(dropout, probability: probability, layer: layer, site: site, samples: b.samples,
                          sequences: b.sequences.count, keys: a.dropoutKeys,
                          rowSequence: compact ? a.clsSequence : a.tokenSequence,
                          rowPosition: compact ? a.clsPosition : a.positions)
    }

    // MARK: forward

    /// Runs the model on `batch`. With `dropout` (training) the masks are keyed by the context's
    /// seed and step and each sequence's sample index; without it dropout is off (evaluation).
    @discardableResult
    public func forward(_ batch: PackedBatch, dropout: DropoutContext?) throws -> ForwardResult {
        let C = config.hiddenSize, K = labelCount, L = config.layerCount
        let T = batch.tokenCount, B = batch.sequenceCount
        try prepare(batch)
        lastSequenceCount = B
        let a = activations.views, w = weights, k = compute

        try withBatchPointers(batch) { b in
            // Embeddings: word + position + token type, LayerNorm, dropout.     (T, C)
            k.embeddingLayerNormForward(sum: a.embeddingSum, normed: a.hidden[0], mean: a.embeddingMean, rstd: a.embeddingRstd,
                                        tokenIds: b.ids, positions: activations.positions, tokenTypeIds: b.types,
                                        wordTable: w.embeddings.wordTable, positionTable: w.embeddings.positionTable,
                                        tokenTypeTable: w.embeddings.tokenTypeTable, weight: w.embeddings.normWeight,
                                        bias: w.embeddings.normBias, rows: T, columns: C, eps: config.layerNormEps,
                                        dropoutAfter: rowMasks(dropout, 0, .embeddings, b))
            try checked(a.hidden[0], T * C, "embeddings output (forward)")

            for l in 0..<L {
                try layerForward(l, b, rows(ofLayer: l, b), dropout: dropout)
            }
            if !lastLayerIsClsOnly {
                let last = a.hidden[L]
                for s in 0..<B { (a.clsHidden + s * C).update(from: last + b.starts[s] * C, count: C) }
            }

            // Pooler: tanh(dense([CLS])), dropout, classifier.              (B, C) -> (B, K)
            k.linearForward(out: a.pooled, input: a.clsHidden, weight: w.head.poolerWeight, bias: w.head.poolerBias,
                            rows: B, inFeatures: C, outFeatures: C)
            tanhForward(out: a.pooled, count: B * C)
            a.pooledDropped.update(from: a.pooled, count: B * C)
            k.dropoutRows(a.pooledDropped, rows: B, columns: C, dropout: rowMasks(dropout, L, .classifier, b, compact: true))
            k.linearForward(out: a.logits, input: a.pooledDropped, weight: w.head.classifierWeight, bias: w.head.classifierBias,
                            rows: B, inFeatures: C, outFeatures: K)
            try checked(a.logits, B * K, "classifier logits (forward)")
        }
        return batch.labels.withUnsafeBufferPointer { labels in
            let (lossSum, correct) = crossEntropyForward(probabilities: a.probabilities, logits: a.logits,
                                                         labels: labels.baseAddress!, rows: B, classes: K)
            return ForwardResult(lossSum: lossSum, correctCount: correct)
        }
    }

    private var lastLayerIsClsOnly: Bool { clsOnlyLastLayer && config.layerCount >= 1 }

    /// The rows an encoder layer computes past its keys and values: every token, or (the last
    /// layer with `clsOnlyLastLayer`) only each sequence's [CLS] row, kept compact in the
    /// layer's buffers (row s = sequence s). Keys and values always cover every token.
    private struct LayerRows {
        /// T, or B [CLS] rows.
        let count: Int
        let clsOnly: Bool
        /// (count, C): the input rows the residual path carries, and the layer's output rows.
        let input, output: UnsafeMutablePointer<Float>
        /// Backward: dL/d(output) on entry; where the residual path's part of dL/d(input) goes.
        let dOutput, dInput: UnsafeMutablePointer<Float>
    }

    private func rows(ofLayer l: Int, _ b: BatchPointers) -> LayerRows {
        let a = activations.views
        if lastLayerIsClsOnly && l == config.layerCount - 1 {
            return LayerRows(count: b.sequences.count, clsOnly: true, input: a.lastInput, output: a.clsHidden,
                             dOutput: a.dClsHidden, dInput: a.dLastInput)
        }
        return LayerRows(count: b.sequences.starts[b.sequences.count], clsOnly: false, input: a.hidden[l],
                         output: a.hidden[l + 1], dOutput: a.dHidden, dInput: a.dHidden)
    }

    /// Encoder layer `l`: hidden[l] -> `rows.output`.
    private func layerForward(_ l: Int, _ b: BatchPointers, _ rows: LayerRows, dropout: DropoutContext?) throws {
        let C = config.hiddenSize, I = config.intermediateSize, H = config.headCount
        let B = b.sequences.count, T = b.sequences.starts[B], R = rows.count
        let a = activations.views, w = weights.layers[l], x = a.hidden[l], la = a.layers[l], k = compute
        // Self-attention projections.
        if rows.clsOnly {
            // Keys and values of every token: rows C ..< 3C of the fused weight.  (T, 2C) of (T, 3C)
            k.linearForward(out: la.qkv + C, outStride: 3 * C, input: x, weight: w.qkvWeight + C * C, bias: w.qkvBias + C,
                            rows: T, inFeatures: C, outFeatures: 2 * C)
            // The [CLS] rows and their queries.                                  (B, C)
            for s in 0..<B { (a.lastInput + s * C).update(from: x + b.starts[s] * C, count: C) }
            k.linearForward(out: a.lastQuery, input: a.lastInput, weight: w.qkvWeight, bias: w.qkvBias,
                            rows: B, inFeatures: C, outFeatures: C)
        } else {
            // One GEMM for Q, K and V.                                           (T, 3C)
            k.linearForward(out: la.qkv, input: x, weight: w.qkvWeight, bias: w.qkvBias, rows: T, inFeatures: C, outFeatures: 3 * C)
        }
        k.attentionForward(context: la.context, probabilities: la.probabilities, qkv: la.qkv, sequences: b.sequences,
                           hidden: C, heads: H, clsQueries: rows.clsOnly ? a.lastQuery : nil,
                           dropout: dropout.map { ($0, b.samples, l, config.attentionDropoutProb) },
                           scratch: a.attentionScratch, scratchStride: activations.attentionScratchStride,
                           workers: activations.workers)
        try checked(la.context, R * C, "layer \(l) attention context (forward)")
        // Output projection, dropout, residual, LayerNorm.                       (R, C)
        k.linearForward(out: la.attentionResidual, input: la.context, weight: w.attentionOutputWeight,
                        bias: w.attentionOutputBias, rows: R, inFeatures: C, outFeatures: C)
        k.residualLayerNormForward(sum: la.attentionResidual, normed: la.attentionNormed, mean: la.attentionMean,
                                   rstd: la.attentionRstd, residual: rows.input, weight: w.attentionNormWeight,
                                   bias: w.attentionNormBias, rows: R, columns: C, eps: config.layerNormEps,
                                   dropout: rowMasks(dropout, l, .attentionOutput, b, compact: rows.clsOnly))
        // Feed-forward: dense, GELU, dense, dropout, residual, LayerNorm.        (R, I) -> (R, C)
        k.linearForward(out: la.feedForwardDerivative, input: la.attentionNormed, weight: w.intermediateWeight,
                        bias: w.intermediateBias, rows: R, inFeatures: C, outFeatures: I)
        k.geluForward(activated: la.feedForwardActivated, derivative: la.feedForwardDerivative, count: R * I)
        k.linearForward(out: la.feedForwardResidual, input: la.feedForwardActivated, weight: w.outputWeight,
                        bias: w.outputBias, rows: R, inFeatures: I, outFeatures: C)
        k.residualLayerNormForward(sum: la.feedForwardResidual, normed: rows.output, mean: la.outputMean, rstd: la.outputRstd,
                                   residual: la.attentionNormed, weight: w.outputNormWeight, bias: w.outputNormBias,
                                   rows: R, columns: C, eps: config.layerNormEps,
                                   dropout: rowMasks(dropout, l, .feedForwardOutput, b, compact: rows.clsOnly))
        try checked(rows.output, R * C, "layer \(l) output (forward)")
    }

    /// Validates the batch against the config, sizes the arena and fills the per-token indices
    /// and the attention offsets.
    private func prepare(_ batch: PackedBatch) throws {
        let B = batch.sequenceCount, T = batch.tokenCount, H = config.headCount
        precondition(batch.sequenceStarts.count == B + 1 && batch.tokenTypeIds.count == T && batch.sampleIndices.count == B
                     && batch.sequenceStarts.last == T, "inconsistent PackedBatch")
        probabilityOffsets.removeAll(keepingCapacity: true)
        clsProbabilityOffsets.removeAll(keepingCapacity: true)
        probabilityOffsets.append(0)
        clsProbabilityOffsets.append(0)
        var longest = 0
        for s in 0..<B {
            let len = batch.length(of: s)
            guard len >= 1 else { throw ModelError.invalidBatch(reason: "sequence \(s) is empty") }
            guard len <= config.maxPositionEmbeddings else {
                throw ModelError.invalidBatch(reason: "a sequence of \(len) tokens is longer than max_position_embeddings \(config.maxPositionEmbeddings); use a smaller --max-seq-len")
            }
            longest = max(longest, len)
            probabilityOffsets.append(probabilityOffsets[s] + H * len * len)
            clsProbabilityOffsets.append(clsProbabilityOffsets[s] + H * len)
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
        growIfNeeded(ActivationCapacity(tokens: T, sequences: B, attentionFloats: probabilityOffsets[B], longestSequence: longest))
        let a = activations
        for s in 0..<B {
            for t in batch.sequenceStarts[s]..<batch.sequenceStarts[s + 1] {
                a.positions[t] = Int32(t - batch.sequenceStarts[s])
                a.tokenSequence[t] = Int32(s)
            }
        }
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
        let C = config.hiddenSize, K = labelCount, L = config.layerCount
        let T = batch.tokenCount, B = batch.sequenceCount
        precondition(B == lastSequenceCount, "backward must follow forward of the same batch")
        let a = activations.views, w = weights, g = weightGradients, k = compute

        try withBatchPointers(batch) { b in
            // Loss and classifier.                                         (B, K)
            crossEntropyBackward(dLogits: a.dLogits, probabilities: a.probabilities, labels: b.labels,
                                 rows: B, classes: K, lossScale: lossScale)
            k.linearBackward(dInput: a.dPooled, dWeight: g.head.classifierWeight, dBias: g.head.classifierBias, dOut: a.dLogits,
                             input: a.pooledDropped, weight: w.head.classifierWeight, rows: B, inFeatures: C, outFeatures: K)
            k.dropoutRows(a.dPooled, rows: B, columns: C, dropout: rowMasks(dropout, L, .classifier, b, compact: true))
            // Pooler.                                                      (B, C)
            tanhBackward(dInOut: a.dPooled, output: a.pooled, count: B * C)
            k.linearBackward(dInput: a.dClsHidden, dWeight: g.head.poolerWeight, dBias: g.head.poolerBias, dOut: a.dPooled,
                             input: a.clsHidden, weight: w.head.poolerWeight, rows: B, inFeatures: C, outFeatures: C)
            try checked(a.dClsHidden, B * C, "pooler input gradient (backward)")
            try parametersFinished(layout.layerStarts[L])

            if !lastLayerIsClsOnly {
                // Only the [CLS] rows of the last hidden state reach the loss.
                a.dHidden.update(repeating: 0, count: T * C)
                for s in 0..<B { (a.dHidden + b.starts[s] * C).update(from: a.dClsHidden + s * C, count: C) }
            }
            for l in stride(from: L - 1, through: 0, by: -1) {
                try layerBackward(l, b, rows(ofLayer: l, b), dropout: dropout)
                try parametersFinished(layout.layerStarts[l])
            }

            // Embeddings: dropout, LayerNorm, scatter into the three tables.
            k.dropoutRows(a.dHidden, rows: T, columns: C, dropout: rowMasks(dropout, 0, .embeddings, b))
            k.layerNormBackward(dInput: a.dResidual, dBranch: nil, branchDropout: rowMasks(nil, 0, .embeddings, b),
                                dWeight: g.embeddings.normWeight, dBias: g.embeddings.normBias, dOut: a.dHidden,
                                input: a.embeddingSum, weight: w.embeddings.normWeight,
                                mean: a.embeddingMean, rstd: a.embeddingRstd, rows: T, columns: C)
            k.embeddingBackward(dWordTable: g.embeddings.wordTable, dPositionTable: g.embeddings.positionTable,
                                dTokenTypeTable: g.embeddings.tokenTypeTable, dOut: a.dResidual, tokenIds: b.ids,
                                positions: activations.positions, tokenTypeIds: b.types, tokens: T, hidden: C)
            try checked(a.dResidual, T * C, "embeddings gradient (backward)")
            try parametersFinished(0)
        }
    }

    /// Backward of `layerForward(l)`: from `rows.dOutput` to a.dHidden = dL/d(hidden[l]) (T, C).
    private func layerBackward(_ l: Int, _ b: BatchPointers, _ rows: LayerRows, dropout: DropoutContext?) throws {
        let C = config.hiddenSize, I = config.intermediateSize, H = config.headCount
        let B = b.sequences.count, T = b.sequences.starts[B], R = rows.count
        let a = activations.views, w = weights.layers[l], g = weightGradients.layers[l], x = a.hidden[l], la = a.layers[l]
        let k = compute
        // Output LayerNorm. a.dResidual = dL/d(feedForwardResidual); a.dTemporary = its dropout =
        // dL/d(ffn output).
        k.layerNormBackward(dInput: a.dResidual, dBranch: a.dTemporary,
                            branchDropout: rowMasks(dropout, l, .feedForwardOutput, b, compact: rows.clsOnly),
                            dWeight: g.outputNormWeight, dBias: g.outputNormBias, dOut: rows.dOutput,
                            input: la.feedForwardResidual, weight: w.outputNormWeight,
                            mean: la.outputMean, rstd: la.outputRstd, rows: R, columns: C)
        k.linearBackward(dInput: a.dFeedForward, dWeight: g.outputWeight, dBias: g.outputBias, dOut: a.dTemporary,
                         input: la.feedForwardActivated, weight: w.outputWeight, rows: R, inFeatures: I, outFeatures: C)
        k.geluBackward(dInOut: a.dFeedForward, derivative: la.feedForwardDerivative, count: R * I)
        k.linearBackward(dInput: a.dResidual, dWeight: g.intermediateWeight, dBias: g.intermediateBias,
                         dOut: a.dFeedForward, input: la.attentionNormed, weight: w.intermediateWeight,
                         rows: R, inFeatures: C, outFeatures: I, accumulateInput: true)
        try checked(a.dResidual, R * C, "layer \(l) feed-forward input gradient (backward)")
        // a.dResidual = dL/d(attentionNormed).  Attention LayerNorm: rows.dInput = dL/d(attentionResidual)
        // (the residual path's part of dL/d(input rows)), a.dTemporary = dL/d(attention output).
        k.layerNormBackward(dInput: rows.dInput, dBranch: a.dTemporary,
                            branchDropout: rowMasks(dropout, l, .attentionOutput, b, compact: rows.clsOnly),
                            dWeight: g.attentionNormWeight, dBias: g.attentionNormBias, dOut: a.dResidual,
                            input: la.attentionResidual, weight: w.attentionNormWeight,
                            mean: la.attentionMean, rstd: la.attentionRstd, rows: R, columns: C)
        k.linearBackward(dInput: a.dContext, dWeight: g.attentionOutputWeight, dBias: g.attentionOutputBias,
                         dOut: a.dTemporary, input: la.context, weight: w.attentionOutputWeight,
                         rows: R, inFeatures: C, outFeatures: C)
        k.attentionBackward(dqkv: a.dQKV, dContext: a.dContext, qkv: la.qkv, probabilities: la.probabilities,
                            sequences: b.sequences, hidden: C, heads: H, clsQueries: rows.clsOnly ? a.lastQuery : nil,
                            dClsQueries: rows.clsOnly ? a.dLastQuery : nil,
                            dropout: dropout.map { ($0, b.samples, l, config.attentionDropoutProb) },
                            scratch: a.attentionScratch, scratchStride: activations.attentionScratchStride,
                            workers: activations.workers)
        if rows.clsOnly {
            try checked(a.dLastQuery, B * C, "layer \(l) query gradient (backward)")
            // Keys and values of every token: a.dHidden = (dK dV) · W_kv.    (T, C)
            k.linearBackward(dInput: a.dHidden, dWeight: g.qkvWeight + C * C, dBias: g.qkvBias + C, dOut: a.dQKV + C,
                             dOutStride: 3 * C, input: x, weight: w.qkvWeight + C * C, rows: T, inFeatures: C, outFeatures: 2 * C)
            // Queries of the [CLS] rows, added to their residual gradient, then into their tokens' rows.
            k.linearBackward(dInput: a.dLastInput, dWeight: g.qkvWeight, dBias: g.qkvBias, dOut: a.dLastQuery,
                             input: a.lastInput, weight: w.qkvWeight, rows: B, inFeatures: C, outFeatures: C, accumulateInput: true)
            for s in 0..<B {
                let row = a.dHidden + b.starts[s] * C, cls = a.dLastInput + s * C
                for c in 0..<C { row[c] += cls[c] }
            }
        } else {
            try checked(a.dQKV, T * 3 * C, "layer \(l) query/key/value gradient (backward)")
            // Residual path plus the Q, K, V projections.  a.dHidden = dL/dx.
            k.linearBackward(dInput: a.dHidden, dWeight: g.qkvWeight, dBias: g.qkvBias, dOut: a.dQKV, input: x,
                             weight: w.qkvWeight, rows: T, inFeatures: C, outFeatures: 3 * C, accumulateInput: true)
        }
        try checked(a.dHidden, T * C, "layer \(l) input gradient (backward)")
    }
}
