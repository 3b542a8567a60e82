import CKernels

/// How large the activation buffers are: up to `tokens` packed tokens (T), `sequences`
/// sequences (B), `attentionFloats` attention probabilities per layer (H·Σ len²) and sequences
/// of up to `longestSequence` tokens.
struct ActivationCapacity: Equatable {
    var tokens = 0, sequences = 0, attentionFloats = 0, longestSequence = 0

    func covers(_ other: ActivationCapacity) -> Bool {
        tokens >= other.tokens && sequences >= other.sequences && attentionFloats >= other.attentionFloats
            && longestSequence >= other.longestSequence
    }

    func union(_ other: ActivationCapacity) -> ActivationCapacity {
        ActivationCapacity(tokens: max(tokens, other.tokens), sequences: max(sequences, other.sequences),
                           attentionFloats: max(attentionFloats, other.attentionFloats),
                           longestSequence: max(longestSequence, other.longestSequence))
    }
}

/// One encoder layer's activations. Forward keeps what backward needs. Declared once: the
/// planning `init` below gives each its size (T rows; the [CLS]-only last layer uses B of them,
/// see `Activations.lastInput`), `map` turns offsets into pointers.
struct LayerActivations<Slot> {
    var qkv: Slot                        // (T, 3C)
    var probabilities: Slot              // (H·Σ len²) softmax before dropout
    var context: Slot                    // (T, C)
    var attentionResidual: Slot          // (T, C) x + dropout(context·Woᵀ + bo)
    var attentionMean, attentionRstd: Slot   // (T)
    var attentionNormed: Slot            // (T, C) LayerNorm(attentionResidual)
    /// (T, I) the feed-forward pre-activation x, replaced in forward by GELU'(x): backward
    /// needs only the derivative.
    var feedForwardDerivative: Slot
    var feedForwardActivated: Slot       // (T, I) after GELU
    var feedForwardResidual: Slot        // (T, C) attentionNormed + dropout(ffn out)
    var outputMean, outputRstd: Slot     // (T)

    func map<T>(_ f: (Slot) -> T) -> LayerActivations<T> {
        LayerActivations<T>(qkv: f(qkv), probabilities: f(probabilities), context: f(context),
                            attentionResidual: f(attentionResidual), attentionMean: f(attentionMean),
                            attentionRstd: f(attentionRstd), attentionNormed: f(attentionNormed),
                            feedForwardDerivative: f(feedForwardDerivative), feedForwardActivated: f(feedForwardActivated),
                            feedForwardResidual: f(feedForwardResidual), outputMean: f(outputMean), outputRstd: f(outputRstd))
    }
}

extension LayerActivations<Int> {
    init(_ p: inout ArenaPlanner, config: BertConfig, _ capacity: ActivationCapacity) {
        let T = capacity.tokens, C = config.hiddenSize, I = config.intermediateSize
        qkv = p.take(T * 3 * C)
        probabilities = p.take(capacity.attentionFloats)
        context = p.take(T * C)
        attentionResidual = p.take(T * C)
        attentionMean = p.take(T)
        attentionRstd = p.take(T)
        attentionNormed = p.take(T * C)
        feedForwardDerivative = p.take(T * I)
        feedForwardActivated = p.take(T * I)
        feedForwardResidual = p.take(T * C)
        outputMean = p.take(T)
        outputRstd = p.take(T)
    }
}

/// Every activation buffer of a micro-batch, declared once like LayerActivations.
struct Activations<Slot> {
    var embeddingSum: Slot                         // (T, E) before LayerNorm
    var embeddingMean, embeddingRstd: Slot         // (T)
    var hidden: [Slot]                             // L + 1 of (T, C): embeddings out, layer outputs
    /// (T, E) after the embeddings' LayerNorm and dropout: hidden[0], or with a projection
    /// (ELECTRA, E != C) its input.
    var embeddingNormed: Slot
    var layers: [LayerActivations<Slot>]
    /// The last layer when only [CLS] rows are computed: its layer buffers hold B compact rows
    /// (one per sequence) except qkv, whose key and value columns cover all T tokens.
    var lastInput, lastQuery: Slot                 // (B, C) [CLS] rows of its input; their queries
    /// The head: the first token's state, after the input dropout (ELECTRA, RoBERTa), after
    /// dense and activation, the activation's derivative, after dropout.   (B, C) each
    var clsHidden, headInput, headActivated, headDerivative, headDropped: Slot
    var logits, probabilities: Slot                // (B, K)
    // Backward scratch.
    var dHidden, dResidual, dTemporary, dContext: Slot   // (T, C)
    /// (T, E): the gradients at the embeddings' dropout output and LayerNorm input; dHidden and
    /// dResidual unless there is a projection.
    var dEmbeddingNormed, dEmbeddingSum: Slot
    var dFeedForward: Slot                         // (T, I)
    var dQKV: Slot                                 // (T, 3C)
    var dLastQuery, dLastInput: Slot               // (B, C)
    var dClsHidden, dHead: Slot                    // (B, C)
    var dLogits: Slot                              // (B, K)
    /// Per-thread attention scratch: `workers` slots of `attentionScratchStride` floats.
    var attentionScratch: Slot

    func map<T>(_ f: (Slot) -> T) -> Activations<T> {
        Activations<T>(
            embeddingSum: f(embeddingSum), embeddingMean: f(embeddingMean), embeddingRstd: f(embeddingRstd),
            hidden: hidden.map(f), embeddingNormed: f(embeddingNormed), layers: layers.map { $0.map(f) },
            lastInput: f(lastInput), lastQuery: f(lastQuery),
            clsHidden: f(clsHidden), headInput: f(headInput), headActivated: f(headActivated), headDerivative: f(headDerivative),
            headDropped: f(headDropped), logits: f(logits), probabilities: f(probabilities),
            dHidden: f(dHidden), dResidual: f(dResidual), dTemporary: f(dTemporary), dContext: f(dContext),
            dEmbeddingNormed: f(dEmbeddingNormed), dEmbeddingSum: f(dEmbeddingSum),
            dFeedForward: f(dFeedForward), dQKV: f(dQKV), dLastQuery: f(dLastQuery), dLastInput: f(dLastInput),
            dClsHidden: f(dClsHidden), dHead: f(dHead), dLogits: f(dLogits), attentionScratch: f(attentionScratch))
    }
}

extension Activations<Int> {
    init(_ p: inout ArenaPlanner, config: BertConfig, labelCount K: Int, _ capacity: ActivationCapacity, scratchFloats: Int) {
        let T = capacity.tokens, B = capacity.sequences, C = config.hiddenSize, I = config.intermediateSize
        let E = config.embeddingWidth, projected = config.architecture.hasEmbeddingProjection
        embeddingSum = p.take(T * E)
        embeddingMean = p.take(T)
        embeddingRstd = p.take(T)
        hidden = (0...config.layerCount).map { _ in p.take(T * C) }
        embeddingNormed = projected ? p.take(T * E) : hidden[0]
        layers = (0..<config.layerCount).map { _ in LayerActivations(&p, config: config, capacity) }
        lastInput = p.take(B * C)
        lastQuery = p.take(B * C)
        clsHidden = p.take(B * C)
        headInput = p.take(B * C)
        headActivated = p.take(B * C)
        headDerivative = p.take(B * C)
        headDropped = p.take(B * C)
        logits = p.take(B * K)
        probabilities = p.take(B * K)
        dHidden = p.take(T * C)
        dResidual = p.take(T * C)
        dTemporary = p.take(T * C)
        dContext = p.take(T * C)
        dEmbeddingNormed = projected ? p.take(T * E) : dHidden
        dEmbeddingSum = projected ? p.take(T * E) : dResidual
        dFeedForward = p.take(T * I)
        dQKV = p.take(T * 3 * C)
        dLastQuery = p.take(B * C)
        dLastInput = p.take(B * C)
        dClsHidden = p.take(B * C)
        dHead = p.take(B * C)
        dLogits = p.take(B * K)
        attentionScratch = p.take(scratchFloats)
    }
}

/// The activations of micro-batches up to `capacity`, for `workers` kernel threads: the float
/// buffers in one arena (`views`), the per-token and per-sequence indices in small buffers of
/// their own. The arena's pages are committed only when touched (FloatArena), so the capacity
/// for the longest possible micro-batch costs memory only for the rows real batches use.
final class ActivationBuffers {
    let capacity: ActivationCapacity
    let workers: Int
    let arena: FloatArena
    let views: Activations<UnsafeMutablePointer<Float>>
    /// Floats between the attention scratch slots of two workers.
    let attentionScratchStride: Int

    // Per-token and per-sequence indices (not floats).
    /// (T) each token's index in its sequence (what dropout masks are keyed by), and the
    /// sequence it belongs to.
    let positions, tokenSequence: UnsafeMutablePointer<Int32>
    /// (T) each token's position id, the row of the position table, where it is not its index
    /// (RoBERTa's positions; otherwise `positions` is used).
    let positionIds: UnsafeMutablePointer<Int32>
    /// (B) 0, 1, ..., B-1 and zeros: the sequence and position of compact [CLS] rows.
    let clsSequence, clsPosition: UnsafeMutablePointer<Int32>
    /// (B) dropout keys of one (layer, site), refilled before each use.
    let dropoutKeys: UnsafeMutablePointer<UInt64>
    /// --bf16: the per-call bf16 operands of the Linear products (nil in fp32).
    let bf16Scratch: BF16Scratch?
    private let bf16Arena: BF16Arena?

    init(config: BertConfig, labelCount: Int, capacity: ActivationCapacity, compute: Compute) {
        self.capacity = capacity
        workers = compute.threads
        let perWorker = compute.kernels.attention_scratch_floats(max(capacity.longestSequence, 1), max(config.headSize, 1))
        attentionScratchStride = (perWorker + 15) / 16 * 16
        var planner = ArenaPlanner()
        let offsets = Activations(&planner, config: config, labelCount: labelCount, capacity,
                                  scratchFloats: workers * attentionScratchStride)
        arena = FloatArena(count: planner.count, lazilyCommitted: true)
        views = offsets.map { [base = arena.base] in base + $0 }

        let T = max(capacity.tokens, 1), B = max(capacity.sequences, 1)
        positions = .allocate(capacity: T)
        positionIds = .allocate(capacity: T)
        tokenSequence = .allocate(capacity: T)
        clsSequence = .allocate(capacity: B)
        clsPosition = .allocate(capacity: B)
        dropoutKeys = .allocate(capacity: B)
        for s in 0..<capacity.sequences {
            clsSequence[s] = Int32(s)
            clsPosition[s] = 0
        }
        if compute.precision == .bf16 {
            let (count, offsets) = BF16Scratch.plan(tokens: T, config: config, labelCount: labelCount)
            let arena = BF16Arena(count: count, lazilyCommitted: true)
            bf16Arena = arena
            bf16Scratch = BF16Scratch(rows: arena.base + offsets[0], transposed: arena.base + offsets[1],
                                      tokenPairs: arena.base + offsets[2])
        } else {
            bf16Arena = nil
            bf16Scratch = nil
        }
    }

    deinit {
        positions.deallocate()
        positionIds.deallocate()
        tokenSequence.deallocate()
        clsSequence.deallocate()
        clsPosition.deallocate()
        dropoutKeys.deallocate()
    }
}
