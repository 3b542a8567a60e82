import Data
import Distributed
import Foundation
import Model
import Storage

/// What eval reports for a task (`eval --json`, TensorBoard, `--metric-for-best-model`): one set
/// per task, each computed as scikit-learn / scipy compute it. Zero divisions follow
/// scikit-learn's default (`zero_division="warn"`): the value is 0. A correlation that is not
/// defined (fewer than 2 examples, a constant input) is NaN as in scipy, written `null` in JSON.
public protocol TaskMetrics: Sendable {
    /// Examples evaluated (each once, whatever the number of ranks).
    var count: Int { get }
    /// The mean loss of the task over the examples (weighted mean with class weights).
    var loss: Double { get }
    /// The top-level numbers of eval's JSON by name, in report order; the names
    /// `--metric-for-best-model` accepts.
    var scalars: [(name: String, value: Double)] { get }
    /// eval's JSON (SPEC "eval").
    var json: JSONValue { get }
    /// A readable report: lines joined by line breaks; names in it (the labels) are escaped
    /// (`oneLine`), so each of its lines is one line.
    var table: String { get }
}

extension TaskMetrics {
    /// The metric `name` (one of `scalars`; HF's "eval_" prefix is accepted), nil if none.
    public func metric(named name: String) -> Double? {
        let bare = name.hasPrefix("eval_") ? String(name.dropFirst(5)) : name
        return scalars.first { $0.name == bare }?.value
    }
}

/// Whether a larger value of metric `name` is better, inferred as HF's Trainer infers
/// `greater_is_better` (lower for a name ending in "loss"), and also lower for "mse" (HF's rule
/// would maximise it; an error is never better larger). Accuracy, F1, MCC, Pearson, Spearman:
/// higher.
public func metricGreaterIsBetter(_ name: String) -> Bool {
    let bare = name.hasPrefix("eval_") ? String(name.dropFirst(5)) : name
    return !(bare.hasSuffix("loss") || bare == "mse")
}

extension TaskLoss {
    /// The metric names evaluation reports for this task (what `--metric-for-best-model` may name).
    public var metricNames: [String] {
        switch self {
        case .crossEntropy: return ClassificationMetrics.metricNames
        case .binaryCrossEntropy: return MultiLabelMetrics.metricNames
        case .meanSquaredError: return RegressionMetrics.metricNames
        }
    }
}

/// JSON number, or null when it is not finite (JSON has no NaN).
private func jsonNumber(_ x: Double) -> JSONValue { x.isFinite ? .number(x) : .null }
private func format(_ x: Double) -> String { x.isFinite ? String(format: "%.4f", x) : "nan" }
private func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
private func padRight(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }

/// x / y, or 0 when y is 0 (scikit-learn's zero_division default).
private func ratio(_ x: Double, _ y: Double) -> Double { y == 0 ? 0 : x / y }

/// Precision, recall and F1 of one class or label from its counts, as
/// precision_recall_fscore_support: F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (true + predicted).
public struct ClassScores: Sendable, Equatable {
    public let label: String
    public let precision: Double, recall: Double, f1: Double
    public let support: Int

    init(label: String, truePositives: Int, predicted: Int, actual: Int) {
        self.label = label
        let tp = Double(truePositives)
        precision = ratio(tp, Double(predicted))
        recall = ratio(tp, Double(actual))
        f1 = ratio(2 * tp, Double(actual + predicted))
        support = actual
    }

    var json: JSONValue {
        JSONValue(object: ["label": .string(label), "precision": .number(precision), "recall": .number(recall),
                 "f1": .number(f1), "support": .number(Double(support))])
    }
}

/// The per-class (per-label) table of a report, with summary rows (name, F1).
private func scoresTable(_ scores: [ClassScores], summary: [(String, Double)], count: Int) -> [String] {
    let names = scores.map { oneLine($0.label) }
    let width = max(9, names.map(\.count).max() ?? 0)
    var lines = [padRight("", width) + pad("precision", 11) + pad("recall", 9) + pad("f1", 9) + pad("support", 9)]
    for (c, name) in zip(scores, names) {
        lines.append(padRight(name, width) + pad(format(c.precision), 11) + pad(format(c.recall), 9)
                     + pad(format(c.f1), 9) + pad(String(c.support), 9))
    }
    for (name, value) in summary {
        lines.append(padRight(name, width) + pad("", 11) + pad("", 9) + pad(format(value), 9) + pad(String(count), 9))
    }
    return lines
}

// MARK: - single-label classification

/// Single-label metrics from a confusion matrix (rows: true label, columns: prediction):
/// accuracy, loss, per-class precision/recall/F1 (all K classes), and
/// - `f1_macro`: the mean F1 over the classes present in the truth or the predictions
///   (f1_score(average="macro") with its default labels; a class absent from both is left out);
/// - `f1_micro`: 2 ΣTP / (Σtrue + Σpredicted) (equals accuracy);
/// - `mcc`: matthews_corrcoef's multiclass formula, 0 when its denominator is 0.
public struct ClassificationMetrics: TaskMetrics, Equatable {
    public let labels: [String]
    /// confusion[trueLabel][predictedLabel]
    public let confusion: [[Int]]
    public let lossSum: Double
    /// The loss mean's denominator: the count, or with class weights the sum of the examples' weights.
    public let lossDenominator: Double

    public static let metricNames = ["loss", "accuracy", "f1_macro", "f1_micro", "mcc"]

    public init(labels: [String], confusion: [[Int]], lossSum: Double, lossDenominator: Double? = nil) {
        self.labels = labels
        self.confusion = confusion
        self.lossSum = lossSum
        self.lossDenominator = lossDenominator ?? Double(confusion.reduce(0) { $0 + $1.reduce(0, +) })
    }

    public var count: Int { confusion.reduce(0) { $0 + $1.reduce(0, +) } }
    public var correct: Int { labels.indices.reduce(0) { $0 + confusion[$1][$1] } }
    public var accuracy: Double { count == 0 ? 0 : Double(correct) / Double(count) }
    public var loss: Double { lossDenominator == 0 ? 0 : lossSum / lossDenominator }

    /// Examples of each true class (row sums) and predictions of each class (column sums).
    private var actualCounts: [Int] { confusion.map { $0.reduce(0, +) } }
    private var predictedCounts: [Int] { labels.indices.map { k in confusion.reduce(0) { $0 + $1[k] } } }

    public typealias PerClass = ClassScores

    public var perClass: [ClassScores] {
        let actual = actualCounts, predicted = predictedCounts
        return labels.indices.map { ClassScores(label: labels[$0], truePositives: confusion[$0][$0], predicted: predicted[$0], actual: actual[$0]) }
    }

    public var f1Macro: Double {
        let actual = actualCounts, predicted = predictedCounts, scores = perClass
        let present = scores.indices.filter { actual[$0] + predicted[$0] > 0 }
        return present.isEmpty ? 0 : present.reduce(0.0) { $0 + scores[$1].f1 } / Double(present.count)
    }

    public var f1Micro: Double { ratio(2 * Double(correct), 2 * Double(count)) }

    public var mcc: Double {
        let n = Double(count), correct = Double(correct)
        let actual = actualCounts.map(Double.init), predicted = predictedCounts.map(Double.init)
        let dotActualPredicted = zip(actual, predicted).reduce(0.0) { $0 + $1.0 * $1.1 }
        let covarianceTruePredicted = correct * n - dotActualPredicted
        let covariancePredicted = n * n - predicted.reduce(0.0) { $0 + $1 * $1 }
        let covarianceTrue = n * n - actual.reduce(0.0) { $0 + $1 * $1 }
        let product = covariancePredicted * covarianceTrue
        return product == 0 ? 0 : covarianceTruePredicted / product.squareRoot()
    }

    public var scalars: [(name: String, value: Double)] {
        [("loss", loss), ("accuracy", accuracy), ("f1_macro", f1Macro), ("f1_micro", f1Micro), ("mcc", mcc)]
    }

    /// eval's JSON (docs/commands.md): {"n", "accuracy", "loss", "f1_macro", "f1_micro", "mcc",
    /// "per_class": [{label, precision, recall, f1, support}], "confusion"}.
    public var json: JSONValue {
        var object: [String: JSONValue] = [
            "n": .number(Double(count)),
            "per_class": .array(perClass.map(\.json)),
            "confusion": .array(confusion.map { .array($0.map { .number(Double($0)) }) }),
        ]
        for (name, value) in scalars { object[name] = jsonNumber(value) }
        return JSONValue(object: object)
    }

    /// A readable report: overall numbers, per-class table and the confusion matrix.
    public var table: String {
        let names = labels.map { oneLine($0) }
        let width = max(9, names.map(\.count).max() ?? 0)
        var lines: [String] = []
        lines.append("examples \(count)   accuracy \(format(accuracy))   loss \(format(loss))   f1_macro \(format(f1Macro))   f1_micro \(format(f1Micro))   mcc \(format(mcc))")
        lines.append("")
        lines += scoresTable(perClass, summary: [("macro avg", f1Macro)], count: count)
        lines.append("")
        lines.append("confusion (rows: true label, columns: predicted)")
        let cell = max(String(confusion.flatMap { $0 }.max() ?? 0).count, names.map(\.count).max() ?? 0) + 2
        lines.append(padRight("", width) + names.map { pad(String($0.prefix(cell - 1)), cell) }.joined())
        for (k, row) in confusion.enumerated() {
            lines.append(padRight(names[k], width) + row.map { pad(String($0), cell) }.joined())
        }
        return lines.joined(separator: "\n")
    }
}

// MARK: - multi-label classification

/// Multi-label metrics, a label predicted when its sigmoid probability exceeds `threshold`
/// (logit > log(t / (1 - t)): logit > 0 at 0.5, as HF's run_classification), on the (N, K)
/// indicator matrices of truth and predictions as scikit-learn takes them:
/// - `f1_micro`: 2 ΣTP / (2 ΣTP + ΣFP + ΣFN) over all labels;
/// - `f1_macro`: the mean F1 over all K labels (a label never true nor predicted has F1 0);
/// - `subset_accuracy`: the fraction of examples with every label right (accuracy_score);
/// - per label: precision, recall, F1, support (positives in the truth).
public struct MultiLabelMetrics: TaskMetrics, Equatable {
    public let labels: [String]
    public let threshold: Double
    public let truePositives: [Int], falsePositives: [Int], falseNegatives: [Int]   // (K)
    /// Examples whose every label is right.
    public let exactMatches: Int
    public let count: Int
    public let lossSum: Double, lossDenominator: Double

    public static let metricNames = ["loss", "f1_micro", "f1_macro", "subset_accuracy"]

    public init(labels: [String], threshold: Double, truePositives: [Int], falsePositives: [Int], falseNegatives: [Int],
                exactMatches: Int, count: Int, lossSum: Double, lossDenominator: Double) {
        self.labels = labels
        self.threshold = threshold
        self.truePositives = truePositives
        self.falsePositives = falsePositives
        self.falseNegatives = falseNegatives
        self.exactMatches = exactMatches
        self.count = count
        self.lossSum = lossSum
        self.lossDenominator = lossDenominator
    }

    public var loss: Double { lossDenominator == 0 ? 0 : lossSum / lossDenominator }

    public var perLabel: [ClassScores] {
        labels.indices.map {
            ClassScores(label: labels[$0], truePositives: truePositives[$0], predicted: truePositives[$0] + falsePositives[$0],
                        actual: truePositives[$0] + falseNegatives[$0])
        }
    }

    public var f1Micro: Double {
        let tp = Double(truePositives.reduce(0, +))
        return ratio(2 * tp, 2 * tp + Double(falsePositives.reduce(0, +) + falseNegatives.reduce(0, +)))
    }

    public var f1Macro: Double { labels.isEmpty ? 0 : perLabel.reduce(0.0) { $0 + $1.f1 } / Double(labels.count) }

    public var subsetAccuracy: Double { ratio(Double(exactMatches), Double(count)) }

    public var scalars: [(name: String, value: Double)] {
        [("loss", loss), ("f1_micro", f1Micro), ("f1_macro", f1Macro), ("subset_accuracy", subsetAccuracy)]
    }

    /// {"n", "loss", "f1_micro", "f1_macro", "subset_accuracy", "threshold",
    ///  "per_label": [{label, precision, recall, f1, support}]}.
    public var json: JSONValue {
        var object: [String: JSONValue] = [
            "n": .number(Double(count)), "threshold": .number(threshold), "per_label": .array(perLabel.map(\.json)),
        ]
        for (name, value) in scalars { object[name] = jsonNumber(value) }
        return JSONValue(object: object)
    }

    public var table: String {
        var lines = ["examples \(count)   loss \(format(loss))   f1_micro \(format(f1Micro))   f1_macro \(format(f1Macro))   "
                     + "subset_accuracy \(format(subsetAccuracy))   threshold \(threshold)", ""]
        lines += scoresTable(perLabel, summary: [("micro avg", f1Micro), ("macro avg", f1Macro)], count: count)
        return lines.joined(separator: "\n")
    }
}

// MARK: - regression

/// Regression metrics over every example's prediction and target (all of them: Spearman ranks
/// need the whole set): `mse` (mean_squared_error, in Double), `pearson` (scipy.stats.pearsonr),
/// `spearman` (scipy.stats.spearmanr: Pearson of the ranks, ties given their average rank).
public struct RegressionMetrics: TaskMetrics, Equatable {
    public let predictions: [Float]   // (N)
    public let targets: [Float]       // (N)
    public let lossSum: Double, lossDenominator: Double

    public static let metricNames = ["loss", "mse", "pearson", "spearman"]

    public init(predictions: [Float], targets: [Float], lossSum: Double, lossDenominator: Double) {
        precondition(predictions.count == targets.count)
        self.predictions = predictions
        self.targets = targets
        self.lossSum = lossSum
        self.lossDenominator = lossDenominator
    }

    public var count: Int { predictions.count }
    public var loss: Double { lossDenominator == 0 ? 0 : lossSum / lossDenominator }

    public var mse: Double {
        var sum = 0.0
        for (p, t) in zip(predictions, targets) { sum += (Double(p) - Double(t)) * (Double(p) - Double(t)) }
        return ratio(sum, Double(count))
    }

    public var pearson: Double { pearsonCorrelation(predictions.map(Double.init), targets.map(Double.init)) }
    public var spearman: Double { pearsonCorrelation(averageRanks(predictions), averageRanks(targets)) }

    public var scalars: [(name: String, value: Double)] {
        [("loss", loss), ("mse", mse), ("pearson", pearson), ("spearman", spearman)]
    }

    /// {"n", "loss", "mse", "pearson", "spearman"} (no accuracy, no confusion).
    public var json: JSONValue {
        var object: [String: JSONValue] = ["n": .number(Double(count))]
        for (name, value) in scalars { object[name] = jsonNumber(value) }
        return JSONValue(object: object)
    }

    public var table: String {
        "examples \(count)   loss \(format(loss))   mse \(format(mse))   pearson \(format(pearson))   spearman \(format(spearman))"
    }
}

/// Pearson's r of two samples, as scipy.stats.pearsonr: Σ(x - x̄)(y - ȳ) / sqrt(Σ(x - x̄)² Σ(y - ȳ)²),
/// clipped to [-1, 1]; NaN for fewer than 2 values or a constant sample.
func pearsonCorrelation(_ x: [Double], _ y: [Double]) -> Double {
    let n = x.count
    guard n >= 2, y.count == n else { return .nan }
    guard x.contains(where: { $0 != x[0] }), y.contains(where: { $0 != y[0] }) else { return .nan }
    let meanX = x.reduce(0, +) / Double(n), meanY = y.reduce(0, +) / Double(n)
    var xy = 0.0, xx = 0.0, yy = 0.0
    for i in 0..<n {
        let dx = x[i] - meanX, dy = y[i] - meanY
        xy += dx * dy
        xx += dx * dx
        yy += dy * dy
    }
    return max(-1, min(1, xy / (xx.squareRoot() * yy.squareRoot())))
}

/// 1-based ranks, tied values sharing the mean of their ranks (scipy.stats.rankdata "average").
func averageRanks(_ values: [Float]) -> [Double] {
    let order = values.indices.sorted { values[$0] < values[$1] }
    var ranks = [Double](repeating: 0, count: values.count)
    var start = 0
    while start < order.count {
        var end = start + 1
        while end < order.count && values[order[end]] == values[order[start]] { end += 1 }
        let rank = Double(start + 1 + end) / 2   // the mean of ranks start+1 ... end
        for i in start..<end { ranks[order[i]] = rank }
        start = end
    }
    return ranks
}

// MARK: - accumulating over batches and ranks

/// Adds up one rank's evaluation batches for a task; `merged(over:)` combines every rank's, as
/// counts and sums (single- and multi-label) or by gathering every prediction (regression), so
/// that each example counts once whatever the number of ranks. Ranks evaluate contiguous ranges
/// in rank order, so the gathered regression values are in example order.
public struct MetricsAccumulator: Sendable {
    // The one for the task; the others nil.
    private var singleLabel: SingleLabelAccumulator?
    private var multiLabel: MultiLabelAccumulator?
    private var regression: RegressionAccumulator?

    /// `labels`: the classes (K names; regression: its one output). `threshold`: multi-label only.
    public init(task: TaskLoss, labels: [String], threshold: Double = 0.5) {
        switch task {
        case .crossEntropy: singleLabel = SingleLabelAccumulator(task: task, labels: labels)
        case .binaryCrossEntropy: multiLabel = MultiLabelAccumulator(task: task, labels: labels, threshold: threshold)
        case .meanSquaredError: regression = RegressionAccumulator(task: task)
        }
    }

    /// One batch: its (B, K) logits and the loss sum the model's forward returned for it.
    public mutating func add(logits: UnsafeBufferPointer<Float>, batch: PackedBatch, lossSum: Double) {
        singleLabel?.add(logits: logits, batch: batch, lossSum: lossSum)
        multiLabel?.add(logits: logits, batch: batch, lossSum: lossSum)
        regression?.add(logits: logits, batch: batch, lossSum: lossSum)
    }

    /// Every rank's batches together (a collective: every rank calls it).
    public func merged(over communicator: any Communicator) throws -> any TaskMetrics {
        if let singleLabel { return try singleLabel.merged(over: communicator) }
        if let multiLabel { return try multiLabel.merged(over: communicator) }
        return try regression!.merged(over: communicator)
    }
}

/// Single-label: the confusion matrix (arg-max predictions), the loss sum and its denominator.
public struct SingleLabelAccumulator: Sendable {
    public let task: TaskLoss
    public let labels: [String]
    private var confusion: [Double]   // (K, K) counts
    private var lossSum = 0.0, lossDenominator = 0.0

    public init(task: TaskLoss, labels: [String]) {
        self.task = task
        self.labels = labels
        confusion = [Double](repeating: 0, count: labels.count * labels.count)
    }

    public mutating func add(logits: UnsafeBufferPointer<Float>, batch: PackedBatch, lossSum: Double) {
        let K = labels.count
        for s in 0..<batch.sequenceCount {
            var best = 0
            for k in 1..<K where logits[s * K + k] > logits[s * K + best] { best = k }
            confusion[Int(batch.labels[s]) * K + best] += 1
        }
        self.lossSum += lossSum
        lossDenominator += task.lossDenominator(of: batch, labelCount: K)
    }

    public func merged(over communicator: any Communicator) throws -> ClassificationMetrics {
        let K = labels.count
        let reduced = try communicator.allReduce(confusion + [lossSum, lossDenominator], .sum)
        let matrix = (0..<K).map { row in (0..<K).map { Int(reduced[row * K + $0]) } }
        return ClassificationMetrics(labels: labels, confusion: matrix, lossSum: reduced[K * K], lossDenominator: reduced[K * K + 1])
    }
}

/// Multi-label: true and false positives and false negatives per label, exact matches, count,
/// the loss sum and its denominator.
public struct MultiLabelAccumulator: Sendable {
    public let task: TaskLoss
    public let labels: [String]
    public let threshold: Double
    /// A label is predicted when its logit exceeds this: log(t / (1 - t)), the logit of `threshold`.
    private let logitThreshold: Double
    private var counts: [Double]      // tp (K), fp (K), fn (K), exact matches, examples
    private var lossSum = 0.0, lossDenominator = 0.0

    public init(task: TaskLoss, labels: [String], threshold: Double) {
        self.task = task
        self.labels = labels
        self.threshold = threshold
        logitThreshold = log(threshold / (1 - threshold))
        counts = [Double](repeating: 0, count: 3 * labels.count + 2)
    }

    public mutating func add(logits: UnsafeBufferPointer<Float>, batch: PackedBatch, lossSum: Double) {
        let K = labels.count
        for s in 0..<batch.sequenceCount {
            var allRight = true
            for k in 0..<K {
                let predicted = Double(logits[s * K + k]) > logitThreshold
                let actual = batch.targets[s * K + k] > 0.5
                switch (predicted, actual) {
                case (true, true): counts[k] += 1
                case (true, false): counts[K + k] += 1; allRight = false
                case (false, true): counts[2 * K + k] += 1; allRight = false
                case (false, false): break
                }
            }
            if allRight { counts[3 * K] += 1 }
            counts[3 * K + 1] += 1
        }
        self.lossSum += lossSum
        lossDenominator += task.lossDenominator(of: batch, labelCount: K)
    }

    public func merged(over communicator: any Communicator) throws -> MultiLabelMetrics {
        let K = labels.count
        let reduced = try communicator.allReduce(counts + [lossSum, lossDenominator], .sum)
        let integers = reduced.map { Int($0) }
        return MultiLabelMetrics(labels: labels, threshold: threshold, truePositives: Array(integers[0..<K]),
                                 falsePositives: Array(integers[K..<2 * K]), falseNegatives: Array(integers[2 * K..<3 * K]),
                                 exactMatches: integers[3 * K], count: integers[3 * K + 1],
                                 lossSum: reduced[3 * K + 2], lossDenominator: reduced[3 * K + 3])
    }
}

/// Regression: every prediction and target (for Spearman's ranks), the loss sum and its denominator.
public struct RegressionAccumulator: Sendable {
    public let task: TaskLoss
    private var predictions: [Float] = [], targets: [Float] = []
    private var lossSum = 0.0, lossDenominator = 0.0

    public init(task: TaskLoss) {
        self.task = task
    }

    public mutating func add(logits: UnsafeBufferPointer<Float>, batch: PackedBatch, lossSum: Double) {
        predictions.append(contentsOf: logits.prefix(batch.sequenceCount))
        targets.append(contentsOf: batch.targets)
        self.lossSum += lossSum
        lossDenominator += task.lossDenominator(of: batch, labelCount: 1)
    }

    public func merged(over communicator: any Communicator) throws -> RegressionMetrics {
        let sums = try communicator.allReduce([lossSum, lossDenominator], .sum)
        // Each rank's (prediction, target) pairs as bytes, gathered in rank order.
        let pairs = zip(predictions, targets).flatMap { [$0.bitPattern, $1.bitPattern] }
        let bytes = pairs.withUnsafeBytes { Array($0) }
        var allPredictions: [Float] = [], allTargets: [Float] = []
        for rankBytes in try communicator.allGather(bytes: bytes) {
            rankBytes.withUnsafeBytes { raw in
                for offset in stride(from: 0, to: raw.count, by: 8) {
                    allPredictions.append(Float(bitPattern: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
                    allTargets.append(Float(bitPattern: raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)))
                }
            }
        }
        return RegressionMetrics(predictions: allPredictions, targets: allTargets, lossSum: sums[0], lossDenominator: sums[1])
    }
}
