import Foundation
import Model
import Storage
import TestSupport
import Testing

/// A user's own data, as `bert-dist` users bring it: a header CSV with two string labels, JSON
/// Lines with seven, a TSV of text pairs; train (under mpirun -n 1 and 2), eval and predict with
/// the right labels; config.json as Hugging Face reads it; bad input named by file and line,
/// with nothing written. Tiny model, real binary.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct OwnDataEndToEndTests {
    let binary: URL
    let workspace: TinyWorkspace
    let files: OwnDataFiles

    init() throws {
        binary = try BinaryLocator.bertDist()
        workspace = try TinyWorkspace(trainRows: 8, testRows: 8)
        files = try OwnDataFiles(in: workspace.root)
    }

    var cache: URL { workspace.output("cache") }

    /// Runs to completion and expects success (`ranks`: under mpirun; nil: the plain binary).
    @discardableResult
    func run(ranks: Int?, _ arguments: [String], input: String? = nil) throws -> RunningProcess {
        try BinaryLocator.run(binary, ranks: ranks, arguments, input: input)
    }

    /// `epochs` in batches of 8 at lr 5e-3 without dropout (enough for the tiny random model to
    /// learn these sets), or `steps` steps at lr 1e-3 with dropout 0.1 (as the world-size tests do).
    @discardableResult
    func train(ranks: Int?, _ data: URL, eval: URL, output: URL, steps: Int? = nil, epochs: Int = 8, _ extra: [String]) throws -> RunningProcess {
        try run(ranks: ranks, ["train", "--model", workspace.model.path, "--train", data.path, "--eval", eval.path, "--output", output.path,
                               "--cache-dir", cache.path, "--batch-size", "8", "--lr", steps == nil ? "5e-3" : "1e-3",
                               "--dropout", steps == nil ? "0" : "0.1",
                               "--threads", "1", "--log-every", "100", "--ignore-mismatched-sizes"]
                              + (steps.map { ["--max-steps", "\($0)"] } ?? ["--epochs", "\(epochs)"]) + extra)
    }

    /// The steps of `epochs` over `rows` in batches of 8.
    static func steps(rows: Int, epochs: Int = 8) -> Int { epochs * ((rows + 7) / 8) }

    /// -n 1 and -n 2 train the same model (6 steps: float summation order aside).
    func expectSameModelOnOneAndTwoRanks(_ data: URL, eval: URL, _ extra: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let name = data.deletingPathExtension().lastPathComponent
        let single = workspace.output("\(name)-n1"), double = workspace.output("\(name)-n2")
        try train(ranks: 1, data, eval: eval, output: single, steps: 6, extra)
        try train(ranks: 2, data, eval: eval, output: double, steps: 6, extra)
        let difference = largestRelativeDifference(try workspace.weights(double, step: 6), try workspace.weights(single, step: 6))
        #expect(difference < 1e-5, "\(name): -n 1 vs -n 2: \(difference)", sourceLocation: sourceLocation)
    }

    func evalJSON(ranks: Int?, _ checkpoint: URL, _ data: URL, _ extra: [String] = []) throws -> [String: Any] {
        let process = try run(ranks: ranks, ["eval", "--checkpoint", checkpoint.path, "--data", data.path, "--json", "--threads", "1",
                                             "--cache-dir", cache.path] + extra)
        return try #require(try JSONSerialization.jsonObject(with: Data(process.standardOutput.utf8)) as? [String: Any], "\(process.standardOutput)")
    }

    /// predict --json on `texts`: the label names and the probabilities of each line.
    func predict(_ checkpoint: URL, _ texts: [String], pairs: Bool = false) throws -> [(label: String, id: Int, probabilities: [Double])] {
        let process = try run(ranks: nil, ["predict", "--checkpoint", checkpoint.path, "--json", "--threads", "1"] + (pairs ? ["--pairs"] : []),
                              input: texts.joined(separator: "\n") + "\n")
        return try process.standardOutput.split(separator: "\n").map { line in
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            return (object["label"] as! String, object["label_id"] as! Int, object["probs"] as! [Double])
        }
    }

    /// What Hugging Face's from_pretrained reads of config.json for a sequence classifier.
    func expectHuggingFaceConfig(_ checkpoint: URL, labels: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let data = try Data(contentsOf: checkpoint.appendingPathComponent("config.json"))
        let config = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(config["architectures"] as? [String] == ["BertForSequenceClassification"], sourceLocation: sourceLocation)
        #expect(config["model_type"] as? String == "bert", sourceLocation: sourceLocation)
        #expect(config["num_labels"] as? Int == labels.count, sourceLocation: sourceLocation)
        #expect(config["problem_type"] as? String == "single_label_classification", sourceLocation: sourceLocation)
        let id2label = Dictionary(uniqueKeysWithValues: labels.enumerated().map { (String($0.offset), $0.element) })
        #expect(config["id2label"] as? [String: String] == id2label, sourceLocation: sourceLocation)
        let label2id = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($0.element, $0.offset) })
        #expect(config["label2id"] as? [String: Int] == label2id, sourceLocation: sourceLocation)
        let weights = try SafeTensorsFile(url: checkpoint.appendingPathComponent("model.safetensors"))
        #expect(weights.records["classifier.weight"]?.shape == [labels.count, 32], sourceLocation: sourceLocation)
        #expect(weights.records["classifier.bias"]?.shape == [labels.count], sourceLocation: sourceLocation)
    }

    /// The fraction of `predictions` whose label is the row's label in the eval file.
    func accuracy(_ predictions: [(label: String, id: Int, probabilities: [Double])], _ truth: [String]) -> Double {
        Double(zip(predictions, truth).filter { $0.0.label == $0.1 }.count) / Double(truth.count)
    }

    static func labels(of url: URL) throws -> [String] {
        let lines = try String(contentsOf: url, encoding: .utf8).split(separator: "\n")
        if url.pathExtension == "jsonl" {
            return try lines.map { (try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any])["label"] as! String }
        }
        return lines.dropFirst().map { String($0.split(separator: url.pathExtension == "tsv" ? "\t" : ",").last!) }
    }

    @Test func headerCSVWithTwoStringLabelsUnderMPIRun() throws {
        let columns = ["--text-column", "review", "--label-column", "sentiment"]
        try expectSameModelOnOneAndTwoRanks(files.reviews, eval: files.reviewsTest, columns)
        let output = workspace.output("reviews")
        let process = try train(ranks: 2, files.reviews, eval: files.reviewsTest, output: output,
                                columns + ["--tensorboard", workspace.output("reviews-tb").path])
        #expect(process.standardOutput.contains("2 labels from \(files.reviews.path): neg, pos"), "\(process.standardOutput)")
        #expect(process.standardOutput.contains("re-initialised from seed 42 for 2 labels"), "\(process.standardOutput)")
        let checkpoint = output.appendingPathComponent("checkpoint-\(Self.steps(rows: 96))")
        try expectHuggingFaceConfig(checkpoint, labels: ["neg", "pos"])

        // Eval (2 ranks) names the classes; predict on the same texts agrees with it.
        let metrics = try evalJSON(ranks: 2, checkpoint, files.reviewsTest, columns)
        #expect(metrics["n"] as? Int == 32)
        let perClass = try #require(metrics["per_class"] as? [[String: Any]])
        #expect(perClass.map { $0["label"] as? String } == ["neg", "pos"])
        let predictions = try predict(checkpoint, try OwnDataFiles.texts(of: files.reviewsTest))
        #expect(predictions.allSatisfy { ["neg", "pos"][$0.id] == $0.label && $0.probabilities.count == 2 })
        let predicted = accuracy(predictions, try Self.labels(of: files.reviewsTest))
        #expect(abs(predicted - (metrics["accuracy"] as? Double ?? -1)) < 1e-9, "predict \(predicted) vs eval \(metrics["accuracy"] ?? "-")")
        #expect(predicted > 0.7, "learnt: \(predicted)")

        // TensorBoard: a per-class F1 for each label.
        let tensorBoard = workspace.output("reviews-tb")
        let eventFile = try #require(try FileManager.default.contentsOfDirectory(atPath: tensorBoard.path).first { $0.hasPrefix("events.out.tfevents.") })
        let tags = Set(try tensorBoardEvents(in: tensorBoard.appendingPathComponent(eventFile)).flatMap { $0.scalars.map(\.tag) })
        #expect(tags.isSuperset(of: ["eval/accuracy", "eval/f1/neg", "eval/f1/pos"]), "\(tags)")
    }

    @Test func jsonLinesWithSevenLabels() throws {
        let output = workspace.output("emotions")
        try train(ranks: 2, files.emotions, eval: files.emotionsTest, output: output, epochs: 24, [])
        let checkpoint = output.appendingPathComponent("checkpoint-\(Self.steps(rows: 140, epochs: 24))")
        let names = OwnDataFiles.emotionNames  // sorted, as HF's run_classification sorts string labels
        try expectHuggingFaceConfig(checkpoint, labels: names)
        let metrics = try evalJSON(ranks: 1, checkpoint, files.emotionsTest)
        #expect((metrics["per_class"] as? [[String: Any]])?.map { $0["label"] as? String } == names)
        #expect((metrics["confusion"] as? [[Int]])?.count == 7)
        let predictions = try predict(checkpoint, try OwnDataFiles.texts(of: files.emotionsTest))
        #expect(predictions.count == 42 && predictions.allSatisfy { names[$0.id] == $0.label && $0.probabilities.count == 7 })
        let predicted = accuracy(predictions, try Self.labels(of: files.emotionsTest))
        #expect(abs(predicted - (metrics["accuracy"] as? Double ?? -1)) < 1e-9 && predicted > 0.5, "\(predicted), chance 1/7")

        // --labels fixes names and order; the checkpoint and eval follow it.
        let reversed = Array(names.reversed())
        let fixed = workspace.output("emotions-fixed")
        try run(ranks: 1, ["train", "--model", workspace.model.path, "--train", files.emotions.path, "--output", fixed.path,
                           "--cache-dir", cache.path, "--max-steps", "2", "--threads", "1", "--ignore-mismatched-sizes",
                           "--labels", reversed.joined(separator: ",")])
        try expectHuggingFaceConfig(fixed.appendingPathComponent("checkpoint-2"), labels: reversed)
        let fixedMetrics = try evalJSON(ranks: 2, fixed.appendingPathComponent("checkpoint-2"), files.emotionsTest)
        #expect((fixedMetrics["per_class"] as? [[String: Any]])?.map { $0["label"] as? String } == reversed)
        // Resuming that run with the labels in another order would change what each class means: refused.
        let resumed = try RunningProcess(binary, ["train", "--model", workspace.model.path, "--train", files.emotions.path, "--output", fixed.path,
                                                  "--cache-dir", cache.path, "--max-steps", "4", "--threads", "1", "--ignore-mismatched-sizes", "--resume"])
        #expect(resumed.waitForExit(timeoutSeconds: 60) == 1)
        #expect(resumed.standardError.contains("checkpoint-2: was trained on other data or labels"), "\(resumed.standardError)")
    }

    @Test func textPairsTrainEvaluateAndPredict() throws {
        let columns = ["--text-column", "sentence1", "--text-pair-column", "sentence2"]
        try expectSameModelOnOneAndTwoRanks(files.pairs, eval: files.pairsTest, columns)
        let output = workspace.output("pairs")
        let process = try train(ranks: 2, files.pairs, eval: files.pairsTest, output: output, columns + ["--cache-dir", workspace.output("pairs-cache").path])
        #expect(process.standardOutput.contains("96 examples (text pairs)"), "\(process.standardOutput)")
        let checkpoint = output.appendingPathComponent("checkpoint-\(Self.steps(rows: 96))")
        try expectHuggingFaceConfig(checkpoint, labels: ["different", "same"])
        let metrics = try evalJSON(ranks: 2, checkpoint, files.pairsTest, columns)
        // predict --pairs tokenises A<TAB>B lines as eval tokenised the file's pairs.
        let predictions = try predict(checkpoint, try OwnDataFiles.texts(of: files.pairsTest), pairs: true)
        let predicted = accuracy(predictions, try Self.labels(of: files.pairsTest))
        #expect(abs(predicted - (metrics["accuracy"] as? Double ?? -1)) < 1e-9, "predict --pairs \(predicted) vs eval \(metrics["accuracy"] ?? "-")")
        // Without the second text the same model sees other inputs: its eval differs.
        let textOnly = try evalJSON(ranks: 1, checkpoint, files.pairsTest, ["--text-column", "sentence1"])
        #expect(textOnly["confusion"] as? [[Int]] != metrics["confusion"] as? [[Int]] || textOnly["loss"] as? Double != metrics["loss"] as? Double)
    }

    @Test func tokenizePairsMatchesHuggingFaceEncode() throws {
        // tokenizer_pairs_golden.json (tools/make_tokenizer_fixtures.py): HF's ids for each pair
        // and max length; `encode(A, B)` is the batch call's ids except for an empty B, where
        // HF's single call drops the pair (recorded separately).
        let fixtures = BinaryLocator.repositoryRoot.appendingPathComponent("Tests/DataTests/Fixtures")
        let golden = try JSONSerialization.jsonObject(with: Data(contentsOf: fixtures.appendingPathComponent("tokenizer_pairs_golden.json"))) as! [String: Any]
        let pairs = (golden["pairs"] as! [[String]])
        var expected: [Int: [Int: [Int]]] = [:]  // max length -> pair -> ids
        for entry in golden["cases"] as! [[Any]] { expected[entry[1] as! Int, default: [:]][entry[0] as! Int] = entry[2] as? [Int] }
        for entry in golden["single_call"] as! [[Any]] { expected[entry[1] as! Int, default: [:]][entry[0] as! Int] = entry[2] as? [Int] }
        #expect(!(golden["single_call"] as! [Any]).isEmpty)
        for (maxLength, byPair) in expected.sorted(by: { $0.key < $1.key }) {
            let indices = byPair.keys.sorted()
            let process = try run(ranks: nil, ["tokenize", "--model", fixtures.appendingPathComponent("minilm-uncased").path, "--pairs",
                                               "--max-seq-len", "\(maxLength)"],
                                  input: indices.map { "\(pairs[$0][0])\t\(pairs[$0][1])" }.joined(separator: "\n") + "\n")
            let lines = process.standardOutput.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
            #expect(lines.count == indices.count)
            for (line, index) in zip(lines, indices) where line.split(separator: " ").map({ Int($0)! }) != byPair[index]! {
                Issue.record("max length \(maxLength), pair \(index) \(pairs[index]): ours \(line), HF \(byPair[index]!)")
            }
        }
    }

    @Test func aClassifierOfAnotherSizeIsAnErrorUnlessIgnoreMismatchedSizes() throws {
        // The tiny model folder has a 4-label head; the reviews have 2 labels.
        let output = workspace.output("mismatch")
        let process = try RunningProcess(binary, ["train", "--model", workspace.model.path, "--train", files.reviews.path, "--output", output.path,
                                                  "--text-column", "review", "--label-column", "sentiment", "--cache-dir", cache.path])
        #expect(process.waitForExit(timeoutSeconds: 60) == 1)
        let errors = process.standardError.split(separator: "\n").filter { $0.contains("error:") }
        #expect(errors.count == 1 && errors[0].contains("classifier.weight: shape [4, 32], expected [2, 32]")
                && errors[0].hasSuffix("add --ignore-mismatched-sizes"), "\(process.standardError)")
        #expect(!FileManager.default.fileExists(atPath: output.path), "nothing written")
    }

    @Test func badInputNamesFileAndLineAndWritesNothing() throws {
        // Each reader's errors, under mpirun -n 1 and 2: one error line naming FILE:LINE, no
        // output folder, no token cache file.
        let checkpointRun = workspace.output("bad-input-checkpoint")
        try run(ranks: nil, ["train", "--model", workspace.model.path, "--train", files.reviews.path, "--output", checkpointRun.path,
                             "--text-column", "review", "--label-column", "sentiment", "--cache-dir", cache.path,
                             "--max-steps", "1", "--threads", "1", "--ignore-mismatched-sizes"])
        let checkpoint = checkpointRun.appendingPathComponent("checkpoint-1")
        let cases: [(name: String, contents: String, command: [String], expected: String)] = [
            ("unknown-column.csv", "id,review,sentiment\n1,\"w5 w6\",pos\n", ["--text-column", "body"],
             ":1: no column \"body\" (the text column) in the header; its columns are \"id\", \"review\", \"sentiment\""),
            ("empty-label.csv", "text,label\nw5 w6,pos\nw7,neg\nw8 w9,\n", ["--label-column", "label"], ":4: empty label"),
            ("broken.jsonl", "{\"text\": \"w5\", \"label\": \"a\"}\n{\"text\": \"w6\", \"label\": }\n", [], ":2: "),
            ("missing-pair.jsonl", "{\"text\": \"w5\", \"second\": \"w6\", \"label\": \"a\"}\n{\"text\": \"w7\", \"label\": \"b\"}\n",
             ["--text-pair-column", "second"], ":2: "),
            ("columns.tsv", "text\tlabel\nw5\ta\nw6\tb\textra\n", [], ":3: expected 2 columns as in the header (line 1), found 3"),
            ("one-label.tsv", "text\tlabel\nw5\ta\nw6\ta\n", [], ": every row has the same label (\"a\")"),
            ("unknown-label.csv", "id,review,sentiment\n1,w5 w6,pos\n2,w7,neg\n3,w8,maybe\n",
             ["eval", "--text-column", "review", "--label-column", "sentiment"],
             ":4: label \"maybe\" is not one of the 2 labels of \(checkpoint.path)/config.json (neg, pos)"),
        ]
        for (name, contents, command, expected) in cases {
            let file = workspace.root.appendingPathComponent(name)
            try contents.write(to: file, atomically: true, encoding: .utf8)
            for ranks in [1, 2] {
                let output = workspace.output("bad-\(name)-\(ranks)"), badCache = workspace.output("bad-cache-\(name)-\(ranks)")
                let arguments = command.first == "eval"
                    ? ["eval", "--checkpoint", checkpoint.path, "--data", file.path, "--cache-dir", badCache.path] + command.dropFirst()
                    : ["train", "--model", workspace.model.path, "--train", file.path, "--output", output.path, "--cache-dir", badCache.path,
                       "--ignore-mismatched-sizes"] + command
                let process = try BinaryLocator.start(binary, ranks: ranks, arguments)
                let status = process.waitForExit(timeoutSeconds: 60)
                #expect(status != nil && status != 0)
                let errors = process.standardError.split(separator: "\n").filter { $0.contains("error:") }
                #expect(errors.count == 1 && errors[0].contains(file.path + expected), "\(name), \(ranks) rank(s): \(process.standardError)")
                #expect(!process.standardError.contains("Fatal error") && !process.standardError.contains("Stack dump"))
                #expect(!FileManager.default.fileExists(atPath: output.path), "\(name): no output folder")
                let cached = (try? FileManager.default.contentsOfDirectory(atPath: badCache.path)) ?? []
                #expect(cached.isEmpty, "\(name): no token cache: \(cached)")
            }
        }
    }
}
