import Data
import Foundation
import Model
import Options

/// What a run's model learns and is evaluated on (Hugging Face's `problem_type`), decided once
/// by rank 0 and sent in the RunDescription: every rank builds the same loss from it, every
/// encoder family runs that loss, evaluation reports its metrics.
public struct RunTask: Codable, Sendable, Equatable {
    public var problemType: ProblemType = .singleLabelClassification
    /// The loss's weight per class: CrossEntropyLoss(weight=...) for single-label, the positive
    /// weights of BCEWithLogitsLoss(pos_weight=...) for multi-label; nil: none.
    public var classWeights: [Float]? = nil
    /// Multi-label: a label is predicted when its sigmoid probability is above this.
    public var threshold = 0.5

    public init(problemType: ProblemType = .singleLabelClassification, classWeights: [Float]? = nil, threshold: Double = 0.5) {
        self.problemType = problemType
        self.classWeights = classWeights
        self.threshold = threshold
    }

    public var loss: TaskLoss {
        switch problemType {
        case .singleLabelClassification: return .crossEntropy(classWeights: classWeights)
        case .multiLabelClassification: return .binaryCrossEntropy(positiveWeights: classWeights)
        case .regression: return .meanSquaredError
        }
    }

    /// An empty evaluation of this task over `labels` (the model's K outputs).
    func metricsAccumulator(labels: LabelSet) -> MetricsAccumulator {
        MetricsAccumulator(task: loss, labels: labels.names, threshold: threshold)
    }

    /// The label set of `names` for this task (regression: its one output).
    func labelSet(names: [String], origin: String) throws -> LabelSet {
        problemType == .regression ? .regression : try LabelSet(names: names, origin: origin)
    }
}

extension RunTask {
    /// How rank 0 reads the training file's labels: `--problem-type`; else the model folder's
    /// config.json `problem_type` when it is multi-label or regression (single-label, which every
    /// classifier's config says, lets the data decide); else inferred from the data (multi-label
    /// for JSON list labels or with --label-separator). `modelConfig` is that config.json.
    static func labelFormat(_ options: TaskOptions, modelConfig: [String: JSONValue], configFile: String) throws -> LabelFormat {
        var problemType = options.problemType
        if problemType == nil, let configured = try configuredProblemType(modelConfig, file: configFile),
           configured != .singleLabelClassification {
            problemType = configured
        }
        let format = LabelFormat(problemType: problemType, separator: options.labels.labelSeparator)
        if let problem = format.problem {
            throw TrainingError.invalidInput(options.problemType == nil ? "\(configFile) says problem_type \(problemType!.rawValue): \(problem)" : problem)
        }
        return format
    }

    /// The task of a training run on `train`: its problem type, --threshold, and --class-weights
    /// resolved against its label counts (balanced weights need them).
    static func forTraining(_ options: TaskOptions, train: TokenizedDataset) throws -> RunTask {
        var task = RunTask(problemType: train.problemType, threshold: options.labels.threshold)
        guard let weights = options.classWeights else { return task }
        let names = train.labelSet.names
        do {
            switch train.problemType {
            case .singleLabelClassification: task.classWeights = try weights.classWeights(classCounts: train.labelCounts, labels: names)
            case .multiLabelClassification:
                task.classWeights = try weights.positiveWeights(positiveCounts: train.labelCounts, exampleCount: train.count, labels: names)
            case .regression: throw TrainingError.invalidInput("--class-weights weigh classes; the training data is regression (no classes)")
            }
        } catch let error as TaskLossError {
            throw TrainingError.invalidInput(error.description)
        }
        return task
    }

    /// The problem type a config.json names (nil: none); another value is an error naming the file.
    static func configuredProblemType(_ config: [String: JSONValue], file: String) throws -> ProblemType? {
        guard let value = config["problem_type"], !value.isNull else { return nil }
        guard let name = value.string, let type = ProblemType(rawValue: name) else {
            throw TrainingError.invalidInput("\(file): problem_type \(value.compact) is not one of \(ProblemType.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return type
    }

    /// The problem type of a trained model: its config.json's, else as transformers decides it
    /// without one (regression for 1 output, else single-label).
    static func problemType(ofModel config: [String: JSONValue], labelCount: Int, file: String) throws -> ProblemType {
        let type = try configuredProblemType(config, file: file) ?? (labelCount == 1 ? .regression : .singleLabelClassification)
        if (type == .regression) != (labelCount == 1) {
            throw TrainingError.invalidInput("\(file): problem_type \(type.rawValue) with \(labelCount) output\(labelCount == 1 ? "" : "s"); regression has 1, classifiers at least 2")
        }
        return type
    }
}
