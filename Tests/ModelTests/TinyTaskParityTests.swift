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

/// Every encoder family runs the same task losses (one TaskLoss, not one per family): with
/// multi-label (positive weights) and regression heads, backward is the derivative of the
/// dropped-out forward, and micro-batches give the whole batch's loss and gradient.
@Suite struct FamilyTaskTests {
    static let cases: [(family: String, task: TaskLoss)] = FamilyParityTests.families.flatMap {
        [($0, TaskLoss.binaryCrossEntropy(positiveWeights: [1, 2.5, 0.5])), ($0, .meanSquaredError)]
    }

    /// The family's fixture model with a head for `task` (3 labels, or 1 output) and dropout
    /// 0.2, and its fixture batch with targets for the task.
    func model(_ family: String, task: TaskLoss) throws -> (BertForSequenceClassification, PackedBatch) {
        let directory = fixtures.appendingPathComponent("tiny_" + family)
        var config = try BertConfig.load(modelDirectory: directory)
        config.hiddenDropoutProb = 0.2
        config.attentionDropoutProb = 0.2
        let K = task == .meanSquaredError ? 1 : 3
        let model = BertForSequenceClassification(config: config, labelCount: K, compute: Compute(threads: 1))
        _ = try model.loadWeights(from: SafeTensorsFile(url: directory.appendingPathComponent("model.safetensors")), seed: 5,
                                  ignoreMismatchedSizes: true)
        model.task = task
        let plain = try packedBatch(from: SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_\(family)_reference.safetensors")))
        return (model, Self.withTargets(plain, labelCount: K, sequences: Array(0..<plain.sequenceCount)))
    }

    /// The sequences `sequences` of `batch` with targets of K outputs: multi-hot rows (K 3) or
    /// values (K 1) that depend on the sequence's sample index only.
    static func withTargets(_ batch: PackedBatch, labelCount K: Int, sequences: [Int]) -> PackedBatch {
        var out = PackedBatch()
        for s in sequences {
            let range = batch.sequenceStarts[s]..<batch.sequenceStarts[s + 1], sample = batch.sampleIndices[s]
            let targets: [Float] = K == 1 ? [Float(sample) * 0.75 - 1] : (0..<K).map { Float((sample + $0) % 2) }
            out.append(tokens: batch.tokenIds[range], tokenTypes: batch.tokenTypeIds[range], targets: targets, sampleIndex: sample)
        }
        return out
    }

    @Test(arguments: cases)
    func backwardIsTheDerivativeAndMicroBatchesAgree(family: String, task: TaskLoss) throws {
        let (model, batch) = try model(family, task: task)
        #expect(task.batchProblem(batch, labelCount: model.labelCount) == nil)
        // The derivatives along the check's direction are 1.6 to 200 here; the differences' noise
        // is ~1e-3 to 4e-3 for every family and task, so small ones get an absolute floor.
        try expectBackwardIsTheDerivative(model, batch, context: DropoutContext(seed: 3, step: 1), "\(family) \(task)", noiseFloor: 1e-2)

        let context = DropoutContext(seed: 42, step: 5)
        let scale = TaskLoss.lossScale(denominator: task.lossDenominator(of: batch, labelCount: model.labelCount))
        model.gradients.zero()
        let whole = try model.forward(batch, dropout: context).lossSum
        try model.backward(batch, dropout: context, lossScale: scale)
        let wholeGradient = Array(model.gradients.buffer)
        model.gradients.zero()
        var lossSum = 0.0
        for part in [[3, 1], [0], [2]] {
            let micro = Self.withTargets(batch, labelCount: model.labelCount, sequences: part)
            lossSum += try model.forward(micro, dropout: context).lossSum
            try model.backward(micro, dropout: context, lossScale: scale)
        }
        #expect(abs(lossSum - whole) <= 1e-5 * abs(whole), "\(family) \(task) loss")
        expectClose(UnsafeBufferPointer(model.gradients.buffer), wholeGradient, relativeTolerance: 1e-5, "\(family) \(task) by micro-batches")
    }
}
