import Data
import Distributed
import Foundation
import Model
import Options
import TestSupport
import Testing
@testable import Training

/// Every encoder family through the training path (in-process ranks, as --simulate-ranks runs
/// them): the tiny random `<Family>ForSequenceClassification` of the model parity tests
/// (Tests/ModelTests/Fixtures/tiny_F, 3 labels) on synthetic text pairs in the family's template,
/// with sparse embedding gradients (the word and position tables travel as touched rows: E wide
/// for ELECTRA, from pad_token_id + 1 for RoBERTa's positions). Any rank count, micro-batch and
/// sharding train the same model; checkpoints are written in the family's format.
@Suite(.serialized) struct FamilyTrainingTests {
    static let families = ["distilbert", "electra", "roberta", "xlm-roberta", "camembert"]

    static func modelFolder(_ family: String) -> URL {
        repositoryRoot.appendingPathComponent("Tests/ModelTests/Fixtures/tiny_\(family)")
    }

    /// Learnable synthetic pairs in the family's template: BERT's [CLS] A [SEP] B [SEP] with token
    /// types 0 then 1 (DistilBERT ignores them), RoBERTa's <s> A </s></s> B </s> all of type 0 (its
    /// second segment "starts" at the end). The label is the part of the vocabulary A's words
    /// come from; the lengths reach the longest sequence the model's positions allow.
    static func pairs(_ family: String, count: Int, seed: UInt64) throws -> TokenizedDataset {
        let config = try BertConfig.load(modelDirectory: modelFolder(family))
        let roberta = config.architecture.positions != .index
        // The tiny configs' special ids (tools/make_family_model_fixtures.py): BERT's [CLS] 2 and
        // [SEP] 3; RoBERTa's bos/eos (camembert: pad 3, bos 5, eos 6).
        let (first, separator): (Int32, Int32) = switch family {
        case "camembert": (5, 6)
        case "roberta", "xlm-roberta": (0, 2)
        default: (2, 3)
        }
        var state = seed
        func next(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
        func word(_ part: Int) -> Int32 { Int32(next(4) == 0 ? 7 + next(92) : 7 + 30 * part + next(30)) }
        var sequences: [[Int32]] = [], starts: [Int] = [], labels: [Int32] = []
        let longest = config.maxSequenceLength
        for _ in 0..<count {
            let label = next(3)
            let a = (0..<(1 + next(6))).map { _ in word(label) }
            let middle: [Int32] = roberta ? [separator, separator] : [separator]
            var b = (0..<next(longest - a.count - middle.count - 1)).map { _ in word(next(3)) }
            b = Array(b.prefix(longest - 2 - a.count - middle.count))
            let sequence = [first] + a + middle + b + [separator]
            sequences.append(sequence)
            starts.append(roberta ? sequence.count : 1 + a.count + 1)
            labels.append(Int32(label))
        }
        return TokenizedDataset.fromTokens(sequences, secondSegmentStarts: starts, labels: labels,
                                           labelSet: try LabelSet(names: ["LABEL_0", "LABEL_1", "LABEL_2"], origin: "synthetic"),
                                           maxLength: longest)
    }

    /// The examples, and the files checkpoints carry: the tiny model's config.json and the files
    /// of a tokenizer of the family (Tests/DataTests/Fixtures/families).
    static func data(_ family: String) throws -> TrainingData {
        let folder = ["distilbert": "distilbert-json", "electra": "electra-json", "roberta": "roberta-vocab",
                      "xlm-roberta": "xlmr-spm", "camembert": "camembert-json"][family]!
        let tokenizer = repositoryRoot.appendingPathComponent("Tests/DataTests/Fixtures/families/\(folder)")
        var files: [String: [UInt8]] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: tokenizer.path) {
            files[name] = Array(try Data(contentsOf: tokenizer.appendingPathComponent(name)))
        }
        return TrainingData(train: try pairs(family, count: 64, seed: 3), eval: try pairs(family, count: 16, seed: 4),
                            files: ModelFiles(config: try JSONValue.readFieldsIfPresent(modelFolder(family).appendingPathComponent("config.json"))!,
                                              tokenizerFiles: files))
    }

    static func options(_ family: String, output: URL, _ more: [String] = []) -> TrainingOptions {
        try! TrainingOptions.parse(["--model", modelFolder(family).path, "--train", "/synthetic", "--output", output.path,
                                    "--batch-size", "8", "--max-steps", "6", "--lr", "1e-3", "--dropout", "0.1",
                                    "--weight-decay", "0.01", "--warmup-ratio", "0.2", "--log-every", "1000"] + more)
    }

    @Test(arguments: families)
    func sameModelForAnyRankCountMicroBatchAndSharding(family: String) throws {
        let data = try Self.data(family)
        let reference = temporaryDirectory()
        try train(Self.options(family, output: reference), ranks: 1, data: data)
        let expected = try finalWeights(reference, step: 6)
        for (ranks, micro, sharded) in [(4, nil, false), (4, 1, true), (3, 2, true)] as [(Int, Int?, Bool)] {
            let output = temporaryDirectory()
            var options = Self.options(family, output: output)
            options.parallel.microBatchSize = micro
            options.parallel.shardOptimizer = sharded
            let log = try trainLoggingRankZero(options, ranks: ranks, data: data)
            #expect(!replicasDiffered(log), "\(family): the replicas drifted apart")
            let difference = largestRelativeDifference(withoutKeyBiases(try finalWeights(output, step: 6)), withoutKeyBiases(expected))
            print("\(family) ranks \(ranks) micro \(micro.map(String.init) ?? "-") sharded \(sharded): largest relative difference \(difference)")
            #expect(difference < 1e-5, "\(family): ranks \(ranks), micro-batch \(String(describing: micro)), sharded \(sharded)")
        }
    }

    /// The checkpoint is the family's `<Family>ForSequenceClassification` as transformers saves it:
    /// the state_dict keys (tools/make_family_model_fixtures.py recorded them), config.json's
    /// model_type and architectures, the family's config keys with the dropout of the run.
    @Test(arguments: families)
    func checkpointsAreInTheFamilysFormat(family: String) throws {
        let output = temporaryDirectory()
        try train(Self.options(family, output: output, ["--dropout", "0.05"]), ranks: 2, data: try Self.data(family))
        let folder = output.appendingPathComponent("checkpoint-6")
        let reference = try SafeTensorsFile(url: repositoryRoot.appendingPathComponent("Tests/ModelTests/Fixtures/tiny_\(family)_reference.safetensors"))
        let keys = try JSONDecoder().decode([String].self, from: Data(reference.metadata["state_dict_keys"]!.utf8))
        #expect(try SafeTensorsFile(url: folder.appendingPathComponent("model.safetensors")).records.keys.sorted() == keys.sorted())
        let config = try JSONValue.readFieldsIfPresent(folder.appendingPathComponent("config.json"))!
        let source = try JSONValue.readFieldsIfPresent(Self.modelFolder(family).appendingPathComponent("config.json"))!
        #expect(config["architectures"] == .array([.string(reference.metadata["architecture"]!)]))
        #expect(config["model_type"] == .string(family))
        // The folder's keys are all kept, with the run's dropout under the family's names.
        #expect(Set(source.keys).isSubset(of: config.keys))
        let dropoutKeys = family == "distilbert" ? ["dropout", "attention_dropout"] : ["hidden_dropout_prob", "attention_probs_dropout_prob"]
        for key in dropoutKeys { #expect(config[key] == .number(0.05), "\(family) \(key)") }
        for (key, value) in source where !dropoutKeys.contains(key) && !["id2label", "label2id"].contains(key) {
            #expect(config[key] == value, "\(family) \(key)")
        }
        #expect(config["id2label"] == JSONValue(object: ["0": .string("LABEL_0"), "1": .string("LABEL_1"), "2": .string("LABEL_2")]))
        // It loads again as the same family, with the same tokenizer, for eval and predict.
        let loaded = try InferenceModel.load(folder, compute: Compute(threads: 1))
        #expect(loaded.model.config.family.rawValue == family && loaded.model.config.hiddenDropoutProb == 0.05)
        #expect(loaded.tokenizer.tokenizerFiles.map(\.lastPathComponent).sorted() == (try Self.data(family)).files.tokenizerFiles.keys.sorted())
    }

    /// RoBERTa's longest sequence is max_position_embeddings - pad_token_id - 1 (tiny_roberta: 24 - 2):
    /// the default length is capped there and a longer --max-seq-len is an error before any work.
    @Test func robertasSequenceLengthCountsFromTheFirstPosition() throws {
        let config = try BertConfig.load(modelDirectory: Self.modelFolder("camembert"))
        let folder = Self.modelFolder("camembert")
        #expect(try RunDescription(config: config, requestedSequenceLength: nil, modelDirectory: folder).maxSequenceLength == 20)
        #expect(try RunDescription(config: config, requestedSequenceLength: 20, modelDirectory: folder).maxSequenceLength == 20)
        #expect(throws: TrainingError.invalidInput("--max-seq-len 21 is longer than the model's 20 positions (max_position_embeddings 24 less pad_token_id + 1) (\(folder.path)/config.json); use --max-seq-len 20 or less")) {
            try RunDescription(config: config, requestedSequenceLength: 21, modelDirectory: folder)
        }
    }

    /// Model FLOPs count ELECTRA's embeddings_project (E -> C per token, 3 times for training).
    @Test func trainingFLOPsCountELECTRAsProjection() throws {
        var config = try BertConfig.load(modelDirectory: Self.modelFolder("electra"))
        let lengths = [7, 12]
        let projected = trainingFLOPs(config: config, labelCount: 3, sequenceLengths: lengths)
        config.embeddingSize = config.hiddenSize
        let unprojected = trainingFLOPs(config: config, labelCount: 3, sequenceLengths: lengths)
        #expect(projected - unprojected == 3 * 2 * 19 * 20 * 32)
    }
}

