import CBLAS
import CKernels
import Foundation

// Layer kernels over raw row-major buffers, forward next to backward (llm.c style).
// Conventions: T = tokens of a packed micro-batch, C = hidden size, I = intermediate size,
// B = sequences. Forward functions write their outputs (=); backward functions write the
// gradient of their input (=) and ACCUMULATE (+=) into parameter gradients, so several
// micro-batches can add up into one gradient arena.
//
// The fast paths are methods of the rank's `Compute`: the vector kernels of its instruction set
// (CKernels: one source, compiled per instruction set) split over its WorkerTeam. Next to each
// is the naive loop it must agree with (`...Reference`, used by the tests).

// MARK: - Matrix multiply (Linear)

/// C (m, n) = alpha * op(A) op(B) + beta * C, row-major, through OpenBLAS (single-threaded:
/// the team splits the big products itself, see linearForward).
@inline(__always)
func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
           a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
           beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
    if m == 0 || n == 0 { return }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// Rows (or output features) per team member below which a product is not worth splitting:
/// about 2^18 multiply-adds per member.
@inline(__always)
func minimumRowsPerMember(work perRow: Int) -> Int { max(4, (1 << 18) / max(perRow, 1)) }

/// How team members share a product whose output is (rows, columns): by blocks of rows or by
/// blocks of columns. Each member's single-threaded GEMM packs (copies into its blocked layout)
/// all of the operand it shares with the others: the weights when rows are split, the
/// activations when columns are. Split the dimension whose shared operand is smaller: columns
/// when the batch has fewer tokens than the weight has output columns (small batches of
/// bert-base), rows otherwise.
@inline(__always)
func splitsColumns(rows: Int, columns: Int) -> Bool { rows < columns }

/// Member `member` of `members`'s share of 0..<count, cut at multiples of 16 (whole vectors).
@inline(__always)
func share(_ count: Int, member: Int, of members: Int) -> Range<Int> {
    let granules = (count + 15) / 16
    return min(count, 16 * (granules * member / members))..<min(count, 16 * (granules * (member + 1) / members))
}

extension Compute {
    /// out (rows, outFeatures; row stride outStride) = input (rows, inFeatures) · weightᵀ + bias,
    /// as torch.nn.Linear with weight (outFeatures, inFeatures). Team members take blocks of rows
    /// or of output columns (splitsColumns); each starts its block from the bias and lets the GEMM
    /// add into it (beta = 1, which OpenBLAS does in place, where beta = 0 would cost the same
    /// extra pass to clear the output).
    func linearForward(out: UnsafeMutablePointer<Float>, outStride: Int? = nil, input: UnsafePointer<Float>,
                       weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                       rows: Int, inFeatures: Int, outFeatures: Int) {
        struct Job: TeamJob {
            let out: UnsafeMutablePointer<Float>, ldc: Int, input, weight, bias: UnsafePointer<Float>, rows, inFeatures, outFeatures: Int
            func run(member: Int, of members: Int) {
                if members > 1 && splitsColumns(rows: rows, columns: outFeatures) {
                    let columns = share(outFeatures, member: member, of: members)
                    if columns.isEmpty { return }
                    for r in 0..<rows { (out + r * ldc + columns.lowerBound).update(from: bias + columns.lowerBound, count: columns.count) }
                    sgemm(transA: false, transB: true, m: rows, n: columns.count, k: inFeatures,
                          a: input, lda: inFeatures, b: weight + columns.lowerBound * inFeatures, ldb: inFeatures,
                          beta: 1, c: out + columns.lowerBound, ldc: ldc)
                } else {
                    let range = (rows * member / members)..<(rows * (member + 1) / members)
                    for r in range { (out + r * ldc).update(from: bias, count: outFeatures) }
                    sgemm(transA: false, transB: true, m: range.count, n: outFeatures, k: inFeatures,
                          a: input + range.lowerBound * inFeatures, lda: inFeatures, b: weight, ldb: inFeatures,
                          beta: 1, c: out + range.lowerBound * ldc, ldc: ldc)
                }
            }
        }
        let members = min(threads, max(1, rows / minimumRowsPerMember(work: inFeatures * outFeatures)))
        teamRun(members: members, Job(out: out, ldc: outStride ?? outFeatures, input: input, weight: weight, bias: bias,
                                      rows: rows, inFeatures: inFeatures, outFeatures: outFeatures))
    }

    /// dInput (rows, in) = dOut · weight (or += when `accumulateInput`); dWeight += dOutᵀ · input;
    /// dBias += column sums of dOut. dOut rows have stride `dOutStride`. In one team job: each
    /// member computes a block of dInput rows or columns (splitsColumns), and a block of dWeight
    /// rows with the matching dBias entries (every dWeight element is one full-length dot product,
    /// whatever the split).
    func linearBackward(dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>,
                        dBias: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, dOutStride: Int? = nil,
                        input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                        rows: Int, inFeatures: Int, outFeatures: Int, accumulateInput: Bool = false) {
        struct Job: TeamJob {
            let kernels: bd_kernel_table
            let dInput: UnsafeMutablePointer<Float>?, dWeight, dBias: UnsafeMutablePointer<Float>
            let dOut: UnsafePointer<Float>, ldd: Int, input, weight: UnsafePointer<Float>
            let rows, inFeatures, outFeatures: Int, accumulateInput: Bool
            func run(member: Int, of members: Int) {
                if let dInput {
                    if members > 1 && splitsColumns(rows: rows, columns: inFeatures) {
                        let columns = share(inFeatures, member: member, of: members)
                        if !columns.isEmpty {
                            sgemm(transA: false, transB: false, m: rows, n: columns.count, k: outFeatures,
                                  a: dOut, lda: ldd, b: weight + columns.lowerBound, ldb: inFeatures,
                                  beta: accumulateInput ? 1 : 0, c: dInput + columns.lowerBound, ldc: inFeatures)
                        }
                    } else {
                        let rowRange = (rows * member / members)..<(rows * (member + 1) / members)
                        if !rowRange.isEmpty {
                            sgemm(transA: false, transB: false, m: rowRange.count, n: inFeatures, k: outFeatures,
                                  a: dOut + rowRange.lowerBound * ldd, lda: ldd, b: weight, ldb: inFeatures,
                                  beta: accumulateInput ? 1 : 0, c: dInput + rowRange.lowerBound * inFeatures, ldc: inFeatures)
                        }
                    }
                }
                // Output features split at multiples of 16 (whole vectors for the column sums).
                let outRange = share(outFeatures, member: member, of: members)
                if outRange.isEmpty || rows == 0 { return }
                sgemm(transA: true, transB: false, m: outRange.count, n: inFeatures, k: rows,
                      a: dOut + outRange.lowerBound, lda: ldd, b: input, ldb: inFeatures,
                      beta: 1, c: dWeight + outRange.lowerBound * inFeatures, ldc: inFeatures)
                kernels.add_column_sums(dBias, dOut, rows, ldd, outRange.lowerBound, outRange.upperBound)
            }
        }
        let minimumMembers = minimumRowsPerMember(work: inFeatures * rows)
        teamRun(members: min(threads, max(1, outFeatures / max(16, minimumMembers))),
                Job(kernels: kernels, dInput: dInput, dWeight: dWeight, dBias: dBias, dOut: dOut, ldd: dOutStride ?? outFeatures,
                    input: input, weight: weight, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures,
                    accumulateInput: accumulateInput))
    }
}

/// sums (columns) += Σ_rows matrix (rows, columns).
func addColumnSumsReference(of matrix: UnsafePointer<Float>, rows: Int, columns: Int, into sums: UnsafeMutablePointer<Float>) {
    for r in 0..<rows {
        let row = matrix + r * columns
        for c in 0..<columns { sums[c] += row[c] }
    }
}

// MARK: - Row dropout (the per-row view of the masks of Dropout.swift)

/// Fills `keys` with each sequence's dropout key at (layer, site) and returns the C
/// description of the dropout of packed rows, or an inactive one without dropout.
func rowDropout(_ dropout: DropoutContext?, probability: Float, layer: Int, site: DropoutSite,
                samples: UnsafePointer<Int>, sequences: Int, keys: UnsafeMutablePointer<UInt64>,
                rowSequence: UnsafePointer<Int32>, rowPosition: UnsafePointer<Int32>) -> bd_row_dropout {
    guard let dropout, probability > 0 else { return bd_row_dropout(sequence_keys: nil, row_sequence: nil, row_position: nil, probability: 0) }
    for s in 0..<sequences { keys[s] = dropout.key(sample: samples[s], layer: layer, site: site) }
    return bd_row_dropout(sequence_keys: keys, row_sequence: rowSequence, row_position: rowPosition, probability: probability)
}

extension Compute {
    /// Rows of a (rows, columns) tensor in place, over the team.
    func dropoutRows(_ values: UnsafeMutablePointer<Float>, rows: Int, columns: Int, dropout: bd_row_dropout) {
        guard dropout.sequence_keys != nil && dropout.probability > 0 else { return }
        struct Job: ChunkJob {
            let kernels: bd_kernel_table
            let values: UnsafeMutablePointer<Float>, columns: Int, dropout: bd_row_dropout
            func run(chunk: Int, range: Range<Int>) { kernels.dropout_rows(values, range.lowerBound, range.upperBound, columns, dropout) }
        }
        parallelChunks(rows, minimumChunk: 32, Job(kernels: kernels, values: values, columns: columns, dropout: dropout))
    }
}

// MARK: - Embeddings

/// out[t] = word[tokenIds[t]] + position[positions[t]] (+ tokenType[tokenTypeIds[t]])   (T, E)
func embeddingForwardReference(out: UnsafeMutablePointer<Float>, tokenIds: UnsafePointer<Int32>,
                               positions: UnsafePointer<Int32>, tokenTypeIds: UnsafePointer<Int32>?,
                               wordTable: UnsafePointer<Float>, positionTable: UnsafePointer<Float>,
                               tokenTypeTable: UnsafePointer<Float>?, tokens: Int, hidden C: Int) {
    for t in 0..<tokens {
        let o = out + t * C
        let w = wordTable + Int(tokenIds[t]) * C
        let p = positionTable + Int(positions[t]) * C
        for c in 0..<C { o[c] = w[c] + p[c] }
        if let tokenTypeTable, let tokenTypeIds {
            let y = tokenTypeTable + Int(tokenTypeIds[t]) * C
            for c in 0..<C { o[c] += y[c] }
        }
    }
}

/// Scatter-adds dOut rows into the rows of the tables they came from; the padding rows (HF's
/// nn.Embedding padding_idx, -1: none) get nothing.
func embeddingBackwardReference(dWordTable: UnsafeMutablePointer<Float>, dPositionTable: UnsafeMutablePointer<Float>,
                                dTokenTypeTable: UnsafeMutablePointer<Float>?, dOut: UnsafePointer<Float>,
                                tokenIds: UnsafePointer<Int32>, positions: UnsafePointer<Int32>,
                                tokenTypeIds: UnsafePointer<Int32>?, tokens: Int, hidden C: Int,
                                wordPaddingRow: Int = -1, positionPaddingRow: Int = -1) {
    for t in 0..<tokens {
        let d = dOut + t * C
        let w = dWordTable + Int(tokenIds[t]) * C
        let p = dPositionTable + Int(positions[t]) * C
        for c in 0..<C {
            if Int(tokenIds[t]) != wordPaddingRow { w[c] += d[c] }
            if Int(positions[t]) != positionPaddingRow { p[c] += d[c] }
        }
        if let dTokenTypeTable, let tokenTypeIds {
            let y = dTokenTypeTable + Int(tokenTypeIds[t]) * C
            for c in 0..<C { y[c] += d[c] }
        }
    }
}

extension Compute {
    /// The fast embeddings: sum, LayerNorm and dropout after it, rows over the team. Without a
    /// token type table (nil), the sum is word + position.
    func embeddingLayerNormForward(sum: UnsafeMutablePointer<Float>, normed: UnsafeMutablePointer<Float>,
                                   mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                                   tokenIds: UnsafePointer<Int32>, positions: UnsafePointer<Int32>, tokenTypeIds: UnsafePointer<Int32>?,
                                   wordTable: UnsafePointer<Float>, positionTable: UnsafePointer<Float>, tokenTypeTable: UnsafePointer<Float>?,
                                   weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, rows: Int, columns: Int, eps: Float,
                                   dropoutAfter: bd_row_dropout) {
        struct Job: ChunkJob {
            let kernels: bd_kernel_table
            let sum, normed, mean, rstd: UnsafeMutablePointer<Float>
            let tokenIds, positions: UnsafePointer<Int32>, tokenTypeIds: UnsafePointer<Int32>?
            let wordTable, positionTable: UnsafePointer<Float>, tokenTypeTable: UnsafePointer<Float>?
            let weight, bias: UnsafePointer<Float>
            let columns: Int, eps: Float, dropoutAfter: bd_row_dropout
            func run(chunk: Int, range: Range<Int>) {
                kernels.embedding_layernorm_forward(sum, normed, mean, rstd, tokenIds, positions, tokenTypeIds,
                                                    wordTable, positionTable, tokenTypeTable, weight, bias,
                                                    range.lowerBound, range.upperBound, columns, eps, dropoutAfter)
            }
        }
        parallelChunks(rows, minimumChunk: 32,
                       Job(kernels: kernels, sum: sum, normed: normed, mean: mean, rstd: rstd, tokenIds: tokenIds, positions: positions,
                           tokenTypeIds: tokenTypeIds, wordTable: wordTable, positionTable: positionTable,
                           tokenTypeTable: tokenTypeTable, weight: weight, bias: bias, columns: columns, eps: eps,
                           dropoutAfter: dropoutAfter))
    }

    /// The fast embedding backward: members own column blocks of the tables. The padding rows
    /// (nil: none) get no gradient, as HF's nn.Embedding(padding_idx:).
    func embeddingBackward(dWordTable: UnsafeMutablePointer<Float>, dPositionTable: UnsafeMutablePointer<Float>,
                           dTokenTypeTable: UnsafeMutablePointer<Float>?, dOut: UnsafePointer<Float>,
                           tokenIds: UnsafePointer<Int32>, positions: UnsafePointer<Int32>,
                           tokenTypeIds: UnsafePointer<Int32>?, tokens: Int, hidden C: Int,
                           wordPaddingRow: Int?, positionPaddingRow: Int?) {
        struct Job: ChunkJob {
            let kernels: bd_kernel_table
            let dWordTable, dPositionTable: UnsafeMutablePointer<Float>, dTokenTypeTable: UnsafeMutablePointer<Float>?
            let dOut: UnsafePointer<Float>
            let tokenIds, positions: UnsafePointer<Int32>, tokenTypeIds: UnsafePointer<Int32>?, tokens, C: Int
            let wordPaddingRow, positionPaddingRow: Int
            func run(chunk: Int, range: Range<Int>) {
                kernels.embedding_backward(dWordTable, dPositionTable, dTokenTypeTable, dOut, tokenIds, positions, tokenTypeIds,
                                           tokens, C, range.lowerBound, range.upperBound, wordPaddingRow, positionPaddingRow)
            }
        }
        parallelGranules(C, granule: 16, minimumChunk: tokens >= 64 ? 16 : C,
                         Job(kernels: kernels, dWordTable: dWordTable, dPositionTable: dPositionTable,
                             dTokenTypeTable: dTokenTypeTable, dOut: dOut,
                             tokenIds: tokenIds, positions: positions, tokenTypeIds: tokenTypeIds, tokens: tokens, C: C,
                             wordPaddingRow: wordPaddingRow ?? -1, positionPaddingRow: positionPaddingRow ?? -1))
    }
}

// MARK: - LayerNorm

/// out = (x - mean) * rstd * weight + bias per row; keeps mean and rstd (rows) for backward.
func layerNormForwardReference(out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>,
                               rstd: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                               weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                               rows: Int, columns C: Int, eps: Float) {
    for r in 0..<rows {
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

/// dInput = the gradient through the normalisation; dWeight += Σ dOut·x̂, dBias += Σ dOut.
func layerNormBackwardReference(dInput: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>,
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

extension Compute {
    /// The fast residual block end: sum = dropout(sum) + residual (sum holds the branch on entry;
    /// residual may be nil), normed = LayerNorm(sum); rows over the team.
    func residualLayerNormForward(sum: UnsafeMutablePointer<Float>, normed: UnsafeMutablePointer<Float>,
                                  mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                                  residual: UnsafePointer<Float>?, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                  rows: Int, columns: Int, eps: Float, dropout: bd_row_dropout) {
        struct Job: ChunkJob {
            let kernels: bd_kernel_table
            let sum, normed, mean, rstd: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>?
            let weight, bias: UnsafePointer<Float>, columns: Int, eps: Float, dropout: bd_row_dropout
            func run(chunk: Int, range: Range<Int>) {
                kernels.residual_layernorm_forward(sum, normed, mean, rstd, residual, weight, bias,
                                                   range.lowerBound, range.upperBound, columns, eps, dropout)
            }
        }
        parallelChunks(rows, minimumChunk: 32, Job(kernels: kernels, sum: sum, normed: normed, mean: mean, rstd: rstd, residual: residual,
                                                   weight: weight, bias: bias, columns: columns, eps: eps, dropout: dropout))
    }

    /// The fast LayerNorm backward in one team job: each member computes a block of dInput rows
    /// (and dBranch = dropout(dInput) when given) and a block of dWeight/dBias columns.
    func layerNormBackward(dInput: UnsafeMutablePointer<Float>, dBranch: UnsafeMutablePointer<Float>?,
                           branchDropout: bd_row_dropout,
                           dWeight: UnsafeMutablePointer<Float>, dBias: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                           input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>, rows: Int, columns C: Int) {
        struct Job: TeamJob {
            let kernels: bd_kernel_table
            let dInput: UnsafeMutablePointer<Float>, dBranch: UnsafeMutablePointer<Float>?, branchDropout: bd_row_dropout
            let dWeight, dBias: UnsafeMutablePointer<Float>, dOut, input, weight, mean, rstd: UnsafePointer<Float>
            let rows, C: Int
            func run(member: Int, of members: Int) {
                let rowRange = (rows * member / members)..<(rows * (member + 1) / members)
                kernels.layernorm_backward_rows(dInput, dBranch, dOut, input, weight, mean, rstd,
                                                rowRange.lowerBound, rowRange.upperBound, C, branchDropout)
                let granules = (C + 15) / 16
                let columnRange = min(C, 16 * (granules * member / members))..<min(C, 16 * (granules * (member + 1) / members))
                if !columnRange.isEmpty {
                    kernels.layernorm_backward_parameters(dWeight, dBias, dOut, input, mean, rstd, rows, C,
                                                          columnRange.lowerBound, columnRange.upperBound)
                }
            }
        }
        teamRun(members: min(threads, max(1, rows / 32)),
                Job(kernels: kernels, dInput: dInput, dBranch: dBranch, branchDropout: branchDropout, dWeight: dWeight, dBias: dBias,
                    dOut: dOut, input: input, weight: weight, mean: mean, rstd: rstd, rows: rows, C: C))
    }
}

// MARK: - GELU (exact erf form, HF "gelu")

/// out = gelu(x) = 0.5 x (1 + erf(x / √2)).
func geluForwardReference(out: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, count: Int) {
    let invSqrt2: Float = 0.70710678118654752
    for i in 0..<count { let x = input[i]; out[i] = 0.5 * x * (1 + erff(x * invSqrt2)) }
}

/// In place: dInOut = dOut · gelu'(x), gelu'(x) = Φ(x) + x φ(x).
func geluBackwardReference(dInOut: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, count: Int) {
    let invSqrt2: Float = 0.70710678118654752
    let invSqrt2Pi: Float = 0.39894228040143268
    for i in 0..<count {
        let x = input[i]
        let cdf = 0.5 * (1 + erff(x * invSqrt2))
        let pdf = invSqrt2Pi * expf(-0.5 * x * x)
        dInOut[i] *= cdf + x * pdf
    }
}

extension Compute {
    /// The fast GELU: activated = gelu(x); `derivative` holds x on entry and gelu'(x) on return.
    func geluForward(activated: UnsafeMutablePointer<Float>, derivative: UnsafeMutablePointer<Float>, count: Int) {
        struct Job: ChunkJob {
            let kernels: bd_kernel_table
            let activated, derivative: UnsafeMutablePointer<Float>
            func run(chunk: Int, range: Range<Int>) {
                kernels.gelu_forward(activated + range.lowerBound, derivative + range.lowerBound, range.count)
            }
        }
        parallelChunks(count, minimumChunk: 1 << 14, Job(kernels: kernels, activated: activated, derivative: derivative))
    }

    /// The fast GELU backward: dInOut *= gelu'(x), from the derivative geluForward kept.
    func geluBackward(dInOut: UnsafeMutablePointer<Float>, derivative: UnsafePointer<Float>, count: Int) {
        struct Job: ChunkJob {
            let kernels: bd_kernel_table
            let dInOut: UnsafeMutablePointer<Float>, derivative: UnsafePointer<Float>
            func run(chunk: Int, range: Range<Int>) {
                kernels.multiply(dInOut + range.lowerBound, derivative + range.lowerBound, range.count)
            }
        }
        parallelChunks(count, minimumChunk: 1 << 15, Job(kernels: kernels, dInOut: dInOut, derivative: derivative))
    }
}

// MARK: - The head's activation

extension Compute {
    /// In place on the head's (B, C) values: values = f(x), derivative = f'(x) (backward
    /// multiplies by it: `multiply`). tanh' = 1 - tanh², relu' = 1 where the output is positive,
    /// GELU's from the kernel of the feed-forward.
    func headActivationForward(_ activation: HeadActivation, values: UnsafeMutablePointer<Float>,
                               derivative: UnsafeMutablePointer<Float>, count: Int) {
        switch activation {
        case .tanh:
            for i in 0..<count {
                values[i] = tanhf(values[i])
                derivative[i] = 1 - values[i] * values[i]
            }
        case .relu:
            for i in 0..<count {
                values[i] = max(values[i], 0)
                derivative[i] = values[i] > 0 ? 1 : 0
            }
        case .gelu:
            derivative.update(from: values, count: count)
            kernels.gelu_forward(values, derivative, count)
        }
    }

    /// dInOut (count) *= derivative, in place.
    func multiply(_ dInOut: UnsafeMutablePointer<Float>, by derivative: UnsafePointer<Float>, count: Int) {
        kernels.multiply(dInOut, derivative, count)
    }
}

// MARK: - Residual

/// out = a + b
func add(out: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) {
    for i in 0..<count { out[i] = a[i] + b[i] }
}

// MARK: - Cross-entropy

/// The three products of a linear layer (input x (rows, in), weight W (out, in), output
/// gradient dy (rows, out)), for measuring the sgemm peak on the model's own shapes.
public enum LinearProduct: CaseIterable, Sendable {
    case forward          // y = x Wᵀ          (rows, out)
    case inputGradient    // dx = dy W         (rows, in)
    case weightGradient   // dW += dyᵀ x       (out, in)
}

/// Runs one product of a linear layer, split over the team of `compute` as the model runs it
/// (`splitOverTeam`: the same splits as linearForward and linearBackward) or as one OpenBLAS
/// call (with OpenBLAS's threads as currently set).
/// `output` holds y (forward) or dy (the gradients); `input` receives dx; `weight` receives dW.
public func linearLayerProduct(_ product: LinearProduct, rows: Int, inFeatures: Int, outFeatures: Int,
                               input: UnsafeMutablePointer<Float>, weight: UnsafeMutablePointer<Float>,
                               output: UnsafeMutablePointer<Float>, splitOverTeam: Bool, compute: Compute) {
    struct Job: TeamJob {
        let product: LinearProduct, rows, inFeatures, outFeatures: Int
        let input, weight, output: UnsafeMutablePointer<Float>
        func run(member: Int, of members: Int) {
            switch product {
            case .forward where members > 1 && splitsColumns(rows: rows, columns: outFeatures):
                let o = share(outFeatures, member: member, of: members)
                sgemm(transA: false, transB: true, m: rows, n: o.count, k: inFeatures, a: input, lda: inFeatures,
                      b: weight + o.lowerBound * inFeatures, ldb: inFeatures, beta: 1, c: output + o.lowerBound, ldc: outFeatures)
            case .inputGradient where members > 1 && splitsColumns(rows: rows, columns: inFeatures):
                let i = share(inFeatures, member: member, of: members)
                sgemm(transA: false, transB: false, m: rows, n: i.count, k: outFeatures, a: output, lda: outFeatures,
                      b: weight + i.lowerBound, ldb: inFeatures, beta: 0, c: input + i.lowerBound, ldc: inFeatures)
            case .forward:
                let r = (rows * member / members)..<(rows * (member + 1) / members)
                sgemm(transA: false, transB: true, m: r.count, n: outFeatures, k: inFeatures, a: input + r.lowerBound * inFeatures,
                      lda: inFeatures, b: weight, ldb: inFeatures, beta: 1, c: output + r.lowerBound * outFeatures, ldc: outFeatures)
            case .inputGradient:
                let r = (rows * member / members)..<(rows * (member + 1) / members)
                sgemm(transA: false, transB: false, m: r.count, n: inFeatures, k: outFeatures, a: output + r.lowerBound * outFeatures,
                      lda: outFeatures, b: weight, ldb: inFeatures, beta: 0, c: input + r.lowerBound * inFeatures, ldc: inFeatures)
            case .weightGradient:
                let o = (outFeatures * member / members)..<(outFeatures * (member + 1) / members)
                sgemm(transA: true, transB: false, m: o.count, n: inFeatures, k: rows, a: output + o.lowerBound, lda: outFeatures,
                      b: input, ldb: inFeatures, beta: 1, c: weight + o.lowerBound * inFeatures, ldc: inFeatures)
            }
        }
    }
    compute.teamRun(members: splitOverTeam ? compute.threads : 1,
                    Job(product: product, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures, input: input, weight: weight, output: output))
}
