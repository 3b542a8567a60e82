import CKernels
import Foundation

// Multi-head self-attention over packed sequences: each sequence attends only to its own
// tokens, so there is no padding mask and no work on padding. For sequence s (rows
// start..<start+len of the (T, 3C) qkv buffer) and head h, with d = C / H:
//   Q, K, V = columns h*d, C + h*d, 2C + h*d of qkv           (len, d) views, row stride 3C
//   P = softmax(Q Kᵀ / sqrt(d))                                 (len, len), kept for backward
//   context[:, h*d ..< (h+1)*d] = dropout(P) V                  (len, d) view, row stride C
// P of (s, h) is stored at probabilityOffset(s) + h * len * len.

/// Per-sequence geometry of a packed batch, shared by forward and backward.
struct PackedSequences {
    let starts: UnsafePointer<Int>        // (B + 1) token offsets
    let count: Int                        // B
    let probabilityOffsets: UnsafePointer<Int>  // (B + 1) offsets of each sequence's H·len² probabilities
    let clsProbabilityOffsets: UnsafePointer<Int>  // (B + 1) offsets of each sequence's H·len [CLS] probabilities

    func length(_ s: Int) -> Int { starts[s + 1] - starts[s] }
}

extension Compute {
    /// The fast attention: the fused kernel of CKernels per (sequence, head) item, items handed to
    /// team members as they become free; each member uses its own slot of `scratch`
    /// (`scratchStride` floats apart, attention_scratch_floats of the longest sequence).
    /// With `clsQueries`, only each sequence's first token ([CLS]) is a query: `clsQueries` holds
    /// one (B, C) row per sequence, `context` is (B, C) and `probabilities` holds H·len per
    /// sequence at `sequences.clsProbabilityOffsets`; keys and values still cover every token of qkv.
    func attentionForward(context: UnsafeMutablePointer<Float>, probabilities: UnsafeMutablePointer<Float>,
                          qkv: UnsafePointer<Float>, sequences: PackedSequences, hidden C: Int, heads H: Int,
                          clsQueries queries: UnsafePointer<Float>?,
                          dropout: (context: DropoutContext, samples: UnsafePointer<Int>, layer: Int, probability: Float)?,
                          scratch: UnsafeMutablePointer<Float>, scratchStride: Int, workers: Int) {
        struct Job: ItemJob {
            let kernels: bd_kernel_table
            let context, probabilities: UnsafeMutablePointer<Float>, qkv: UnsafePointer<Float>, queries: UnsafePointer<Float>?
            let sequences: PackedSequences, C, H: Int
            let dropout: (context: DropoutContext, samples: UnsafePointer<Int>, layer: Int, probability: Float)?
            let scratch: UnsafeMutablePointer<Float>, scratchStride: Int, roundBF16: Int32
            func run(item: Int, worker: Int) {
                let head = AttentionHead(item: item, sequences: sequences, qkv: qkv, hidden: C, heads: H, dropout: dropout)
                let (d, s, h, start, len, k, v) = (head.d, head.s, head.h, head.start, head.len, head.k, head.v)
                let (key, probability, scale) = (head.dropoutKey, head.dropoutProbability, head.scale)
                if let queries {
                    kernels.attention_forward(context + s * C + h * d, C,
                                              probabilities + sequences.clsProbabilityOffsets[s] + h * len,
                                              queries + s * C + h * d, C, k, v, 3 * C, len, d, 1, scale,
                                              key, h * len * len, probability, roundBF16, scratch + worker * scratchStride)
                } else {
                    kernels.attention_forward(context + start * C + h * d, C,
                                              probabilities + sequences.probabilityOffsets[s] + h * len * len,
                                              qkv + start * 3 * C + h * d, 3 * C, k, v, 3 * C, len, d, len, scale,
                                              key, h * len * len, probability, roundBF16, scratch + worker * scratchStride)
                }
            }
        }
        parallelItems(sequences.count * H, maximumWorkers: workers,
                      Job(kernels: kernels, context: context, probabilities: probabilities, qkv: qkv, queries: queries,
                          sequences: sequences, C: C, H: H, dropout: dropout, scratch: scratch, scratchStride: scratchStride,
                          roundBF16: roundsAttentionToBF16))
    }

    /// Gradients of `attentionForward`: dqkv (T, 3C) from dContext — or with `clsQueries`,
    /// dClsQueries (B, C) from dContext (B, C), and the key/value columns of dqkv for every token.
    func attentionBackward(dqkv: UnsafeMutablePointer<Float>, dContext: UnsafePointer<Float>,
                           qkv: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
                           sequences: PackedSequences, hidden C: Int, heads H: Int,
                           clsQueries queries: UnsafePointer<Float>?, dClsQueries dQueries: UnsafeMutablePointer<Float>?,
                           dropout: (context: DropoutContext, samples: UnsafePointer<Int>, layer: Int, probability: Float)?,
                           scratch: UnsafeMutablePointer<Float>, scratchStride: Int, workers: Int) {
        struct Job: ItemJob {
            let kernels: bd_kernel_table
            let dqkv: UnsafeMutablePointer<Float>, dContext, qkv, probabilities: UnsafePointer<Float>
            let queries: UnsafePointer<Float>?, dQueries: UnsafeMutablePointer<Float>?
            let sequences: PackedSequences, C, H: Int
            let dropout: (context: DropoutContext, samples: UnsafePointer<Int>, layer: Int, probability: Float)?
            let scratch: UnsafeMutablePointer<Float>, scratchStride: Int, roundBF16: Int32
            func run(item: Int, worker: Int) {
                let head = AttentionHead(item: item, sequences: sequences, qkv: qkv, hidden: C, heads: H, dropout: dropout)
                let (d, s, h, start, len, k, v) = (head.d, head.s, head.h, head.start, head.len, head.k, head.v)
                let (key, probability, scale) = (head.dropoutKey, head.dropoutProbability, head.scale)
                let dk = dqkv + start * 3 * C + C + h * d, dv = dk + C
                if let queries, let dQueries {
                    kernels.attention_backward(dQueries + s * C + h * d, C, dk, dv, 3 * C, dContext + s * C + h * d, C,
                                               probabilities + sequences.clsProbabilityOffsets[s] + h * len,
                                               queries + s * C + h * d, C, k, v, 3 * C, len, d, 1, scale,
                                               key, h * len * len, probability, roundBF16, scratch + worker * scratchStride)
                } else {
                    kernels.attention_backward(dqkv + start * 3 * C + h * d, 3 * C, dk, dv, 3 * C, dContext + start * C + h * d, C,
                                               probabilities + sequences.probabilityOffsets[s] + h * len * len,
                                               qkv + start * 3 * C + h * d, 3 * C, k, v, 3 * C, len, d, len, scale,
                                               key, h * len * len, probability, roundBF16, scratch + worker * scratchStride)
                }
            }
        }
        parallelItems(sequences.count * H, maximumWorkers: workers,
                      Job(kernels: kernels, dqkv: dqkv, dContext: dContext, qkv: qkv, probabilities: probabilities,
                          queries: queries, dQueries: dQueries, sequences: sequences, C: C, H: H, dropout: dropout,
                          scratch: scratch, scratchStride: scratchStride, roundBF16: roundsAttentionToBF16))
    }

    /// What one work item of the attention kernels (one head of one sequence) reads, shared by
    /// forward and backward: the sequence's rows, its K and V columns of qkv (T, 3C), the dropout key.
    struct AttentionHead {
        let d, s, h, start, len: Int
        let k, v: UnsafePointer<Float>
        let dropoutKey: UInt64, dropoutProbability, scale: Float
        init(item: Int, sequences: PackedSequences, qkv: UnsafePointer<Float>, hidden C: Int, heads H: Int,
             dropout: (context: DropoutContext, samples: UnsafePointer<Int>, layer: Int, probability: Float)?) {
            d = C / H
            s = item / H
            h = item % H
            start = sequences.starts[s]
            len = sequences.length(s)
            k = qkv + start * 3 * C + C + h * d
            v = k + C
            let sample = s
            dropoutKey = dropout.map { $0.context.key(sample: $0.samples[sample], layer: $0.layer, site: .attentionProbabilities) } ?? 0
            dropoutProbability = dropout?.probability ?? 0
            scale = 1 / Float(d).squareRoot()
        }
    }

    /// --bf16: the attention products get bf16 inputs by rounding them to bf16-representable
    /// fp32 values (Q, K, V and dContext by their producers, P and dS inside the kernel) and then
    /// multiplying in fp32. A product of two bf16 values (8-bit significands) is exact in fp32
    /// (24 bits), so this is exactly bf16 inputs with fp32 accumulation: autocast's semantics
    /// (and the `emulated.*` fixtures'), with the fp32 kernel's order of the sums.
    var roundsAttentionToBF16: Int32 { precision == .bf16 ? 1 : 0 }
}

/// The naive reference of `attentionForward` (all queries): two OpenBLAS products and a scalar
/// softmax per (sequence, head); `scratch` holds 2·maxLen² floats.
func attentionForwardReference(context: UnsafeMutablePointer<Float>, probabilities: UnsafeMutablePointer<Float>,
                      qkv: UnsafePointer<Float>, sequences: PackedSequences, hidden C: Int, heads H: Int,
                      dropout: (context: DropoutContext, samples: UnsafePointer<Int>, layer: Int, probability: Float)?,
                      scratch: UnsafeMutablePointer<Float>, scratchStride: Int) {
    let d = C / H
    let scale = 1 / Float(d).squareRoot()
    let items = sequences.count * H
    do {
        let dropped = scratch
        for item in 0..<items {
            let s = item / H, h = item % H
            let start = sequences.starts[s], len = sequences.length(s)
            let q = qkv + start * 3 * C + h * d, k = q + C, v = q + 2 * C
            let p = probabilities + sequences.probabilityOffsets[s] + h * len * len
            sgemm(transA: false, transB: true, m: len, n: len, k: d, alpha: scale,
                  a: q, lda: 3 * C, b: k, ldb: 3 * C, beta: 0, c: p, ldc: len)
            softmaxRows(p, rows: len, columns: len)
            var weights = UnsafePointer(p)
            if let dropout, dropout.probability > 0 {
                dropped.update(from: p, count: len * len)
                let key = dropout.context.key(sample: dropout.samples[s], layer: dropout.layer, site: .attentionProbabilities)
                applyDropout(dropped, count: len * len, key: key, firstElement: h * len * len, probability: dropout.probability)
                weights = UnsafePointer(dropped)
            }
            sgemm(transA: false, transB: false, m: len, n: d, k: len,
                  a: weights, lda: len, b: v, ldb: 3 * C, beta: 0, c: context + start * C + h * d, ldc: C)
        }
    }
}

/// The naive reference of `attentionBackward`: writes dqkv (T, 3C) from dContext (T, C):
///   dPd = dCtx Vᵀ; dV = Pdᵀ dCtx; dP = dropout(dPd); dS = P ⊙ (dP - rowsum(dP ⊙ P)) / sqrt(d);
///   dQ = dS K; dK = dSᵀ Q.
func attentionBackwardReference(dqkv: UnsafeMutablePointer<Float>, dContext: UnsafePointer<Float>,
                                qkv: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
                                sequences: PackedSequences, hidden C: Int, heads H: Int,
                                dropout: (context: DropoutContext, samples: UnsafePointer<Int>, layer: Int, probability: Float)?,
                                scratch: UnsafeMutablePointer<Float>, scratchStride: Int) {
    let d = C / H
    let scale = 1 / Float(d).squareRoot()
    let items = sequences.count * H
    do {
        let dScores = scratch
        let dropped = dScores + scratchStride / 2
        for item in 0..<items {
            let s = item / H, h = item % H
            let start = sequences.starts[s], len = sequences.length(s)
            let q = qkv + start * 3 * C + h * d, k = q + C, v = q + 2 * C
            let dq = dqkv + start * 3 * C + h * d, dk = dq + C, dv = dq + 2 * C
            let dCtx = dContext + start * C + h * d
            let p = probabilities + sequences.probabilityOffsets[s] + h * len * len
            var key: UInt64 = 0
            var weights = p
            let dropping = dropout.map { $0.probability > 0 } ?? false
            if let dropout, dropping {
                key = dropout.context.key(sample: dropout.samples[s], layer: dropout.layer, site: .attentionProbabilities)
                dropped.update(from: p, count: len * len)
                applyDropout(dropped, count: len * len, key: key, firstElement: h * len * len, probability: dropout.probability)
                weights = UnsafePointer(dropped)
            }
            // dV = Pdᵀ dCtx   (len, d)
            sgemm(transA: true, transB: false, m: len, n: d, k: len,
                  a: weights, lda: len, b: dCtx, ldb: C, beta: 0, c: dv, ldc: 3 * C)
            // dPd = dCtx Vᵀ   (len, len)
            sgemm(transA: false, transB: true, m: len, n: len, k: d,
                  a: dCtx, lda: C, b: v, ldb: 3 * C, beta: 0, c: dScores, ldc: len)
            if let dropout, dropping {
                applyDropout(dScores, count: len * len, key: key, firstElement: h * len * len, probability: dropout.probability)
            }
            // Softmax backward, row by row, folding in the 1/sqrt(d) of the scores.
            for i in 0..<len {
                let pRow = p + i * len, gRow = dScores + i * len
                var dot: Float = 0
                for j in 0..<len { dot += pRow[j] * gRow[j] }
                for j in 0..<len { gRow[j] = pRow[j] * (gRow[j] - dot) * scale }
            }
            // dQ = dS K; dK = dSᵀ Q   (len, d)
            sgemm(transA: false, transB: false, m: len, n: d, k: len,
                  a: dScores, lda: len, b: k, ldb: 3 * C, beta: 0, c: dq, ldc: 3 * C)
            sgemm(transA: true, transB: false, m: len, n: d, k: len,
                  a: dScores, lda: len, b: q, ldb: 3 * C, beta: 0, c: dk, ldc: 3 * C)
        }
    }
}

/// Row-wise softmax in place, subtracting the row maximum first.
@inline(__always)
func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, columns n: Int) {
    for r in 0..<rows {
        let row = x + r * n
        var maxValue = -Float.infinity
        for j in 0..<n where row[j] > maxValue { maxValue = row[j] }
        var sum: Float = 0
        for j in 0..<n { let e = expf(row[j] - maxValue); row[j] = e; sum += e }
        let inv = 1 / sum
        for j in 0..<n { row[j] *= inv }
    }
}
