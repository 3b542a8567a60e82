import CBF16
import CCPU
import CGemm
import CKernels
import Foundation
import Testing
@testable import Model

/// --bf16 against PyTorch (tools/make_model_fixtures.py, tiny_bf16_reference.safetensors):
/// `emulated.*` is bert-dist's bf16 semantics written in PyTorch (every matrix product rounds
/// both inputs to bf16, fp32 sums; nothing else rounded), `autocast.*` is PyTorch's own
/// torch.autocast("cpu", bfloat16), `fp32.*` the fp32 model.
///
/// Tolerances (benchmarks/bf16-autocast.md), as relative L2 distances per tensor:
/// - against `emulated.*`: 1e-4. The emulated result moves by at most 5e-7 when its sums are done
///   in float64 (the semantics do not depend on the order of the fp32 sums); the rest of the
///   margin is for inputs whose bf16 rounding flips because an fp32 value differs in its last
///   bit from PyTorch's (one flip moves a product's input by 2^-8 relative). Far below the
///   distance of bf16 from fp32 itself (3e-4 for the logits, up to 1e-2 for gradients), so a
///   product left in fp32 or rounded twice fails it.
/// - against `autocast.*`: 2x each tensor's own autocast-vs-fp32 distance (our roundings are a
///   subset of autocast's, so |ours - autocast| <= |ours - fp32| + |fp32 - autocast| <= 2 |autocast - fp32|).
@Suite struct BF16ParityTests {
    let reference: SafeTensorsFile
    let batchFile: SafeTensorsFile
    let directory = fixtures.appendingPathComponent("tiny_bert")

    init() throws {
        reference = try SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_bf16_reference.safetensors"))
        batchFile = try SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_reference.safetensors"))
    }

    /// The software engine runs on every x86-64 CPU; the fastest engine is tested too where the
    /// CPU has one.
    static let engines: [BF16Engine] = [.software] + (BF16Engine.fastest == .software ? [] : [BF16Engine.fastest])

    func loadModel(_ engine: BF16Engine, threads: Int = 1) throws -> BertForSequenceClassification {
        try BertForSequenceClassification.load(modelDirectory: directory, labelCount: nil, seed: 0,
                                               compute: Compute(threads: threads, precision: .bf16, bf16Engine: engine)).0
    }

    @Test(arguments: engines)
    func forwardMatchesTheEmulatedSemantics(engine: BF16Engine) throws {
        let model = try loadModel(engine)
        let batch = try packedBatch(from: batchFile)
        let result = try model.forward(batch, dropout: nil)
        let loss = [Float(result.lossSum / Double(batch.sequenceCount))]
        try expectRelative(Array(model.logits), "emulated.logits", 1e-4)
        try expectRelative(loss, "emulated.loss", 1e-4)
        try expectWithinTwiceAutocast(Array(model.logits), "logits")
        try expectWithinTwiceAutocast(loss, "loss")
        // Closer to fp32 than autocast: our roundings are a subset of autocast's.
        let ours = relativeDistance(Array(model.logits), try reference.floats("fp32.logits"))
        let theirs = relativeDistance(try reference.floats("autocast.logits"), try reference.floats("fp32.logits"))
        print(String(format: "logits vs fp32: ours %.2e, autocast %.2e", ours, theirs))
        #expect(ours < theirs)
        #expect(ours > 0, "the bf16 model computed exactly the fp32 logits: no product was rounded")
    }

    @Test(arguments: engines)
    func everyGradientMatchesTheEmulatedSemantics(engine: BF16Engine) throws {
        let model = try loadModel(engine)
        let batch = try packedBatch(from: batchFile)
        try model.forward(batch, dropout: nil)
        try model.backward(batch, dropout: nil, lossScale: 1 / Float(batch.sequenceCount))
        for tensor in model.layout.tensors {
            let gradient = Array(model.gradients[tensor.range])
            if tensor.name.contains("key.bias") {
                // Exactly 0 in exact arithmetic (softmax ignores a constant added to a row of scores):
                // what is left is rounding noise. Under bf16 the rows of dS, rounded to bf16 as
                // inputs of dK = dSᵀ Q, no longer sum to 0 (each element moves by up to 2^-9
                // relative), so the noise is bounded by 2^-8 of the key weight's gradient norm
                // (PyTorch's emulated and autocast results show the same size of noise).
                let weightName = tensor.name.replacingOccurrences(of: "bias", with: "weight")
                let scale = norm(Array(model.gradients[model.layout[weightName].range]))
                let emulated = norm(try reference.floats("emulated.grad." + tensor.name))
                    / norm(try reference.floats("emulated.grad." + weightName))
                print(String(format: "grad %@: norm / key weight gradient norm %.2e (emulated %.2e)", tensor.name,
                             norm(gradient) / scale, emulated))
                #expect(norm(gradient) <= 0x1p-8 * scale, "grad \(tensor.name)")
                continue
            }
            try expectRelative(gradient, "emulated.grad." + tensor.name, 1e-4)
            try expectWithinTwiceAutocast(gradient, "grad." + tensor.name)
        }
    }

    @Test(arguments: engines)
    func threeAdamWStepsMatchTheEmulatedSemantics(engine: BF16Engine) throws {
        // The recipe of tools/make_model_fixtures.py (threeOptimizerSteps), AdamW.
        let model = try loadModel(engine)
        let batch = try packedBatch(from: batchFile)
        let losses = try threeOptimizerSteps(model, batch, kind: .adamw)
        try expectRelative(losses, "emulated.adamw.loss", 1e-4)
        try expectWithinTwiceAutocast(losses, "adamw.loss")
        for tensor in model.layout.tensors {
            let values = Array(model.parameters[tensor.range])
            try expectRelative(values, "emulated.adamw." + tensor.name, 1e-4)
            try expectWithinTwiceAutocast(values, "adamw." + tensor.name)
        }
    }

    /// Without parametersChanged() the bf16 copies keep the old weights; with it they follow.
    @Test func theWeightCopiesFollowTheParametersWhenTold() throws {
        let model = try loadModel(.software)
        let batch = try packedBatch(from: batchFile)
        try model.forward(batch, dropout: nil)
        let before = Array(model.logits)
        let classifier = model.layout["classifier.weight"]
        for i in classifier.range { model.parameters.base[i] *= 2 }
        model.parametersChanged()
        try model.forward(batch, dropout: nil)
        #expect(Array(model.logits) != before)
    }

    /// Team size does not change a bit: every product's output element is one full-depth sum
    /// whatever the split into rows or strips, and the attention items are independent.
    @Test(arguments: engines)
    func twoThreadsGiveTheSameBitsAsOne(engine: BF16Engine) throws {
        var results: [[Float]] = []
        for threads in [1, 2] {
            let model = try loadModel(engine, threads: threads)
            let batch = try packedBatch(from: batchFile)
            try model.forward(batch, dropout: nil)
            try model.backward(batch, dropout: nil, lossScale: 1 / Float(batch.sequenceCount))
            results.append(Array(model.logits) + Array(model.gradients.buffer))
        }
        #expect(results[0] == results[1])
    }

    /// The software engine computes what vdpbf16ps computes on Intel: the same model bits.
    @Test(.enabled(if: BF16Engine.avx512BF16.isSupported && cpuVendorIsIntel, "needs AVX512-BF16 on an Intel CPU"))
    func softwareAndAVX512BF16EnginesGiveTheSameBits() throws {
        var results: [[Float]] = []
        for engine in [BF16Engine.software, .avx512BF16] {
            let model = try loadModel(engine)
            let batch = try packedBatch(from: batchFile)
            try model.forward(batch, dropout: nil)
            try model.backward(batch, dropout: nil, lossScale: 1 / Float(batch.sequenceCount))
            results.append(Array(model.logits) + Array(model.gradients.buffer))
        }
        #expect(results[0] == results[1])
    }

    /// CKernels' in-place rounding (the attention products' inputs) is CBF16's, as CGemm's packing.
    @Test func roundBF16KernelIsCGemmsRounding() {
        var values: [Float] = [0, -0, 1, -1, 1.00390625, 1.0078125, 1.01171875, 3.4e38, -3.4e38, .infinity, -.infinity,
                               .nan, 1e-39, -1e-39, Float.leastNormalMagnitude, .greatestFiniteMagnitude]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<1000 { values.append(Float(bitPattern: UInt32.random(in: 0...UInt32.max, using: &generator))) }
        for isa in InstructionSet.allCases where isa.isSupported {
            var rounded = values
            Compute(threads: 1, instructionSet: isa).kernels.round_bf16(&rounded, rounded.count)
            for (value, result) in zip(values, rounded) {
                let expected = UInt32(bf16_round_flushing(value)) << 16
                #expect(result.bitPattern == expected, "\(isa): \(value.bitPattern) -> \(result.bitPattern), expected \(expected)")
            }
        }
    }

    /// The one engine choice: the fastest engine this CPU runs; --bf16 runs exactly where it is
    /// not the software engine.
    @Test func engineChoiceIsTheFastestSupported() {
        let fastest = BF16Engine.fastest
        #expect(fastest.isSupported && BF16Engine.software.isSupported)
        #expect(fastest == (BF16Engine.amx.isSupported ? .amx : BF16Engine.avx512BF16.isSupported ? .avx512BF16 : .software))
        #expect(BF16Engine.cpuHasBF16 == (BF16Engine.avx512BF16.isSupported || BF16Engine.amx.isSupported))
        print("bf16 engine on this CPU: \(fastest.name)")
    }

    @Test func theErrorOfACPUWithoutBF16IsOneLine() {
        let message = BF16Engine.unsupportedError(cpuHasBF16: false)
        #expect(message?.hasPrefix("error: --bf16 needs a CPU with AVX512-BF16 or AMX-BF16") == true)
        #expect(message?.contains("\n") == false)
        #expect(BF16Engine.unsupportedError(cpuHasBF16: true) == nil)
    }

    // MARK: helpers

    func expectRelative(_ actual: [Float], _ key: String, _ tolerance: Double,
                        sourceLocation: SourceLocation = #_sourceLocation) throws {
        let distance = relativeDistance(actual, try reference.floats(key))
        print(String(format: "%@: relative L2 distance %.2e", key, distance))
        #expect(distance <= tolerance, "\(key): \(distance) > \(tolerance)", sourceLocation: sourceLocation)
    }

    func expectWithinTwiceAutocast(_ actual: [Float], _ key: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let autocast = try reference.floats("autocast." + key)
        let bound = 2 * relativeDistance(autocast, try reference.floats("fp32." + key))
        let distance = relativeDistance(actual, autocast)
        #expect(distance <= bound, "\(key): \(distance) from autocast > 2x autocast-fp32 \(bound)", sourceLocation: sourceLocation)
    }
}

/// ||a - b|| / ||b|| in Double.
func relativeDistance(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "sizes \(a.count) vs \(b.count)")
    var difference = 0.0, scale = 0.0
    for i in a.indices {
        difference += Double(a[i] - b[i]) * Double(a[i] - b[i])
        scale += Double(b[i]) * Double(b[i])
    }
    return difference.squareRoot() / max(scale.squareRoot(), 1e-30)
}

func norm(_ a: [Float]) -> Double { a.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot() }

/// Whether this CPU is Intel's (AMD's vdpbf16ps may round differently from the software engine).
let cpuVendorIsIntel: Bool = {
    var vendor = [CChar](repeating: 0, count: 13)
    bd_cpu_vendor(&vendor)
    return String(decoding: vendor.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) == "GenuineIntel"
}()
