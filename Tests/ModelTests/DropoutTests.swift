import Foundation
import Testing
@testable import Model

/// Dropout: masks depend only on (seed, step, sample, layer, site, element), so splitting a batch
/// into micro-batches or reordering it changes nothing; and backward is the derivative of the
/// forward that was actually computed.
@Suite struct DropoutTests {
    func tinyModel(dropout: Float) throws -> (BertForSequenceClassification, PackedBatch) {
        let reference = try SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_reference.safetensors"))
        var config = try BertConfig.load(modelDirectory: fixtures.appendingPathComponent("tiny_bert"))
        config.hiddenDropoutProb = dropout
        config.attentionDropoutProb = dropout
        let model = BertForSequenceClassification(config: config, labelCount: 4, compute: Compute(threads: 1))
        _ = try model.loadWeights(from: SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_bert/model.safetensors")), seed: 0)
        return (model, try packedBatch(from: reference))
    }

    @Test func microBatchesAndOrderDoNotChangeTheGradient() throws {
        let (model, batch) = try tinyModel(dropout: 0.3)
        let context = DropoutContext(seed: 42, step: 5)
        let scale = 1 / Float(batch.sequenceCount)
        model.gradients.zero()
        let whole = try model.forward(batch, dropout: context)
        try model.backward(batch, dropout: context, lossScale: scale)
        let wholeGradient = Array(model.gradients.buffer)

        model.gradients.zero()
        var lossSum = 0.0
        for part in [[2], [1, 0]] {   // other grouping and order of the same samples
            let micro = packedSubset(batch, part)
            lossSum += try model.forward(micro, dropout: context).lossSum
            try model.backward(micro, dropout: context, lossScale: scale)
        }
        #expect(abs(lossSum - whole.lossSum) <= 1e-5 * abs(whole.lossSum))
        expectClose(UnsafeBufferPointer(model.gradients.buffer), wholeGradient, relativeTolerance: 1e-5, "gradient by micro-batches")
        // And dropout is really on: another step gives other masks, another loss.
        let other = try model.forward(batch, dropout: DropoutContext(seed: 42, step: 6))
        #expect(other.lossSum != whole.lossSum)
    }

    @Test(arguments: [Float(0), 0.2])
    func backwardIsTheDerivativeOfTheDroppedOutForward(probability: Float) throws {
        let (model, batch) = try tinyModel(dropout: probability)
        try expectBackwardIsTheDerivative(model, batch, context: DropoutContext(seed: 3, step: 1), "dropout \(probability)")
    }

    @Test func maskDropsTheRequestedFraction() {
        var values = [Float](repeating: 1, count: 200_000)
        values.withUnsafeMutableBufferPointer {
            applyDropout($0.baseAddress!, count: $0.count, key: 12345, probability: 0.1)
        }
        let dropped = values.filter { $0 == 0 }.count
        #expect(abs(Double(dropped) / 200_000 - 0.1) < 0.005)
        #expect(values.allSatisfy { $0 == 0 || abs($0 - 1 / 0.9) < 1e-6 })
    }
}
