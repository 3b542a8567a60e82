import Foundation
import Testing
@testable import Model

/// The whole model's fast paths against its reference computations: only the [CLS] rows in the
/// last layer against every row (what Hugging Face computes), and two kernel threads against one.
@Suite struct FastPathTests {
    /// A random model with head size 32 (the vector paths of the attention kernel) and odd
    /// sizes elsewhere, and a batch of sequences of different lengths.
    func smallModel(dropout: Float, threads: Int = 1) -> (BertForSequenceClassification, PackedBatch) {
        var config = BertConfig()
        config.vocabSize = 101
        config.hiddenSize = 64
        config.headCount = 2
        config.layerCount = 3
        config.intermediateSize = 150
        config.maxPositionEmbeddings = 64
        config.hiddenDropoutProb = dropout
        config.attentionDropoutProb = dropout
        let model = BertForSequenceClassification(config: config, labelCount: 4, compute: Compute(threads: threads))
        model.initializeRandomly(seed: 5)
        var batch = PackedBatch()
        for (s, length) in [7, 1, 33, 20, 2].enumerated() {
            let tokens = (0..<length).map { Int32((s * 37 + $0 * 11) % 101) }
            batch.append(tokens: tokens, label: Int32(s % 4), sampleIndex: 100 + s)
        }
        return (model, batch)
    }

    /// Loss, logits and every gradient of one forward + backward.
    func run(_ model: BertForSequenceClassification, _ batch: PackedBatch, dropout: DropoutContext?) throws -> (Double, [Float], [Float]) {
        model.gradients.zero()
        let result = try model.forward(batch, dropout: dropout)
        let logits = Array(model.logits)
        try model.backward(batch, dropout: dropout, lossScale: 1 / Float(batch.sequenceCount))
        return (result.lossSum, logits, Array(model.gradients.buffer))
    }

    func expectSame(_ a: (Double, [Float], [Float]), _ b: (Double, [Float], [Float]), model: BertForSequenceClassification,
                    tolerance: Float, _ what: String) {
        #expect(abs(a.0 - b.0) <= Double(tolerance) * abs(a.0), "\(what): loss \(a.0) vs \(b.0)")
        a.1.withUnsafeBufferPointer { expectClose($0, b.1, relativeTolerance: tolerance, "\(what) logits") }
        a.2.withUnsafeBufferPointer { all in
            for tensor in model.layout.tensors {
                expectClose(UnsafeBufferPointer(rebasing: all[tensor.range]), Array(b.2[tensor.range]),
                            relativeTolerance: tolerance, scaleFloor: 1e-6, "\(what) grad \(tensor.name)")
            }
        }
    }

    @Test(arguments: [Float(0), 0.2])
    func clsOnlyLastLayerEqualsEveryRow(dropout: Float) throws {
        for (model, batch) in [smallModel(dropout: dropout), try tinyModel(dropout: dropout)] {
            let context = DropoutContext(seed: 11, step: 4)
            model.clsOnlyLastLayer = false
            let full = try run(model, batch, dropout: context)
            model.clsOnlyLastLayer = true
            let cls = try run(model, batch, dropout: context)
            expectSame(cls, full, model: model, tolerance: 1e-5, "[CLS] only, dropout \(dropout)")
        }
    }

    @Test func twoKernelThreadsEqualOne() throws {
        let (model, batch) = smallModel(dropout: 0.1, threads: 1)
        let (twoThreadModel, _) = smallModel(dropout: 0.1, threads: 2)
        let context = DropoutContext(seed: 3, step: 9)
        let one = try run(model, batch, dropout: context)
        let two = try run(twoThreadModel, batch, dropout: context)
        expectSame(two, one, model: model, tolerance: 1e-5, "2 threads")
    }
}
