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

    func length(_ s: Int) -> Int { starts[s + 1] - starts[s] }
}

/// Work items are (sequence, head) pairs, spread over threads; each thread owns a scratch of
/// 2·maxLen² floats (`scratch` holds kernelThreadCount of them, `scratchStride` apart).
func attentionForward(context: UnsafeMutablePointer<Float>, probabilities: UnsafeMutablePointer<Float>,
                      qkv: UnsafePointer<Float>, sequences: PackedSequences, hidden C: Int, heads H: Int,
                      dropout: (context: DropoutContext, samples: UnsafePointer<Int>, layer: Int, probability: Float)?,
                      scratch: UnsafeMutablePointer<Float>, scratchStride: Int) {
    let d = C / H
    let scale = 1 / Float(d).squareRoot()
    let items = sequences.count * H
    parallelChunks(items, minimumChunk: 4) { worker, range in
        let dropped = scratch + worker * scratchStride
        for item in range {
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

/// Writes dqkv (T, 3C) from dContext (T, C):
///   dPd = dCtx Vᵀ; dV = Pdᵀ dCtx; dP = dropout(dPd); dS = P ⊙ (dP - rowsum(dP ⊙ P)) / sqrt(d);
///   dQ = dS K; dK = dSᵀ Q.
func attentionBackward(dqkv: UnsafeMutablePointer<Float>, dContext: UnsafePointer<Float>,
                       qkv: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
                       sequences: PackedSequences, hidden C: Int, heads H: Int,
                       dropout: (context: DropoutContext, samples: UnsafePointer<Int>, layer: Int, probability: Float)?,
                       scratch: UnsafeMutablePointer<Float>, scratchStride: Int) {
    let d = C / H
    let scale = 1 / Float(d).squareRoot()
    let items = sequences.count * H
    parallelChunks(items, minimumChunk: 4) { worker, range in
        let dScores = scratch + worker * scratchStride
        let dropped = dScores + scratchStride / 2
        for item in range {
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
