import Foundation
import Storage

/// The loss of a task (Hugging Face's `problem_type`), over the (B, K) logits of a batch and its
/// targets, one place for every encoder family:
///
/// | problem type                  | loss (PyTorch)                         | targets in `PackedBatch`          |
/// | ---                           | ---                                    | ---                               |
/// | single_label_classification   | CrossEntropyLoss(weight=classWeights)  | `labels`: class ids         (B)   |
/// | multi_label_classification    | BCEWithLogitsLoss(pos_weight=...)      | `targets`: multi-hot        (B, K) |
/// | regression (K = 1)            | MSELoss() on the squeezed logits       | `targets`: values           (B)   |
///
/// Reduction. PyTorch's loss is a mean: over the rows for cross-entropy (without weights), over
/// rows x labels for BCE, over the rows for MSE, and for weighted cross-entropy the weighted mean
/// Σ w[yᵢ] lᵢ / Σ w[yᵢ]. Here `forward` returns the SUM of the terms of its micro-batch (weighted
/// for weighted cross-entropy), which ranks and micro-batches add up, and `backward` scales the
/// gradient of that sum by `lossScale`. The mean over the global batch is the sum divided by
/// `lossDenominator(...)` of the GLOBAL batch, and `lossScale` must be 1 / that denominator, so
/// every rank count and micro-batch split gives PyTorch's gradient of the mean over the whole
/// global batch. For weighted cross-entropy the denominator Σ w[yᵢ] runs over the global batch's
/// labels: every rank holds the whole data set and knows the global batch, so each computes it
/// from the labels alone, without communication (and the same on every rank).
public enum TaskLoss: Sendable, Equatable {
    /// single_label_classification: softmax cross-entropy; `classWeights` (K) as torch's
    /// CrossEntropyLoss(weight=...), nil for none.
    case crossEntropy(classWeights: [Float]?)
    /// multi_label_classification: sigmoid binary cross-entropy per label; `positiveWeights` (K) as
    /// torch's BCEWithLogitsLoss(pos_weight=...), nil for none.
    case binaryCrossEntropy(positiveWeights: [Float]?)
    /// regression: squared error of the single output.
    case meanSquaredError

    /// The denominator of the mean loss over a set of examples (the global batch; an evaluation
    /// set): their number for cross-entropy without weights and MSE (K = 1), Σ classWeights[c]
    /// over their classes for weighted cross-entropy, number x K for BCE. `classes` is read only for
    /// weighted cross-entropy (pass a lazy sequence).
    public func lossDenominator<Classes: Sequence>(count: Int, labelCount K: Int, classes: Classes) -> Double
    where Classes.Element == Int32 {
        switch self {
        case .crossEntropy(.none): return Double(count)
        case .crossEntropy(let weights?): return classes.reduce(0.0) { $0 + Double(weights[Int($1)]) }
        case .binaryCrossEntropy: return Double(count) * Double(K)
        case .meanSquaredError: return Double(count) * Double(K)
        }
    }

    /// The denominator of one batch (see `lossDenominator(count:labelCount:classes:)`).
    public func lossDenominator(of batch: PackedBatch, labelCount K: Int) -> Double {
        lossDenominator(count: batch.sequenceCount, labelCount: K, classes: batch.labels)
    }

    /// 1 / denominator: what `backward` is given. 0 when the denominator is 0 (every example of a
    /// weighted batch in classes of weight 0: PyTorch's mean is then NaN; here nothing is learnt).
    public static func lossScale(denominator: Double) -> Float {
        denominator > 0 ? Float(1 / denominator) : 0
    }

    /// What is wrong with `batch` for this loss and K outputs (nil: nothing), for the model's
    /// batch checks: the targets' count, class ids in range, finite values.
    public func batchProblem(_ batch: PackedBatch, labelCount K: Int) -> String? {
        let B = batch.sequenceCount
        switch self {
        case .crossEntropy(let weights):
            if let weights, weights.count != K { return "\(weights.count) class weights for \(K) labels" }
            guard batch.labels.count == B else { return "\(batch.labels.count) class labels for \(B) sequences" }
            if let label = batch.labels.first(where: { $0 < 0 || Int($0) >= K }) { return "label \(label) is outside 0..<\(K)" }
        case .binaryCrossEntropy(let weights):
            if let weights, weights.count != K { return "\(weights.count) positive weights for \(K) labels" }
            guard batch.targets.count == B * K else { return "\(batch.targets.count) targets for \(B) sequences of \(K) labels" }
            if let value = batch.targets.first(where: { !($0 >= 0 && $0 <= 1) }) { return "multi-label target \(value) is not in [0, 1]" }
        case .meanSquaredError:
            guard K == 1 else { return "regression has 1 output, the classifier has \(K)" }
            guard batch.targets.count == B else { return "\(batch.targets.count) regression targets for \(B) sequences" }
            if let value = batch.targets.first(where: { !$0.isFinite }) { return "regression target \(value) is not a finite number" }
        }
        return nil
    }

    /// Loss sum of the batch (see the type's comment) and the rows predicted right (the arg-max
    /// is the label; multi-label: every label right at threshold 0.5; regression: 0). Keeps in
    /// `probabilities` (B, K) what backward needs: softmax (single-label), sigmoid (multi-label).
    public func forward(logits: UnsafePointer<Float>, probabilities: UnsafeMutablePointer<Float>, batch: PackedBatch,
                        labelCount K: Int) -> (lossSum: Double, correct: Int) {
        let B = batch.sequenceCount
        switch self {
        case .crossEntropy(let weights):
            return batch.labels.withUnsafeBufferPointer { labels in
                withOptionalPointer(weights) { weights in
                    crossEntropyForward(probabilities: probabilities, logits: logits, labels: labels.baseAddress!,
                                        classWeights: weights, rows: B, classes: K)
                }
            }
        case .binaryCrossEntropy(let weights):
            return batch.targets.withUnsafeBufferPointer { targets in
                withOptionalPointer(weights) { weights in
                    binaryCrossEntropyForward(probabilities: probabilities, logits: logits, targets: targets.baseAddress!,
                                              positiveWeights: weights, rows: B, labels: K)
                }
            }
        case .meanSquaredError:
            return batch.targets.withUnsafeBufferPointer { targets in
                (meanSquaredErrorForward(logits: logits, targets: targets.baseAddress!, count: B * K), 0)
            }
        }
    }

    /// What a prediction reports of the (B, K) logits, into `probabilities` (B, K): softmax
    /// (single-label), sigmoid per label (multi-label), the value itself (regression) — what
    /// `forward` keeps there, for a batch without targets.
    public func probabilities(logits: UnsafePointer<Float>, into probabilities: UnsafeMutablePointer<Float>, rows B: Int,
                              labelCount K: Int) {
        switch self {
        case .crossEntropy: for r in 0..<B { _ = softmaxRow(probabilities + r * K, logits + r * K, K) }
        case .binaryCrossEntropy: for i in 0..<(B * K) { probabilities[i] = 1 / (1 + expf(-logits[i])) }
        case .meanSquaredError: probabilities.update(from: logits, count: B * K)
        }
    }

    /// dLogits (B, K) = d(loss sum)/d(logits) x lossScale, from what `forward` kept.
    public func backward(dLogits: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>,
                         probabilities: UnsafePointer<Float>, batch: PackedBatch, labelCount K: Int, lossScale: Float) {
        let B = batch.sequenceCount
        switch self {
        case .crossEntropy(let weights):
            batch.labels.withUnsafeBufferPointer { labels in
                withOptionalPointer(weights) { weights in
                    crossEntropyBackward(dLogits: dLogits, probabilities: probabilities, labels: labels.baseAddress!,
                                         classWeights: weights, rows: B, classes: K, lossScale: lossScale)
                }
            }
        case .binaryCrossEntropy(let weights):
            batch.targets.withUnsafeBufferPointer { targets in
                withOptionalPointer(weights) { weights in
                    binaryCrossEntropyBackward(dLogits: dLogits, probabilities: probabilities, targets: targets.baseAddress!,
                                               positiveWeights: weights, rows: B, labels: K, lossScale: lossScale)
                }
            }
        case .meanSquaredError:
            batch.targets.withUnsafeBufferPointer { targets in
                meanSquaredErrorBackward(dLogits: dLogits, logits: logits, targets: targets.baseAddress!, count: B * K,
                                         lossScale: lossScale)
            }
        }
    }
}

/// Calls `body` with a pointer to the array's elements, or nil without an array.
private func withOptionalPointer<Result>(_ values: [Float]?, _ body: (UnsafePointer<Float>?) -> Result) -> Result {
    guard let values else { return body(nil) }
    return values.withUnsafeBufferPointer { body($0.baseAddress!) }
}

// MARK: - single-label: softmax cross-entropy

/// Softmax probabilities (B, K) of the logits, and Σ w[yᵢ] (log Σₖ exp zᵢₖ - zᵢ,yᵢ) over the rows
/// (w = 1 without class weights), with the number of rows whose arg-max is the label.
func crossEntropyForward(probabilities: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>,
                         labels: UnsafePointer<Int32>, classWeights: UnsafePointer<Float>? = nil,
                         rows: Int, classes K: Int) -> (lossSum: Double, correct: Int) {
    var lossSum = 0.0, correct = 0
    for r in 0..<rows {
        let z = logits + r * K
        let (maxValue, argmax, sum) = softmaxRow(probabilities + r * K, z, K)
        let label = Int(labels[r])
        let negativeLogLikelihood = logf(sum) + maxValue - z[label]
        lossSum += Double(classWeights.map { $0[label] * negativeLogLikelihood } ?? negativeLogLikelihood)
        if argmax == label { correct += 1 }
    }
    return (lossSum, correct)
}

/// p = softmax(z) over one row of K logits; returns the row's max and arg-max and Σ exp(z - max).
private func softmaxRow(_ p: UnsafeMutablePointer<Float>, _ z: UnsafePointer<Float>, _ K: Int) -> (maxValue: Float, argmax: Int, sum: Float) {
    var maxValue = z[0], argmax = 0
    for k in 1..<K where z[k] > maxValue { maxValue = z[k]; argmax = k }
    var sum: Float = 0
    for k in 0..<K { p[k] = expf(z[k] - maxValue); sum += p[k] }
    for k in 0..<K { p[k] /= sum }
    return (maxValue, argmax, sum)
}

/// dLogits = w[y] (p - onehot(y)) · lossScale, where lossScale is 1 / (the global batch's loss
/// denominator) so that the summed gradients of all ranks are those of the mean loss.
func crossEntropyBackward(dLogits: UnsafeMutablePointer<Float>, probabilities: UnsafePointer<Float>,
                          labels: UnsafePointer<Int32>, classWeights: UnsafePointer<Float>? = nil,
                          rows: Int, classes K: Int, lossScale: Float) {
    for r in 0..<rows {
        let label = Int(labels[r])
        let scale = classWeights.map { $0[label] * lossScale } ?? lossScale
        for k in 0..<K {
            let target: Float = k == label ? 1 : 0
            dLogits[r * K + k] = (probabilities[r * K + k] - target) * scale
        }
    }
}

// MARK: - multi-label: binary cross-entropy with logits

/// Sigmoid probabilities (B, K), and Σ over rows and labels of
///   l = (1 - y) x + (1 + (pw - 1) y) softplus(-x)
/// (= -[pw y log σ(x) + (1 - y) log(1 - σ(x))], written as torch writes it so that it stays
/// finite for large |x|; pw = 1 without positive weights), with the number of rows whose every
/// label is right at threshold 0.5 (x > 0).
func binaryCrossEntropyForward(probabilities: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>,
                               targets: UnsafePointer<Float>, positiveWeights: UnsafePointer<Float>?,
                               rows: Int, labels K: Int) -> (lossSum: Double, correct: Int) {
    var lossSum = 0.0, correct = 0
    for r in 0..<rows {
        var rowLoss: Float = 0
        var allRight = true
        for k in 0..<K {
            let x = logits[r * K + k], y = targets[r * K + k]
            probabilities[r * K + k] = 1 / (1 + expf(-x))
            let shift = max(-x, 0)
            let softplusOfMinusX = logf(expf(-shift) + expf(-x - shift)) + shift
            let logWeight = positiveWeights.map { ($0[k] - 1) * y + 1 } ?? 1
            rowLoss += (1 - y) * x + logWeight * softplusOfMinusX
            if (x > 0) != (y > 0.5) { allRight = false }
        }
        lossSum += Double(rowLoss)
        if allRight { correct += 1 }
    }
    return (lossSum, correct)
}

/// dLogits = ((1 + (pw - 1) y) σ(x) - pw y) · lossScale (σ - y without positive weights).
func binaryCrossEntropyBackward(dLogits: UnsafeMutablePointer<Float>, probabilities: UnsafePointer<Float>,
                                targets: UnsafePointer<Float>, positiveWeights: UnsafePointer<Float>?,
                                rows: Int, labels K: Int, lossScale: Float) {
    for r in 0..<rows {
        for k in 0..<K {
            let i = r * K + k, y = targets[i]
            if let positiveWeights {
                let weightedTarget = positiveWeights[k] * y
                dLogits[i] = ((weightedTarget + 1 - y) * probabilities[i] - weightedTarget) * lossScale
            } else {
                dLogits[i] = (probabilities[i] - y) * lossScale
            }
        }
    }
}

// MARK: - regression: squared error

/// Σ (x - y)² over the `count` outputs (B rows of the single output).
func meanSquaredErrorForward(logits: UnsafePointer<Float>, targets: UnsafePointer<Float>, count: Int) -> Double {
    var lossSum = 0.0
    for i in 0..<count {
        let difference = logits[i] - targets[i]
        lossSum += Double(difference * difference)
    }
    return lossSum
}

/// dLogits = 2 (x - y) · lossScale.
func meanSquaredErrorBackward(dLogits: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>,
                              targets: UnsafePointer<Float>, count: Int, lossScale: Float) {
    for i in 0..<count { dLogits[i] = 2 * (logits[i] - targets[i]) * lossScale }
}

// MARK: - class weights

/// `--class-weights`: `balanced`, or one non-negative weight per class (single-label) or per
/// label (multi-label: the positive weight of each label).
public enum ClassWeights: Sendable, Equatable, CustomStringConvertible {
    case balanced
    case values([Float])

    /// "balanced" or "W1,W2,...": finite numbers >= 0, spaces around each allowed.
    public init(parsing text: String) throws {
        if text.trimmingCharacters(in: .whitespaces) == "balanced" {
            self = .balanced
            return
        }
        var values: [Float] = []
        for (index, piece) in text.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
            let trimmed = piece.trimmingCharacters(in: .whitespaces)
            guard let value = Float(trimmed), value.isFinite, value >= 0,
                  trimmed.allSatisfy({ $0.isASCII && ($0.isNumber || "+-.eE".contains($0)) }) else {
                throw TaskLossError("--class-weights: weight \(index + 1) \"\(trimmed)\" is not a number >= 0; give balanced or one weight per label, e.g. 1,2.5,1")
            }
            values.append(value)
        }
        self = .values(values)
    }

    public var description: String {
        switch self {
        case .balanced: return "balanced"
        case .values(let values): return values.map { "\($0)" }.joined(separator: ",")
        }
    }

    /// The weights of a single-label run over `labels` (K names) whose training data has
    /// `classCounts[k]` examples of class k: given ones (K of them, not all 0), or balanced.
    public func classWeights(classCounts: [Int], labels: [String]) throws -> [Float] {
        switch self {
        case .balanced: return try balancedClassWeights(classCounts: classCounts, labels: labels)
        case .values(let values):
            try checkCount(values, labels: labels)
            guard values.contains(where: { $0 > 0 }) else { throw TaskLossError("--class-weights: every weight is 0; nothing would be learnt") }
            return values
        }
    }

    /// The positive weights of a multi-label run over `labels` (K) whose training data has
    /// `exampleCount` rows, `positiveCounts[k]` of them with label k: given ones, or balanced.
    public func positiveWeights(positiveCounts: [Int], exampleCount: Int, labels: [String]) throws -> [Float] {
        switch self {
        case .balanced: return try balancedPositiveWeights(positiveCounts: positiveCounts, exampleCount: exampleCount, labels: labels)
        case .values(let values):
            try checkCount(values, labels: labels)
            return values
        }
    }

    private func checkCount(_ values: [Float], labels: [String]) throws {
        guard values.count == labels.count else {
            throw TaskLossError("--class-weights: \(values.count) weight\(values.count == 1 ? "" : "s") for \(labels.count) labels (\(labels.joined(separator: ", "))); give one per label, in label order")
        }
    }
}

/// scikit-learn's compute_class_weight("balanced"): n_samples / (n_classes x count of the class),
/// over all K classes of the label set. A class without examples has no such weight (sklearn
/// refuses it too): an error naming it.
public func balancedClassWeights(classCounts: [Int], labels: [String]) throws -> [Float] {
    let total = classCounts.reduce(0, +)
    if let empty = classCounts.firstIndex(of: 0) {
        throw TaskLossError("--class-weights balanced: no training example has the label \"\(labels[empty])\", so it has no balanced weight; give the weights (--class-weights W1,W2,...) or leave the label out")
    }
    return classCounts.map { Float(Double(total) / (Double(classCounts.count) * Double($0))) }
}

/// Balanced positive weights for multi-label (BCEWithLogitsLoss's pos_weight): negatives /
/// positives of each label, the ratio PyTorch's documentation gives ("100 positive and 300
/// negative examples: pos_weight 3"), so that a label's positives weigh as much as its negatives
/// in the loss. A label positive in no row, or in every row, has no such ratio: an error naming it.
public func balancedPositiveWeights(positiveCounts: [Int], exampleCount: Int, labels: [String]) throws -> [Float] {
    try positiveCounts.enumerated().map { label, positives in
        guard positives > 0 && positives < exampleCount else {
            throw TaskLossError("--class-weights balanced: the label \"\(labels[label])\" is positive in \(positives == 0 ? "no" : "every") training row, so it has no balanced weight (negatives / positives); give the weights (--class-weights W1,W2,...)")
        }
        return Float(Double(exampleCount - positives) / Double(positives))
    }
}

public struct TaskLossError: Error, CustomStringConvertible, Equatable {
    public let description: String
    /// Messages quote labels of the data: one line (`errorLine`).
    init(_ description: String) { self.description = errorLine(description) }
}
