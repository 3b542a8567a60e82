import ArgumentParser
import Data
import Model

extension ProblemType: ExpressibleByArgument {}

/// How the labels of a data file are split and when a multi-label prediction counts (train,
/// eval, predict).
public struct LabelOptions: ParsableArguments, Sendable {
    @Option(help: "Multi-label: the labels of a CSV/TSV field (or JSON string) are joined by this, e.g. \";\" for \"sports;politics\" (JSON Lines may give lists instead).")
    public var labelSeparator: String?
    @Option(help: "Multi-label: a label is predicted when its sigmoid probability is above this (eval, predict, and train's evaluation).")
    public var threshold = 0.5

    public init() {}

    public func validate() throws {
        if let labelSeparator, labelSeparator.isEmpty { throw ValidationError("--label-separator must not be empty; give the text between two labels, e.g. \";\"") }
        if !(threshold > 0 && threshold < 1) { throw ValidationError("--threshold must be between 0 and 1 (exclusive), found \(threshold)") }
    }
}

/// What a training run learns (HF's problem_type) and how its loss weighs the classes (train).
public struct TaskOptions: ParsableArguments, Sendable {
    @Option(help: "single_label_classification, multi_label_classification or regression (default: the model's config.json problem_type when it is multi-label or regression, else from the data: multi-label for JSON list labels or with --label-separator, else single-label).")
    public var problemType: ProblemType?
    @OptionGroup public var labels: LabelOptions
    @Option(help: "Weigh the loss per class: balanced (n_samples / (n_classes x count), as scikit-learn; multi-label: negatives / positives of each label) or one weight per label in label order, e.g. 1,3.5 (multi-label: BCE pos_weight).",
            transform: { try ClassWeights(parsing: $0) })
    public var classWeights: ClassWeights?

    public init() {}

    public func validate() throws {
        if let labelSeparator = labels.labelSeparator, let problemType, problemType != .multiLabelClassification {
            throw ValidationError("--label-separator \"\(labelSeparator)\" splits multi-label labels; it does not go with --problem-type \(problemType.rawValue)")
        }
        if classWeights != nil && problemType == .regression { throw ValidationError("--class-weights weigh classes; regression has none") }
    }
}

/// Which checkpoint is the best and when to stop early (train with --eval).
public struct BestModelOptions: ParsableArguments, Sendable {
    @Option(help: "The evaluation metric that picks OUTPUT/best: loss, accuracy, f1_macro, f1_micro, mcc (single-label); loss, f1_micro, f1_macro, subset_accuracy (multi-label); loss, mse, pearson, spearman (regression).")
    public var metricForBestModel = "loss"
    @Flag(inversion: .prefixedNo, help: "Whether a larger --metric-for-best-model is better (default: inferred, lower for loss and mse, higher for the rest).")
    public var greaterIsBetter: Bool?
    @Option(help: "End the run after N evaluations without an improvement of --metric-for-best-model larger than --early-stopping-threshold.")
    public var earlyStoppingPatience: Int?
    @Option(help: "How much --metric-for-best-model must improve to reset --early-stopping-patience.")
    public var earlyStoppingThreshold = 0.0

    public init() {}

    public func validate() throws {
        // The name is checked against the task's metrics once the task is known (before the first step).
        if let earlyStoppingPatience, earlyStoppingPatience < 1 { throw ValidationError("--early-stopping-patience must be at least 1") }
        if !(earlyStoppingThreshold >= 0) || !earlyStoppingThreshold.isFinite { throw ValidationError("--early-stopping-threshold must be a number >= 0") }
    }
}
