import CKernels
import Foundation
import Testing
@testable import Model

/// Every fast kernel (CKernels, each instruction set this CPU supports) against the naive loop
/// next to it in Sources/Model, or against libm / double precision.
@Suite struct KernelTests {
    /// The instruction sets to test: every one this CPU runs. The others are skipped, and the
    /// output says which and why.
    static let instructionSets: [InstructionSet] = {
        for isa in InstructionSet.allCases where !isa.isSupported {
            print("KernelTests: skipping the \(isa.rawValue) kernels: this CPU lacks \(requirement(of: isa))")
        }
        let supported = InstructionSet.allCases.filter(\.isSupported)
        print("KernelTests: testing the kernels of \(supported.map(\.rawValue).joined(separator: ", "))")
        return supported
    }()

    static func requirement(of isa: InstructionSet) -> String {
        switch isa {
        case .baseline: "SSE2"
        case .avx2: "AVX2 and FMA"
        case .avx512: "AVX-512 F, BW, DQ and VL"
        }
    }

    /// Runs `body` with the kernel table of each instruction set in `instructionSets` (and a
    /// one-thread Compute of it), and checks that every one ran.
    func onEachInstructionSet(_ body: (_ isa: String, _ kernels: bd_kernel_table, _ compute: Compute) throws -> Void) rethrows {
        var tested: [InstructionSet] = []
        for isa in Self.instructionSets {
            let compute = Compute(threads: 1, instructionSet: isa)
            try body(isa.rawValue, compute.kernels, compute)
            tested.append(isa)
        }
        #expect(tested == InstructionSet.allCases.filter(\.isSupported))
    }

    @Test func everyInstructionSetThisCPURunsIsTested() {
        #expect(Self.instructionSets.first == .baseline)
        #expect(Self.instructionSets.last == InstructionSet.best)
        #expect(Self.instructionSets == InstructionSet.allCases.filter(\.isSupported))
    }

    /// Deterministic pseudo-random floats in [-scale, scale).
    func values(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
    }

    func largestDifference(_ a: [Float], _ b: [Float]) -> Float {
        zip(a, b).map { abs($0 - $1) }.max() ?? 0
    }

    // MARK: element-wise math

    @Test func erfMatchesLibmOnADenseRange() {
        // A million points on [-10, 10] (steps of 2e-5), 20000 near 0, and huge values.
        var x = (0...1_000_000).map { -10 + 20 * Float($0) / 1_000_000 }
        x += (0..<20_000).map { Float($0 - 10_000) * 1e-7 } + [0, -0, 1e-30, -1e-30, 30, -30, 1e30, -1e30, .infinity, -.infinity]
        var out = [Float](repeating: 0, count: x.count)
        onEachInstructionSet { isa, k, compute in
            k.erf(&out, x, x.count)
            var largest: Float = 0, worst: Float = 0, largestTrue = 0.0
            for i in x.indices {
                let error = abs(out[i] - erff(x[i]))
                if error > largest { largest = error; worst = x[i] }
                largestTrue = max(largestTrue, abs(Double(out[i]) - erf(Double(x[i]))))
            }
            print("\(isa): erf max |error| vs erff \(largest) at \(worst), vs erf in double \(largestTrue)")
            #expect(largest <= 1e-7, "\(isa)")
            #expect(largestTrue <= 1e-7, "\(isa)")
        }
        var nan = [Float.nan], nanOut = [Float(0)]
        Compute(threads: 1).kernels.erf(&nanOut, &nan, 1)
        #expect(nanOut[0].isNaN)
    }

    @Test func expIsAccurateAndKeepsNaN() {
        let x = (0...400_000).map { -86 + 174 * Float($0) / 400_000 } + [.nan]
        var out = [Float](repeating: 0, count: x.count)
        onEachInstructionSet { isa, k, compute in
            k.exp(&out, x, x.count)
            var largest = 0.0
            for i in 0..<(x.count - 1) { largest = max(largest, abs(Double(out[i]) / exp(Double(x[i])) - 1)) }
            print("\(isa): exp max relative error \(largest)")
            #expect(largest <= 2.5e-7, "\(isa)")
            #expect(out[x.count - 1].isNaN, "\(isa)")
        }
    }

    @Test func geluAndItsDerivativeMatchTheErfForm() {
        let x = (0...400_000).map { -12 + 24 * Float($0) / 400_000 }
        var expected = [Float](repeating: 0, count: x.count), expectedDerivative = [Float](repeating: 1, count: x.count)
        geluForwardReference(out: &expected, input: x, count: x.count)
        geluBackwardReference(dInOut: &expectedDerivative, input: x, count: x.count)
        onEachInstructionSet { isa, k, compute in
            var activated = [Float](repeating: 0, count: x.count), derivative = x
            k.gelu_forward(&activated, &derivative, x.count)
            var worst: Float = 0, worstDerivative: Float = 0
            for i in x.indices {
                // Both sides round erf to float: about 1e-7 of |x| on each.
                worst = max(worst, abs(activated[i] - expected[i]) / (1 + abs(x[i])))
                worstDerivative = max(worstDerivative, abs(derivative[i] - expectedDerivative[i]) / (1 + abs(x[i])))
            }
            print("\(isa): gelu max |error|/(1+|x|) \(worst), gelu' \(worstDerivative)")
            #expect(worst <= 2e-7, "\(isa)")
            #expect(worstDerivative <= 4e-7, "\(isa)")
        }
    }

    // MARK: dropout

    @Test func dropoutIsTheSameMaskBitForBit() {
        for (count, first, p) in [(1, 0, Float(0.1)), (17, 5, 0.5), (1000, 123_456_789, 0.1), (333, 7, 0.9)] {
            let input = values(count, seed: UInt64(count))
            var expected = input
            applyDropout(&expected, count: count, key: 0xDEAD_BEEF_1234, firstElement: first, probability: p)
            onEachInstructionSet { isa, k, compute in
                var out = input
                k.dropout(&out, count, 0xDEAD_BEEF_1234, first, p)
                #expect(out == expected, "\(isa) count \(count) first \(first) p \(p)")
            }
        }
    }

    @Test func rowDropoutUsesEachSequencesKeyAndPosition() {
        // Three sequences of 3, 1 and 4 rows of 21 columns.
        let starts = [0, 3, 4, 8], columns = 21
        let rows = starts.last!
        let input = values(rows * columns, seed: 3)
        var expected = input
        let context = DropoutContext(seed: 7, step: 2)
        let samples = [40, 41, 97]
        expected.withUnsafeMutableBufferPointer { expected in
            for s in 0..<3 {
                let key = context.key(sample: samples[s], layer: 1, site: .feedForwardOutput)
                applyDropout(expected.baseAddress! + starts[s] * columns, count: (starts[s + 1] - starts[s]) * columns,
                             key: key, probability: 0.25)
            }
        }
        var sequenceOfRow: [Int32] = [], positionOfRow: [Int32] = []
        for s in 0..<3 { for r in starts[s]..<starts[s + 1] { sequenceOfRow.append(Int32(s)); positionOfRow.append(Int32(r - starts[s])) } }
        var keys = [UInt64](repeating: 0, count: 3)
        onEachInstructionSet { isa, k, compute in
            var out = input
            let d = rowDropout(context, probability: 0.25, layer: 1, site: .feedForwardOutput, samples: samples, sequences: 3,
                               keys: &keys, rowSequence: sequenceOfRow, rowPosition: positionOfRow)
            k.dropout_rows(&out, 0, 5, columns, d)
            k.dropout_rows(&out, 5, rows, columns, d)
            #expect(out == expected, "\(isa)")
        }
    }

    // MARK: LayerNorm

    @Test(arguments: [3, 37, 384])
    func layerNormForwardAndBackwardMatchTheReference(columns: Int) {
        let rows = 9
        let branch = values(rows * columns, seed: 1, scale: 3), residual = values(rows * columns, seed: 2)
        let weight = values(columns, seed: 3).map { 1 + $0 / 2 }, bias = values(columns, seed: 4)
        let dOut = values(rows * columns, seed: 5)
        // Reference: sum = branch + residual; LayerNorm; backward.
        let sum = zip(branch, residual).map { $0 + $1 }
        var normed = [Float](repeating: 0, count: rows * columns), mean = [Float](repeating: 0, count: rows), rstd = mean
        layerNormForwardReference(out: &normed, mean: &mean, rstd: &rstd, input: sum, weight: weight, bias: bias,
                                  rows: rows, columns: columns, eps: 1e-12)
        var dInput = [Float](repeating: 0, count: rows * columns)
        var dWeight = values(columns, seed: 6), dBias = values(columns, seed: 7)
        let dWeightStart = dWeight, dBiasStart = dBias
        layerNormBackwardReference(dInput: &dInput, dWeight: &dWeight, dBias: &dBias, dOut: dOut, input: sum, weight: weight,
                                   mean: mean, rstd: rstd, rows: rows, columns: columns)
        let none = bd_row_dropout(sequence_keys: nil, row_sequence: nil, row_position: nil, probability: 0)
        onEachInstructionSet { isa, k, compute in
            var fastSum = branch, fastNormed = [Float](repeating: 0, count: rows * columns)
            var fastMean = [Float](repeating: 0, count: rows), fastRstd = fastMean
            k.residual_layernorm_forward(&fastSum, &fastNormed, &fastMean, &fastRstd, residual, weight, bias, 0, rows, columns, 1e-12, none)
            #expect(largestDifference(fastSum, sum) == 0, "\(isa)")
            #expect(largestDifference(fastNormed, normed) <= 2e-6, "\(isa) normed")
            #expect(largestDifference(fastRstd, rstd) <= 2e-6 * (rstd.max() ?? 1), "\(isa) rstd")
            var fastDInput = [Float](repeating: 0, count: rows * columns), fastDWeight = dWeightStart, fastDBias = dBiasStart
            k.layernorm_backward_rows(&fastDInput, nil, dOut, sum, weight, mean, rstd, 0, rows, columns, none)
            // Columns in two parts, as two team members would.
            let split = min(columns, 16)
            k.layernorm_backward_parameters(&fastDWeight, &fastDBias, dOut, sum, mean, rstd, rows, columns, 0, split)
            k.layernorm_backward_parameters(&fastDWeight, &fastDBias, dOut, sum, mean, rstd, rows, columns, split, columns)
            let scale = (dInput.map(abs).max() ?? 1)
            #expect(largestDifference(fastDInput, dInput) <= 1e-5 * scale, "\(isa) dInput")
            #expect(largestDifference(fastDWeight, dWeight) <= 1e-5, "\(isa) dWeight")
            #expect(largestDifference(fastDBias, dBias) <= 1e-5, "\(isa) dBias")
        }
    }

    @Test func columnSumsAndEmbeddingScatterMatchTheReference() {
        let rows = 13, columns = 53
        let matrix = values(rows * columns, seed: 8)
        var expected = values(columns, seed: 9)
        let start = expected
        addColumnSumsReference(of: matrix, rows: rows, columns: columns, into: &expected)
        // Repeated ids: the scatter must add both rows.
        let ids: [Int32] = [3, 1, 3, 0, 2, 2, 2, 1, 0, 4, 3, 3, 1], positions = (0..<13).map { Int32($0 % 5) }
        let types = (0..<13).map { Int32($0 % 2) }
        var word = values(5 * columns, seed: 10), position = values(5 * columns, seed: 11), type = values(2 * columns, seed: 12)
        let wordStart = word, positionStart = position, typeStart = type
        embeddingBackwardReference(dWordTable: &word, dPositionTable: &position, dTokenTypeTable: &type, dOut: matrix,
                                   tokenIds: ids, positions: positions, tokenTypeIds: types, tokens: rows, hidden: columns)
        onEachInstructionSet { isa, k, compute in
            var sums = start
            k.add_column_sums(&sums, matrix, rows, columns, 0, 32)
            k.add_column_sums(&sums, matrix, rows, columns, 32, columns)
            #expect(largestDifference(sums, expected) <= 2e-6, "\(isa) column sums")
            var w = wordStart, p = positionStart, y = typeStart
            k.embedding_backward(&w, &p, &y, matrix, ids, positions, types, rows, columns, 0, 16, -1, -1)
            k.embedding_backward(&w, &p, &y, matrix, ids, positions, types, rows, columns, 16, columns, -1, -1)
            #expect(w == word && p == position && y == type, "\(isa) embedding scatter")
        }
    }

    /// Without a token type table (DistilBERT) the forward sum is word + position; with padding
    /// rows (HF's nn.Embedding padding_idx) those rows get no gradient and the others theirs.
    @Test func embeddingsWithoutTokenTypesAndWithPaddingRowsMatchTheReference() {
        let rows = 13, columns = 53
        let dOut = values(rows * columns, seed: 20)
        let ids: [Int32] = [3, 1, 3, 0, 2, 2, 2, 1, 0, 4, 3, 3, 1], positions = (0..<13).map { Int32($0 % 5) }
        let wordTable = values(5 * columns, seed: 21), positionTable = values(5 * columns, seed: 22)
        var expectedSum = [Float](repeating: 0, count: rows * columns)
        embeddingForwardReference(out: &expectedSum, tokenIds: ids, positions: positions, tokenTypeIds: nil, wordTable: wordTable,
                                  positionTable: positionTable, tokenTypeTable: nil, tokens: rows, hidden: columns)
        var word = values(5 * columns, seed: 23), position = values(5 * columns, seed: 24)
        let wordStart = word, positionStart = position
        embeddingBackwardReference(dWordTable: &word, dPositionTable: &position, dTokenTypeTable: nil, dOut: dOut, tokenIds: ids,
                                   positions: positions, tokenTypeIds: nil, tokens: rows, hidden: columns,
                                   wordPaddingRow: 1, positionPaddingRow: 4)
        #expect(Array(word[columns..<(2 * columns)]) == Array(wordStart[columns..<(2 * columns)]), "word padding row untouched")
        #expect(Array(position[(4 * columns)...]) == Array(positionStart[(4 * columns)...]), "position padding row untouched")
        #expect(word != wordStart && position != positionStart)
        let weight = [Float](repeating: 1, count: columns), bias = [Float](repeating: 0, count: columns)
        onEachInstructionSet { isa, k, compute in
            var sum = [Float](repeating: 0, count: rows * columns), normed = sum
            var mean = [Float](repeating: 0, count: rows), rstd = mean
            let off = bd_row_dropout(sequence_keys: nil, row_sequence: nil, row_position: nil, probability: 0)
            k.embedding_layernorm_forward(&sum, &normed, &mean, &rstd, ids, positions, nil, wordTable, positionTable, nil,
                                          weight, bias, 0, rows, columns, 1e-12, off)
            #expect(sum == expectedSum, "\(isa) embedding sum without token types")
            var w = wordStart, p = positionStart
            k.embedding_backward(&w, &p, nil, dOut, ids, positions, nil, rows, columns, 0, 16, 1, 4)
            k.embedding_backward(&w, &p, nil, dOut, ids, positions, nil, rows, columns, 16, columns, 1, 4)
            #expect(w == word && p == position, "\(isa) embedding scatter with padding rows")
        }
    }

    // MARK: attention

    /// Random qkv for sequences of the given lengths, and the references' outputs.
    struct AttentionCase {
        let lengths: [Int], C: Int, H: Int
        let qkv: [Float], dContext: [Float]
        var starts: [Int] { lengths.reduce(into: [0]) { $0.append($0.last! + $1) } }
        var T: Int { lengths.reduce(0, +) }
    }

    func attentionCase(lengths: [Int], C: Int, H: Int) -> AttentionCase {
        let T = lengths.reduce(0, +)
        return AttentionCase(lengths: lengths, C: C, H: H, qkv: values(T * 3 * C, seed: UInt64(C * 31 + T), scale: 2),
                             dContext: values(T * C, seed: UInt64(T)))
    }

    @Test(arguments: [(8, 4), (64, 2), (128, 2), (384, 12)])
    func attentionMatchesTheReference(C: Int, H: Int) {
        let test = attentionCase(lengths: [1, 5, 17, 40, 33], C: C, H: H)
        let starts = test.starts, B = test.lengths.count, T = test.T
        let probabilityOffsets = test.lengths.reduce(into: [0]) { $0.append($0.last! + H * $1 * $1) }
        let clsOffsets = test.lengths.reduce(into: [0]) { $0.append($0.last! + H * $1) }
        let samples = [11, 12, 13, 14, 15]
        for dropout in [nil, DropoutContext(seed: 5, step: 3)] {
            samples.withUnsafeBufferPointer { samples in
            let dropoutArgument = dropout.map { ($0, samples.baseAddress!, 2, Float(0.2)) }
            starts.withUnsafeBufferPointer { starts in
            probabilityOffsets.withUnsafeBufferPointer { offsets in
            clsOffsets.withUnsafeBufferPointer { clsOffsets in
                let sequences = PackedSequences(starts: starts.baseAddress!, count: B, probabilityOffsets: offsets.baseAddress!,
                                                clsProbabilityOffsets: clsOffsets.baseAddress!)
                let longest = test.lengths.max()!
                var scratch = [Float](repeating: 0, count: max(2 * longest * longest, Compute(threads: 1).kernels.attention_scratch_floats(longest, C / H)))
                var context = [Float](repeating: 0, count: T * C), probabilities = [Float](repeating: 0, count: offsets.last!)
                attentionForwardReference(context: &context, probabilities: &probabilities, qkv: test.qkv, sequences: sequences,
                                          hidden: C, heads: H, dropout: dropoutArgument, scratch: &scratch, scratchStride: scratch.count)
                var dqkv = [Float](repeating: 0, count: T * 3 * C)
                attentionBackwardReference(dqkv: &dqkv, dContext: test.dContext, qkv: test.qkv, probabilities: probabilities,
                                           sequences: sequences, hidden: C, heads: H, dropout: dropoutArgument,
                                           scratch: &scratch, scratchStride: scratch.count)
                onEachInstructionSet { isa, k, compute in
                    let what = "\(isa) C \(C) H \(H) dropout \(dropout != nil)"
                    var fastContext = [Float](repeating: 0, count: T * C), fastProbabilities = [Float](repeating: 0, count: offsets.last!)
                    compute.attentionForward(context: &fastContext, probabilities: &fastProbabilities, qkv: test.qkv, sequences: sequences,
                                     hidden: C, heads: H, clsQueries: nil, dropout: dropoutArgument,
                                     scratch: &scratch, scratchStride: scratch.count, workers: 1)
                    #expect(largestDifference(fastProbabilities, probabilities) <= 1e-6, "\(what) probabilities")
                    #expect(largestDifference(fastContext, context) <= 2e-6 * (context.map(abs).max() ?? 1), "\(what) context")
                    var fastDqkv = [Float](repeating: 0, count: T * 3 * C)
                    compute.attentionBackward(dqkv: &fastDqkv, dContext: test.dContext, qkv: test.qkv, probabilities: fastProbabilities,
                                      sequences: sequences, hidden: C, heads: H, clsQueries: nil, dClsQueries: nil,
                                      dropout: dropoutArgument, scratch: &scratch, scratchStride: scratch.count, workers: 1)
                    let scale = dqkv.map(abs).max() ?? 1
                    #expect(largestDifference(fastDqkv, dqkv) <= 2e-6 * scale, "\(what) dqkv")

                    // [CLS] queries only: row 0 of every sequence, keys and values of all rows.
                    var queries = [Float](repeating: 0, count: B * C), dClsContext = [Float](repeating: 0, count: B * C)
                    for s in 0..<B {
                        for c in 0..<C {
                            queries[s * C + c] = test.qkv[starts[s] * 3 * C + c]
                            dClsContext[s * C + c] = test.dContext[starts[s] * C + c]
                        }
                    }
                    var clsContext = [Float](repeating: 0, count: B * C), clsProbabilities = [Float](repeating: 0, count: clsOffsets.last!)
                    compute.attentionForward(context: &clsContext, probabilities: &clsProbabilities, qkv: test.qkv, sequences: sequences,
                                     hidden: C, heads: H, clsQueries: queries, dropout: dropoutArgument,
                                     scratch: &scratch, scratchStride: scratch.count, workers: 1)
                    var clsError: Float = 0, clsContextError: Float = 0
                    for s in 0..<B {
                        let len = test.lengths[s]
                        for h in 0..<H {
                            for j in 0..<len {
                                clsError = max(clsError, abs(clsProbabilities[clsOffsets[s] + h * len + j] - probabilities[offsets[s] + h * len * len + j]))
                            }
                        }
                        for c in 0..<C { clsContextError = max(clsContextError, abs(clsContext[s * C + c] - context[starts[s] * C + c])) }
                    }
                    #expect(clsError <= 1e-6, "\(what) [CLS] probabilities")
                    #expect(clsContextError <= 2e-6 * (context.map(abs).max() ?? 1), "\(what) [CLS] context")
                    // Backward with only the [CLS] rows' context gradient, against the full
                    // backward of a dContext that is zero elsewhere.
                    var sparseDContext = [Float](repeating: 0, count: T * C)
                    for s in 0..<B { for c in 0..<C { sparseDContext[starts[s] * C + c] = dClsContext[s * C + c] } }
                    var expectedDqkv = [Float](repeating: 0, count: T * 3 * C)
                    attentionBackwardReference(dqkv: &expectedDqkv, dContext: sparseDContext, qkv: test.qkv, probabilities: probabilities,
                                               sequences: sequences, hidden: C, heads: H, dropout: dropoutArgument,
                                               scratch: &scratch, scratchStride: scratch.count)
                    var clsDqkv = [Float](repeating: 0, count: T * 3 * C), dQueries = [Float](repeating: 0, count: B * C)
                    compute.attentionBackward(dqkv: &clsDqkv, dContext: dClsContext, qkv: test.qkv, probabilities: clsProbabilities,
                                      sequences: sequences, hidden: C, heads: H, clsQueries: queries, dClsQueries: &dQueries,
                                      dropout: dropoutArgument, scratch: &scratch, scratchStride: scratch.count, workers: 1)
                    let clsScale = expectedDqkv.map(abs).max() ?? 1
                    var kvError: Float = 0, qError: Float = 0
                    for t in 0..<T {
                        for c in C..<(3 * C) { kvError = max(kvError, abs(clsDqkv[t * 3 * C + c] - expectedDqkv[t * 3 * C + c])) }
                    }
                    for s in 0..<B {
                        for c in 0..<C { qError = max(qError, abs(dQueries[s * C + c] - expectedDqkv[starts[s] * 3 * C + c])) }
                    }
                    #expect(kvError <= 2e-6 * clsScale, "\(what) [CLS] dk/dv")
                    #expect(qError <= 2e-6 * clsScale, "\(what) [CLS] dq")
                }
            }}}}
        }
    }

    // MARK: optimizer, norm

    @Test(arguments: [true, false])
    func adamMatchesTheReference(decoupled: Bool) {
        let count = 1037
        let gradients = values(count, seed: 20)
        var p = values(count, seed: 21), m = values(count, seed: 22).map { $0 / 10 }, v = values(count, seed: 23).map { $0 * $0 / 100 }
        let startP = p, startM = m, startV = v
        adamStepReference(parameters: &p, gradients: gradients, m: &m, v: &v, count: count, gradientScale: 0.7, isAdamW: decoupled,
                          decay: 0.01, decoupledFactor: 0.99999, oneMinusBeta1: 0.1, beta2: 0.999, oneMinusBeta2: 0.001,
                          biasCorrection2Sqrt: 0.0447, stepSize: 1e-3, epsilon: 1e-8)
        onEachInstructionSet { isa, k, compute in
            var p2 = startP, m2 = startM, v2 = startV
            k.adam(&p2, gradients, &m2, &v2, count, 0.7, decoupled ? 1 : 0, 0.01, 0.99999, 0.1, 0.999, 0.001, 0.0447, 1e-3, 1e-8)
            #expect(largestDifference(p2, p) <= 1e-6, "\(isa) parameters")
            #expect(largestDifference(m2, m) <= 1e-7, "\(isa) m")
            #expect(largestDifference(v2, v) <= 1e-8, "\(isa) v")
        }
    }

    @Test func sumOfSquaresIsAccurateAndIndependentOfThreads() {
        let arena = FloatArena(count: 1_000_003)
        let x = values(arena.count, seed: 30)
        for i in 0..<arena.count { arena.base[i] = x[i] }
        var exact = 0.0
        for i in 5..<arena.count { exact += Double(x[i]) * Double(x[i]) }
        let one = sumOfSquares(arena, range: 5..<arena.count, compute: Compute(threads: 1))
        let two = sumOfSquares(arena, range: 5..<arena.count, compute: Compute(threads: 2))
        #expect(abs(one - exact) <= 1e-6 * exact)
        #expect(one == two)
    }

    // MARK: products split over the team

    /// Rows split (many tokens) and columns split (fewer tokens than features, splitsColumns).
    @Test(arguments: [(301, 96, 200), (37, 64, 300)])
    func linearLayersSplitOverThreadsEqualOneThread(rows: Int, inFeatures: Int, outFeatures: Int) {
        let input = values(rows * inFeatures, seed: 40), weight = values(outFeatures * inFeatures, seed: 41)
        let bias = values(outFeatures, seed: 42), dOut = values(rows * outFeatures, seed: 43)
        func run(_ compute: Compute) -> [[Float]] {
            var out = [Float](repeating: 0, count: rows * outFeatures)
            compute.linearForward(out: &out, input: input, weight: weight, bias: bias, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
            var dInput = values(rows * inFeatures, seed: 44), dWeight = values(outFeatures * inFeatures, seed: 45)
            var dBias = values(outFeatures, seed: 46)
            compute.linearBackward(dInput: &dInput, dWeight: &dWeight, dBias: &dBias, dOut: dOut, input: input, weight: weight,
                           rows: rows, inFeatures: inFeatures, outFeatures: outFeatures, accumulateInput: true)
            return [out, dInput, dWeight, dBias]
        }
        let one = run(Compute(threads: 1))
        let two = run(Compute(threads: 2))
        // Naive products in double.
        var expectedOut = [Float](repeating: 0, count: rows * outFeatures)
        for r in 0..<rows {
            for o in 0..<outFeatures {
                var total = Double(bias[o])
                for i in 0..<inFeatures { total += Double(input[r * inFeatures + i]) * Double(weight[o * inFeatures + i]) }
                expectedOut[r * outFeatures + o] = Float(total)
            }
        }
        #expect(largestDifference(one[0], expectedOut) <= 1e-4)
        for (a, b) in zip(one, two) { #expect(largestDifference(a, b) <= 1e-5 * max(1, a.map(abs).max() ?? 1)) }
    }
}
