@testable import Data
import Distributed
import Foundation
import Model
@testable import Options
import Storage
@testable import Training

// The loaders the fuzzer feeds, each with its fixture and the mutations of each of its files.
// To fuzz another loader (a tokenizer, an encoder family), add a target here and list it in
// `FuzzTargets.all`; FuzzTests runs every target.

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

/// The files of a fixture folder (symbolic links followed): name -> bytes.
func fixtureFiles(_ folder: String, _ names: [String]) throws -> [String: [UInt8]] {
    var files: [String: [UInt8]] = [:]
    for name in names { files[name] = Array(try Data(contentsOf: fixtures.appendingPathComponent(folder).appendingPathComponent(name))) }
    return files
}

/// config.json keys whose values size the model.
let bertSizeKeys = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "max_position_embeddings", "type_vocab_size", "pad_token_id", "layer_norm_eps", "hidden_dropout_prob",
                    "attention_probs_dropout_prob", "classifier_dropout", "initializer_range", "id2label", "hidden_act",
                    "position_embedding_type", "model_type"]

enum FuzzTargets {
    static let modelFiles = ["config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]
    static let weightMutations = SafeTensorsMutations.all + ByteMutations.all
    static let configMutations = JSONMutations.all(preferring: bertSizeKeys) + JSONMutations.all(preferring: bertSizeKeys) + ByteMutations.all

    /// Texts every loaded model classifies once (predict's path: tokenizer, forward).
    static let sampleTexts = ["w5 the w6, w7!", "Hello world \u{00e9}\u{4e2d} running w88s", ""]

    /// `bert-dist predict` and `eval`: the classifier of a model folder, then one forward.
    static func predict() throws -> FuzzTarget {
        let compute = Compute(threads: 1)
        return FuzzTarget(
            name: "model folder (predict)", fixtureFolder: "model", files: try fixtureFiles("tiny_model", modelFiles),
            mutated: [("model.safetensors", weightMutations), ("config.json", configMutations)],
            load: { folder, _ in try classify(folder, compute: compute) })
    }

    /// No --max-seq-len (parsed once: the parser is slow in a debug build).
    nonisolated(unsafe) static let defaultSequence = try! SequenceOptions.parse([])

    /// predict's setup (the checkpoint verified, the model, the tokenizer), texts and, where the
    /// length allows (predict --pairs checks it), pairs; then merge's read of the same folder.
    static func classify(_ folder: URL, compute: Compute) throws {
        let setup = try RunSetup.forPrediction(checkpoint: folder, sequence: defaultSequence, compute: compute)
        var batch = PackedBatch()
        let predictions = try setup.predict(sampleTexts, batch: &batch)
        precondition(predictions.count == sampleTexts.count)
        if setup.description.maxSequenceLength >= 3 { _ = try setup.predict(sampleTexts, pairs: sampleTexts.reversed(), batch: &batch) }
        _ = try InferenceModel.load(folder, compute: compute)
    }

    /// One rank's training setup of the folder, as `bert-dist train` makes it: the sequence
    /// length from config.json, then the tokenizer and the examples (`examples`, given that
    /// length), then the model with a classifier for the examples' labels.
    static func trainingSetup(_ options: TrainingOptions, compute: Compute, communicator: any Communicator,
                              examples: (Int) throws -> TokenizedDataset) throws -> RunSetup {
        try RunSetup.forTraining(options, compute: compute, communicator: communicator) { description in
            (try examples(description.maxSequenceLength), nil, ModelFiles(config: [:], vocabulary: [], tokenizerConfig: [:]))
        }
    }

    /// A model folder of another encoder family (the model tests' tiny DistilBERT, ELECTRA with
    /// its embedding projection, RoBERTa): loaded with its own head, one forward and backward.
    static func familyModel(_ folder: String) throws -> FuzzTarget {
        let directory = fixtures.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("ModelTests/Fixtures/\(folder)")
        var files: [String: [UInt8]] = [:]
        for name in ["config.json", "model.safetensors"] { files[name] = Array(try Data(contentsOf: directory.appendingPathComponent(name))) }
        let keys = bertSizeKeys + ["dim", "n_layers", "n_heads", "hidden_dim", "embedding_size", "sinusoidal_pos_embds", "dropout",
                                   "seq_classif_dropout", "activation"]
        return FuzzTarget(
            name: "model folder (\(folder))", fixtureFolder: "model", files: files,
            mutated: [("model.safetensors", weightMutations),
                      ("config.json", JSONMutations.all(preferring: keys) + JSONMutations.all(preferring: keys) + ByteMutations.all)],
            load: { folder, _ in
                _ = try BertForSequenceClassification.labelCount(modelDirectory: folder)
                let (model, _) = try BertForSequenceClassification.load(modelDirectory: folder, labelCount: nil, seed: 1, compute: Compute(threads: 1))
                var batch = PackedBatch()
                batch.append(tokens: [0, 5, 6, 2], label: 0, sampleIndex: 0)
                batch.append(tokens: [0, 7, 2, 8, 2], label: 0, sampleIndex: 1)   // RoBERTa has one token type
                let dropout = DropoutContext(seed: 1, step: 0)
                try model.forward(batch, dropout: dropout)
                try model.backward(batch, dropout: dropout, lossScale: 0.5)
            })
    }

    /// `bert-dist train`: the setup (a new 3-label head replacing the folder's), one forward and backward.
    static func train() throws -> FuzzTarget {
        let labels = try LabelSet(names: ["a", "b", "c"], origin: "--labels")
        // Parsed once: the parser is slow in a debug build. The model folder is set per case.
        let template = try TrainingOptions.parse(["--model", "/fuzz", "--train", "/fuzz", "--output", "/fuzz", "--ignore-mismatched-sizes"])
        return FuzzTarget(
            name: "model folder (train)", fixtureFolder: "model", files: try fixtureFiles("tiny_model", modelFiles),
            mutated: [("model.safetensors", weightMutations), ("config.json", configMutations)],
            load: { folder, _ in
                _ = try BertForSequenceClassification.labelCount(modelDirectory: folder)
                var options = template
                options.model.directory = folder
                _ = try InProcessGroup.run(worldSize: 1) { [options] communicator in
                    var batch = PackedBatch()
                    let setup = try trainingSetup(options, compute: Compute(threads: 1), communicator: communicator) { maxLength in
                        let tokenizer = try BertTokenizer(modelDirectory: folder)
                        let sequences = sampleTexts.map { tokenizer.encode($0, maxLength: maxLength) }
                        for (index, ids) in sequences.enumerated() { batch.append(tokens: ids, label: Int32(index), sampleIndex: index) }
                        return TokenizedDataset.fromTokens(sequences, labels: [0, 1, 2], labelSet: labels, maxLength: maxLength)
                    }
                    let dropout = DropoutContext(seed: 1, step: 0)
                    try setup.model.forward(batch, dropout: dropout)
                    try setup.model.backward(batch, dropout: dropout, lossScale: 1 / 3)
                    return setup.model.labelCount
                }
            })
    }

    /// The tokenizer of a model folder (vocab.txt or tokenizer.json, tokenizer_config.json), on texts and pairs.
    static func tokenizer(fixture: String, files: [String], mutated: [(file: String, mutations: [Mutation])]) throws -> FuzzTarget {
        FuzzTarget(
            name: "tokenizer (\(fixture))", fixtureFolder: "model", files: try fixtureFiles(fixture, files), mutated: mutated,
            load: { folder, _ in
                let tokenizer = try BertTokenizer(modelDirectory: folder)
                for text in sampleTexts {
                    let ids = tokenizer.encode(text, maxLength: 16)
                    let pair = tokenizer.encodePair(text, "w5 w6", maxLength: 16)
                    precondition(ids.count <= 16 && pair.ids.count <= 16 && pair.ids.count == pair.tokenTypeIds.count)
                    precondition((ids + pair.ids).allSatisfy { $0 >= 0 && Int($0) < max(tokenizer.vocabulary.count, 1) + 1 << 20 })
                }
            })
    }

    static func tokenizers() throws -> [FuzzTarget] {
        let json = JSONMutations.all() + ByteMutations.all
        return [
            try tokenizer(fixture: "tiny_model", files: ["vocab.txt", "tokenizer_config.json", "special_tokens_map.json"],
                          mutated: [("vocab.txt", [vocabularyLines, vocabularyLines] + ByteMutations.all),
                                    ("tokenizer_config.json", json + JSONMutations.all(preferring: ["do_lower_case", "strip_accents", "unk_token", "cls_token",
                                                                                                  "sep_token", "pad_token", "added_tokens_decoder",
                                                                                                  "additional_special_tokens", "model_max_length"])),
                                    ("special_tokens_map.json", json)]),
            try tokenizer(fixture: "tiny_model_json", files: ["tokenizer.json"],
                          mutated: [("tokenizer.json", json + json + JSONMutations.all(preferring: ["model", "normalizer", "pre_tokenizer",
                                                                                                    "post_processor", "added_tokens"])
                                     + Array(repeating: tokenizerJSONFields, count: 4))]),
            try familyTokenizer("roberta-json", modelType: "roberta"),
            try familyTokenizer("xlmr-spm", modelType: "xlm-roberta"),
            // tokenizer.json's own pipeline (no named class): normalizers, pre-tokenizers, templates.
            try familyTokenizer("bpe-generic", modelType: nil),
            try familyTokenizer("unigram-generic", modelType: nil),
        ]
    }

    /// An encoder family's tokenizer (`loadTextTokenizer`: byte-level BPE, Unigram) from the
    /// tokenizer tests' fixtures, on texts and pairs at its shortest and a longer length.
    static func familyTokenizer(_ folder: String, modelType: String?) throws -> FuzzTarget {
        let names = try FileManager.default.contentsOfDirectory(atPath: familyFixtures.appendingPathComponent(folder).path).sorted()
        var files: [String: [UInt8]] = [:]
        for name in names { files[name] = Array(try Data(contentsOf: familyFixtures.appendingPathComponent(folder).appendingPathComponent(name))) }
        return FuzzTarget(
            name: "tokenizer (\(folder))", fixtureFolder: "model", files: files,
            mutated: names.map { ($0, $0.hasSuffix(".json") ? JSONMutations.all() + JSONMutations.all() + ByteMutations.all : ByteMutations.all) },
            load: { folder, _ in
                let tokenizer = try loadTextTokenizer(modelDirectory: folder, modelType: modelType)
                var ids: [Int32] = []
                for text in sampleTexts {
                    for maxLength in [tokenizer.minimumMaxLength.pair, 24] {
                        ids.removeAll()
                        Array(text.utf8).withUnsafeBufferPointer { tokenizer.encode(utf8: $0, maxLength: maxLength, appendingTo: &ids) }
                        Array(text.utf8).withUnsafeBufferPointer { first in
                            Array("w5 w6".utf8).withUnsafeBufferPointer { second in
                                _ = tokenizer.encodePair(utf8: first, utf8: second, maxLength: maxLength, appendingTo: &ids)
                            }
                        }
                        precondition(ids.count <= 2 * maxLength && ids.allSatisfy { $0 >= 0 && Int($0) < tokenizer.vocabularySize })
                    }
                }
            })
    }

    static let familyFixtures = fixtures.deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("DataTests/Fixtures/families")

    /// The fields of tokenizer.json that size or index something.
    static let tokenizerJSONFields = JSONMutations.at(
        ["model.vocab.*", "model.vocab.*", "model.max_input_chars_per_word", "model.continuing_subword_prefix", "model.unk_token",
         "model.type", "added_tokens.*.id", "added_tokens.*.content", "added_tokens.*", "normalizer.*", "post_processor.single.*",
         "post_processor.single.*.SpecialToken.id", "post_processor.cls", "post_processor.type", "pre_tokenizer.type"],
        extra: ["\"##\"", "\"[UNK]\"", "\"[CLS]\"", "\"WordPiece\"", "\"BPE\"", "\"BertProcessing\"", "[\"[CLS]\", 2]", "\"w5\"", "\"#\"",
                "\"" + String(repeating: "#", count: 300) + "\"", "{\"content\": \"[CLS]\", \"id\": 2147483647}"])

    /// A data file read as train and eval read it (labels from the data or a fixed set, bad rows
    /// stopping the run or skipped), then tokenised.
    static func data(_ name: String, file: String, format: DataFormat, fixedLabels: [String], mutations: [Mutation]) throws -> FuzzTarget {
        let tokenizer = try BertTokenizer(modelDirectory: fixtures.appendingPathComponent("tiny_model"))
        let fixed = try LabelSet(names: fixedLabels, origin: "--labels")
        return FuzzTarget(
            name: name, fixtureFolder: "data", files: try fixtureFiles("data", [file]), mutated: [(file, mutations)],
            load: { folder, variant in
                let rule: LabelRule = variant % 3 == 0 ? .fixed(fixed) : .fromData
                let texts = try LabeledTexts.read(folder.appendingPathComponent(file), format: format, labels: rule, skipBadRows: variant % 2 == 0)
                let dataset = TokenizedDataset.tokenize(texts, tokenizer: tokenizer, maxLength: variant % 5 == 0 ? 3 : 24)
                precondition(dataset.count == texts.count && (0..<dataset.count).allSatisfy { Int(dataset.label(at: $0)) < dataset.labelSet.count })
            })
    }

    static func dataFiles() throws -> [FuzzTarget] {
        let csv = DelimitedMutations.all(delimiter: UInt8(ascii: ",")) + ByteMutations.all
        let pairs = DataColumns(text: "text", textPair: "text_pair", label: "label")
        return [
            try data("AG News CSV", file: "ag_news.csv", format: .preset(.agNews), fixedLabels: DataPreset.agNews.labelNames, mutations: csv),
            try data("header CSV", file: "train.csv", format: .csv(pairs), fixedLabels: ["neg", "pos"], mutations: csv),
            try data("TSV", file: "train.tsv", format: .tsv(DataColumns()), fixedLabels: ["0", "1", "2"],
                     mutations: DelimitedMutations.all(delimiter: UInt8(ascii: "\t")) + ByteMutations.all),
            try data("JSON Lines", file: "train.jsonl", format: .jsonLines(pairs), fixedLabels: ["neg", "neutral", "pos"],
                     mutations: JSONLinesMutations.all + ByteMutations.all),
        ]
    }

    /// `train --config FILE`: the options file read into arguments and parsed. The parser's own
    /// refusals are ArgumentParser errors: they count as the line the command line prints.
    static func trainConfig() throws -> FuzzTarget {
        let catalogue = try OptionCatalogue(TrainingOptions.self)
        let config = #"{"model": "m", "train": "t.csv", "output": "out", "batch-size": 16, "lr": 3e-5, "max-steps": 3, "labels": ["a", "b"], "#
            + #""shard-optimizer": true, "lr-schedule": "cosine", "warmup-ratio": 0.1, "seed": 7, "eval": null}"#
        let keys = ["batch-size", "lr", "max-steps", "labels", "shard-optimizer", "lr-schedule", "warmup-ratio", "seed", "model"]
        // A key no option has: a line break, 70 000 characters, empty, a prefix only, the config itself.
        let hostileKey = Mutation(name: "json key") { random, bytes in
            guard var tree = JSONMutations.parse(bytes) as? [String: Any] else { return nil }
            let key = random.pick(["bat\nch-size", String(repeating: "x", count: 70_000), "", "--", "--lr", "config", "no-resume", "a\u{0}b"])
            tree[key] = JSONMutations.rawMarker
            let raw = random.pick(hostileJSONValues)
            return JSONMutations.serialize(tree, raw: raw).map { ($0, "key \(key.prefix(20).debugDescription) = \(raw.prefix(20))") }
        }
        return FuzzTarget(
            name: "train --config", fixtureFolder: "config", files: ["train.json": Array(config.utf8)],
            mutated: [("train.json", JSONMutations.all(preferring: keys) + [hostileKey, hostileKey] + ByteMutations.all)],
            load: { folder, _ in
                do {
                    _ = try TrainingOptions.parse(try ResolvedOptions.configArguments(file: folder.appendingPathComponent("train.json").path,
                                                                                     catalogue: catalogue))
                } catch {
                    throw CommandLineRefusal(line: errorLine(TrainingOptions.message(for: error)))
                }
            })
    }

    /// The token cache of a data file (opened, never trusted): its header fields and sections
    /// damaged, with the damage hash recomputed half of the time so that the checks behind it run.
    static func tokenCache() throws -> FuzzTarget {
        let tokenizer = try BertTokenizer(modelDirectory: fixtures.appendingPathComponent("tiny_model"))
        let texts = try LabeledTexts.read(fixtures.appendingPathComponent("data/train.csv"),
                                          format: .csv(DataColumns(text: "text", textPair: "text_pair", label: "label")))
        let dataset = TokenizedDataset.tokenize(texts, tokenizer: tokenizer, maxLength: 24)
        let headerField = Mutation(name: "cache header field") { random, bytes in
            var out = bytes
            let (offset, width) = random.pick([(8, 4), (12, 4), (16, 8), (24, 8), (32, 8), (64, 4), (68, 4), (72, 8), (80, 8)])
            let value = random.pick(hostileSizes + [UInt64(dataset.count + 1), UInt64(dataset.tokenCount - 1)])
            for byte in 0..<width { out[offset + byte] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(byte))) }
            return (rehashed(out), "bytes \(offset)..<\(offset + width) = \(value)")
        }
        let payload = Mutation(name: "cache payload, rehashed") { random, bytes in
            guard let (damaged, detail) = random.pick(ByteMutations.all.filter { $0.name != "empty file" }).apply(&random, bytes),
                  damaged.count >= TokenizedDataset.headerByteCount else { return nil }
            return (rehashed(damaged), detail)
        }
        return FuzzTarget(
            name: "token cache", fixtureFolder: "cache", files: ["train.tokens": Array(dataset.serializedBytes)],
            mutated: [("train.tokens", [headerField, headerField, payload, payload] + ByteMutations.all)],
            load: { folder, _ in
                let opened = try TokenizedDataset.open(folder.appendingPathComponent("train.tokens"), vocabularySize: tokenizer.vocabulary.count)
                var batch = PackedBatch()
                for index in 0..<opened.count {
                    var types = [Int32](repeating: 0, count: opened.length(at: index))
                    types.withUnsafeMutableBufferPointer { opened.tokenTypes(at: index, into: $0) }
                    batch.append(tokens: Array(opened.tokens(at: index)), tokenTypes: types, label: opened.label(at: index), sampleIndex: index)
                }
            })
    }

    /// The damage hash of a token cache recomputed after an edit.
    static func rehashed(_ bytes: [UInt8]) -> [UInt8] {
        let header = TokenizedDataset.headerByteCount
        guard bytes.count >= header else { return bytes }
        var out = bytes
        let hash = bytes[header...].withUnsafeBytes { ContentHash64.hash($0) }
        for byte in 0..<8 { out[56 + byte] = UInt8(truncatingIfNeeded: hash >> (8 * UInt64(byte))) }
        return out
    }

    /// A training checkpoint as resume, eval, predict and merge read it: verified, its Adam state
    /// read back by range, its classifier loaded. Half of the time the damaged files' sizes and
    /// checksums are recorded anew in trainer_state.pb (as a hostile writer would), so that the
    /// damage reaches the readers behind the checksums.
    static func checkpoint() throws -> FuzzTarget {
        let files = try checkpointFiles()
        let compute = Compute(threads: 1)
        let stateField = Mutation(name: "trainer_state field") { random, bytes in
            guard var state = try? TrainerState(decoding: bytes, file: "trainer_state.pb") else { return nil }
            let hostile = random.pick([-1, 0, 1, 1 << 31, Int(Int64.max), Int(Int64.min), state.parameterCount + 1, 1_000_000_000_000])
            let detail: String
            switch random.below(9) {
            case 0: state.step = hostile; detail = "step"
            case 1: state.epoch = hostile; state.samplesConsumedInEpoch = random.pick([hostile, 0]); detail = "epoch, samples"
            case 2: state.worldSize = hostile; detail = "world_size"
            case 3: state.parameterCount = hostile; detail = "parameter_count"
            case 4:
                if state.optimizerShards.isEmpty { return nil }
                let which = random.below(3)
                if which == 0 { state.optimizerShards[0].start = hostile } else if which == 1 { state.optimizerShards[0].count = hostile } else { state.optimizerShards[0].rank = hostile }
                detail = "optimizer shard field \(which)"
            case 5:
                state.optimizerShards.append(.init(rank: 1, start: random.pick([0, hostile]), count: random.pick([1, hostile])))
                state.worldSize = random.pick([1, 2])
                state.shardOptimizer = random.chance(0.5)
                detail = "an extra shard"
            case 6:
                if state.files.isEmpty { return nil }
                let index = random.below(state.files.count)
                if random.chance(0.5) {
                    state.files[index].name = random.pick(["../config.json", "/dev/zero", "", ".", "..", "a/b", "missing.bin", "../../../../../../dev/zero"])
                    state.files[index].sizeBytes = random.pick([0, state.files[index].sizeBytes])
                } else { state.files[index].sizeBytes = hostile }
                detail = "files[\(index)]"
            case 7: state.optimizerStep = hostile; state.totalSteps = random.pick([hostile, 0]); detail = "optimizer_step, total_steps"
            default: state.parameterLayout = random.pick(["", "bert-layout-v1:0", String(repeating: "x", count: 10_000)]); detail = "parameter_layout"
            }
            return (state.encoded(), "\(detail) = \(hostile)")
        }
        let stateMutations = [stateField, stateField, stateField] + ByteMutations.all
        return FuzzTarget(
            name: "checkpoint", fixtureFolder: "checkpoint-6", files: files,
            mutated: [("trainer_state.pb", stateMutations), ("optimizer.safetensors", weightMutations),
                      ("model.safetensors", weightMutations), ("config.json", configMutations)],
            afterMutation: { folder, random in
                guard random.chance(0.5) else { return nil }
                let url = folder.appendingPathComponent(TrainerState.fileName)
                guard var state = try? TrainerState(contentsOf: url) else { return nil }
                state.files = try state.files.map { file in
                    let bytes = try? Data(contentsOf: folder.appendingPathComponent(file.name))
                    return .init(name: file.name, sizeBytes: bytes?.count ?? file.sizeBytes, sha256: bytes.map { SHA256.hash(Array($0)) } ?? file.sha256)
                }
                try state.write(to: url)
                return "checksums recorded anew"
            },
            load: { folder, _ in
                // resume: verify, the layout, the Adam moments by range (two halves, as two ranks read them).
                let state = try CheckpointFolder.verify(folder)
                let config = try BertConfig.load(modelDirectory: folder)
                let layout = ParameterLayout(config: config, labelCount: 4)
                guard state.parameterLayout == layout.fingerprint else { throw CheckpointError.incompatible(folder: folder.path, reason: "another layout") }
                let moments = OptimizerFiles(folder: folder, state: state)
                var values = [Float](repeating: 0, count: layout.totalCount)
                let half = layout.totalCount / 2
                try values.withUnsafeMutableBufferPointer { buffer in
                    for name in ["exp_avg", "exp_avg_sq"] {
                        try moments.copy(name, range: 0..<half, into: UnsafeMutableBufferPointer(rebasing: buffer[0..<half]))
                        try moments.copy(name, range: half..<layout.totalCount, into: UnsafeMutableBufferPointer(rebasing: buffer[half...]))
                    }
                }
                // eval, predict, merge.
                try classify(folder, compute: compute)
            })
    }

    /// `bert-dist train --resume` from the checkpoint (on one rank or two, the Adam state sharded
    /// or not): a fresh output folder holding a copy of it, one step after the resume.
    static func resume() throws -> FuzzTarget {
        let checkpoint = try self.checkpoint()
        let model = fixtures.appendingPathComponent("tiny_model")
        // Parsed once (the parser is slow in a debug build); the output folder and sharding are set per case.
        let template = try TrainingOptions.parse(["--model", model.path, "--train", "/fuzz", "--output", "/fuzz", "--batch-size", "8",
                                                  "--max-steps", "12", "--resume", "--log-every", "1000"])
        return FuzzTarget(
            name: "checkpoint (resume)", fixtureFolder: checkpoint.fixtureFolder, files: checkpoint.files, mutated: checkpoint.mutated,
            afterMutation: checkpoint.afterMutation,
            load: { folder, variant in
                let output = folder.deletingLastPathComponent().appendingPathComponent("resume-\(variant)")
                try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
                defer { try? FileManager.default.removeItem(at: output) }
                try FileManager.default.copyItem(at: folder, to: output.appendingPathComponent(folder.lastPathComponent))
                var options = template
                options.checkpoints.folder = output
                options.parallel.shardOptimizer = variant % 4 == 1
                _ = try InProcessGroup.run(worldSize: variant % 2 + 1) { [options] communicator in
                    let setup = try trainingSetup(options, compute: Compute(threads: 1), communicator: communicator) { _ in resumeExamples }
                    // One step after the resume, then stop (as a signal would).
                    return try TrainingRun(options: options, runtime: Runtime(), communicator: communicator, setup: setup, log: { _ in },
                                           stopRequested: { true }).run().stepsDone
                }
            })
    }

    /// What the checkpoint was trained on: 64 AG News examples of the tiny vocabulary.
    static let resumeExamples: TokenizedDataset = {
        var sequences: [[Int32]] = []
        for index in 0..<64 {
            let words: [Int32] = (0..<(1 + index % 9)).map { Int32(5 + (index * 7 + $0) % 90) }
            sequences.append([2] + words + [3])
        }
        return TokenizedDataset.fromTokens(sequences, labels: (0..<64).map { Int32($0 % 4) }, labelSet: DataPreset.agNews.labelSet, maxLength: 64)
    }()

    /// checkpoint-6 of the tiny model: its weights and config, the tokenizer files, an Adam state
    /// of small values and the manifest listing them all.
    static func checkpointFiles() throws -> [String: [UInt8]] {
        var files = try fixtureFiles("tiny_model", ["config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"])
        let config = try BertConfig.decode(Data(files["config.json"]!), file: "config.json")
        let layout = ParameterLayout(config: config, labelCount: 4)
        let moments = (0..<(2 * layout.totalCount)).map { Float($0 % 97) * 1e-4 }
        files["optimizer.safetensors"] = optimizerFileHeader(range: 0..<layout.totalCount, step: 6, layout: layout)
            + moments.withUnsafeBytes { Array($0) }
        let state = TrainerState(
            step: 6, epoch: 0, samplesConsumedInEpoch: 48, totalSteps: 12, warmupSteps: 2, seed: 1, worldSize: 1,
            shardOptimizer: false, parameterCount: layout.totalCount,
            optimizerShards: [.init(rank: 0, start: 0, count: layout.totalCount)],
            globalBatchSize: 8, microBatchSize: 8, maxSequenceLength: 64, trainDataFingerprint: DataLoading.fingerprint(of: resumeExamples),
            files: files.keys.sorted().map { .init(name: $0, sizeBytes: files[$0]!.count, sha256: SHA256.hash(files[$0]!)) },
            optimizerStep: 6, parameterLayout: layout.fingerprint)
        files[TrainerState.fileName] = state.encoded()
        return files
    }
}
