import CBF16
import CGemm
import Foundation
import Testing

/// The bf16 engines of CGemm: rounding, the packed layouts, the software engine against the
/// sequential definition written out below in Swift, and each hardware engine this CPU has
/// against the software engine (AVX512-BF16: bit for bit on Intel) or against float64 (AMX).
@Suite struct CGemmTests {
    static let hasAVX512BF16 = bg_engine_supported(Int32(BG_ENGINE_AVX512_BF16)) != 0
    static let hasAMX = bg_engine_supported(Int32(BG_ENGINE_AMX)) != 0
    static let isIntel = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?.contains("GenuineIntel") ?? false

    /// Deterministic pseudo-random floats in [-scale, scale).
    static func values(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
    }

    // MARK: rounding

    /// Round to nearest even, written the long way: the two neighbouring bf16 values and the
    /// distance to each; `flushing`: a denormal input is first a zero of its sign (`vcvtneps2bf16`).
    static func roundedReference(_ x: Float, flushing: Bool = true) -> UInt16 {
        if x.isNaN { return UInt16(x.bitPattern >> 16) | 0x40 }
        if flushing && x.isSubnormal { return x.sign == .minus ? 0x8000 : 0 }
        let down = UInt16(x.bitPattern >> 16)
        let low = Float(bitPattern: UInt32(down) << 16)
        if low == x { return down }
        let up = down + 1   // one bf16 further from zero
        // In double, the distances are exact; past the largest bf16 the next value is 2^128
        // as far as rounding is concerned (IEEE rounds to infinity from half an ulp beyond).
        let high = up & 0x7fff == 0x7f80 ? Double(low.sign == .minus ? -0x1p128 : 0x1p128) : Double(Float(bitPattern: UInt32(up) << 16))
        let toLow = abs(Double(x) - Double(low)), toHigh = abs(high - Double(x))
        if toLow < toHigh { return down }
        if toHigh < toLow { return up }
        return down & 1 == 0 ? down : up
    }

    static let roundingInputs: [Float] = {
        var inputs: [Float] = [0, -0, 1, -1, .infinity, -.infinity, .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                               .leastNormalMagnitude, .leastNonzeroMagnitude, -.leastNonzeroMagnitude, Float(bitPattern: 0x000a_0000), Float(bitPattern: 0x800a_0000),   // denormals
                               Float(bitPattern: 0x3f80_8000), Float(bitPattern: 0x3f81_8000),   // ties: down to even, up to even
                               Float(bitPattern: 0x3f80_8001), Float(bitPattern: 0x3f80_7fff), Float(bitPattern: 0x7f7f_ffff),
                               Float(bitPattern: 0x0000_8001), Float(bitPattern: 0x007f_ffff)]   // denormals that round up
        var state: UInt64 = 7
        for _ in 0..<200_000 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            inputs.append(Float(bitPattern: UInt32(truncatingIfNeeded: state >> 17)))
        }
        return inputs
    }()

    typealias RoundFloats = @convention(c) (UnsafeMutablePointer<UInt16>?, UnsafePointer<Float>?, Int) -> Void

    /// `roundFloats` over roundingInputs, and how many results differ from the reference (any NaN
    /// counts as a NaN) and from `scalar` (bit for bit).
    static func roundAll(_ roundFloats: RoundFloats, scalar: (Float) -> UInt16, flushing: Bool)
        -> (out: [UInt16], fromReference: Int, fromScalar: Int) {
        let inputs = roundingInputs
        var out = [UInt16](repeating: 0, count: inputs.count)
        roundFloats(&out, inputs, inputs.count)
        var fromReference = 0, fromScalar = 0
        for (x, got) in zip(inputs, out) {
            if x.isNaN ? !Float(bitPattern: UInt32(got) << 16).isNaN : got != roundedReference(x, flushing: flushing) { fromReference += 1 }
            if scalar(x) != got { fromScalar += 1 }
        }
        return (out, fromReference, fromScalar)
    }

    @Test func roundingIsToNearestEvenWithDenormalsFlushed() {
        let (out, fromReference, fromScalar) = Self.roundAll(bg_round_floats, scalar: bf16_round_flushing, flushing: true)
        #expect(fromReference == 0)
        #expect(fromScalar == 0, "the vector loop is CBF16's bf16_round_flushing")
        #expect(out[11] == 0 && out[12] == 0x8000, "denormals become signed zeros")
        #expect(out[13] == 0x3f80 && out[14] == 0x3f82, "ties go to even")
        #expect(out[17] == 0x7f80 && out[6] == 0x7f80, "the largest float rounds to infinity")
        var widened = [Float](repeating: 0, count: 4)
        bf16_widen_floats(&widened, [0x3f80, 0xc040, 0x7f80, 0x0001], 4)
        #expect(widened == [1, -3, .infinity, Float(bitPattern: 0x0001_0000)])
    }

    /// CBF16's other rounding (the gradient compression's, PyTorch's c10::BFloat16): the same
    /// except that denormals are rounded like any value.
    @Test func roundingWithoutFlushKeepsDenormals() {
        let (out, fromReference, fromScalar) = Self.roundAll(bf16_round_floats, scalar: bf16_round, flushing: false)
        #expect(fromReference == 0)
        #expect(fromScalar == 0)
        #expect(out[9] == 0 && out[10] == 0x8000, "the least denormal rounds to a signed zero")
        #expect(out[11] == 0x000a && out[12] == 0x800a, "denormals with bf16 bits stay")
        #expect(out[18] == 0x0001 && out[19] == 0x0080, "denormals round up, to the least normal")
        #expect(out[13] == 0x3f80 && out[14] == 0x3f82, "ties go to even")
        #expect(out[17] == 0x7f80, "the largest float rounds to infinity")
    }

    // MARK: layouts

    typealias PackA = @convention(c) (UnsafeMutablePointer<UInt16>?, Int, UnsafePointer<Float>?, Int, Int32, Int, Int, Int, Int) -> Void
    typealias PackB = @convention(c) (UnsafeMutablePointer<UInt16>?, UnsafePointer<Float>?, Int, Int32, Int, Int, Int, Int, Int, Int) -> Void
    /// The packing entry points (vector code for whole blocks on AVX-512 CPUs) and the portable loops.
    static let packers: [(name: String, a: PackA, b: PackB)] = [("bg_pack", bg_pack_a, bg_pack_b), ("portable", bg_pack_a_portable, bg_pack_b_portable)]

    /// Small sizes (edges only) and sizes with whole 16 x 16 blocks of pair words (the vector paths).
    @Test(arguments: [(depth: 37, columns: 21, rows: 5), (depth: 70, columns: 50, rows: 40)], [0, 1])
    func packedLayoutsAreTheDocumentedOnesAndRangesWriteOnlyTheirRange(size: (depth: Int, columns: Int, rows: Int), packer: Int) {
        let (depth, columns, rows) = size
        let packA = Self.packers[packer].a, packB = Self.packers[packer].b
        let source = Self.values(depth * columns, seed: 3)   // (depth, columns) and, read transposed, (columns, depth)
        let paddedDepth = bg_padded_depth(depth), strips = bg_strip_count(columns)
        #expect(paddedDepth % 32 == 0 && paddedDepth - depth < 32 && strips == (columns + 15) / 16)
        #expect(bg_packed_b_count(depth, columns) == paddedDepth * 16 * strips)
        for transposed in [Int32(0), 1] {
            var packed = [UInt16](repeating: 0xffff, count: bg_packed_b_count(depth, columns))
            let stride = transposed == 1 ? depth : columns
            // Three calls: pairs [0, 10) of strips 1..., strip 0, then pairs [10, end) of strips 1...
            packB(&packed, source, stride, transposed, depth, columns, 0, 10, 1, strips)
            #expect(packed[0] == 0xffff, "strip 0 untouched by the first call")
            #expect(packed[16 * paddedDepth + 10 * 32] == 0xffff, "pair 10 of strip 1 untouched by the first call")
            packB(&packed, source, stride, transposed, depth, columns, 0, paddedDepth / 2, 0, 1)
            packB(&packed, source, stride, transposed, depth, columns, 10, paddedDepth / 2, 1, strips)
            for s in 0..<strips {
                for p in 0..<(paddedDepth / 2) {
                    for j in 0..<16 {
                        for h in 0..<2 {
                            let d = 2 * p + h, n = 16 * s + j
                            let value: Float = d < depth && n < columns ? (transposed == 1 ? source[n * depth + d] : source[d * columns + n]) : 0
                            let got = packed[s * paddedDepth * 16 + p * 32 + 2 * j + h]
                            if got != bf16_round_flushing(value) { Issue.record("\(Self.packers[packer].name) transposed \(transposed): B[\(d)][\(n)] = \(got), expected \(bf16_round_flushing(value))") }
                        }
                    }
                }
            }
        }
        let lda = paddedDepth + 8, paddedRows = bg_padded_rows(rows)
        #expect(paddedRows % 16 == 0 && paddedRows - rows < 16)
        for transposed in [Int32(0), 1] {
            var a = [UInt16](repeating: 0xffff, count: paddedRows * lda)
            let x = Self.values(rows * depth, seed: 4)   // (rows, depth) or, transposed, (depth, rows)
            // Two calls: the first 3 rows, then the rest.
            packA(&a, lda, x, transposed == 1 ? rows : depth, transposed, rows, depth, 0, 3)
            #expect(a[3 * lda] == 0xffff, "row 3 untouched by the first call")
            packA(&a, lda, x, transposed == 1 ? rows : depth, transposed, rows, depth, 3, paddedRows)
            for r in 0..<paddedRows {
                for d in 0..<lda {
                    let expected: UInt16 = d >= paddedDepth ? 0xffff   // beyond the padded depth: not ours
                        : r < rows && d < depth ? bf16_round_flushing(transposed == 1 ? x[d * rows + r] : x[r * depth + d]) : 0
                    if a[r * lda + d] != expected { Issue.record("\(Self.packers[packer].name) transposed \(transposed): A[\(r)][\(d)] = \(a[r * lda + d]), expected \(expected)") }
                }
            }
        }
    }

    // MARK: products

    struct Problem {
        let rows, depth, columns, lda: Int
        let a: [UInt16], packed: [UInt16], c: [Float]
        let aValues: [Float], bValues: [Float]   // the bf16 operands widened: A (rows, depth), B (depth, columns)

        init(rows: Int, depth: Int, columns: Int, seed: UInt64, bScale: Float = 0.1) {
            self.rows = rows; self.depth = depth; self.columns = columns
            lda = bg_padded_depth(depth) + 32
            let x = CGemmTests.values(rows * depth, seed: seed), w = CGemmTests.values(columns * depth, seed: seed + 1, scale: bScale)
            var a = [UInt16](repeating: 0, count: bg_padded_rows(rows) * lda)
            bg_pack_a(&a, lda, x, depth, 0, rows, depth, 0, bg_padded_rows(rows))
            var packed = [UInt16](repeating: 0, count: bg_packed_b_count(depth, columns))
            bg_pack_b(&packed, w, depth, 1, depth, columns, 0, bg_padded_depth(depth) / 2, 0, bg_strip_count(columns))
            var c = CGemmTests.values(rows * columns, seed: seed + 2)
            c[0] = Float(bitPattern: 0x000a_0000)   // a denormal starting value: flushed
            self.a = a; self.packed = packed; self.c = c
            aValues = x.map { bf16_widen(bf16_round_flushing($0)) }
            bValues = (0..<(depth * columns)).map { i in bf16_widen(bf16_round_flushing(w[(i % columns) * depth + i / columns])) }
        }

        func run(_ engine: Int32, accumulate: Bool, rowRanges: [Range<Int>]? = nil, stripRanges: [Range<Int>]? = nil) -> [Float] {
            var out = c
            for rowRange in rowRanges ?? [0..<rows] {
                for stripRange in stripRanges ?? [0..<bg_strip_count(columns)] {
                    bg_gemm(engine, a, lda, packed, depth, columns, &out, columns, rowRange.lowerBound, rowRange.upperBound,
                            stripRange.lowerBound, stripRange.upperBound, accumulate ? 1 : 0)
                }
            }
            return out
        }

        /// The software engine's definition (CGemm.h), one element at a time.
        func sequential(accumulate: Bool) -> [Float] {
            func flushed(_ x: Float) -> Float { x.isSubnormal ? (x.sign == .minus ? -0.0 : 0) : x }
            var out = c
            for r in 0..<rows {
                for n in 0..<columns {
                    var acc: Float = accumulate ? flushed(c[r * columns + n]) : 0
                    var d = 0
                    while d < depth {
                        // Past an odd depth the pair is completed with zeros (the padding).
                        let odd = d + 1 < depth ? aValues[r * depth + d + 1] : 0, oddB = d + 1 < depth ? bValues[(d + 1) * columns + n] : 0
                        acc = flushed(acc.addingProduct(odd, oddB))
                        acc = flushed(acc.addingProduct(aValues[r * depth + d], bValues[d * columns + n]))
                        d += 2
                    }
                    out[r * columns + n] = acc
                }
            }
            return out
        }

        /// The exact result (float64) and the bound of fp32 sequential accumulation:
        /// depth * 2^-24 * (|C| + sum |a b|) per element.
        func exactAndBound(accumulate: Bool) -> (exact: [Double], bound: [Double]) {
            var exact = [Double](repeating: 0, count: rows * columns), bound = exact
            for r in 0..<rows {
                for n in 0..<columns {
                    var sum = accumulate ? Double(c[r * columns + n]) : 0, magnitude = abs(sum)
                    for d in 0..<depth {
                        let product = Double(aValues[r * depth + d]) * Double(bValues[d * columns + n])
                        sum += product; magnitude += abs(product)
                    }
                    exact[r * columns + n] = sum
                    bound[r * columns + n] = Double(depth + 1) * 0x1p-24 * magnitude + 1e-37
                }
            }
            return (exact, bound)
        }
    }

    /// Odd sizes, edges of every kind (partial row tiles, a partial last strip, depth not a
    /// multiple of 32), and the model's own sizes.
    static let shapes: [(rows: Int, depth: Int, columns: Int)] = [
        (1, 1, 1), (5, 37, 3), (16, 32, 16), (17, 33, 17), (31, 64, 33), (33, 96, 47), (7, 3, 130), (40, 384, 100), (64, 1536, 48),
    ]

    func bitsDiffering(_ x: [Float], _ y: [Float]) -> Int { zip(x, y).filter { $0.bitPattern != $1.bitPattern }.count }

    @Test func softwareEngineIsTheSequentialDefinition() {
        for (i, shape) in Self.shapes.prefix(8).enumerated() {
            let problem = Problem(rows: shape.rows, depth: shape.depth, columns: shape.columns, seed: UInt64(10 * i))
            for accumulate in [false, true] {
                let got = problem.run(Int32(BG_ENGINE_SOFTWARE), accumulate: accumulate)
                #expect(bitsDiffering(got, problem.sequential(accumulate: accumulate)) == 0, "\(shape) accumulate \(accumulate)")
                let (exact, bound) = problem.exactAndBound(accumulate: accumulate)
                #expect(zip(got, zip(exact, bound)).allSatisfy { abs(Double($0) - $1.0) <= $1.1 }, "\(shape): fp32 accumulation bound")
            }
        }
    }

    @Test(.enabled(if: hasAVX512BF16, "this CPU has no AVX512-BF16"))
    func avx512EngineEqualsTheSoftwareEngine() {
        // On Intel CPUs vdpbf16ps is the software engine's sequence of two rounded FMAs, bit for
        // bit. Other vendors' implementations are only held to the fp32 accumulation bound (and
        // the number of differing elements is printed) until someone verifies them.
        for (i, shape) in Self.shapes.enumerated() {
            let problem = Problem(rows: shape.rows, depth: shape.depth, columns: shape.columns, seed: UInt64(10 * i))
            for accumulate in [false, true] {
                let got = problem.run(Int32(BG_ENGINE_AVX512_BF16), accumulate: accumulate)
                let differing = bitsDiffering(got, problem.run(Int32(BG_ENGINE_SOFTWARE), accumulate: accumulate))
                if Self.isIntel {
                    #expect(differing == 0, "\(shape) accumulate \(accumulate)")
                } else {
                    print("avx512-bf16 vs software \(shape): \(differing) of \(got.count) elements differ")
                    let (exact, bound) = problem.exactAndBound(accumulate: accumulate)
                    #expect(zip(got, zip(exact, bound)).allSatisfy { abs(Double($0) - $1.0) <= $1.1 }, "\(shape)")
                }
            }
        }
    }

    @Test(.enabled(if: hasAMX, "this CPU has no AMX"))
    func amxEngineIsWithinTheFp32AccumulationBound() {
        for (i, shape) in Self.shapes.enumerated() {
            let problem = Problem(rows: shape.rows, depth: shape.depth, columns: shape.columns, seed: UInt64(10 * i))
            for accumulate in [false, true] {
                let got = problem.run(Int32(BG_ENGINE_AMX), accumulate: accumulate)
                let (exact, bound) = problem.exactAndBound(accumulate: accumulate)
                var worst = 0.0
                for j in got.indices { worst = max(worst, abs(Double(got[j]) - exact[j]) / bound[j]) }
                #expect(worst <= 1, "\(shape) accumulate \(accumulate): error \(worst) x the bound")
            }
        }
    }

    @Test func splittingRowsOrStripsGivesTheSameBits() {
        // The threads of a team split a product by rows or by strips: every split must give the
        // whole product's bits (world-size invariance rests on it).
        let problem = Problem(rows: 45, depth: 100, columns: 70, seed: 99)
        let engines = [BG_ENGINE_SOFTWARE, BG_ENGINE_AVX512_BF16, BG_ENGINE_AMX].map(Int32.init).filter { bg_engine_supported($0) != 0 }
        for engine in engines {
            let whole = problem.run(engine, accumulate: true)
            let byRows = problem.run(engine, accumulate: true, rowRanges: [0..<7, 7..<23, 23..<45])
            let byStrips = problem.run(engine, accumulate: true, stripRanges: [0..<1, 1..<3, 3..<5])
            #expect(bitsDiffering(whole, byRows) == 0, "\(String(cString: bg_engine_name(engine))): rows")
            #expect(bitsDiffering(whole, byStrips) == 0, "\(String(cString: bg_engine_name(engine))): strips")
        }
    }

    @Test func engineSupportIsConsistent() {
        #expect(bg_engine_supported(Int32(BG_ENGINE_SOFTWARE)) != 0)
        #expect(bg_engine_supported(-1) == 0 && bg_engine_supported(Int32(BG_ENGINE_COUNT)) == 0)
        print("bf16 engines on this CPU: AVX512-BF16 \(Self.hasAVX512BF16), AMX \(Self.hasAMX)")
    }
}
