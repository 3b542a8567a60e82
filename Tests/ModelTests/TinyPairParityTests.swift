import Foundation
import Testing
@testable import Model

/// Text pairs against PyTorch + transformers (tools/make_model_fixtures.py, tiny_pairs_reference):
/// `[CLS] A [SEP] B [SEP]` sequences whose B segments have token type 1, through the tiny model
/// with a token type table whose row 1 matters: logits, loss and every gradient, the token type
/// table's included.
@Suite struct TinyPairParityTests {
    let reference: SafeTensorsFile

    init() throws {
        reference = try SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_pairs_reference.safetensors"))
    }

    func loadModel() throws -> BertForSequenceClassification {
        let (model, _) = try BertForSequenceClassification.load(modelDirectory: fixtures.appendingPathComponent("tiny_bert"), labelCount: nil, seed: 0, compute: Compute(threads: 1))
        let table = "bert.embeddings.token_type_embeddings.weight"
        try reference.copyFloats(table, into: model.parameters[model.layout[table].range])
        return model
    }

    @Test func theBatchHasSecondSegments() throws {
        let batch = try packedBatch(from: reference)
        // Every sequence: types 0 through its first [SEP] (id 3), then 1 through its last token.
        for s in 0..<batch.sequenceCount {
            let range = batch.sequenceStarts[s]..<batch.sequenceStarts[s + 1]
            let firstSeparator = try #require(range.first { batch.tokenIds[$0] == 3 })
            #expect(range.allSatisfy { batch.tokenTypeIds[$0] == ($0 > firstSeparator ? 1 : 0) }, "sequence \(s)")
        }
        #expect(batch.tokenTypeIds.filter { $0 == 1 }.count == 7 + 1 + 3 + 1 + 20 + 1 + 1 + 1)
    }

    @Test func forwardAndEveryGradientMatchPyTorch() throws {
        let model = try loadModel()
        let batch = try packedBatch(from: reference)
        let result = try model.forward(batch, dropout: nil)
        let expectedLogits = try reference.floats("logits")
        expectClose(model.logits, expectedLogits, relativeTolerance: 1e-5, "pair logits")
        let loss = [Float(result.lossSum / Double(batch.sequenceCount))]
        loss.withUnsafeBufferPointer { expectClose($0, try! reference.floats("loss"), relativeTolerance: 1e-5, "pair loss") }
        try model.backward(batch, dropout: nil, lossScale: 1 / Float(batch.sequenceCount))
        for tensor in model.layout.tensors {
            expectClose(UnsafeBufferPointer(model.gradients[tensor.range]), try reference.floats("grad." + tensor.name),
                        relativeTolerance: 1e-4, scaleFloor: 1e-6, "grad \(tensor.name)")
        }
        // Row 1 of the token type table gets gradient only from the B segments.
        let table = model.layout["bert.embeddings.token_type_embeddings.weight"]
        let rowOne = Array(model.gradients[table.range].dropFirst(model.config.hiddenSize))
        #expect(rowOne.contains { $0 != 0 })

        // The same ids as single texts (all types 0) give other logits, further apart than the tolerance.
        var untyped = batch
        untyped.tokenTypeIds = [Int32](repeating: 0, count: batch.tokenCount)
        try model.forward(untyped, dropout: nil)
        let apart = difference(model.logits, expectedLogits)
        #expect(apart.relative > 1e-4, "token types change the logits: \(apart)")
    }
}
