import CBLAS
import Foundation

// Layer kernels over raw row-major buffers, forward next to backward (llm.c style).
// Conventions: T = tokens of a packed micro-batch, C = hidden size, I = intermediate size,
// B = sequences. Forward functions write their outputs (=); backward functions write the
// gradient of their input (=) and ACCUMULATE (+=) into parameter gradients, so several
// micro-batches can add up into one gradient arena.

// MARK: - Matrix multiply (Linear)

/// C (m, n) = alpha * op(A) op(B) + beta * C, row-major, through OpenBLAS.
@inline(__always)
func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
           a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
           beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
    if m == 0 || n == 0 { return }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// out (rows, outFeatures) = input (rows, inFeatures) · weightᵀ + bias, as torch.nn.Linear with
/// weight (outFeatures, inFeatures).
func linearForward(out: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                   weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                   rows: Int, inFeatures: Int, outFeatures: Int) {
    // Start from the bias so the GEMM adds into it (beta = 1): no separate bias pass.
    for r in 0..<rows { (out + r * outFeatures).update(from: bias, count: outFeatures) }
    sgemm(transA: false, transB: true, m: rows, n: outFeatures, k: inFeatures,
          a: input, lda: inFeatures, b: weight, ldb: inFeatures, beta: 1, c: out, ldc: outFeatures)
}

/// dInput (rows, in) = dOut · weight (or += when `accumulateInput`); dWeight += dOutᵀ · input;
/// dBias += column sums of dOut.
func linearBackward(dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>,
                    dBias: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                    input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                    rows: Int, inFeatures: Int, outFeatures: Int, accumulateInput: Bool = false) {
    if let dInput {
        sgemm(transA: false, transB: false, m: rows, n: inFeatures, k: outFeatures,
              a: dOut, lda: outFeatures, b: weight, ldb: inFeatures,
              beta: accumulateInput ? 1 : 0, c: dInput, ldc: inFeatures)
    }
    sgemm(transA: true, transB: false, m: outFeatures, n: inFeatures, k: rows,
          a: dOut, lda: outFeatures, b: input, ldb: inFeatures, beta: 1, c: dWeight, ldc: inFeatures)
    addColumnSums(of: dOut, rows: rows, columns: outFeatures, into: dBias)
}

/// sums (columns) += Σ_rows matrix (rows, columns).
func addColumnSums(of matrix: UnsafePointer<Float>, rows: Int, columns: Int, into sums: UnsafeMutablePointer<Float>) {
    for r in 0..<rows {
        let row = matrix + r * columns
        for c in 0..<columns { sums[c] += row[c] }
    }
}

// MARK: - Embeddings

/// out[t] = word[tokenIds[t]] + position[positions[t]] + tokenType[tokenTypeIds[t]]   (T, C)
func embeddingForward(out: UnsafeMutablePointer<Float>, tokenIds: UnsafePointer<Int32>,
                      positions: UnsafePointer<Int32>, tokenTypeIds: UnsafePointer<Int32>,
                      wordTable: UnsafePointer<Float>, positionTable: UnsafePointer<Float>,
                      tokenTypeTable: UnsafePointer<Float>, tokens: Int, hidden C: Int) {
    for t in 0..<tokens {
        let o = out + t * C
        let w = wordTable + Int(tokenIds[t]) * C
        let p = positionTable + Int(positions[t]) * C
        let y = tokenTypeTable + Int(tokenTypeIds[t]) * C
        for c in 0..<C { o[c] = w[c] + p[c] + y[c] }
    }
}

/// Scatter-adds dOut rows into the rows of the three tables they came from.
func embeddingBackward(dWordTable: UnsafeMutablePointer<Float>, dPositionTable: UnsafeMutablePointer<Float>,
                       dTokenTypeTable: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                       tokenIds: UnsafePointer<Int32>, positions: UnsafePointer<Int32>,
                       tokenTypeIds: UnsafePointer<Int32>, tokens: Int, hidden C: Int) {
    for t in 0..<tokens {
        let d = dOut + t * C
        let w = dWordTable + Int(tokenIds[t]) * C
        let p = dPositionTable + Int(positions[t]) * C
        let y = dTokenTypeTable + Int(tokenTypeIds[t]) * C
        for c in 0..<C {
            w[c] += d[c]
            p[c] += d[c]
            y[c] += d[c]
        }
    }
}

// MARK: - LayerNorm

/// out = (x - mean) * rstd * weight + bias per row; keeps mean and rstd (rows) for backward.
func layerNormForward(out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>,
                      rstd: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                      weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                      rows: Int, columns C: Int, eps: Float) {
    parallelChunks(rows, minimumChunk: 64) { _, range in
        for r in range {
            let x = input + r * C, o = out + r * C
            var sum: Float = 0
            for c in 0..<C { sum += x[c] }
            let m = sum / Float(C)
            // Two passes (mean, then squared deviations) as PyTorch's CPU kernel: no
            // cancellation for rows with a large mean.
            var squares: Float = 0
            for c in 0..<C { let d = x[c] - m; squares += d * d }
            let s = 1 / (squares / Float(C) + eps).squareRoot()
            for c in 0..<C { o[c] = (x[c] - m) * s * weight[c] + bias[c] }
            mean[r] = m
            rstd[r] = s
        }
    }
}

/// dInput = the gradient through the normalisation; dWeight += Σ dOut·x̂, dBias += Σ dOut.
func layerNormBackward(dInput: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>,
                       dBias: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                       input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                       mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>, rows: Int, columns C: Int) {
    for r in 0..<rows {
        let x = input + r * C, dy = dOut + r * C, dx = dInput + r * C
        let m = mean[r], s = rstd[r]
        // x̂ = (x - m) s;  dx̂ = dy w;  dx = s (dx̂ - mean(dx̂) - x̂ mean(dx̂ x̂))
        var meanDNorm: Float = 0, meanDNormNorm: Float = 0
        for c in 0..<C {
            let norm = (x[c] - m) * s
            let dNorm = dy[c] * weight[c]
            meanDNorm += dNorm
            meanDNormNorm += dNorm * norm
            dWeight[c] += dy[c] * norm
            dBias[c] += dy[c]
        }
        meanDNorm /= Float(C)
        meanDNormNorm /= Float(C)
        for c in 0..<C {
            let norm = (x[c] - m) * s
            dx[c] = (dy[c] * weight[c] - meanDNorm - norm * meanDNormNorm) * s
        }
    }
}

// MARK: - GELU (exact erf form, HF "gelu")

func geluForward(out: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, count: Int) {
    let invSqrt2: Float = 0.70710678118654752
    parallelChunks(count, minimumChunk: 1 << 14) { _, range in
        for i in range { let x = input[i]; out[i] = 0.5 * x * (1 + erff(x * invSqrt2)) }
    }
}

/// In place: dInOut = dOut · gelu'(x), gelu'(x) = Φ(x) + x φ(x).
func geluBackward(dInOut: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, count: Int) {
    let invSqrt2: Float = 0.70710678118654752
    let invSqrt2Pi: Float = 0.39894228040143268
    parallelChunks(count, minimumChunk: 1 << 14) { _, range in
        for i in range {
            let x = input[i]
            let cdf = 0.5 * (1 + erff(x * invSqrt2))
            let pdf = invSqrt2Pi * expf(-0.5 * x * x)
            dInOut[i] *= cdf + x * pdf
        }
    }
}

// MARK: - Pooler tanh

func tanhForward(out: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count { out[i] = tanhf(out[i]) }
}

/// In place: dInOut = dOut · (1 - tanh²), from the tanh output.
func tanhBackward(dInOut: UnsafeMutablePointer<Float>, output: UnsafePointer<Float>, count: Int) {
    for i in 0..<count { dInOut[i] *= 1 - output[i] * output[i] }
}

// MARK: - Residual

/// out = a + b
func add(out: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) {
    for i in 0..<count { out[i] = a[i] + b[i] }
}

// MARK: - Cross-entropy

/// Per row: probabilities (softmax of logits) and -log p[label]; returns the summed loss and the
/// number of rows whose arg-max is the label.
func crossEntropyForward(probabilities: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>,
                         labels: UnsafePointer<Int32>, rows: Int, classes K: Int) -> (lossSum: Double, correct: Int) {
    var lossSum = 0.0, correct = 0
    for r in 0..<rows {
        let z = logits + r * K, p = probabilities + r * K
        var maxValue = z[0], argmax = 0
        for k in 1..<K where z[k] > maxValue { maxValue = z[k]; argmax = k }
        var sum: Float = 0
        for k in 0..<K { p[k] = expf(z[k] - maxValue); sum += p[k] }
        for k in 0..<K { p[k] /= sum }
        let label = Int(labels[r])
        lossSum += Double(logf(sum) + maxValue - z[label])
        if argmax == label { correct += 1 }
    }
    return (lossSum, correct)
}

/// dLogits = (p - onehot(label)) · lossScale, where lossScale is 1 / (global batch size) so
/// that the summed gradients of all ranks are those of the mean loss.
func crossEntropyBackward(dLogits: UnsafeMutablePointer<Float>, probabilities: UnsafePointer<Float>,
                          labels: UnsafePointer<Int32>, rows: Int, classes K: Int, lossScale: Float) {
    for r in 0..<rows {
        for k in 0..<K {
            let target: Float = k == Int(labels[r]) ? 1 : 0
            dLogits[r * K + k] = (probabilities[r * K + k] - target) * lossScale
        }
    }
}

/// C (m, n) = A (m, k) · B (k, n), row-major: for benchmarks of the BLAS in use.
public func matrixMultiply(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>) {
    sgemm(transA: false, transB: false, m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, beta: 0, c: c, ldc: n)
}
