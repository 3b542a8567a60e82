import Foundation
import Testing
@testable import Model

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

/// Largest absolute difference, and the same relative to the largest reference magnitude.
func difference(_ actual: UnsafeBufferPointer<Float>, _ expected: [Float]) -> (absolute: Float, relative: Float) {
    precondition(actual.count == expected.count, "sizes \(actual.count) vs \(expected.count)")
    var largest: Float = 0, scale: Float = 0
    for i in 0..<expected.count {
        largest = max(largest, abs(actual[i] - expected[i]))
        scale = max(scale, abs(expected[i]))
    }
    return (largest, scale > 0 ? largest / scale : largest)
}

/// Compares and prints, so a failing (or passing) run shows how close each tensor is. The
/// difference is measured relative to the tensor's largest reference magnitude, but never to
/// less than `scaleFloor`: a tensor whose exact value is 0 (the attention key bias gets no
/// gradient, since softmax ignores a constant shift of the scores) holds only rounding noise
/// on both sides, which has no meaningful relative difference.
func expectClose(_ actual: UnsafeBufferPointer<Float>, _ expected: [Float], relativeTolerance: Float,
                 scaleFloor: Float = 0, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    let d = difference(actual, expected)
    let scale = max(expected.map(abs).max() ?? 0, scaleFloor)
    let relative = scale > 0 ? d.absolute / scale : d.absolute
    print(String(format: "%@: max |diff| %.3g, relative %.3g", what, d.absolute, relative))
    #expect(relative <= relativeTolerance, "\(what): relative difference \(relative) > \(relativeTolerance)", sourceLocation: sourceLocation)
}

/// A padded HF batch (input_ids, attention_mask, token_type_ids: (B, L) int64, right padding)
/// as the packed batch the Swift model runs on.
func packedBatch(from reference: SafeTensorsFile, labels: [Int64]? = nil) throws -> PackedBatch {
    let ids = try reference.integers("input_ids"), mask = try reference.integers("attention_mask")
    let types = try reference.integers("token_type_ids")
    let shape = try reference.record("input_ids").shape
    let (rows, columns) = (shape[0], shape[1])
    let labelValues = try labels ?? reference.integers("labels")
    var batch = PackedBatch()
    for r in 0..<rows {
        let length = (0..<columns).filter { mask[r * columns + $0] == 1 }.count
        let row = (0..<length).map { Int32(ids[r * columns + $0]) }
        let rowTypes = (0..<length).map { Int32(types[r * columns + $0]) }
        batch.append(tokens: row, tokenTypes: rowTypes, label: Int32(labelValues[r]), sampleIndex: r)
    }
    return batch
}

/// The tiny BERT fixture (4 labels, one thread) with both dropout probabilities set, and the
/// packed batch of its PyTorch reference.
func tinyModel(dropout: Float) throws -> (BertForSequenceClassification, PackedBatch) {
    let reference = try SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_reference.safetensors"))
    var config = try BertConfig.load(modelDirectory: fixtures.appendingPathComponent("tiny_bert"))
    config.hiddenDropoutProb = dropout
    config.attentionDropoutProb = dropout
    let model = BertForSequenceClassification(config: config, labelCount: 4, compute: Compute(threads: 1))
    _ = try model.loadWeights(from: SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_bert/model.safetensors")), seed: 0)
    return (model, try packedBatch(from: reference))
}

/// The 3 optimizer steps of tools/make_model_fixtures.py on one batch: lr 1e-3, eps 1e-6, weight
/// decay 0.1 (not on biases and LayerNorm weights), clip to 0.5, linear schedule, warmup 1 of 4
/// steps. Returns the loss of each step; checks the schedule's rates when given.
/// The optimizer recipe of the fixtures (tools/make_model_fixtures.py): Adam's epsilon and the clip norm.
let fixtureEpsilon: Float = 1e-6
let fixtureMaxGradNorm = 0.5

func threeOptimizerSteps(_ model: BertForSequenceClassification, _ batch: PackedBatch, kind: OptimizerKind,
                         expectedLearningRates: [Float]? = nil) throws -> [Float] {
    let optimizer = AdamOptimizer(hyperparameters: AdamHyperparameters(kind: kind, epsilon: fixtureEpsilon, weightDecay: 0.1),
                                  layout: model.layout, range: 0..<model.layout.totalCount, compute: model.compute)
    let schedule = LearningRateSchedule(baseLearningRate: 1e-3, warmupSteps: 1, totalSteps: 4)
    var losses: [Float] = []
    for step in 0..<3 {
        model.gradients.zero()
        let result = try model.forward(batch, dropout: nil)
        losses.append(Float(result.lossSum / Double(batch.sequenceCount)))
        try model.backward(batch, dropout: nil, lossScale: 1 / Float(batch.sequenceCount))
        let norm = sumOfSquares(model.gradients, range: 0..<model.layout.totalCount, compute: model.compute).squareRoot()
        let learningRate = schedule.learningRate(atStep: step)
        if let expectedLearningRates { #expect(abs(Float(learningRate) - expectedLearningRates[step]) <= 1e-9) }
        optimizer.step(parameters: model.parameters, gradients: model.gradients, learningRate: learningRate,
                       gradientScale: gradientClipFactor(totalNorm: norm, maxNorm: fixtureMaxGradNorm))
        model.parametersChanged()   // --bf16: the weight copies follow the update
    }
    return losses
}

/// The weights after `threeOptimizerSteps` against PyTorch's. Adam turns the rounding of a
/// gradient element near zero into a step: lr·m̂/(√v̂ + ε) changes by lr·ε/(|g| + ε)² per unit of
/// g, 160 at lr 1e-3 and |g| = 1.5ε, so the ~1e-8 by which two float32 summation orders of a
/// gradient differ move such a weight by ~1e-6 a step, on either side. (camembert's layer-0
/// output bias has such an element: there PyTorch's own float32 run is 7e-7 from its float64
/// run, and bert-dist 2e-6 with OpenBLAS's Haswell kernels.) Elements whose clipped first
/// gradient is nonzero but below 10ε, and every element of a tensor whose exact gradient is 0
/// (`gradientIsNoise`: the keys' bias, where either side may hold an exact 0 or noise), are held
/// to 2e-5 absolute, a fiftieth of one step of lr. Every other element, a gradient of exactly 0
/// included (rows of the embedding tables no token used: only weight decay moves them), is held
/// to 1e-5 of the tensor's largest magnitude.
func expectCloseAfterAdam(_ actual: UnsafeBufferPointer<Float>, _ expected: [Float], firstGradient: [Float], clipFactor: Float,
                          gradientIsNoise: Bool, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    precondition(actual.count == expected.count && firstGradient.count == expected.count)
    let scale = max(expected.map(abs).max() ?? 0, .leastNormalMagnitude)
    var relative: Float = 0, nearZeroDifference: Float = 0, nearZeroCount = 0
    for i in 0..<expected.count {
        let difference = abs(actual[i] - expected[i])
        if gradientIsNoise || (firstGradient[i] != 0 && abs(clipFactor * firstGradient[i]) < 10 * fixtureEpsilon) {
            nearZeroCount += 1
            nearZeroDifference = max(nearZeroDifference, difference)
        } else {
            relative = max(relative, difference / scale)
        }
    }
    print(String(format: "%@: relative %.3g; %d elements with a gradient near 0: max |diff| %.3g",
                 what, relative, nearZeroCount, nearZeroDifference))
    #expect(relative <= 1e-5, "\(what): relative difference \(relative) > 1e-5", sourceLocation: sourceLocation)
    #expect(nearZeroDifference <= 2e-5, "\(what): \(nearZeroDifference) off where the gradient is near 0", sourceLocation: sourceLocation)
}

/// The clip factor of the fixtures' first step, from PyTorch's gradients (`grad.<name>`).
func fixtureClipFactor(_ reference: SafeTensorsFile, _ layout: ParameterLayout) throws -> Float {
    let squares = try layout.tensors.reduce(0.0) { sum, tensor in try reference.floats("grad." + tensor.name).reduce(sum) { $0 + Double($1) * Double($1) } }
    return gradientClipFactor(totalNorm: squares.squareRoot(), maxNorm: fixtureMaxGradNorm)
}

/// The sequences `sequences` of `batch`, in that order (a micro-batch of it).
func packedSubset(_ batch: PackedBatch, _ sequences: [Int]) -> PackedBatch {
    var out = PackedBatch()
    for s in sequences {
        let range = batch.sequenceStarts[s]..<batch.sequenceStarts[s + 1]
        out.append(tokens: Array(batch.tokenIds[range]), tokenTypes: Array(batch.tokenTypeIds[range]),
                   label: batch.labels[s], sampleIndex: batch.sampleIndices[s])
    }
    return out
}

/// Backward against the derivative of the forward it follows (dropout `context` included), in a
/// random direction d: central differences (L(θ + εd) - L(θ - εd)) / 2ε at ε and ε/2,
/// Richardson-extrapolated to cancel the ε² term, against g·d. What is left is float32 rounding
/// of the loss divided by ε, about 1e-4 here. The direction leaves the rows of the embedding
/// tables HF keeps at zero gradient (nn.Embedding padding_idx) alone: pad-id tokens use them.
/// `noiseFloor`: the smallest absolute tolerance (the float32 forward's central differences are
/// off by up to ~5e-3 in absolute terms; a direction whose derivative is small needs the floor).
func expectBackwardIsTheDerivative(_ model: BertForSequenceClassification, _ batch: PackedBatch, context: DropoutContext,
                                   _ what: String, noiseFloor: Double = 0, sourceLocation: SourceLocation = #_sourceLocation) throws {
    model.gradients.zero()
    try model.forward(batch, dropout: context)
    try model.backward(batch, dropout: context, lossScale: 1)
    var generator = NormalGenerator(seed: 9, stream: 0)
    var direction = (0..<model.layout.totalCount).map { _ in Float(generator.next()) }
    let layout = model.layout, width = layout.embeddingRowLength
    for (table, row) in [(layout.wordTable, layout.architecture.wordPaddingRow),
                         (layout.positionTable, layout.architecture.positionPaddingRow)] {
        guard let row else { continue }
        for i in 0..<width { direction[table.offset + row * width + i] = 0 }
    }
    var expected = 0.0
    for i in 0..<direction.count { expected += Double(direction[i]) * Double(model.gradients.base[i]) }
    let original = Array(model.parameters.buffer)
    let epsilon: Float = 1e-3
    func loss(at t: Float) throws -> Double {
        for i in 0..<original.count { model.parameters.base[i] = original[i] + t * direction[i] }
        return try model.forward(batch, dropout: context).lossSum
    }
    let numeric = (try loss(at: epsilon) - loss(at: -epsilon)) / Double(2 * epsilon)
    let half = (try loss(at: epsilon / 2) - loss(at: -epsilon / 2)) / Double(epsilon)
    let extrapolated = (4 * half - numeric) / 3
    print("\(what): directional derivative analytic \(expected), numeric \(extrapolated)")
    #expect(abs(extrapolated - expected) <= max(1e-3 * abs(expected), noiseFloor), "\(what)", sourceLocation: sourceLocation)
}

/// -n 1 against micro-batches at the model level: `batch` whole, and its sequences grouped and
/// ordered as `parts`, give the same loss and gradient under the same dropout; and dropout is
/// really on (another step gives other masks, another loss).
func expectMicroBatchesGiveTheSameGradient(_ model: BertForSequenceClassification, _ batch: PackedBatch, parts: [[Int]],
                                           _ what: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let context = DropoutContext(seed: 42, step: 5)
    let scale = 1 / Float(batch.sequenceCount)
    model.gradients.zero()
    let whole = try model.forward(batch, dropout: context)
    try model.backward(batch, dropout: context, lossScale: scale)
    let wholeGradient = Array(model.gradients.buffer)
    model.gradients.zero()
    var lossSum = 0.0
    for part in parts {
        let micro = packedSubset(batch, part)
        lossSum += try model.forward(micro, dropout: context).lossSum
        try model.backward(micro, dropout: context, lossScale: scale)
    }
    #expect(abs(lossSum - whole.lossSum) <= 1e-5 * abs(whole.lossSum), "\(what) loss", sourceLocation: sourceLocation)
    expectClose(UnsafeBufferPointer(model.gradients.buffer), wholeGradient, relativeTolerance: 1e-5, "\(what) gradient by micro-batches",
                sourceLocation: sourceLocation)
    #expect(try model.forward(batch, dropout: DropoutContext(seed: 42, step: 6)).lossSum != whole.lossSum, "\(what): dropout is on",
            sourceLocation: sourceLocation)
}
