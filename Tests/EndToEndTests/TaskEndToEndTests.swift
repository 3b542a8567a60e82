import Foundation
import Model
import Storage
import TestSupport
import Testing

/// The other tasks as users bring them, through the real binary under mpirun: a multi-label
/// JSON Lines file (5 labels, some rows with 2) and a regression one are trained, evaluated and
/// predicted (stdin and --data, whose output under -n 2 equals one process's row for row);
/// config.json says the task as Hugging Face reads it; the best checkpoint survives
/// --keep-checkpoints 1; a run that cannot improve stops at the first patience boundary;
/// --config is overridden by the command line and recorded. Tiny model.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct TaskEndToEndTests {
    let binary: URL
    let workspace: TinyWorkspace
    let files: TaskDataFiles

    init() throws {
        binary = try BinaryLocator.bertDist()
        workspace = try TinyWorkspace(trainRows: 8, testRows: 8)
        files = try TaskDataFiles(in: workspace.root)
    }

    var cache: URL { workspace.output("cache") }

    /// Runs to completion and expects `status` (`ranks`: under mpirun; nil: the plain binary).
    @discardableResult
    func run(ranks: Int?, _ arguments: [String], input: String? = nil, status expected: Int32 = 0,
             sourceLocation: SourceLocation = #_sourceLocation) throws -> RunningProcess {
        try BinaryLocator.run(binary, ranks: ranks, arguments, input: input, status: expected, sourceLocation: sourceLocation)
    }

    func train(ranks: Int, _ data: URL, eval: URL, output: URL, _ extra: [String]) throws -> RunningProcess {
        try run(ranks: ranks, ["train", "--model", workspace.model.path, "--train", data.path, "--eval", eval.path, "--output", output.path,
                               "--cache-dir", cache.path, "--batch-size", "8", "--lr", "5e-3", "--dropout", "0", "--threads", "1",
                               "--log-every", "100", "--ignore-mismatched-sizes"] + extra)
    }

    func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "\(text)")
    }

    func evalJSON(ranks: Int?, _ checkpoint: URL, _ data: URL) throws -> [String: Any] {
        try json(run(ranks: ranks, ["eval", "--checkpoint", checkpoint.path, "--data", data.path, "--json", "--threads", "1",
                                    "--cache-dir", cache.path]).standardOutput)
    }

    /// `predict --data` under `ranks` (1: the plain binary) into `output`; its lines.
    func predictFile(ranks: Int, _ checkpoint: URL, _ data: URL, output: URL, _ extra: [String] = []) throws -> [String] {
        try run(ranks: ranks == 1 ? nil : ranks, ["predict", "--checkpoint", checkpoint.path, "--data", data.path, "--output", output.path,
                                                  "--threads", "1", "--batch-size", "5"] + extra)
        return try String(contentsOf: output, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    func config(_ checkpoint: URL) throws -> [String: Any] {
        try json(String(contentsOf: checkpoint.appendingPathComponent("config.json"), encoding: .utf8))
    }

    @Test func multiLabelJSONLinesTrainEvalPredictUnderMPIRun() throws {
        let output = workspace.output("tags")
        let process = try train(ranks: 2, files.tags, eval: files.tagsTest, output: output,
                                ["--epochs", "12", "--eval-every", "12", "--metric-for-best-model", "f1_macro", "--keep-checkpoints", "1",
                                 "--class-weights", "balanced"])
        #expect(process.standardOutput.contains("5 labels from \(files.tags.path): \(TaskDataFiles.tagNames.joined(separator: ", ")) (multi-label)"),
                "\(process.standardOutput)")
        #expect(process.standardOutput.contains("class weights (balanced): business "), "\(process.standardOutput)")
        let last = output.appendingPathComponent("checkpoint-144")
        let configuration = try config(last)
        #expect(configuration["problem_type"] as? String == "multi_label_classification")
        #expect(configuration["num_labels"] as? Int == 5)
        #expect(configuration["id2label"] as? [String: String] == Dictionary(uniqueKeysWithValues: TaskDataFiles.tagNames.enumerated().map { (String($0.offset), $0.element) }))

        // OUTPUT/best and OUTPUT/latest, and no other checkpoint.
        let latest = try String(contentsOf: output.appendingPathComponent("latest"), encoding: .utf8)
        let best = try String(contentsOf: output.appendingPathComponent("best"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(latest == "checkpoint-144\n")
        let folders = Set(try FileManager.default.contentsOfDirectory(atPath: output.path).filter { $0.hasPrefix("checkpoint-") })
        #expect(folders == Set([best, "checkpoint-144"]), "\(folders)")
        #expect(process.standardOutput.contains("best model: \(output.appendingPathComponent(best).path) (eval f1_macro "))

        // Eval on 2 ranks and on 1: the same numbers, each example once; it learnt the labels.
        let metrics = try evalJSON(ranks: 2, last, files.tagsTest)
        #expect(Set(metrics.keys) == ["n", "loss", "f1_micro", "f1_macro", "subset_accuracy", "threshold", "per_label"])
        #expect(metrics["n"] as? Int == 40)
        #expect((metrics["per_label"] as? [[String: Any]])?.map { $0["label"] as! String } == TaskDataFiles.tagNames)
        let single = try evalJSON(ranks: nil, last, files.tagsTest)
        for key in ["f1_micro", "f1_macro", "subset_accuracy"] { #expect(metrics[key] as? Double == single[key] as? Double, "\(key)") }
        #expect(abs((metrics["loss"] as! Double) - (single["loss"] as! Double)) < 1e-6)
        let f1Micro = try #require(metrics["f1_micro"] as? Double)
        print("multi-label eval: \(metrics)")
        // It learnt: above predicting every label (none gives 0), by a margin.
        let truth = try TaskDataFiles.tagLabels(of: files.tagsTest)
        let positives = Double(truth.map(\.count).reduce(0, +))
        let everyLabel = 2 * positives / (positives + Double(5 * truth.count))
        #expect(f1Micro > everyLabel + 0.1, "f1_micro \(f1Micro), predicting every label \(everyLabel)")

        // predict on stdin: the labels above 0.5, whose micro F1 against the truth is eval's.
        let texts = try TaskDataFiles.texts(of: files.tagsTest)
        let predicted = try run(ranks: nil, ["predict", "--checkpoint", last.path, "--json", "--threads", "1"], input: texts.joined(separator: "\n") + "\n")
            .standardOutput.split(separator: "\n").map { try json(String($0)) }
        #expect(predicted.count == texts.count && predicted.allSatisfy { ($0["probs"] as? [Double])?.count == 5 })
        var truePositives = 0, predictedCount = 0, actualCount = 0
        for (object, labels) in zip(predicted, truth) {
            let names = Set(try #require(object["labels"] as? [String]))
            truePositives += names.intersection(labels).count
            predictedCount += names.count
            actualCount += labels.count
        }
        #expect(abs(2 * Double(truePositives) / Double(predictedCount + actualCount) - f1Micro) < 1e-9)
        let plain = try run(ranks: nil, ["predict", "--checkpoint", last.path, "--threads", "1"], input: texts[0] + "\n").standardOutput
        #expect(plain.hasSuffix("\n") && plain.split(separator: "\t").count == 2, "\(plain)")

        // predict --data: -n 2 equals one process row for row; CSV by extension.
        let one = try predictFile(ranks: 1, last, files.tagsTest, output: workspace.output("tags-1.jsonl"))
        let two = try predictFile(ranks: 2, last, files.tagsTest, output: workspace.output("tags-2.jsonl"))
        #expect(one.count == 40 && one == two)
        #expect(one.map { try? json($0)["labels"] as? [String] } == predicted.map { $0["labels"] as? [String] })
        let csv = try predictFile(ranks: 2, last, files.tagsTest, output: workspace.output("tags.csv"))
        #expect(csv.first == "labels," + TaskDataFiles.tagNames.joined(separator: ",") && csv.count == 41)
    }

    @Test func regressionJSONLinesTrainEvalPredictUnderMPIRun() throws {
        let output = workspace.output("scores")
        let process = try train(ranks: 2, files.scores, eval: files.scoresTest, output: output,
                                ["--epochs", "10", "--problem-type", "regression", "--metric-for-best-model", "pearson", "--eval-every", "40"])
        #expect(process.standardOutput.contains("regression targets from \(files.scores.path)"), "\(process.standardOutput)")
        let last = output.appendingPathComponent("checkpoint-120")
        let configuration = try config(last)
        #expect(configuration["problem_type"] as? String == "regression")
        #expect(configuration["num_labels"] as? Int == 1)
        #expect(configuration["id2label"] as? [String: String] == ["0": "LABEL_0"])
        let weights = try SafeTensorsFile(url: last.appendingPathComponent("model.safetensors"))
        #expect(weights.records["classifier.weight"]?.shape == [1, 32])

        let metrics = try evalJSON(ranks: 2, last, files.scoresTest)
        #expect(Set(metrics.keys) == ["n", "loss", "mse", "pearson", "spearman"])
        print("regression eval: \(metrics)")
        let pearson = try #require(metrics["pearson"] as? Double)
        #expect(pearson > 0.7 && metrics["n"] as? Int == 40)
        #expect(try evalJSON(ranks: nil, last, files.scoresTest)["spearman"] as? Double == metrics["spearman"] as? Double)

        // predict: {"score": x}, whose squared error against the targets is eval's mse.
        let texts = try TaskDataFiles.texts(of: files.scoresTest)
        let scores = try run(ranks: nil, ["predict", "--checkpoint", last.path, "--json", "--threads", "1"], input: texts.joined(separator: "\n") + "\n")
            .standardOutput.split(separator: "\n").map { try #require(json(String($0))["score"] as? Double) }
        let targets = try TaskDataFiles.values(of: files.scoresTest)
        let mse = zip(scores, targets).map { ($0 - $1) * ($0 - $1) }.reduce(0, +) / Double(targets.count)
        #expect(abs(mse - (metrics["mse"] as! Double)) < 1e-5 * max(1, mse), "predict's mse \(mse), eval's \(metrics["mse"]!)")
        // --logits: the one output, which is the score.
        let withLogits = try json(run(ranks: nil, ["predict", "--checkpoint", last.path, "--json", "--logits", "--threads", "1"],
                                      input: texts[0] + "\n").standardOutput)
        #expect(withLogits["score"] as? Double == scores[0] && withLogits["logits"] as? [Double] == [scores[0]], "\(withLogits)")
        let plain = try run(ranks: nil, ["predict", "--checkpoint", last.path, "--threads", "1"], input: texts[0] + "\n").standardOutput
        #expect(Double(plain.trimmingCharacters(in: .whitespacesAndNewlines)).map { abs($0 - scores[0]) < 1e-5 } == true, "\(plain)")

        let one = try predictFile(ranks: 1, last, files.scoresTest, output: workspace.output("scores-1.csv"))
        let two = try predictFile(ranks: 2, last, files.scoresTest, output: workspace.output("scores-2.csv"))
        #expect(one.count == 41 && one.first == "score" && one == two)
    }

    /// A run whose learning rate leaves it where it is stops at the first patience boundary,
    /// says why, and ends with its final checkpoint.
    @Test func earlyStoppingUnderMPIRun() throws {
        let output = workspace.output("stopped")
        let process = try train(ranks: 2, files.tags, eval: files.tagsTest, output: output,
                                ["--max-steps", "20", "--lr", "1e-9", "--eval-every", "2", "--metric-for-best-model", "subset_accuracy",
                                 "--early-stopping-patience", "3"])
        #expect(process.standardOutput.contains("stopped early: 3 evaluations in a row without an improvement of eval subset_accuracy larger than 0.0"),
                "\(process.standardOutput)")
        #expect(process.standardOutput.contains("done: 8 steps") && process.standardOutput.contains("trained model: \(output.path)/checkpoint-8"))
        #expect(try String(contentsOf: output.appendingPathComponent("latest"), encoding: .utf8) == "checkpoint-8\n")
        #expect(try String(contentsOf: output.appendingPathComponent("best"), encoding: .utf8) == "checkpoint-2\n")
    }

    /// A line break in a file or folder name (a user's, or a hostile file's) is escaped in the
    /// lines training prints: each stays one line.
    @Test func namesWithLineBreaksStayOnTheirLine() throws {
        let data = workspace.output("tags\nsplit.jsonl")
        try FileManager.default.copyItem(at: files.tags, to: data)
        let output = workspace.output("out\nput")
        let lines = try train(ranks: 1, data, eval: files.tagsTest, output: output, ["--max-steps", "1"]).standardOutput.split(separator: "\n")
        #expect(lines.contains("trained model: \(oneLine(output.path))/checkpoint-1"), "\(lines)")
        #expect(lines.contains { $0.hasPrefix("tokenised tags\\nsplit.jsonl: ") }, "\(lines)")
        #expect(!lines.contains { $0.hasPrefix("split.jsonl") || $0.hasPrefix("put") }, "\(lines)")
    }

    /// Labels are the model's (config.json id2label), which may hold a line break or a terminal
    /// escape: predict still gives one line per input, and eval's table one line per class.
    @Test func hostileLabelsAreEscapedInPredictAndEval() throws {
        let model = workspace.output("hostile-labels")
        try FileManager.default.copyItem(at: workspace.model, to: model)
        let configURL = model.appendingPathComponent("config.json")
        var config = try json(String(contentsOf: configURL, encoding: .utf8))
        let labels = ["World\nNews", "Sports", "Busi\u{1B}[31mness", "Sci"]
        config["id2label"] = Dictionary(uniqueKeysWithValues: labels.enumerated().map { (String($0.offset), $0.element) })
        config["label2id"] = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($0.element, $0.offset) })
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)

        let predicted = try run(ranks: nil, ["predict", "--checkpoint", model.path, "--threads", "1"], input: "w5 w6\nw30 w31\n").standardOutput
        let lines = predicted.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == 3 && lines[2].isEmpty, "\(predicted)")
        #expect(lines.dropLast().allSatisfy { line in labels.map { oneLine($0) + "\t" }.contains { line.hasPrefix($0) } }, "\(predicted)")
        #expect(!predicted.contains("\u{1B}"))

        let data = workspace.output("hostile-labels.csv")
        try "text,label\nw5 w6,Sports\nw30,Sci\n".write(to: data, atomically: true, encoding: .utf8)
        let table = try run(ranks: nil, ["eval", "--checkpoint", model.path, "--data", data.path, "--text-column", "text", "--threads", "1",
                                         "--cache-dir", cache.path]).standardOutput
        #expect(table.split(separator: "\n").filter { $0.hasPrefix(#"World\nNews "#) }.count == 2, "\(table)")  // scores and confusion rows
        #expect(!table.contains("\u{1B}") && !table.split(separator: "\n").contains { $0.hasPrefix("News") }, "\(table)")
    }

    /// --config FILE: its options as if typed before the command line, which overrides them;
    /// training_args.json records what the run used; launch/train's query sees them.
    @Test func configFileOverriddenByTheCommandLineAndRecorded() throws {
        let config = workspace.output("train.json")
        let output = workspace.output("configured")
        try """
        {"model": "\(workspace.model.path)", "train": "\(files.tags.path)", "output": "\(output.path)", "batch-size": 16, "max-steps": 3,
         "lr": 0.01, "threads": 1, "ignore-mismatched-sizes": true, "cache-dir": "\(cache.path)", "log-every": 100, "label-separator": null}
        """.write(to: config, atomically: true, encoding: .utf8)
        var environment = ProcessInfo.processInfo.environment
        environment["BERT_DIST_LAUNCH_QUERY"] = "1"
        let query = try RunningProcess(binary, ["train", "--config", config.path, "--threads", "2"], environment: environment)
        #expect(query.waitForExit(timeoutSeconds: 30) == 0)
        #expect(query.standardOutput == "bert-dist launch facts\nthreads=2\ncollective_timeout=600.0\noutput=\(output.path)\nresume=no\nshard_optimizer=no\n",
                "\(query.standardOutput)")

        try run(ranks: 2, ["train", "--config", config.path, "--lr", "2e-3"])
        let recorded = try json(String(contentsOf: output.appendingPathComponent("checkpoint-3/training_args.json"), encoding: .utf8))
        #expect(recorded["lr"] as? Double == 2e-3 && recorded["batch-size"] as? Int == 16 && recorded["max-steps"] as? Int == 3)
        #expect(recorded["threads"] as? Int == 1 && recorded["ignore-mismatched-sizes"] as? Bool == true && recorded["bf16"] as? Bool == false)
        #expect(recorded["train"] as? String == files.tags.path && recorded["config"] == nil)

        let wrong = workspace.output("wrong.json")
        try #"{"batch_size": 16}"#.write(to: wrong, atomically: true, encoding: .utf8)
        let error = try run(ranks: nil, ["train", "--config", wrong.path], status: 64).standardError
        #expect(error == "error: \(wrong.path): unknown option \"batch_size\" (did you mean \"batch-size\"?); the keys are the long option names of --help (see --help)\n")
        // A value the parser cannot read names the file and the key too (even when the command line overrides it).
        try #"{"lr": "abc"}"#.write(to: wrong, atomically: true, encoding: .utf8)
        for extra in [[], ["--lr", "1e-3"]] {
            let unreadable = try run(ranks: nil, ["train", "--config", wrong.path] + extra, status: 64).standardError
            #expect(unreadable == "error: \(wrong.path): \"lr\": The value 'abc' is invalid for '--lr <lr>' (see --help)\n")
        }

        // A line break in a value (here a path) is shown escaped, on the error's one line.
        try #"{"model": "no\nsuch", "train": "t", "output": "o"}"#.write(to: wrong, atomically: true, encoding: .utf8)
        let broken = try run(ranks: nil, ["train", "--config", wrong.path], status: 1).standardError
        #expect(broken.hasPrefix("error: ") && broken.contains(#"no\nsuch/config.json"#) && broken.filter { $0 == "\n" }.count == 1, "\(broken)")
    }

    /// The tasks' mistakes are one line naming the file (and line) before any step.
    @Test func taskMistakesAreOneLineErrors() throws {
        let common = ["train", "--model", workspace.model.path, "--output", workspace.output("never").path, "--cache-dir", cache.path,
                      "--threads", "1", "--ignore-mismatched-sizes"]
        let cases: [([String], String)] = [
            (["--train", files.tags.path, "--problem-type", "single_label_classification"],
             "error: \(files.tags.path):1: \"label\" is a list of labels (multi-label classification), found [\"business\"]"),
            (["--train", files.tags.path, "--problem-type", "regression"], "error: \(files.tags.path):1: \"label\" must be a number for regression"),
            (["--train", files.scores.path], "error: \(files.scores.path):1: \"label\" must be a string or an integer, found "),
            (["--train", files.tags.path, "--class-weights", "1,2"], "error: --class-weights: 2 weights for 5 labels"),
            (["--train", files.scores.path, "--problem-type", "regression", "--eval", files.scoresTest.path, "--metric-for-best-model", "f1_macro"],
             "error: --metric-for-best-model f1_macro is not a metric of this task; evaluation reports loss, mse, pearson, spearman"),
        ]
        for (arguments, expected) in cases {
            let process = try run(ranks: nil, common + arguments, status: 1)
            let lines = process.standardError.split(separator: "\n").filter { $0.hasPrefix("error:") }
            #expect(lines.count == 1 && lines[0].hasPrefix(expected), "\(arguments): \(process.standardError)")
            if arguments == ["--train", files.scores.path] {  // numbers read as classes: the way to regression is named
                #expect(lines.first?.hasSuffix("(for regression targets give --problem-type regression)") == true)
            }
        }
        #expect(!FileManager.default.fileExists(atPath: workspace.output("never").path))
        let predict = try run(ranks: nil, ["predict", "--checkpoint", workspace.model.path, "--data", files.tags.path, "--output", "x.txt"], status: 64)
        #expect(predict.standardError.hasPrefix("error: --output x.txt: name a .csv (CSV) or .jsonl (JSON Lines) file"))
    }
}

/// Multi-label and regression data for the tiny model (words w5 ... w98 of TinyWorkspace's
/// vocabulary): a row's words come mostly from the parts of the vocabulary of its labels (or of
/// its value), so a few epochs learn them.
struct TaskDataFiles {
    let folder: URL
    /// `{"text", "label": [names]}`: 1 label, or 2 in about one row of three.
    var tags: URL { folder.appendingPathComponent("tags.jsonl") }
    var tagsTest: URL { folder.appendingPathComponent("tags_test.jsonl") }
    /// `{"text", "label": number}`: values in [0, 5), the words of part ⌊value⌋.
    var scores: URL { folder.appendingPathComponent("scores.jsonl") }
    var scoresTest: URL { folder.appendingPathComponent("scores_test.jsonl") }

    static let tagNames = ["business", "long", "politics", "sports", "tech"]

    init(in folder: URL) throws {
        self.folder = folder
        var random = OwnDataFiles.Generator(state: 19)
        for (url, count) in [(tags, 96), (tagsTest, 40)] {
            var lines: [String] = []
            for _ in 0..<count {
                var labels = [random.next(5)]
                if random.next(3) == 0 { labels.append((labels[0] + 1 + random.next(4)) % 5) }
                let words = (0..<(3 + random.next(8))).map { _ in random.words(class: labels[random.next(labels.count)], of: 5, count: 1) }
                let names = labels.sorted().map { "\"\(Self.tagNames[$0])\"" }.joined(separator: ", ")
                lines.append("{\"text\": \"\(words.joined(separator: " "))\", \"label\": [\(names)]}")
            }
            try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        }
        for (url, count) in [(scores, 96), (scoresTest, 40)] {
            var lines: [String] = []
            for _ in 0..<count {
                let value = Double(random.next(500)) / 100
                lines.append("{\"text\": \"\(random.words(class: Int(value), of: 5, count: 3 + random.next(8)))\", \"label\": \(value)}")
            }
            try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        }
    }

    static func rows(of url: URL) throws -> [[String: Any]] {
        try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
    }
    static func texts(of url: URL) throws -> [String] { try rows(of: url).map { $0["text"] as! String } }
    static func tagLabels(of url: URL) throws -> [Set<String>] { try rows(of: url).map { Set($0["label"] as! [String]) } }
    static func values(of url: URL) throws -> [Double] { try rows(of: url).map { ($0["label"] as! NSNumber).doubleValue } }
}
