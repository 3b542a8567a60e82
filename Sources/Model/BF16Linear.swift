import CGemm
import CKernels

// The Linear layers under --bf16 (docs/precision.md): every product rounds both inputs to bf16
// (CGemm's bg_pack_a / bg_pack_b with CBF16's rounding) and accumulates in fp32 (bg_gemm);
// biases, their gradients and everything the products write stay fp32. Same conventions and
// team splits as linearForward / linearBackward (Kernels.swift): members take blocks of rows or
// of 16-column strips (splitsColumns), and every output element is one full-depth sum whatever
// the split, so the team size does not change a bit (CGemmTests.splittingRowsOrStripsGivesTheSameBits).

extension Compute {
    /// out (rows, out; row stride outStride) = bf16(input) (rows, in) · bf16(W)ᵀ + bias, W's forward
    /// copy from `weight`. With `roundOutput` the result is rounded to bf16-representable values
    /// (the queries, keys and values: inputs of the attention products only).
    func bf16LinearForward(out: UnsafeMutablePointer<Float>, outStride: Int? = nil, input: UnsafePointer<Float>,
                           weight: PackedLinear, bias: UnsafePointer<Float>, rows: Int, scratch: BF16Scratch,
                           roundOutput: Bool = false) {
        let inFeatures = weight.inFeatures, outFeatures = weight.outFeatures
        struct Job: TeamJob {
            let engine: Int32, kernels: bd_kernel_table, phase: Int
            let out: UnsafeMutablePointer<Float>, ldc: Int, input: UnsafePointer<Float>, a: UnsafeMutablePointer<UInt16>
            let b: UnsafePointer<UInt16>, bias: UnsafePointer<Float>, rows, inFeatures, outFeatures: Int, roundOutput: Bool
            func run(member: Int, of members: Int) {
                let lda = bg_padded_depth(inFeatures)
                let byStrips = members > 1 && splitsColumns(rows: rows, columns: outFeatures)
                // Phase 0 packs A (this member's 16-row blocks); rows split: the product follows at once.
                if phase == 0 {
                    let packRows = share(bg_padded_rows(rows), member: member, of: members)
                    if !packRows.isEmpty {
                        bg_pack_a(a, lda, input, inFeatures, 0, rows, inFeatures, packRows.lowerBound, packRows.upperBound)
                    }
                    if byStrips { return }
                    let r = packRows.clamped(to: 0..<rows)
                    if r.isEmpty { return }
                    for row in r { (out + row * ldc).update(from: bias, count: outFeatures) }
                    bg_gemm(engine, a, lda, b, inFeatures, outFeatures, out, ldc, r.lowerBound, r.upperBound,
                            0, bg_strip_count(outFeatures), 1)
                    if roundOutput { for row in r { kernels.round_bf16(out + row * ldc, outFeatures) } }
                    return
                }
                // Phase 1 (strips split, after every row is packed): this member's output columns.
                let columns = share(outFeatures, member: member, of: members)
                if columns.isEmpty { return }
                for row in 0..<rows { (out + row * ldc + columns.lowerBound).update(from: bias + columns.lowerBound, count: columns.count) }
                bg_gemm(engine, a, lda, b, inFeatures, outFeatures, out, ldc, 0, rows, columns.lowerBound / 16,
                        (columns.upperBound + 15) / 16, 1)
                if roundOutput { for row in 0..<rows { kernels.round_bf16(out + row * ldc + columns.lowerBound, columns.count) } }
            }
        }
        if rows == 0 { return }
        let members = min(threads, max(1, rows / minimumRowsPerMember(work: inFeatures * outFeatures)))
        let job = Job(engine: bf16Engine.rawValue, kernels: kernels, phase: 0, out: out, ldc: outStride ?? outFeatures, input: input,
                      a: scratch.rows, b: weight.forward, bias: bias, rows: rows, inFeatures: inFeatures,
                      outFeatures: outFeatures, roundOutput: roundOutput)
        teamRun(members: members, job)
        if members > 1 && splitsColumns(rows: rows, columns: outFeatures) {
            teamRun(members: members, Job(engine: job.engine, kernels: kernels, phase: 1, out: job.out, ldc: job.ldc, input: input,
                                          a: job.a, b: job.b, bias: bias, rows: rows, inFeatures: inFeatures,
                                          outFeatures: outFeatures, roundOutput: roundOutput))
        }
    }

    /// Backward of bf16LinearForward: dInput (rows, in) = bf16(dOut) · bf16(W) (or += with
    /// `accumulateInput`; rounded to bf16 values with `roundInput`: dContext, an input of the
    /// attention products only); dWeight += bf16(dOut)ᵀ · bf16(input) in fp32; dBias += column
    /// sums of the fp32 dOut. Two team jobs: members first round their shares of the three
    /// operands (dOut rows, dOutᵀ rows = output features, input strips), then compute their
    /// blocks of dInput (rows or columns) and of dWeight (output features in multiples of 16).
    func bf16LinearBackward(dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>,
                            dBias: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, dOutStride: Int? = nil,
                            input: UnsafePointer<Float>, weight: PackedLinear, rows: Int, scratch: BF16Scratch,
                            accumulateInput: Bool = false, roundInput: Bool = false) {
        let inFeatures = weight.inFeatures, outFeatures = weight.outFeatures
        struct Job: TeamJob {
            let engine: Int32, kernels: bd_kernel_table, phase: Int
            let dInput: UnsafeMutablePointer<Float>?, dWeight, dBias: UnsafeMutablePointer<Float>
            let dOut: UnsafePointer<Float>, ldd: Int, input: UnsafePointer<Float>, weight: PackedLinear, scratch: BF16Scratch
            let rows, inFeatures, outFeatures: Int, accumulateInput, roundInput: Bool
            func run(member: Int, of members: Int) {
                let ldaRows = bg_padded_depth(outFeatures), ldaTransposed = bg_padded_depth(rows)
                let features = share(bg_padded_rows(outFeatures), member: member, of: members)
                if phase == 0 {
                    if dInput != nil {
                        let packRows = share(bg_padded_rows(rows), member: member, of: members)
                        if !packRows.isEmpty {
                            bg_pack_a(scratch.rows, ldaRows, dOut, ldd, 0, rows, outFeatures, packRows.lowerBound, packRows.upperBound)
                        }
                    }
                    let strips = bg_strip_count(inFeatures)
                    let stripRange = (strips * member / members)..<(strips * (member + 1) / members)
                    if !stripRange.isEmpty {
                        bg_pack_b(scratch.tokenPairs, input, inFeatures, 0, rows, inFeatures, 0, ldaTransposed / 2,
                                  stripRange.lowerBound, stripRange.upperBound)
                    }
                    if !features.isEmpty {
                        bg_pack_a(scratch.transposed, ldaTransposed, dOut, ldd, 1, outFeatures, rows,
                                  features.lowerBound, features.upperBound)
                    }
                    return
                }
                if let dInput, let inputGradient = weight.inputGradient {
                    let accumulate: Int32 = accumulateInput ? 1 : 0
                    if members > 1 && splitsColumns(rows: rows, columns: inFeatures) {
                        let columns = share(inFeatures, member: member, of: members)
                        if !columns.isEmpty {
                            bg_gemm(engine, scratch.rows, ldaRows, inputGradient, outFeatures, inFeatures, dInput, inFeatures,
                                    0, rows, columns.lowerBound / 16, (columns.upperBound + 15) / 16, accumulate)
                            if roundInput {
                                for r in 0..<rows { kernels.round_bf16(dInput + r * inFeatures + columns.lowerBound, columns.count) }
                            }
                        }
                    } else {
                        let r = share(bg_padded_rows(rows), member: member, of: members).clamped(to: 0..<rows)
                        if !r.isEmpty {
                            bg_gemm(engine, scratch.rows, ldaRows, inputGradient, outFeatures, inFeatures, dInput, inFeatures,
                                    r.lowerBound, r.upperBound, 0, bg_strip_count(inFeatures), accumulate)
                            if roundInput { kernels.round_bf16(dInput + r.lowerBound * inFeatures, r.count * inFeatures) }
                        }
                    }
                }
                let outRange = features.clamped(to: 0..<outFeatures)
                if outRange.isEmpty { return }
                bg_gemm(engine, scratch.transposed, ldaTransposed, scratch.tokenPairs, rows, inFeatures, dWeight, inFeatures,
                        outRange.lowerBound, outRange.upperBound, 0, bg_strip_count(inFeatures), 1)
                kernels.add_column_sums(dBias, dOut, rows, ldd, outRange.lowerBound, outRange.upperBound)
            }
        }
        if rows == 0 { return }
        precondition(dInput == nil || weight.inputGradient != nil, "a bf16 model made for inference has no input-gradient weights")
        let minimumMembers = minimumRowsPerMember(work: inFeatures * rows)
        let members = min(threads, max(1, outFeatures / max(16, minimumMembers)))
        for phase in 0..<2 {
            teamRun(members: members, Job(engine: bf16Engine.rawValue, kernels: kernels, phase: phase, dInput: dInput, dWeight: dWeight,
                                          dBias: dBias, dOut: dOut, ldd: dOutStride ?? outFeatures, input: input, weight: weight,
                                          scratch: scratch, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures,
                                          accumulateInput: accumulateInput, roundInput: roundInput))
        }
    }
}
