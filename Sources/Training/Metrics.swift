/// Classification metrics from a confusion matrix (rows: true label, columns: prediction), as
/// scikit-learn's classification_report computes them (0 when a denominator is 0).
public struct ClassificationMetrics: Sendable, Equatable {
    public let labels: [String]
    /// confusion[trueLabel][predictedLabel]
    public let confusion: [[Int]]
    public let lossSum: Double

    public init(labels: [String], confusion: [[Int]], lossSum: Double) {
        self.labels = labels
        self.confusion = confusion
        self.lossSum = lossSum
    }

    public var count: Int { confusion.reduce(0) { $0 + $1.reduce(0, +) } }
    public var correct: Int { labels.indices.reduce(0) { $0 + confusion[$1][$1] } }
    public var accuracy: Double { count == 0 ? 0 : Double(correct) / Double(count) }
    public var loss: Double { count == 0 ? 0 : lossSum / Double(count) }

    public struct PerClass: Sendable, Equatable {
        public let label: String
        public let precision: Double, recall: Double, f1: Double
        public let support: Int
    }

    public var perClass: [PerClass] {
        labels.indices.map { k in
            let truePositives = Double(confusion[k][k])
            let predicted = Double(labels.indices.reduce(0) { $0 + confusion[$1][k] })
            let actual = Double(confusion[k].reduce(0, +))
            let precision = predicted == 0 ? 0 : truePositives / predicted
            let recall = actual == 0 ? 0 : truePositives / actual
            let f1 = precision + recall == 0 ? 0 : 2 * precision * recall / (precision + recall)
            return PerClass(label: labels[k], precision: precision, recall: recall, f1: f1, support: Int(actual))
        }
    }

    /// eval's JSON (docs/commands.md): {"n", "accuracy", "loss", "per_class": [{label, precision, recall, f1}], "confusion"}.
    public var json: JSONValue {
        .object([
            "n": .number(Double(count)),
            "accuracy": .number(accuracy),
            "loss": .number(loss),
            "per_class": .array(perClass.map {
                .object(["label": .string($0.label), "precision": .number($0.precision), "recall": .number($0.recall),
                         "f1": .number($0.f1), "support": .number(Double($0.support))])
            }),
            "confusion": .array(confusion.map { .array($0.map { .number(Double($0)) }) }),
        ])
    }

    /// A readable report: overall numbers, per-class table and the confusion matrix.
    public var table: String {
        let width = max(8, labels.map(\.count).max() ?? 0)
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
        func padRight(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
        var lines: [String] = []
        lines.append("examples \(count)   accuracy \(format(accuracy))   loss \(format(loss))")
        lines.append("")
        lines.append(padRight("", width) + pad("precision", 11) + pad("recall", 9) + pad("f1", 9) + pad("support", 9))
        for c in perClass {
            lines.append(padRight(c.label, width) + pad(format(c.precision), 11) + pad(format(c.recall), 9)
                         + pad(format(c.f1), 9) + pad(String(c.support), 9))
        }
        let macroF1 = perClass.isEmpty ? 0 : perClass.map(\.f1).reduce(0, +) / Double(perClass.count)
        lines.append(padRight("macro avg", width) + pad("", 11) + pad("", 9) + pad(format(macroF1), 9) + pad(String(count), 9))
        lines.append("")
        lines.append("confusion (rows: true label, columns: predicted)")
        let cell = max(String(confusion.flatMap { $0 }.max() ?? 0).count, labels.map(\.count).max() ?? 0) + 2
        lines.append(padRight("", width) + labels.map { pad(String($0.prefix(cell - 1)), cell) }.joined())
        for (k, row) in confusion.enumerated() {
            lines.append(padRight(labels[k], width) + row.map { pad(String($0), cell) }.joined())
        }
        return lines.joined(separator: "\n")
    }

    private func format(_ x: Double) -> String { String(format: "%.4f", x) }
}
