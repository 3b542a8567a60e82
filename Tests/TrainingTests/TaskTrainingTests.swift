import Data
import Foundation
import Model
import Storage
import TestSupport
import Testing
@testable import Options
@testable import Training

/// Synthetic data for every task on the tiny vocabulary (as `syntheticExamples`): multi-label
/// examples draw their words from the quarters of their 1 or 2 labels; regression examples from
/// the quarter of their value's integer part.
func syntheticTaskExamples(_ problemType: ProblemType, count: Int, seed: UInt64) -> TokenizedDataset {
    var state = seed
    func next(_ bound: Int) -> Int {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Int((state >> 33) % UInt64(bound))
    }
    var sequences: [[Int32]] = [], positives: [[Int32]] = [], values: [Float] = []
    for _ in 0..<count {
        var labels = [Int32(next(4))]
        if next(3) == 0 { labels.append(Int32((Int(labels[0]) + 1 + next(3)) % 4)) }
        let value = Float(labels[0]) + Float(next(100)) / 100
        var ids: [Int32] = [2]
        for _ in 0..<(1 + next(16)) { ids.append(Int32(next(3) == 0 ? 5 + next(94) : 5 + 23 * Int(labels[next(labels.count)]) + next(23))) }
        ids.append(3)
        sequences.append(ids)
        positives.append(labels)
        values.append(value)
    }
    switch problemType {
    case .singleLabelClassification: return syntheticExamples(count: count, seed: seed)
    case .multiLabelClassification:
        return TokenizedDataset.fromTokens(sequences, positiveLabels: positives, labelSet: DataPreset.agNews.labelSet, maxLength: 64)
    case .regression: return TokenizedDataset.fromTokens(sequences, values: values, maxLength: 64)
    }
}

func syntheticTaskData(_ problemType: ProblemType, train: Int = 64, eval: Int = 0) throws -> TrainingData {
    TrainingData(train: syntheticTaskExamples(problemType, count: train, seed: 1),
                 eval: eval > 0 ? syntheticTaskExamples(problemType, count: eval, seed: 2) : nil, files: try tinyModelFiles())
}

/// What evaluation reports, with the given metrics (the tracker's tests).
struct FixedMetrics: TaskMetrics {
    var scalars: [(name: String, value: Double)]
    var count: Int { 1 }
    var loss: Double { scalars.first { $0.name == "loss" }?.value ?? 0 }
    var json: JSONValue { .null }
    var table: String { "" }
}

@Suite(.serialized) struct TaskTrainingTests {
    /// The options of each task's run (the tiny folder's 4-label head is replaced for regression).
    static func taskOptions(_ problemType: ProblemType, output: URL, _ more: [String] = []) -> TrainingOptions {
        switch problemType {
        case .singleLabelClassification: return tinyOptions(output: output, ["--class-weights", "1,3,0.5,2"] + more)
        case .multiLabelClassification: return tinyOptions(output: output, ["--class-weights", "balanced"] + more)
        case .regression: return tinyOptions(output: output, ["--ignore-mismatched-sizes"] + more)
        }
    }

    /// For every task (weighted cross-entropy, BCE with balanced positive weights, MSE), any rank
    /// count, micro-batch size and sharding train the same model: each rank's gradient is scaled
    /// by the loss denominator of the whole global batch (for weighted cross-entropy Σ w[y] over
    /// the global batch's examples, whichever rank holds them). The recorded train/loss agrees too.
    @Test(arguments: ProblemType.allCases)
    func sameModelForAnyRankCountInEveryTask(problemType: ProblemType) throws {
        let data = try syntheticTaskData(problemType)
        let reference = temporaryDirectory()
        try train(Self.taskOptions(problemType, output: reference), ranks: 1, data: data)
        let expected = try finalWeights(reference, step: 6)
        let expectedLoss = try CheckpointFolder.verify(reference.appendingPathComponent("checkpoint-6")).recentMetrics
            .first { $0.name == "train/loss" }!.value
        for (ranks, micro, sharded) in [(4, nil, false), (4, 1, true), (2, 3, false), (3, 2, true)] as [(Int, Int?, Bool)] {
            let output = temporaryDirectory()
            var options = Self.taskOptions(problemType, output: output)
            options.parallel.microBatchSize = micro
            options.parallel.shardOptimizer = sharded
            try train(options, ranks: ranks, data: data)
            let difference = largestRelativeDifference(try finalWeights(output, step: 6), expected)
            let loss = try CheckpointFolder.verify(output.appendingPathComponent("checkpoint-6")).recentMetrics.first { $0.name == "train/loss" }!.value
            print("\(problemType.rawValue) ranks \(ranks) micro \(micro.map(String.init) ?? "-") sharded \(sharded): \(difference), train/loss \(loss) vs \(expectedLoss)")
            #expect(difference < 1e-5, "\(problemType.rawValue): ranks \(ranks), micro-batch \(String(describing: micro)), sharded \(sharded)")
            #expect(abs(loss - expectedLoss) <= 1e-6 * abs(expectedLoss))
        }
        if problemType != .regression {
            // The weights change the model: an unweighted run ends elsewhere.
            let unweighted = temporaryDirectory()
            try train(tinyOptions(output: unweighted), ranks: 1, data: data)
            #expect(largestRelativeDifference(try finalWeights(unweighted, step: 6), expected) > 1e-3)
        }
    }

    /// config.json says the task as Hugging Face reads it: problem_type, num_labels, id2label.
    @Test(arguments: ProblemType.allCases)
    func checkpointConfigNamesTheTask(problemType: ProblemType) throws {
        let output = temporaryDirectory()
        var data = try syntheticTaskData(problemType)
        data.files = ModelFiles(config: data.files.config, vocabulary: ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (5..<99).map { "w\($0)" },
                                tokenizerConfig: [:])  // a tokenizer eval can load
        try train(Self.taskOptions(problemType, output: output), ranks: 1, data: data)
        let config = try #require(try JSONValue.readFieldsIfPresent(output.appendingPathComponent("checkpoint-6/config.json")))
        #expect(config["problem_type"] == .string(problemType.rawValue))
        let names = problemType == .regression ? ["LABEL_0"] : DataPreset.agNews.labelNames
        #expect(config["num_labels"] == .number(Double(names.count)))
        #expect(config["id2label"] == JSONValue(object: Dictionary(uniqueKeysWithValues: names.enumerated().map { (String($0.offset), JSONValue.string($0.element)) })))
        let weights = try SafeTensorsFile(url: output.appendingPathComponent("checkpoint-6/model.safetensors"))
        #expect(weights.records["classifier.weight"]?.shape == [names.count, 32])
        // Eval and predict read the task back.
        let checkpoint = try InferenceModel.load(output.appendingPathComponent("checkpoint-6"), compute: Compute(threads: 1))
        #expect(checkpoint.problemType == problemType && checkpoint.model.task == RunTask(problemType: problemType).loss)
    }

    /// TensorBoard: eval/<metric> for each metric of the task, eval/f1/<label> per class or label.
    @Test(arguments: ProblemType.allCases)
    func tensorBoardHasTheTasksMetrics(problemType: ProblemType) throws {
        let board = temporaryDirectory("tensorboard")
        try train(Self.taskOptions(problemType, output: temporaryDirectory(), ["--tensorboard", board.path, "--eval-every", "3"]), ranks: 2,
                  data: try syntheticTaskData(problemType, eval: 16))
        let file = try #require(try FileManager.default.contentsOfDirectory(atPath: board.path).first { $0.hasPrefix("events.out.tfevents") })
        let events = try tensorBoardEvents(in: board.appendingPathComponent(file))
        let tags = Set(events.filter { $0.step == 3 }.flatMap(\.scalars).map(\.tag).filter { $0.hasPrefix("eval/") })
        let perLabel = problemType == .regression ? [] : DataPreset.agNews.labelNames.map { "eval/f1/\($0)" }
        let expected = Set(RunTask(problemType: problemType).loss.metricNames.map { "eval/\($0)" } + perLabel)
        #expect(tags == expected, "\(tags.sorted())")
        #expect(events.filter { $0.step == 6 }.flatMap(\.scalars).contains { $0.tag == "train/loss" })
    }

    /// HF's rules: the best is any better value; the patience counter resets only on an
    /// improvement larger than the threshold; a value that is not a number is never better.
    @Test func bestModelTrackerFollowsHuggingFace() throws {
        var options = try BestModelOptions.parse(["--metric-for-best-model", "eval_f1_macro", "--early-stopping-patience", "2",
                                                  "--early-stopping-threshold", "0.01"])
        var tracker = try BestModelTracker(options, task: .crossEntropy(classWeights: nil))
        #expect(tracker.metric == "f1_macro" && tracker.greaterIsBetter)
        var steps: [(isBest: Bool, count: Int, stop: Bool)] = []
        for (step, value) in [0.5, 0.55, 0.551, .nan, 0.4].enumerated() {
            let isBest = tracker.record(FixedMetrics(scalars: [("loss", 1), ("f1_macro", value)]), step: step + 1)
            steps.append((isBest, tracker.evaluationsWithoutImprovement, tracker.shouldStop))
        }
        #expect(steps.map(\.isBest) == [true, true, true, false, false])
        #expect(steps.map(\.count) == [0, 0, 1, 2, 3])
        #expect(steps.map(\.stop) == [false, false, false, true, true])
        #expect(tracker.best == .init(name: "f1_macro", value: 0.551, step: 3, greaterIsBetter: true))
        // Loss: lower is better by default; --greater-is-better overrides; a name the task lacks is refused.
        #expect(try !BestModelTracker(BestModelOptions.parse([]), task: .meanSquaredError).greaterIsBetter)
        options = try BestModelOptions.parse(["--metric-for-best-model", "mse", "--greater-is-better"])
        #expect(try BestModelTracker(options, task: .meanSquaredError).greaterIsBetter)
        #expect(throws: TrainingError.invalidInput("--metric-for-best-model accuracy is not a metric of this task; evaluation reports loss, mse, pearson, spearman")) {
            try BestModelTracker(BestModelOptions.parse(["--metric-for-best-model", "accuracy"]), task: .meanSquaredError)
        }
    }

    /// --metric-for-best-model f1_macro --keep-checkpoints 1: OUTPUT/best names the checkpoint of
    /// the evaluation with the highest f1_macro (a checkpoint is written at each improving
    /// evaluation), latest the last step's; the pruning kept both and nothing else.
    @Test func bestAndLatestSurviveKeepCheckpointsOne() throws {
        let output = temporaryDirectory()
        let options = tinyOptions(output: output, ["--eval", "/synthetic-eval", "--eval-every", "1", "--metric-for-best-model", "f1_macro", "--keep-checkpoints", "1",
                                                   "--checkpoint-every", "0", "--max-steps", "8", "--lr", "3e-3"])
        let log = try trainLoggingRankZero(options, ranks: 2, data: try syntheticData(train: 64, eval: 32))
        // The f1_macro of each evaluation, from the log: the best is the first maximum.
        let f1 = log.compactMap { line -> (Int, Double)? in
            guard let step = line.firstMatch(of: /^eval at step (\d+):/)?.1, let value = line.firstMatch(of: /f1_macro ([0-9.]+)/)?.1 else { return nil }
            return (Int(step)!, Double(value)!)
        }
        #expect(f1.map(\.0) == Array(1...8), "\(log)")
        let best = f1.first { $0.1 == f1.map(\.1).max() }!
        #expect(CheckpointFolder.named(by: "best", in: output) == "checkpoint-\(best.0)")
        #expect(CheckpointFolder.named(by: "latest", in: output) == "checkpoint-8")
        let folders = Set(CheckpointFolder.candidates(in: output).map { $0.url.lastPathComponent })
        #expect(folders == ["checkpoint-\(best.0)", "checkpoint-8"])
        let state = try CheckpointFolder.verify(output.appendingPathComponent("checkpoint-\(best.0)"))
        #expect(state.bestMetric?.step == best.0 && abs(state.bestMetric!.value - best.1) < 1e-4)
    }

    /// A run that cannot improve (a learning rate of 1e-9 leaves the accuracy where it is) stops
    /// at the first patience boundary, with its final checkpoint and a line saying why; resumed
    /// after its first step, it stops at the same step.
    @Test func earlyStoppingAtTheFirstPatienceBoundaryAlsoAfterResume() throws {
        let data = try syntheticData(train: 64, eval: 32)
        let arguments = ["--eval", "/synthetic-eval", "--eval-every", "1", "--metric-for-best-model", "accuracy", "--early-stopping-patience", "2", "--lr", "1e-9",
                         "--checkpoint-every", "0"]
        let output = temporaryDirectory()
        let summary = try train(tinyOptions(output: output, arguments), ranks: 2, data: data)
        #expect(summary.stepsDone == 3 && summary.totalSteps == 6)
        #expect(summary.earlyStopReason?.hasPrefix("stopped early: 2 evaluations in a row without an improvement of eval accuracy") == true)
        #expect(CheckpointFolder.named(by: "latest", in: output) == "checkpoint-3")
        #expect(CheckpointFolder.named(by: "best", in: output) == "checkpoint-1")
        let state = try CheckpointFolder.verify(output.appendingPathComponent("checkpoint-3"))
        #expect(state.evaluationsWithoutImprovement == 2 && state.bestMetric?.step == 1)

        // Stopped by a signal after step 1, then resumed: the count goes on from the checkpoint.
        let interrupted = temporaryDirectory()
        _ = try train(tinyOptions(output: interrupted, arguments), ranks: 2, data: data, stopAfterFirstStep: true)
        #expect(try CheckpointFolder.verify(interrupted.appendingPathComponent("checkpoint-1")).bestMetric?.name == "accuracy")
        let resumed = try train(tinyOptions(output: interrupted, arguments + ["--resume"]), ranks: 3, data: data)
        #expect(resumed.stepsDone == 3 && resumed.earlyStopReason != nil)
        #expect(CheckpointFolder.named(by: "best", in: interrupted) == "checkpoint-1")
    }

    /// --config: the file's options are parsed as if typed before the command line, which
    /// overrides them; training_args.json records every resolved option, and read back as a
    /// config file it gives the same options again.
    @Test func configFileOverriddenByTheCommandLineAndRecorded() throws {
        let folder = temporaryDirectory("config")
        let config = folder.appendingPathComponent("train.json")
        try #"{"model": "\#(tinyModel.path)", "train": "/synthetic", "batch-size": 16, "lr": 0.004, "max-steps": 3, "labels": ["World", "Sports", "Business", "Sci/Tech"], "shard-optimizer": true, "group-by-length": false, "tensorboard": null, "greater-is-better": false, "eval": "/synthetic-eval"}"#
            .write(to: config, atomically: true, encoding: .utf8)
        let catalogue = try OptionCatalogue(TrainingOptions.self)
        let commandLine = ["--output", folder.appendingPathComponent("run").path, "--lr", "1e-3", "--config", config.path]
        let options = try TrainingOptions.parse(try ResolvedOptions.configArguments(file: config.path, catalogue: catalogue) + commandLine)
        #expect(options.globalBatchSize == 16 && options.optimizer.learningRate == 1e-3 && options.maxSteps == 3)
        #expect(options.parallel.shardOptimizer && options.labels?.names == DataPreset.agNews.labelNames)
        #expect(options.bestModel.greaterIsBetter == false)

        let output = options.checkpoints.folder
        try train(options, ranks: 2, data: try syntheticData(eval: 8))
        let recorded = try #require(try JSONValue.readFieldsIfPresent(output.appendingPathComponent("checkpoint-3/training_args.json")))
        #expect(recorded["lr"] == .number(1e-3) && recorded["batch-size"] == .number(16) && recorded["max-steps"] == .number(3))
        #expect(recorded["labels"] == .string("World,Sports,Business,Sci/Tech") && recorded["shard-optimizer"] == .bool(true))
        #expect(recorded["greater-is-better"] == .bool(false) && recorded["epochs"] == .null && recorded["config"] == nil)
        #expect(recorded["output"] == .string(output.path) && recorded["warmup-ratio"] == .number(0))
        // Left out, decided by the run: the value it used (the tiny model has 64 positions).
        #expect(recorded["max-seq-len"] == .number(64) && recorded["dropout"] == .number(0))
        #expect(recorded["problem-type"] == .string("single_label_classification") && recorded["micro-batch-size"] == .null)
        // Every option of train is there, and the file as a config gives the same options.
        #expect(Set(recorded.keys) == Set(catalogue.entries.map(\.name)).subtracting(["config"]))
        let again = try TrainingOptions.parse(try ResolvedOptions.configArguments(file: output.appendingPathComponent("checkpoint-3/training_args.json").path,
                                                                                  catalogue: catalogue))
        #expect(try ResolvedOptions.record(again) == recorded)
    }

    /// A config file's mistakes: one line naming the file and the key.
    @Test func configFileMistakesNameTheFileAndKey() throws {
        let folder = temporaryDirectory("config")
        let catalogue = try OptionCatalogue(TrainingOptions.self)
        func error(_ json: String) -> String {
            let file = folder.appendingPathComponent("c.json")
            try! json.write(to: file, atomically: true, encoding: .utf8)
            do {
                _ = try ResolvedOptions.configArguments(file: file.path, catalogue: catalogue)
                return "no error"
            } catch {
                return "\(error)".replacingOccurrences(of: folder.path + "/", with: "")
            }
        }
        #expect(error(#"{"bach-size": 3}"#) == #"c.json: unknown option "bach-size" (did you mean "batch-size"?); the keys are the long option names of --help"#)
        #expect(error(#"{"resume": "yes"}"#) == #"c.json: "resume" is a flag: give true or false, found "yes""#)
        #expect(error(#"{"lr": true}"#) == #"c.json: "lr" takes a value, not true or false, found true"#)
        #expect(error(#"{"lr": {"a": 1}}"#) == #"c.json: "lr" takes a value, found an object"#)
        #expect(error(#"{"config": "other.json"}"#) == #"c.json: "config": config files do not nest; put the options of that file in this one"#)
        #expect(error("[1, 2]").hasPrefix("c.json: not a JSON object of options"))
        // Hostile keys and values: escaped, cut, and no quadratic search for suggestions.
        #expect(error(#"{"bat\nch-size": 3}"#) == #"c.json: unknown option "bat\nch-size" (did you mean "batch-size"?); the keys are the long option names of --help"#)
        let long = String(repeating: "x", count: 1_000_000)
        #expect(error(#"{"\#(long)": 3}"#).utf8.count < 400)
        #expect(error(#"{"resume": "\#(long)"}"#).utf8.count < 400)
        // A value of the wrong type for the option is the parser's own error, naming the option.
        let file = folder.appendingPathComponent("c.json")
        try #"{"batch-size": "abc", "model": "m", "train": "t", "output": "o"}"#.write(to: file, atomically: true, encoding: .utf8)
        let message = TrainingOptions.message(for: catchError { _ = try TrainingOptions.parse(try ResolvedOptions.configArguments(file: file.path, catalogue: catalogue)) }!)
        #expect(message.contains("'abc'") && message.contains("--batch-size"), "\(message)")
    }

    /// --class-weights that do not fit the data: one line before any step.
    @Test func classWeightMistakes() throws {
        let data = try syntheticData()
        let error = catchError { try train(tinyOptions(output: temporaryDirectory(), ["--class-weights", "1,2"]), ranks: 1, data: data) }
        #expect("\(error!)" == "--class-weights: 2 weights for 4 labels (World, Sports, Business, Sci/Tech); give one per label, in label order")
        #expect(throws: (any Error).self) { try TrainingOptions.parse(["--model", "m", "--train", "t", "--output", "o", "--class-weights", "1,x"]) }
        #expect(throws: (any Error).self) {
            try TrainingOptions.parse(["--model", "m", "--train", "t", "--output", "o", "--class-weights", "balanced", "--problem-type", "regression"])
        }
        #expect(throws: (any Error).self) { try TrainingOptions.parse(["--model", "m", "--train", "t", "--output", "o", "--threshold", "1"]) }
        #expect(throws: (any Error).self) { try TrainingOptions.parse(["--model", "m", "--train", "t", "--output", "o", "--early-stopping-patience", "2"]) }
    }
}

func catchError(_ body: () throws -> Void) -> (any Error)? {
    do { try body(); return nil } catch { return error }
}
