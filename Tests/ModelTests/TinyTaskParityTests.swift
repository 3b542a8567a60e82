import Foundation
import Testing
@testable import Model

/// The model with the heads of the other tasks against PyTorch + transformers
/// (tools/make_model_fixtures.py --only-tasks): BertForSequenceClassification with problem_type
/// multi_label_classification (BCE with logits on multi-hot targets) and regression (1 output,
/// MSE), HF computing the loss from `labels`: logits, the mean loss and every gradient.
@Suite struct TinyTaskParityTests {
    let directory = fixtures.appendingPathComponent("tiny_bert")

    /// The fixture's batch with the targets of `task` (the model's K outputs).
    func batch(_ reference: SafeTensorsFile, task: TaskLoss, labelCount K: Int) throws -> PackedBatch {
        let plain = try packedBatch(from: reference, labels: [0, 0, 0])
        let targets = try reference.floats("labels")
        var batch = PackedBatch()
        for s in 0..<plain.sequenceCount {
            let range = plain.sequenceStarts[s]..<plain.sequenceStarts[s + 1]
            batch.append(tokens: plain.tokenIds[range], tokenTypes: plain.tokenTypeIds[range],
                         targets: targets[(s * K)..<((s + 1) * K)], sampleIndex: s)
        }
        #expect(task.batchProblem(batch, labelCount: K) == nil)
        return batch
    }

    func expectParity(_ name: String, task: TaskLoss, labelCount K: Int) throws {
        let reference = try SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_\(name)_reference.safetensors"))
        let (model, _) = try BertForSequenceClassification.load(modelDirectory: directory, labelCount: K, seed: 0,
                                                                ignoreMismatchedSizes: true, compute: Compute(threads: 1))
        if reference.records["classifier.weight"] != nil {  // regression: the fixture's new head
            for tensor in ["classifier.weight", "classifier.bias"] {
                try reference.copyFloats(tensor, into: model.parameters[model.layout[tensor].range])
            }
        }
        model.task = task
        let batch = try batch(reference, task: task, labelCount: K)
        let result = try model.forward(batch, dropout: nil)
        expectClose(model.logits, try reference.floats("logits"), relativeTolerance: 1e-5, "\(name) logits")
        // HF's mean: over rows x labels (BCE) or rows (MSE) — the denominator the training loop uses.
        let denominator = task.lossDenominator(of: batch, labelCount: K)
        [Float(result.lossSum / denominator)].withUnsafeBufferPointer {
            expectClose($0, try! reference.floats("loss"), relativeTolerance: 1e-5, "\(name) loss")
        }
        try model.backward(batch, dropout: nil, lossScale: TaskLoss.lossScale(denominator: denominator))
        // The key biases' exact gradient is 0 (softmax ignores a shift of the scores): both sides
        // hold rounding noise in proportion to the loss's gradients, about 10x the single-label
        // fixture's for this regression loss, hence the larger floor.
        for tensor in model.layout.tensors {
            expectClose(UnsafeBufferPointer(model.gradients[tensor.range]), try reference.floats("grad." + tensor.name),
                        relativeTolerance: 1e-4, scaleFloor: 1e-5, "\(name) grad \(tensor.name)")
        }
    }

    @Test func multiLabelHeadMatchesPyTorch() throws {
        try expectParity("multilabel", task: .binaryCrossEntropy(positiveWeights: nil), labelCount: 4)
    }

    @Test func regressionHeadMatchesPyTorch() throws {
        try expectParity("regression", task: .meanSquaredError, labelCount: 1)
    }

    /// A batch without targets (predict) gets the task's probabilities and no loss; one whose
    /// targets do not fit the task is refused before any work.
    @Test func batchesWithoutTargetsAndWrongTargets() throws {
        let reference = try SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_multilabel_reference.safetensors"))
        let (model, _) = try BertForSequenceClassification.load(modelDirectory: directory, labelCount: nil, seed: 0,
                                                                compute: Compute(threads: 1))
        model.task = .binaryCrossEntropy(positiveWeights: nil)
        let labelled = try batch(reference, task: model.task, labelCount: 4)
        var unlabelled = PackedBatch()
        for s in 0..<labelled.sequenceCount {
            let range = labelled.sequenceStarts[s]..<labelled.sequenceStarts[s + 1]
            unlabelled.append(tokens: labelled.tokenIds[range], tokenTypes: labelled.tokenTypeIds[range], sampleIndex: s)
        }
        #expect(try model.forward(unlabelled, dropout: nil).lossSum == 0)
        let logits = try reference.floats("logits")
        for (i, p) in model.probabilities.enumerated() {
            #expect(abs(p - 1 / (1 + exp(-logits[i]))) < 1e-6, "sigmoid of logit \(i)")
        }
        model.task = .meanSquaredError  // 4 outputs are not a regression head
        #expect(throws: ModelError.invalidBatch(reason: "regression has 1 output, the classifier has 4")) {
            try model.forward(labelled, dropout: nil)
        }
    }
}
