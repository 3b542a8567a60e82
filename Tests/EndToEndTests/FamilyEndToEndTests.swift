import Data
import Foundation
import Model
import Storage
import TestSupport
import Testing

/// Every encoder family as a user runs it (FamilyWorkspace: a tiny model folder with the family's
/// config, tokenizer files and random weights; real AG News rows), the real binary under
/// mpirun: train on a header CSV with two string labels and on AG News texts and pairs, with
/// ZeRO-1, micro-batches, --bf16 and a resume on another rank count; eval and predict on the
/// checkpoint equal to their re-load from a merged folder; the checkpoint written as transformers
/// writes the family (tensor names, config.json, the tokenizer files); `tokenize` with Hugging
/// Face's ids. tools/check_family_hf.py loads such checkpoints in transformers (docs/models.md).
@Suite(.serialized, .timeLimit(.minutes(10)))
struct FamilyEndToEndTests {
    let binary: URL

    init() throws {
        binary = try BinaryLocator.bertDist()
    }

    /// Runs to completion and expects success (`ranks`: under mpirun; nil: the plain binary).
    @discardableResult
    func run(ranks: Int?, _ arguments: [String], input: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws -> RunningProcess {
        try BinaryLocator.run(binary, ranks: ranks, arguments, input: input, sourceLocation: sourceLocation)
    }

    /// Expects a one-line error containing `expected`.
    func expectError(ranks: Int?, _ arguments: [String], input: String? = nil, _ expected: String,
                     sourceLocation: SourceLocation = #_sourceLocation) throws {
        let process = try BinaryLocator.start(binary, ranks: ranks, arguments, input: input)
        let status = process.waitForExit(timeoutSeconds: 60)
        #expect(status != nil && status != 0, sourceLocation: sourceLocation)
        let errorLines = process.standardError.split(separator: "\n").filter { $0.contains("error:") }
        #expect(errorLines.count == 1 && errorLines[0].contains(expected), "\(process.standardError)", sourceLocation: sourceLocation)
    }

    func train(_ workspace: FamilyWorkspace, ranks: Int?, _ data: URL, output: URL, steps: Int = 4, _ extra: [String]) throws {
        try run(ranks: ranks, ["train", "--model", workspace.model.path, "--train", data.path, "--output", output.path,
                               "--cache-dir", workspace.output("cache").path, "--batch-size", "8", "--max-steps", "\(steps)",
                               "--lr", "1e-3", "--dropout", "0.1", "--warmup-ratio", "0.2", "--threads", "1", "--log-every", "1"] + extra)
    }

    static let topicColumns = ["--text-column", "headline", "--label-column", "topic"]
    static let pairColumns = topicColumns + ["--text-pair-column", "body"]

    /// A header CSV with the string labels sports/world under mpirun -n 2, with evaluation and
    /// TensorBoard; the checkpoint is the family's `<Family>ForSequenceClassification` as
    /// transformers writes it; eval (1 and 3 ranks, cache built and reopened) and predict on it
    /// equal those on the folder `merge` makes of it (a re-load from other files).
    @Test(arguments: FamilyWorkspace.families)
    func headerCSVWithTwoStringLabelsThenEvalPredictAndMerge(family: String) throws {
        let workspace = try FamilyWorkspace(family)
        let output = workspace.output("topics")
        try train(workspace, ranks: 2, workspace.topicsTrain, output: output,
                  Self.topicColumns + ["--eval", workspace.topicsTest.path, "--tensorboard", workspace.output("tb").path])
        let checkpoint = output.appendingPathComponent("checkpoint-4")

        // Tensor names: the state_dict keys of the class, as transformers saves it.
        let reference = try SafeTensorsFile(url: BinaryLocator.repositoryRoot.appendingPathComponent("Tests/ModelTests/Fixtures/tiny_\(family)_reference.safetensors"))
        let keys = try JSONDecoder().decode([String].self, from: Data(reference.metadata["state_dict_keys"]!.utf8))
        #expect(try SafeTensorsFile(url: checkpoint.appendingPathComponent("model.safetensors")).records.keys.sorted() == keys.sorted())
        // config.json: the folder's (transformers') keys with the family's class, model_type and the labels.
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: checkpoint.appendingPathComponent("config.json"))) as! [String: Any]
        let source = try JSONSerialization.jsonObject(with: Data(contentsOf: workspace.model.appendingPathComponent("config.json"))) as! [String: Any]
        #expect(config["architectures"] as? [String] == [reference.metadata["architecture"]!])
        #expect(config["model_type"] as? String == family)
        #expect(config["id2label"] as? [String: String] == ["0": "sports", "1": "world"])
        #expect(config["label2id"] as? [String: Int] == ["sports": 0, "world": 1])
        #expect(config["num_labels"] as? Int == 2 && config["problem_type"] as? String == "single_label_classification")
        #expect(Set(config.keys).subtracting(source.keys).subtracting(["id2label", "label2id", "num_labels", "problem_type", "classifier_dropout"]).isEmpty,
                "\(family): keys the folder did not have: \(Set(config.keys).subtracting(source.keys))")
        let dropoutKeys = family == "distilbert" ? ["dropout", "attention_dropout"] : ["hidden_dropout_prob", "attention_probs_dropout_prob"]
        for key in dropoutKeys { #expect(config[key] as? Double == 0.1, "\(family) \(key): the run's --dropout") }
        for (key, value) in source where key != "architectures" && !dropoutKeys.contains(key) {
            #expect(config[key].map { "\($0)" } == "\(value)", "\(family) config.json \(key)")
        }
        // The tokenizer files: the folder's, byte for byte (WordPiece's with vocab.txt added), and
        // they load as the same tokenizer.
        var expectedFiles = Set(try FileManager.default.contentsOfDirectory(atPath: workspace.tokenizerSource.path))
        if ["distilbert", "electra"].contains(family) { expectedFiles.insert("vocab.txt") }
        let files = Set(try FileManager.default.contentsOfDirectory(atPath: checkpoint.path))
        #expect(files == expectedFiles.union(["config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.pb", "training_args.json"]))
        for name in expectedFiles where name != "vocab.txt" {
            let ours = try Data(contentsOf: checkpoint.appendingPathComponent(name)), theirs = try Data(contentsOf: workspace.model.appendingPathComponent(name))
            if name == "tokenizer_config.json" {
                #expect(try JSONSerialization.jsonObject(with: ours) as! NSDictionary == JSONSerialization.jsonObject(with: theirs) as! NSDictionary)
            } else {
                #expect(ours == theirs, "\(family): \(name)")
            }
        }
        let fingerprint = try loadTextTokenizer(modelDirectory: workspace.model).fingerprint
        #expect(try loadTextTokenizer(modelDirectory: checkpoint).fingerprint == fingerprint)

        // Eval on 1 and 3 ranks (every example counted once), again from the token cache, and on
        // the merged folder: the same numbers.
        let merged = workspace.output("merged")
        try run(ranks: nil, ["merge", "--output", merged.path, checkpoint.path])
        func eval(_ folder: URL, ranks: Int?) throws -> String {
            try run(ranks: ranks, ["eval", "--checkpoint", folder.path, "--data", workspace.topicsTest.path, "--json", "--threads", "1",
                                   "--cache-dir", workspace.output("cache").path] + Self.topicColumns).standardOutput
        }
        let single = try eval(checkpoint, ranks: nil)
        #expect(try eval(checkpoint, ranks: nil) == single)
        #expect(try eval(merged, ranks: nil) == single)
        let metrics = try JSONSerialization.jsonObject(with: Data(single.utf8)) as! [String: Any]
        let spread = try JSONSerialization.jsonObject(with: Data(try eval(checkpoint, ranks: 3).utf8)) as! [String: Any]
        #expect(metrics["n"] as? Int == 9 && spread["n"] as? Int == 9)
        #expect(spread["confusion"] as? [[Int]] == metrics["confusion"] as? [[Int]])
        #expect(abs((spread["loss"] as! Double) - (metrics["loss"] as! Double)) < 1e-5)

        // Predict (texts and pairs): the checkpoint's and the merged folder's logits are the same.
        for pairs in [false, true] {
            func predict(_ folder: URL) throws -> String {
                try run(ranks: nil, ["predict", "--checkpoint", folder.path, "--json", "--logits", "--threads", "1"] + (pairs ? ["--pairs"] : []),
                        input: try FamilyWorkspace.predictInput(pairs: pairs)).standardOutput
            }
            let fromCheckpoint = try predict(checkpoint)
            #expect(fromCheckpoint == (try predict(merged)))
            #expect(fromCheckpoint.split(separator: "\n").count == 9 && fromCheckpoint.contains("\"logits\""))
        }
        let events = try FileManager.default.contentsOfDirectory(atPath: workspace.output("tb").path)
        #expect(events.contains { $0.hasPrefix("events.out.tfevents.") })
    }

    /// AG News pairs (headline, body) train the same model on 1 rank as on 4 with ZeRO-1 and
    /// micro-batches; AG News texts (4 labels) under mpirun -n 2 equal the debug mode's
    /// --simulate-ranks 2 bit for bit (also with --bf16 where the CPU has it), and a run resumed on
    /// 1 rank from checkpoint 2 of -n 2 ends as the uninterrupted one.
    @Test(arguments: FamilyWorkspace.families)
    func sameModelOnAnyRankCountForPairsAndTexts(family: String) throws {
        let workspace = try FamilyWorkspace(family)
        let one = workspace.output("pairs-n1"), four = workspace.output("pairs-n4")
        try train(workspace, ranks: 1, workspace.topicsTrain, output: one, Self.pairColumns)
        try train(workspace, ranks: 4, workspace.topicsTrain, output: four, Self.pairColumns + ["--shard-optimizer", "--micro-batch-size", "1"])
        let w4 = withoutKeyBiases(try workspace.weights(four, step: 4)), w1 = withoutKeyBiases(try workspace.weights(one, step: 4))
        let difference = largestRelativeDifference(w4, w1)
        #expect(difference < 1e-5, "\(family) pairs: -n 4 ZeRO-1 micro-batch 1 vs -n 1: \(difference) \(worstTensor(w4, w1))")

        let bf16 = BF16Engine.cpuHasBF16 ? ["--bf16"] : []
        let two = workspace.output("texts-n2"), debug = workspace.output("texts-debug2")
        try train(workspace, ranks: 2, workspace.agTrain, output: two, ["--checkpoint-every", "2"] + bf16)
        try train(workspace, ranks: nil, workspace.agTrain, output: debug, ["--checkpoint-every", "2", "--debug", "--simulate-ranks", "2"] + bf16)
        let mpiBytes = try Data(contentsOf: two.appendingPathComponent("checkpoint-4/model.safetensors"))
        #expect(mpiBytes == (try Data(contentsOf: debug.appendingPathComponent("checkpoint-4/model.safetensors"))),
                "\(family) \(bf16): --debug --simulate-ranks 2 must equal mpirun -n 2 exactly")
        try FileManager.default.removeItem(at: debug.appendingPathComponent("checkpoint-4"))
        try train(workspace, ranks: 1, workspace.agTrain, output: debug, ["--checkpoint-every", "2", "--resume"] + bf16)
        let resumed = largestRelativeDifference(withoutKeyBiases(try workspace.weights(debug, step: 4)),
                                                withoutKeyBiases(try workspace.weights(two, step: 4)))
        #expect(resumed < 1e-5, "\(family): resumed on 1 rank vs uninterrupted on 2: \(resumed)")
    }

    /// `bert-dist tokenize` prints Hugging Face's ids (AutoTokenizer, the DataTests goldens) of
    /// every golden text that is one line, for the model folder's tokenizer.
    @Test(arguments: FamilyWorkspace.families)
    func tokenizePrintsHuggingFacesIds(family: String) throws {
        let workspace = try FamilyWorkspace(family)
        let golden = try FamilyTokenizerGolden(folder: FamilyWorkspace.tokenizerFolders[family]!)
        // (By scalars: "\r\n" is one Character, which contains neither "\r" nor "\n".)
        let lines = golden.texts.indices.filter { !golden.texts[$0].unicodeScalars.contains { $0 == "\n" || $0 == "\r" } }
        try #require(lines.count > 1500)
        let process = try run(ranks: nil, ["tokenize", "--model", workspace.model.path, "--max-seq-len", "\(golden.fullMaxLength)"],
                              input: lines.map { golden.texts[$0] }.joined(separator: "\n") + "\n")
        let printed = process.standardOutput.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        try #require(printed.count == lines.count)
        var wrong = 0
        for (line, index) in zip(printed, lines) where line.split(separator: " ").map({ Int32($0)! }) != golden.full[index] { wrong += 1 }
        #expect(wrong == 0, "\(family): \(wrong) of \(lines.count) lines differ from HF's ids")
    }

    /// What cannot work is a one-line error before any work: a --max-seq-len longer than the
    /// positions allow (RoBERTa's count from pad_token_id + 1), pairs shorter than RoBERTa's
    /// template (<s> </s></s> </s>: 4) in train, predict and tokenize.
    @Test func sequenceLengthsTheFamilyCannotTakeAreOneLineErrors() throws {
        let workspace = try FamilyWorkspace("roberta")
        let base = ["train", "--model", workspace.model.path, "--output", workspace.output("bad").path, "--cache-dir", workspace.output("cache").path]
        try expectError(ranks: 2, base + ["--train", workspace.agTrain.path, "--max-seq-len", "23"],
                        "--max-seq-len 23 is longer than the model's 22 positions (max_position_embeddings 24 less pad_token_id + 1)")
        try expectError(ranks: 2, base + ["--train", workspace.topicsTrain.path, "--max-seq-len", "3"] + Self.pairColumns,
                        "text pairs need a max sequence length of at least 4")
        try run(ranks: nil, ["train", "--model", workspace.model.path, "--train", workspace.agTrain.path, "--output", workspace.output("fit").path,
                             "--cache-dir", workspace.output("cache").path, "--max-steps", "1", "--batch-size", "4", "--threads", "1"])
        let checkpoint = workspace.output("fit").appendingPathComponent("checkpoint-1")
        try expectError(ranks: nil, ["predict", "--checkpoint", checkpoint.path, "--pairs", "--max-seq-len", "3"], input: "a\tb\n",
                        "text pairs need a max sequence length of at least 4")
        try expectError(ranks: nil, ["tokenize", "--model", workspace.model.path, "--pairs", "--max-seq-len", "3"], input: "a\tb\n",
                        "text pairs need a max sequence length of at least 4")
    }
}

/// One family's group of the tokenizer goldens (Tests/DataTests/Fixtures/families, written by
/// tools/make_family_tokenizer_fixtures.py from transformers' AutoTokenizer): the texts and HF's
/// ids of each at `fullMaxLength`.
struct FamilyTokenizerGolden {
    let texts: [String]
    /// By text index.
    let full: [Int: [Int32]]
    let fullMaxLength: Int

    init(folder: String) throws {
        let directory = BinaryLocator.repositoryRoot.appendingPathComponent("Tests/DataTests/Fixtures/families")
        func load(_ name: String) throws -> [String: Any] {
            // (JSONSerialization drops a raw U+FEFF that starts a string: escape them first.)
            let text = try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8).replacingOccurrences(of: "\u{FEFF}", with: "\\ufeff")
            return try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
        }
        texts = try load("family_texts.json")["texts"] as! [String]
        let groups = try load("family_golden.json")["groups"] as! [String: [String: Any]]
        let group = groups.values.first { ($0["folders"] as! [String]).contains(folder) }!
        let indices = (group["text_indices"] as! [[Int]]).flatMap { Array($0[0]...$0[1]) }
        let ids = (group["full"] as! [String]).map { text -> [Int32] in
            let bytes = [UInt8](Data(base64Encoded: text)!)
            return stride(from: 0, to: bytes.count, by: 2).map { Int32(bytes[$0]) | Int32(bytes[$0 + 1]) << 8 }
        }
        full = Dictionary(uniqueKeysWithValues: zip(indices, ids))
        fullMaxLength = group["full_max_length"] as! Int
    }
}

/// The tensors of `a` furthest from `b` (relative to each tensor's largest |value|), for messages.
func worstTensor(_ a: [String: [Float]], _ b: [String: [Float]]) -> String {
    b.map { name, expected -> (String, Float, Float) in
        let actual = a[name]!
        let scale = max(expected.map(abs).max() ?? 0, 1e-6)
        return (name, (zip(actual, expected).map { abs($0 - $1) }.max() ?? 0) / scale, scale)
    }.sorted { $0.1 > $1.1 }.prefix(4).map { "\($0.0) \($0.1) scale \($0.2)" }.joined(separator: "; ")
}
