import CGemm
import Foundation

// --bf16: the bf16 operands of the Linear products. The fp32 parameters stay the master copy
// (AdamW, checkpoints, the gradient sum); the products read packed bf16 copies of the weights,
// made once per update (they are a deterministic function of the fp32 parameters, so every rank's
// copies are identical too), and per-call bf16 copies of the activations in a scratch arena.

/// One flat arena of bf16 values (their bit patterns), page-aligned and zero-filled, like
/// FloatArena: committed now, or (`lazilyCommitted`) only where touched.
final class BF16Arena {
    let base: UnsafeMutablePointer<UInt16>
    let count: Int
    private let mappedBytes: Int

    init(count: Int, lazilyCommitted: Bool) {
        self.count = count
        let bytes = max(count, 1) * MemoryLayout<UInt16>.stride
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | (lazilyCommitted ? 0 : MAP_POPULATE)
        guard let raw = mmap(nil, bytes, PROT_READ | PROT_WRITE, flags, -1, 0), raw != MAP_FAILED else {
            fatalError("out of memory allocating \(bytes) bytes for bf16 copies (mmap: \(String(cString: strerror(errno))))")
        }
        mappedBytes = bytes
        base = raw.bindMemory(to: UInt16.self, capacity: max(count, 1))
    }

    deinit { munmap(base, mappedBytes) }
}

/// The packed bf16 copies of one Linear weight W (out, in), as CGemm's B operand:
///   forward         y = x Wᵀ:  B[i][o] = W[o][i]   depth in,  columns out  (strips of 16 outputs)
///   inputGradient   dx = dy W: B[o][i] = W[o][i]   depth out, columns in   (pairs of 2 outputs)
struct PackedLinear {
    let source: UnsafePointer<Float>                 // W (out, in), fp32
    let outFeatures, inFeatures: Int
    let forward: UnsafeMutablePointer<UInt16>
    let inputGradient: UnsafeMutablePointer<UInt16>?  // nil for a model that never runs backward
}

/// One encoder layer's packed weights. The [CLS]-only last layer multiplies by parts of the
/// fused (3C, C) query/key/value weight (queries of the [CLS] rows, keys and values of every
/// row): those parts have copies of their own (`query`, `keyValue`), since a part of a packed
/// matrix is not a packed matrix unless C is a multiple of 16.
struct PackedLayer {
    let qkv, attentionOutput, intermediate, output: PackedLinear
    let query, keyValue: PackedLinear?
}

/// Every Linear weight's packed copies, in one arena committed up front (every element is
/// rewritten each update). Sizes: 2 bytes x weights per layout, padded to 32 in depth and 16 in
/// columns (MiniLM ~42 MB for both layouts, BERT-base ~340 MB).
final class BF16Weights {
    let arena: BF16Arena
    let layers: [PackedLayer]
    /// The head's C x C layer (BERT's pooler) and its output layer.
    let headDense, headOutput: PackedLinear
    /// ELECTRA's embeddings_project (E -> C), when E != C.
    let embeddingProjection: PackedLinear?
    /// Every PackedLinear above (what `refresh` repacks).
    private let all: [PackedLinear]

    init(weights: ModelParameters<UnsafeMutablePointer<Float>>, config: BertConfig, labelCount K: Int, inputGradients: Bool) {
        let C = config.hiddenSize, I = config.intermediateSize, L = config.layerCount, E = config.embeddingWidth
        // Plan: (source, out, in, forward offset, input-gradient offset) in arena order.
        var planned: [(UnsafePointer<Float>, Int, Int, Int, Int)] = []
        var count = 0
        func take(_ elements: Int) -> Int {
            let offset = count
            count += (elements + 31) / 32 * 32   // 64-byte aligned
            return offset
        }
        func plan(_ source: UnsafePointer<Float>, out: Int, in inFeatures: Int) -> Int {
            let forward = take(bg_packed_b_count(inFeatures, out))
            let inputGradient = inputGradients ? take(bg_packed_b_count(out, inFeatures)) : -1
            planned.append((source, out, inFeatures, forward, inputGradient))
            return planned.count - 1
        }
        let projectionIndex = weights.embeddings.projectionWeight.map { plan($0, out: C, in: E) }
        var layerPlans: [[Int]] = []
        for l in 0..<L {
            let w = weights.layers[l]
            var indices = [plan(w.qkvWeight, out: 3 * C, in: C), plan(w.attentionOutputWeight, out: C, in: C),
                           plan(w.intermediateWeight, out: I, in: C), plan(w.outputWeight, out: C, in: I)]
            if l == L - 1 {
                indices += [plan(w.qkvWeight, out: C, in: C), plan(w.qkvWeight + C * C, out: 2 * C, in: C)]
            }
            layerPlans.append(indices)
        }
        let denseIndex = plan(weights.head.denseWeight, out: C, in: C)
        let outputIndex = plan(weights.head.outputWeight, out: K, in: C)

        arena = BF16Arena(count: count, lazilyCommitted: false)
        let packed = planned.map { [base = arena.base] (source, out, inFeatures, forward, inputGradient) in
            PackedLinear(source: source, outFeatures: out, inFeatures: inFeatures, forward: base + forward,
                         inputGradient: inputGradient < 0 ? nil : base + inputGradient)
        }
        layers = layerPlans.map { i in
            PackedLayer(qkv: packed[i[0]], attentionOutput: packed[i[1]], intermediate: packed[i[2]], output: packed[i[3]],
                        query: i.count > 4 ? packed[i[4]] : nil, keyValue: i.count > 5 ? packed[i[5]] : nil)
        }
        headDense = packed[denseIndex]
        headOutput = packed[outputIndex]
        embeddingProjection = projectionIndex.map { packed[$0] }
        all = packed
    }

    /// Repacks every copy from the current fp32 weights, split over the team: each member packs
    /// its share of every forward copy's strips (16 rows of W each) and of every input-gradient
    /// copy's depth pairs (2 rows of W each), so members read disjoint rows of W.
    func refresh(compute: Compute) {
        struct Job: TeamJob {
            let all: UnsafeBufferPointer<PackedLinear>
            func run(member: Int, of members: Int) {
                for p in all {
                    let strips = bg_strip_count(p.outFeatures)
                    let stripRange = (strips * member / members)..<(strips * (member + 1) / members)
                    if !stripRange.isEmpty {
                        bg_pack_b(p.forward, p.source, p.inFeatures, 1, p.inFeatures, p.outFeatures,
                                  0, bg_padded_depth(p.inFeatures) / 2, stripRange.lowerBound, stripRange.upperBound)
                    }
                    guard let inputGradient = p.inputGradient else { continue }
                    let pairs = bg_padded_depth(p.outFeatures) / 2
                    let pairRange = (pairs * member / members)..<(pairs * (member + 1) / members)
                    if !pairRange.isEmpty {
                        bg_pack_b(inputGradient, p.source, p.inFeatures, 0, p.outFeatures, p.inFeatures,
                                  pairRange.lowerBound, pairRange.upperBound, 0, bg_strip_count(p.inFeatures))
                    }
                }
            }
        }
        all.withUnsafeBufferPointer { compute.teamRun(members: compute.threads, Job(all: $0)) }
    }
}

/// The per-call bf16 operands of the Linear products of micro-batches up to `tokens` rows, in
/// one arena (lazily committed like the activations: pages of rows no batch uses stay free):
///   rows          A of forward (x) and input gradient (dy): (padded T, padded widest depth)
///   transposed    A of the weight gradient (dyᵀ): (padded widest out, padded T)
///   tokenPairs    B of the weight gradient (x in pairs of tokens): packed (T, widest in)
struct BF16Scratch {
    let rows, transposed, tokenPairs: UnsafeMutablePointer<UInt16>

    /// Elements of the arena for `tokens` rows, and the three offsets.
    static func plan(tokens T: Int, config: BertConfig, labelCount K: Int) -> (count: Int, offsets: [Int]) {
        let C = config.hiddenSize, I = config.intermediateSize, E = config.embeddingWidth
        let widestOut = max(3 * C, I, K), widestIn = max(C, I, E)
        let sizes = [bg_padded_rows(T) * bg_padded_depth(max(widestOut, widestIn)),
                     bg_padded_rows(widestOut) * bg_padded_depth(T),
                     bg_packed_b_count(T, widestIn)]
        var offsets: [Int] = [], count = 0
        for size in sizes {
            offsets.append(count)
            count += (size + 31) / 32 * 32
        }
        return (count, offsets)
    }
}
