import Data
import Foundation
import Model
import Options
import Testing
@testable import Training

/// A NaN in one rank's gradient makes every rank skip the step; several in a row stop the run
/// with an error that says where it first appeared.
@Suite struct NonFiniteTests {
    /// The tiny model with a NaN in the embedding of word 50.
    func poisonedModel() throws -> URL {
        let directory = temporaryDirectory("poisoned")
        try FileManager.default.copyItem(at: tinyModel.appendingPathComponent("config.json"), to: directory.appendingPathComponent("config.json"))
        let (model, _) = try BertForSequenceClassification.load(modelDirectory: tinyModel, labelCount: nil, seed: 0, compute: Compute(threads: 1))
        model.parameters.base[model.layout["bert.embeddings.word_embeddings.weight"].offset + 50 * 32] = .nan
        _ = try writeModelWeights(model, to: directory.appendingPathComponent("model.safetensors"))
        return directory
    }

    func data(poisonEvery: Int) throws -> TrainingData {
        var sequences: [[Int32]] = [], labels: [Int32] = []
        for i in 0..<64 {
            sequences.append([2, Int32(10 + i % 30), i % poisonEvery == 0 ? 50 : 60, 3])
            labels.append(Int32(i % 4))
        }
        return TrainingData(train: TokenizedDataset.fromTokens(sequences, labels: labels, labelSet: DataPreset.agNews.labelSet, maxLength: 64),
                            eval: nil, files: try tinyModelFiles())
    }

    @Test func everyRankSkipsAndTheRunStopsAfterSeveral() throws {
        var options = tinyOptions(output: temporaryDirectory(), ["--max-steps", "8"])
        options.model.directory = try poisonedModel()
        #expect {
            try train(options, ranks: 2, data: try data(poisonEvery: 1))
        } throws: { error in
            let message = "\(error)"
            print(message)
            return message.contains("5 consecutive steps had non-finite gradients, first at step 1")
                && message.contains("loss itself was not finite on 2 rank(s)")
        }
    }

    @Test func debugModeNamesTheFirstLayerWhereItAppears() throws {
        var options = tinyOptions(output: temporaryDirectory(), ["--debug"])
        options.model.directory = try poisonedModel()
        #expect {
            try train(options, ranks: 2, data: try data(poisonEvery: 1))
        } throws: { error in
            "\(error)" == "non-finite value (NaN or Inf) first seen in embeddings output (forward)"
        }
    }

    @Test func anOccasionalNaNIsSkippedAndTrainingGoesOn() throws {
        // Word 50 only in one example of 64: the steps whose batch holds it are skipped.
        let output = temporaryDirectory()
        var options = tinyOptions(output: output, ["--max-steps", "8"])
        options.model.directory = try poisonedModel()
        let summary = try train(options, ranks: 4, data: try data(poisonEvery: 64))
        #expect(summary.skippedSteps == 1)
        let weights = try finalWeights(output, step: 8)
        // Only the poisoned embedding row is not finite: no NaN spread into the model.
        for (name, values) in weights where name != "bert.embeddings.word_embeddings.weight" {
            #expect(values.allSatisfy { $0.isFinite }, "\(name)")
        }
    }
}
