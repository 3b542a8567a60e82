import CKernels

/// Named views into one activation arena, sized for `tokens` packed tokens (T), `sequences`
/// sequences (B), `attentionFloats` attention probabilities per layer (H·Σ len²) and sequences
/// of up to `longestSequence` tokens, for the kernel threads of `compute`.
/// Forward keeps what backward needs; the d* buffers are backward's scratch.
/// The arena's pages are committed only when touched (FloatArena), so the capacity for the
/// longest possible micro-batch costs memory only for the rows real batches use.
final class ActivationBuffers {
    let tokens: Int, sequences: Int, attentionFloats: Int, longestSequence: Int, workers: Int
    let arena: FloatArena

    struct Layer {
        let qkv: UnsafeMutablePointer<Float>                   // (T, 3C)
        let probabilities: UnsafeMutablePointer<Float>         // (H·Σ len²) softmax before dropout
        let context: UnsafeMutablePointer<Float>               // (T, C)
        let attentionResidual: UnsafeMutablePointer<Float>     // (T, C) x + dropout(context·Woᵀ + bo)
        let attentionMean, attentionRstd: UnsafeMutablePointer<Float>   // (T)
        let attentionNormed: UnsafeMutablePointer<Float>       // (T, C) LayerNorm(attentionResidual)
        /// (T, I) the feed-forward pre-activation x, replaced in forward by GELU'(x): backward
        /// needs only the derivative.
        let feedForwardDerivative: UnsafeMutablePointer<Float>
        let feedForwardActivated: UnsafeMutablePointer<Float>  // (T, I) after GELU
        let feedForwardResidual: UnsafeMutablePointer<Float>   // (T, C) attentionNormed + dropout(ffn out)
        let outputMean, outputRstd: UnsafeMutablePointer<Float>         // (T)
    }

    let embeddingSum: UnsafeMutablePointer<Float>              // (T, C) before LayerNorm
    let embeddingMean, embeddingRstd: UnsafeMutablePointer<Float>   // (T)
    let hidden: [UnsafeMutablePointer<Float>]                  // L + 1 of (T, C): embeddings out, layer outputs
    let layers: [Layer]
    /// The last layer when only [CLS] rows are computed: its Layer buffers hold B compact rows
    /// (one per sequence) except qkv, whose key and value columns cover all T tokens.
    let lastInput, lastQuery: UnsafeMutablePointer<Float>      // (B, C) [CLS] rows of its input; their queries
    let clsHidden, pooled, pooledDropped: UnsafeMutablePointer<Float>   // (B, C)
    let logits, probabilities: UnsafeMutablePointer<Float>     // (B, K)
    // Backward scratch.
    let dHidden, dResidual, dTemporary, dContext: UnsafeMutablePointer<Float>  // (T, C)
    let dFeedForward: UnsafeMutablePointer<Float>              // (T, I)
    let dQKV: UnsafeMutablePointer<Float>                      // (T, 3C)
    let dLastQuery, dLastInput: UnsafeMutablePointer<Float>    // (B, C)
    let dClsHidden, dPooled: UnsafeMutablePointer<Float>       // (B, C)
    let dLogits: UnsafeMutablePointer<Float>                   // (B, K)
    /// Per-thread attention scratch: `workers` slots of `attentionScratchStride` floats.
    let attentionScratch: UnsafeMutablePointer<Float>
    let attentionScratchStride: Int

    // Per-token and per-sequence indices (not floats): their own small buffers.
    /// (T) each token's position in its sequence, and the sequence it belongs to.
    let positions, tokenSequence: UnsafeMutablePointer<Int32>
    /// (B) 0, 1, ..., B-1 and zeros: the sequence and position of compact [CLS] rows.
    let clsSequence, clsPosition: UnsafeMutablePointer<Int32>
    /// (B) dropout keys of one (layer, site), refilled before each use.
    let dropoutKeys: UnsafeMutablePointer<UInt64>

    init(config: BertConfig, labelCount K: Int, tokens T: Int, sequences B: Int, attentionFloats A: Int,
         longestSequence: Int, compute: Compute) {
        self.tokens = T
        self.sequences = B
        self.attentionFloats = A
        self.longestSequence = longestSequence
        self.workers = compute.threads
        let C = config.hiddenSize, I = config.intermediateSize, L = config.layerCount
        let rounded = { (n: Int) in (n + 15) / 16 * 16 }
        // First pass counts, second pass hands out pointers: one description of the layout.
        var sizes: [Int] = []
        func take(_ n: Int) -> Int { sizes.append(rounded(n)); return sizes.count - 1 }
        let scratchStride = rounded(compute.kernels.attention_scratch_floats(max(longestSequence, 1), max(config.headSize, 1)))
        var ids: [Int] = []
        ids += [take(T * C), take(T), take(T)]
        for _ in 0...L { ids.append(take(T * C)) }
        for _ in 0..<L {
            ids += [take(3 * T * C), take(A), take(T * C), take(T * C), take(T), take(T), take(T * C),
                    take(T * I), take(T * I), take(T * C), take(T), take(T)]
        }
        ids += [take(B * C), take(B * C)]
        ids += [take(B * C), take(B * C), take(B * C), take(B * K), take(B * K)]
        ids += [take(T * C), take(T * C), take(T * C), take(T * C), take(T * I), take(3 * T * C),
                take(B * C), take(B * C), take(B * C), take(B * C), take(B * K)]
        ids.append(take(self.workers * scratchStride))
        arena = FloatArena(count: sizes.reduce(0, +), lazilyCommitted: true)
        var offsets: [Int] = []
        var running = 0
        for size in sizes { offsets.append(running); running += size }
        var next = 0
        let base = arena.base
        func pointer() -> UnsafeMutablePointer<Float> { defer { next += 1 }; return base + offsets[ids[next]] }
        embeddingSum = pointer(); embeddingMean = pointer(); embeddingRstd = pointer()
        hidden = (0...L).map { _ in pointer() }
        layers = (0..<L).map { _ in
            Layer(qkv: pointer(), probabilities: pointer(), context: pointer(), attentionResidual: pointer(),
                  attentionMean: pointer(), attentionRstd: pointer(), attentionNormed: pointer(),
                  feedForwardDerivative: pointer(), feedForwardActivated: pointer(), feedForwardResidual: pointer(),
                  outputMean: pointer(), outputRstd: pointer())
        }
        lastInput = pointer(); lastQuery = pointer()
        clsHidden = pointer(); pooled = pointer(); pooledDropped = pointer(); logits = pointer(); probabilities = pointer()
        dHidden = pointer(); dResidual = pointer(); dTemporary = pointer(); dContext = pointer()
        dFeedForward = pointer(); dQKV = pointer(); dLastQuery = pointer(); dLastInput = pointer()
        dClsHidden = pointer(); dPooled = pointer(); dLogits = pointer()
        attentionScratch = pointer()
        attentionScratchStride = scratchStride

        positions = .allocate(capacity: max(T, 1))
        tokenSequence = .allocate(capacity: max(T, 1))
        clsSequence = .allocate(capacity: max(B, 1))
        clsPosition = .allocate(capacity: max(B, 1))
        dropoutKeys = .allocate(capacity: max(B, 1))
        for s in 0..<B {
            clsSequence[s] = Int32(s)
            clsPosition[s] = 0
        }
    }

    deinit {
        positions.deallocate()
        tokenSequence.deallocate()
        clsSequence.deallocate()
        clsPosition.deallocate()
        dropoutKeys.deallocate()
    }
}
