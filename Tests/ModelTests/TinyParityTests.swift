import Foundation
import Testing
@testable import Model

/// The Swift BERT against PyTorch + transformers on a tiny random model
/// (fixtures from tools/make_model_fixtures.py): forward, every gradient, 3 optimizer steps.
@Suite struct TinyParityTests {
    let reference: SafeTensorsFile
    let directory = fixtures.appendingPathComponent("tiny_bert")

    init() throws {
        reference = try SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_reference.safetensors"))
    }

    func loadModel() throws -> BertForSequenceClassification {
        let (model, report) = try BertForSequenceClassification.load(modelDirectory: directory, labelCount: nil, seed: 0,
                                                                     compute: Compute(threads: 1))
        #expect(report.initialized.isEmpty)
        #expect(model.labelCount == 4)
        return model
    }

    @Test func forwardMatchesPyTorch() throws {
        let model = try loadModel()
        let batch = try packedBatch(from: reference)
        let result = try model.forward(batch, dropout: nil)
        expectClose(model.logits, try reference.floats("logits"), relativeTolerance: 1e-5, "logits")
        let loss = Float(result.lossSum / Double(batch.sequenceCount))
        let expectedLoss = try reference.floats("loss")
        [loss].withUnsafeBufferPointer { expectClose($0, expectedLoss, relativeTolerance: 1e-5, "loss") }
    }

    @Test func everyGradientMatchesPyTorch() throws {
        let model = try loadModel()
        let batch = try packedBatch(from: reference)
        try model.forward(batch, dropout: nil)
        var finished: [Int] = []
        try model.backward(batch, dropout: nil, lossScale: 1 / Float(batch.sequenceCount)) { finished.append($0) }
        for tensor in model.layout.tensors {
            expectClose(UnsafeBufferPointer(model.gradients[tensor.range]), try reference.floats("grad." + tensor.name),
                        relativeTolerance: 1e-4, scaleFloor: 1e-6, "grad \(tensor.name)")
        }
        // Backward reports finished parameters from the end of the arena down to offset 0.
        #expect(finished == model.layout.backwardReadyOffsets)
    }

    @Test(arguments: [OptimizerKind.adamw, .adam])
    func threeOptimizerStepsMatchPyTorch(kind: OptimizerKind) throws {
        // The recipe of tools/make_model_fixtures.py (threeOptimizerSteps).
        let model = try loadModel()
        let batch = try packedBatch(from: reference)
        let losses = try threeOptimizerSteps(model, batch, kind: kind, expectedLearningRates: try reference.floats("schedule.lr"))
        let expectedLosses = try reference.floats("\(kind.rawValue).loss")
        losses.withUnsafeBufferPointer { expectClose($0, expectedLosses, relativeTolerance: 1e-5, "\(kind) losses") }
        let clipFactor = try fixtureClipFactor(reference, model.layout)
        for tensor in model.layout.tensors {
            expectCloseAfterAdam(UnsafeBufferPointer(model.parameters[tensor.range]), try reference.floats("\(kind.rawValue).\(tensor.name)"),
                                 firstGradient: try reference.floats("grad." + tensor.name), clipFactor: clipFactor,
                                 gradientIsNoise: isKeyBias(tensor.name),
                                 "\(kind) \(tensor.name) after 3 steps")
        }
    }
}
