import CKernels
import Foundation

/// Hugging Face's `<Family>ForSequenceClassification` of every family of `EncoderFamily` (the
/// name stays until the rename across Training), forward and backward by hand over packed
/// sequences, following the values of the family's `EncoderArchitecture` (its embeddings,
/// dropout sites and head). Parameters and gradients are flat arenas laid out by `ParameterLayout`;
/// activations live in one arena sized for the largest micro-batch seen (`reserve`), so a
/// training step allocates nothing once that size has been reached. Kernels run on the rank's
/// `compute`.
public final class BertForSequenceClassification {
    public let config: BertConfig
    /// The family's structure (config.architecture, computed once).
    public let architecture: EncoderArchitecture
    public let labelCount: Int
    public let compute: Compute
    public let layout: ParameterLayout
    public let parameters: FloatArena
    public let gradients: FloatArena
    /// Scan every activation and gradient for NaN/Inf and throw naming the first place
    /// (the single-node debug mode turns this on).
    public var checkFinite = false
    /// The loss of the task (HF's problem_type) over the logits, the same for every family;
    /// `probabilities` holds what it keeps (softmax, sigmoid, or the regression value).
    public var task: TaskLoss = .crossEntropy(classWeights: nil)

    private var activations: ActivationBuffers
    private var probabilityOffsets: [Int] = [0]     // (B + 1) of the H·len² probabilities per sequence
    private var clsProbabilityOffsets: [Int] = [0]  // (B + 1) of the H·len [CLS] probabilities per sequence
    /// Every tensor of `parameters` and of `gradients`.
    private let weights: ModelParameters<UnsafeMutablePointer<Float>>
    private let weightGradients: ModelParameters<UnsafeMutablePointer<Float>>
    /// --bf16 (compute.precision): the packed bf16 copies of the Linear weights, and whether
    /// they are older than `parameters`.
    private let bf16Weights: BF16Weights?
    private var bf16WeightsStale = true

    /// `forwardOnly` (eval, predict): under --bf16 only the forward copies of the weights are
    /// kept (half the memory); backward is then a programming error.
    public init(config: BertConfig, labelCount: Int, compute: Compute, forwardOnly: Bool = false) {
        self.config = config
        self.labelCount = labelCount
        self.compute = compute
        layout = ParameterLayout(config: config, labelCount: labelCount)
        architecture = layout.architecture
        parameters = FloatArena(count: layout.totalCount)
        gradients = FloatArena(count: layout.totalCount)
        activations = ActivationBuffers(config: config, labelCount: labelCount, capacity: ActivationCapacity(), compute: compute)
        weights = layout.views(in: parameters)
        weightGradients = layout.views(in: gradients)
        bf16Weights = compute.precision == .bf16
            ? BF16Weights(weights: weights, config: config, labelCount: labelCount, inputGradients: !forwardOnly) : nil
    }

    /// Tells the model that `parameters` were written (an optimizer step, the ZeRO-1 gather, a
    /// load, resume or broadcast): under --bf16 the packed bf16 copies are rebuilt once, before
    /// the next forward (so once per update; every micro-batch of the update uses them). The
    /// training loop calls this at the start of every step, evaluation before every pass.
    public func parametersChanged() { bf16WeightsStale = true }

    /// Rebuilds the bf16 copies now if they are stale (forward does it when needed).
    public func refreshBF16WeightsIfNeeded() {
        guard let bf16Weights, bf16WeightsStale else { return }
        bf16Weights.refresh(compute: compute)
        bf16WeightsStale = false
    }

    /// y = x Wᵀ + b (rows, out): sgemm in fp32, else the bf16 engine with W's packed copy.
    private func linear(out: UnsafeMutablePointer<Float>, outStride: Int? = nil, input: UnsafePointer<Float>,
                        weight: UnsafePointer<Float>, packed: PackedLinear?, bias: UnsafePointer<Float>,
                        rows: Int, inFeatures: Int, outFeatures: Int, roundOutput: Bool = false) {
        if let packed, let scratch = activations.bf16Scratch {
            compute.bf16LinearForward(out: out, outStride: outStride, input: input, weight: packed, bias: bias, rows: rows,
                                      scratch: scratch, roundOutput: roundOutput)
        } else {
            compute.linearForward(out: out, outStride: outStride, input: input, weight: weight, bias: bias, rows: rows,
                                  inFeatures: inFeatures, outFeatures: outFeatures)
        }
    }

    /// Backward of `linear`: dInput (=, or += with accumulateInput), dWeight +=, dBias +=.
    private func linearGradient(dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>,
                                dBias: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, dOutStride: Int? = nil,
                                input: UnsafePointer<Float>, weight: UnsafePointer<Float>, packed: PackedLinear?,
                                rows: Int, inFeatures: Int, outFeatures: Int, accumulateInput: Bool = false,
                                roundInput: Bool = false) {
        if let packed, let scratch = activations.bf16Scratch {
            compute.bf16LinearBackward(dInput: dInput, dWeight: dWeight, dBias: dBias, dOut: dOut, dOutStride: dOutStride,
                                       input: input, weight: packed, rows: rows, scratch: scratch,
                                       accumulateInput: accumulateInput, roundInput: roundInput)
        } else {
            compute.linearBackward(dInput: dInput, dWeight: dWeight, dBias: dBias, dOut: dOut, dOutStride: dOutStride,
                                   input: input, weight: weight, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures,
                                   accumulateInput: accumulateInput)
        }
    }

    /// In the last encoder layer only the [CLS] rows reach the head, so only their queries,
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
    /// (B, K) probabilities of the last forward: softmax (single-label), sigmoid (multi-label),
    /// the value (regression).
    public var probabilities: UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: activations.views.probabilities, count: lastSequenceCount * labelCount)
    }
    private var lastSequenceCount = 0

    public struct ForwardResult: Sendable {
        /// Σ over the batch of the task's loss terms (not the mean: ranks and micro-batches add
        /// up; see TaskLoss); 0 for a batch without targets.
        public var lossSum: Double
        /// How many rows are predicted right (arg-max = label; multi-label: every label at 0.5).
        public var correctCount: Int
    }

    /// Runs `body` with the raw views of a batch every kernel needs.
    private func withBatchPointers<R>(_ batch: PackedBatch, _ body: (BatchPointers) throws -> R) rethrows -> R {
        try batch.tokenIds.withUnsafeBufferPointer { ids in
        try batch.tokenTypeIds.withUnsafeBufferPointer { types in
        try batch.sampleIndices.withUnsafeBufferPointer { samples in
        try batch.sequenceStarts.withUnsafeBufferPointer { starts in
        try probabilityOffsets.withUnsafeBufferPointer { probabilityOffsets in
        try clsProbabilityOffsets.withUnsafeBufferPointer { clsProbabilityOffsets in
            try body(BatchPointers(ids: ids.baseAddress!, types: types.baseAddress!,
                                   samples: samples.baseAddress!, starts: starts.baseAddress!,
                                   sequences: PackedSequences(starts: starts.baseAddress!, count: batch.sequenceCount,
                                                              probabilityOffsets: probabilityOffsets.baseAddress!,
                                                              clsProbabilityOffsets: clsProbabilityOffsets.baseAddress!)))
        }}}}}}
    }

    private struct BatchPointers {
        let ids, types: UnsafePointer<Int32>
        let samples, starts: UnsafePointer<Int>
        let sequences: PackedSequences
    }

    /// The dropout of packed rows (`compact`: one [CLS] row per sequence) at (layer, site), with
    /// the family's probability there.
    private func rowMasks(_ dropout: DropoutContext?, _ layer: Int, _ site: DropoutSite, _ b: BatchPointers,
                          compact: Bool = false) -> bd_row_dropout {
        let a = activations
        let probability = dropout == nil ? 0 : architecture.dropout.probability(site)
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
        let C = config.hiddenSize, K = labelCount, L = config.layerCount, E = architecture.embeddingWidth
        let T = batch.tokenCount, B = batch.sequenceCount
        try prepare(batch)
        refreshBF16WeightsIfNeeded()
        lastSequenceCount = B
        let a = activations.views, w = weights, k = compute, packed = bf16Weights

        try withBatchPointers(batch) { b in
            // Embeddings: word + position (+ token type), LayerNorm, dropout.     (T, E)
            k.embeddingLayerNormForward(sum: a.embeddingSum, normed: a.embeddingNormed, mean: a.embeddingMean,
                                        rstd: a.embeddingRstd, tokenIds: b.ids, positions: positionIds,
                                        tokenTypeIds: w.embeddings.tokenTypeTable == nil ? nil : b.types,
                                        wordTable: w.embeddings.wordTable, positionTable: w.embeddings.positionTable,
                                        tokenTypeTable: w.embeddings.tokenTypeTable, weight: w.embeddings.normWeight,
                                        bias: w.embeddings.normBias, rows: T, columns: E, eps: config.layerNormEps,
                                        dropoutAfter: rowMasks(dropout, 0, .embeddings, b))
            if let projectionWeight = w.embeddings.projectionWeight, let projectionBias = w.embeddings.projectionBias {
                // ELECTRA: the embeddings projected to the hidden width.          (T, E) -> (T, C)
                linear(out: a.hidden[0], input: a.embeddingNormed, weight: projectionWeight, packed: packed?.embeddingProjection,
                       bias: projectionBias, rows: T, inFeatures: E, outFeatures: C)
            }
            try checked(a.hidden[0], T * C, "embeddings output (forward)")

            for l in 0..<L {
                try layerForward(l, b, rows(ofLayer: l, b), dropout: dropout)
            }
            if !lastLayerIsClsOnly {
                let last = a.hidden[L]
                for s in 0..<B { (a.clsHidden + s * C).update(from: last + b.starts[s] * C, count: C) }
            }

            // Head: [dropout,] dense, activation (BERT's pooler: tanh), dropout, output layer.
            //                                                                  (B, C) -> (B, K)
            let headInput = self.headInput
            if architecture.dropout.classifierInput != nil {
                a.headInput.update(from: a.clsHidden, count: B * C)
                k.dropoutRows(a.headInput, rows: B, columns: C, dropout: rowMasks(dropout, L, .classifierInput, b, compact: true))
            }
            linear(out: a.headActivated, input: headInput, weight: w.head.denseWeight, packed: packed?.headDense,
                   bias: w.head.denseBias, rows: B, inFeatures: C, outFeatures: C)
            k.headActivationForward(architecture.headActivation, values: a.headActivated, derivative: a.headDerivative, count: B * C)
            a.headDropped.update(from: a.headActivated, count: B * C)
            k.dropoutRows(a.headDropped, rows: B, columns: C, dropout: rowMasks(dropout, L, .classifier, b, compact: true))
            linear(out: a.logits, input: a.headDropped, weight: w.head.outputWeight, packed: packed?.headOutput,
                   bias: w.head.outputBias, rows: B, inFeatures: C, outFeatures: K)
            try checked(a.logits, B * K, "classifier logits (forward)")
        }
        // The task's loss, one place for every family; a batch without targets (predict) only
        // gets its probabilities.
        guard batch.hasTargets else {
            task.probabilities(logits: a.logits, into: a.probabilities, rows: B, labelCount: K)
            return ForwardResult(lossSum: 0, correctCount: 0)
        }
        let (lossSum, correct) = task.forward(logits: a.logits, probabilities: a.probabilities, batch: batch, labelCount: K)
        return ForwardResult(lossSum: lossSum, correctCount: correct)
    }

    private var lastLayerIsClsOnly: Bool { clsOnlyLastLayer && config.layerCount >= 1 }

    /// (B, C) what the head's dense layer reads: the first tokens' states, after the input
    /// dropout where the family has one.
    private var headInput: UnsafeMutablePointer<Float> {
        architecture.dropout.classifierInput != nil ? activations.views.headInput : activations.views.clsHidden
    }

    /// (T) the rows of the position table: each token's index in its sequence, or RoBERTa's ids.
    private var positionIds: UnsafeMutablePointer<Int32> {
        architecture.positions == .index ? activations.positions : activations.positionIds
    }

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
        let packed = bf16Weights?.layers[l]
        // Self-attention projections (under --bf16 rounded to bf16 values: they are only inputs
        // of the attention products).
        if rows.clsOnly {
            // Keys and values of every token: rows C ..< 3C of the fused weight.  (T, 2C) of (T, 3C)
            linear(out: la.qkv + C, outStride: 3 * C, input: x, weight: w.qkvWeight + C * C, packed: packed?.keyValue,
                   bias: w.qkvBias + C, rows: T, inFeatures: C, outFeatures: 2 * C, roundOutput: true)
            // The [CLS] rows and their queries.                                  (B, C)
            for s in 0..<B { (a.lastInput + s * C).update(from: x + b.starts[s] * C, count: C) }
            linear(out: a.lastQuery, input: a.lastInput, weight: w.qkvWeight, packed: packed?.query, bias: w.qkvBias,
                   rows: B, inFeatures: C, outFeatures: C, roundOutput: true)
        } else {
            // One GEMM for Q, K and V.                                           (T, 3C)
            linear(out: la.qkv, input: x, weight: w.qkvWeight, packed: packed?.qkv, bias: w.qkvBias, rows: T, inFeatures: C,
                   outFeatures: 3 * C, roundOutput: true)
        }
        k.attentionForward(context: la.context, probabilities: la.probabilities, qkv: la.qkv, sequences: b.sequences,
                           hidden: C, heads: H, clsQueries: rows.clsOnly ? a.lastQuery : nil,
                           dropout: dropout.map { ($0, b.samples, l, architecture.dropout.attentionProbabilities) },
                           scratch: a.attentionScratch, scratchStride: activations.attentionScratchStride,
                           workers: activations.workers)
        try checked(la.context, R * C, "layer \(l) attention context (forward)")
        // Output projection, dropout, residual, LayerNorm.                       (R, C)
        linear(out: la.attentionResidual, input: la.context, weight: w.attentionOutputWeight, packed: packed?.attentionOutput,
               bias: w.attentionOutputBias, rows: R, inFeatures: C, outFeatures: C)
        k.residualLayerNormForward(sum: la.attentionResidual, normed: la.attentionNormed, mean: la.attentionMean,
                                   rstd: la.attentionRstd, residual: rows.input, weight: w.attentionNormWeight,
                                   bias: w.attentionNormBias, rows: R, columns: C, eps: config.layerNormEps,
                                   dropout: rowMasks(dropout, l, .attentionOutput, b, compact: rows.clsOnly))
        // Feed-forward: dense, GELU, dense, dropout, residual, LayerNorm.        (R, I) -> (R, C)
        linear(out: la.feedForwardDerivative, input: la.attentionNormed, weight: w.intermediateWeight,
               packed: packed?.intermediate, bias: w.intermediateBias, rows: R, inFeatures: C, outFeatures: I)
        k.geluForward(activated: la.feedForwardActivated, derivative: la.feedForwardDerivative, count: R * I)
        linear(out: la.feedForwardResidual, input: la.feedForwardActivated, weight: w.outputWeight, packed: packed?.output,
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
        let maxLength = architecture.positions.maxSequenceLength(positionCount: config.maxPositionEmbeddings)
        for s in 0..<B {
            let len = batch.length(of: s)
            guard len >= 1 else { throw ModelError.invalidBatch(reason: "sequence \(s) is empty") }
            guard len <= maxLength else {
                let positions = maxLength == config.maxPositionEmbeddings ? "max_position_embeddings \(maxLength)"
                    : "the \(maxLength) positions of max_position_embeddings \(config.maxPositionEmbeddings) after pad_token_id + 1"
                throw ModelError.invalidBatch(reason: "a sequence of \(len) tokens is longer than \(positions); use a smaller --max-seq-len")
            }
            longest = max(longest, len)
            probabilityOffsets.append(probabilityOffsets[s] + H * len * len)
            clsProbabilityOffsets.append(clsProbabilityOffsets[s] + H * len)
        }
        let typeCount = architecture.hasTokenTypes ? config.typeVocabSize : Int(Int32.max)   // DistilBERT ignores them
        for t in 0..<T {
            let id = batch.tokenIds[t], type = batch.tokenTypeIds[t]
            guard id >= 0 && Int(id) < config.vocabSize else {
                throw ModelError.invalidBatch(reason: "token id \(id) is outside the vocabulary of \(config.vocabSize) (tokenizer and model do not match?)")
            }
            guard type >= 0 && Int(type) < typeCount else {
                throw ModelError.invalidBatch(reason: "token type id \(type) is outside type_vocab_size \(config.typeVocabSize)")
            }
        }
        if batch.hasTargets, let problem = task.batchProblem(batch, labelCount: labelCount) {
            throw ModelError.invalidBatch(reason: problem)
        }
        growIfNeeded(ActivationCapacity(tokens: T, sequences: B, attentionFloats: probabilityOffsets[B], longestSequence: longest))
        let a = activations
        for s in 0..<B {
            for t in batch.sequenceStarts[s]..<batch.sequenceStarts[s + 1] {
                a.positions[t] = Int32(t - batch.sequenceStarts[s])
                a.tokenSequence[t] = Int32(s)
            }
        }
        if case .countingFromPadding(let pad) = architecture.positions {
            // RoBERTa: every sequence counts its tokens from pad + 1 again; a pad-id token has
            // position pad and is not counted (create_position_ids_from_input_ids).
            for s in 0..<B {
                var counted = 0
                for t in batch.sequenceStarts[s]..<batch.sequenceStarts[s + 1] {
                    if batch.tokenIds[t] == Int32(pad) {
                        a.positionIds[t] = Int32(pad)
                    } else {
                        counted += 1
                        a.positionIds[t] = Int32(pad + counted)
                    }
                }
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
    /// `gradients`. After each encoder layer (and after the head and the
    /// embeddings) it calls `parametersFinished(offset)`: every gradient at arena offset >=
    /// `offset` is final for this micro-batch — the hook that starts gradient communication.
    public func backward(_ batch: PackedBatch, dropout: DropoutContext?, lossScale: Float,
                         parametersFinished: (Int) throws -> Void = { _ in }) throws {
        let C = config.hiddenSize, K = labelCount, L = config.layerCount, E = architecture.embeddingWidth
        let T = batch.tokenCount, B = batch.sequenceCount
        precondition(B == lastSequenceCount, "backward must follow forward of the same batch")
        let a = activations.views, w = weights, g = weightGradients, k = compute, packed = bf16Weights

        try withBatchPointers(batch) { b in
            // Loss and the head's output layer.                            (B, K)
            task.backward(dLogits: a.dLogits, logits: a.logits, probabilities: a.probabilities, batch: batch, labelCount: K,
                          lossScale: lossScale)
            linearGradient(dInput: a.dHead, dWeight: g.head.outputWeight, dBias: g.head.outputBias, dOut: a.dLogits,
                           input: a.headDropped, weight: w.head.outputWeight, packed: packed?.headOutput,
                           rows: B, inFeatures: C, outFeatures: K)
            k.dropoutRows(a.dHead, rows: B, columns: C, dropout: rowMasks(dropout, L, .classifier, b, compact: true))
            // The head's activation and dense layer, [its input dropout].  (B, C)
            k.multiply(a.dHead, by: a.headDerivative, count: B * C)
            linearGradient(dInput: a.dClsHidden, dWeight: g.head.denseWeight, dBias: g.head.denseBias, dOut: a.dHead,
                           input: headInput, weight: w.head.denseWeight, packed: packed?.headDense, rows: B, inFeatures: C, outFeatures: C)
            if architecture.dropout.classifierInput != nil {
                k.dropoutRows(a.dClsHidden, rows: B, columns: C, dropout: rowMasks(dropout, L, .classifierInput, b, compact: true))
            }
            try checked(a.dClsHidden, B * C, "head input gradient (backward)")
            try parametersFinished(layout.layerStarts[L])

            if !lastLayerIsClsOnly {
                // Only the [CLS] rows of the last hidden state reach the loss.
                a.dHidden.update(repeating: 0, count: T * C)
                for s in 0..<B { (a.dHidden + b.starts[s] * C).update(from: a.dClsHidden + s * C, count: C) }
            }
            for l in stride(from: L - 1, through: 0, by: -1) {
                try layerBackward(l, b, rows(ofLayer: l, b), dropout: dropout) {
                    try parametersFinished(layout.offsets.layers[l].intermediateWeight)
                }
                try parametersFinished(layout.layerStarts[l])
            }

            // Embeddings: [projection,] dropout, LayerNorm, scatter into the tables.   (T, E)
            if let projectionWeight = w.embeddings.projectionWeight, let dProjectionWeight = g.embeddings.projectionWeight,
               let dProjectionBias = g.embeddings.projectionBias {
                linearGradient(dInput: a.dEmbeddingNormed, dWeight: dProjectionWeight, dBias: dProjectionBias, dOut: a.dHidden,
                               input: a.embeddingNormed, weight: projectionWeight, packed: packed?.embeddingProjection,
                               rows: T, inFeatures: E, outFeatures: C)
            }
            k.dropoutRows(a.dEmbeddingNormed, rows: T, columns: E, dropout: rowMasks(dropout, 0, .embeddings, b))
            k.layerNormBackward(dInput: a.dEmbeddingSum, dBranch: nil, branchDropout: rowMasks(nil, 0, .embeddings, b),
                                dWeight: g.embeddings.normWeight, dBias: g.embeddings.normBias, dOut: a.dEmbeddingNormed,
                                input: a.embeddingSum, weight: w.embeddings.normWeight,
                                mean: a.embeddingMean, rstd: a.embeddingRstd, rows: T, columns: E)
            k.embeddingBackward(dWordTable: g.embeddings.wordTable, dPositionTable: g.embeddings.positionTable,
                                dTokenTypeTable: g.embeddings.tokenTypeTable, dOut: a.dEmbeddingSum, tokenIds: b.ids,
                                positions: positionIds, tokenTypeIds: g.embeddings.tokenTypeTable == nil ? nil : b.types,
                                tokens: T, hidden: E, wordPaddingRow: architecture.wordPaddingRow,
                                positionPaddingRow: architecture.positionPaddingRow)
            try checked(a.dEmbeddingSum, T * E, "embeddings gradient (backward)")
            try parametersFinished(0)
        }
    }

    /// Backward of `layerForward(l)`: from `rows.dOutput` to a.dHidden = dL/d(hidden[l]) (T, C).
    /// `feedForwardFinished`: called once the feed-forward half's parameter gradients are final.
    private func layerBackward(_ l: Int, _ b: BatchPointers, _ rows: LayerRows, dropout: DropoutContext?,
                               feedForwardFinished: () throws -> Void) throws {
        let C = config.hiddenSize, I = config.intermediateSize, H = config.headCount
        let B = b.sequences.count, T = b.sequences.starts[B], R = rows.count
        let a = activations.views, w = weights.layers[l], g = weightGradients.layers[l], x = a.hidden[l], la = a.layers[l]
        let k = compute, packed = bf16Weights?.layers[l]
        // Output LayerNorm. a.dResidual = dL/d(feedForwardResidual); a.dTemporary = its dropout =
        // dL/d(ffn output).
        k.layerNormBackward(dInput: a.dResidual, dBranch: a.dTemporary,
                            branchDropout: rowMasks(dropout, l, .feedForwardOutput, b, compact: rows.clsOnly),
                            dWeight: g.outputNormWeight, dBias: g.outputNormBias, dOut: rows.dOutput,
                            input: la.feedForwardResidual, weight: w.outputNormWeight,
                            mean: la.outputMean, rstd: la.outputRstd, rows: R, columns: C)
        linearGradient(dInput: a.dFeedForward, dWeight: g.outputWeight, dBias: g.outputBias, dOut: a.dTemporary,
                       input: la.feedForwardActivated, weight: w.outputWeight, packed: packed?.output, rows: R, inFeatures: I, outFeatures: C)
        k.geluBackward(dInOut: a.dFeedForward, derivative: la.feedForwardDerivative, count: R * I)
        linearGradient(dInput: a.dResidual, dWeight: g.intermediateWeight, dBias: g.intermediateBias,
                       dOut: a.dFeedForward, input: la.attentionNormed, weight: w.intermediateWeight, packed: packed?.intermediate,
                       rows: R, inFeatures: C, outFeatures: I, accumulateInput: true)
        try checked(a.dResidual, R * C, "layer \(l) feed-forward input gradient (backward)")
        try feedForwardFinished()
        // a.dResidual = dL/d(attentionNormed).  Attention LayerNorm: rows.dInput = dL/d(attentionResidual)
        // (the residual path's part of dL/d(input rows)), a.dTemporary = dL/d(attention output).
        k.layerNormBackward(dInput: rows.dInput, dBranch: a.dTemporary,
                            branchDropout: rowMasks(dropout, l, .attentionOutput, b, compact: rows.clsOnly),
                            dWeight: g.attentionNormWeight, dBias: g.attentionNormBias, dOut: a.dResidual,
                            input: la.attentionResidual, weight: w.attentionNormWeight,
                            mean: la.attentionMean, rstd: la.attentionRstd, rows: R, columns: C)
        // dContext is only an input of the attention products: rounded to bf16 values under --bf16.
        linearGradient(dInput: a.dContext, dWeight: g.attentionOutputWeight, dBias: g.attentionOutputBias,
                       dOut: a.dTemporary, input: la.context, weight: w.attentionOutputWeight, packed: packed?.attentionOutput,
                       rows: R, inFeatures: C, outFeatures: C, roundInput: true)
        k.attentionBackward(dqkv: a.dQKV, dContext: a.dContext, qkv: la.qkv, probabilities: la.probabilities,
                            sequences: b.sequences, hidden: C, heads: H, clsQueries: rows.clsOnly ? a.lastQuery : nil,
                            dClsQueries: rows.clsOnly ? a.dLastQuery : nil,
                            dropout: dropout.map { ($0, b.samples, l, architecture.dropout.attentionProbabilities) },
                            scratch: a.attentionScratch, scratchStride: activations.attentionScratchStride,
                            workers: activations.workers)
        if rows.clsOnly {
            try checked(a.dLastQuery, B * C, "layer \(l) query gradient (backward)")
            // Keys and values of every token: a.dHidden = (dK dV) · W_kv.    (T, C)
            linearGradient(dInput: a.dHidden, dWeight: g.qkvWeight + C * C, dBias: g.qkvBias + C, dOut: a.dQKV + C,
                           dOutStride: 3 * C, input: x, weight: w.qkvWeight + C * C, packed: packed?.keyValue,
                           rows: T, inFeatures: C, outFeatures: 2 * C)
            // Queries of the [CLS] rows, added to their residual gradient, then into their tokens' rows.
            linearGradient(dInput: a.dLastInput, dWeight: g.qkvWeight, dBias: g.qkvBias, dOut: a.dLastQuery,
                           input: a.lastInput, weight: w.qkvWeight, packed: packed?.query, rows: B, inFeatures: C, outFeatures: C,
                           accumulateInput: true)
            for s in 0..<B {
                let row = a.dHidden + b.starts[s] * C, cls = a.dLastInput + s * C
                for c in 0..<C { row[c] += cls[c] }
            }
        } else {
            try checked(a.dQKV, T * 3 * C, "layer \(l) query/key/value gradient (backward)")
            // Residual path plus the Q, K, V projections.  a.dHidden = dL/dx.
            linearGradient(dInput: a.dHidden, dWeight: g.qkvWeight, dBias: g.qkvBias, dOut: a.dQKV, input: x,
                           weight: w.qkvWeight, packed: packed?.qkv, rows: T, inFeatures: C, outFeatures: 3 * C, accumulateInput: true)
        }
        try checked(a.dHidden, T * C, "layer \(l) input gradient (backward)")
    }
}
