import Distributed
import Data
import Foundation
import Model
import Testing
@testable import Training

/// Evaluation metrics of every task against scikit-learn and scipy on fixed predictions
/// (Tests/ModelTests/Fixtures/task_metrics.json, written by tools/make_task_fixtures.py),
/// accumulated batch by batch on 1, 2 and 3 ranks: every example counts once.
@Suite struct TaskMetricsTests {
    static var fixture: [String: Any] {
        let url = repositoryRoot.appendingPathComponent("Tests/ModelTests/Fixtures/task_metrics.json")
        return try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    }

    static func floats(_ value: Any?) -> [Float] { (value as! [NSNumber]).map(\.floatValue) }
    static func doubles(_ value: Any?) -> [Double] { (value as! [NSNumber]).map(\.doubleValue) }
    static func number(_ value: Any?) -> Double { (value as? NSNumber)?.doubleValue ?? .nan }  // JSON null: undefined

    /// Within `tolerance` (absolute: every value here is at most a few units), NaN only for NaN.
    static func expectClose(_ actual: Double, _ expected: Double, _ what: String, tolerance: Double = 1e-12,
                            sourceLocation: SourceLocation = #_sourceLocation) {
        if expected.isNaN {
            #expect(actual.isNaN, "\(what): \(actual), expected undefined (NaN)", sourceLocation: sourceLocation)
        } else {
            #expect(abs(actual - expected) <= tolerance, "\(what): \(actual) vs \(expected)", sourceLocation: sourceLocation)
        }
    }

    /// Rows of a case as batches of at most 4 on each of `ranks` ranks (contiguous ranges, as
    /// evaluation splits them), accumulated, merged; the loss sums come from TaskLoss.forward.
    static func evaluate(task: TaskLoss, labels: [String], threshold: Double = 0.5, logits: [Float], rows: Int, ranks: Int,
                         append: @escaping @Sendable (inout PackedBatch, Int) -> Void) throws -> [any TaskMetrics] {
        let K = logits.count / rows
        let results = try InProcessGroup.run(worldSize: ranks) { communicator -> TaskMetricsBox in
            var accumulator = MetricsAccumulator(task: task, labels: labels, threshold: threshold)
            let range = shardRange(count: rows, rank: communicator.rank, worldSize: ranks)
            var start = range.lowerBound
            var batch = PackedBatch()
            while start < range.upperBound {
                let end = min(start + 4, range.upperBound)
                batch.removeAll()
                for row in start..<end { append(&batch, row) }
                let batchLogits = Array(logits[start * K..<end * K])
                var probabilities = [Float](repeating: 0, count: batchLogits.count)
                let lossSum = task.forward(logits: batchLogits, probabilities: &probabilities, batch: batch, labelCount: K).lossSum
                batchLogits.withUnsafeBufferPointer { accumulator.add(logits: $0, batch: batch, lossSum: lossSum) }
                start = end
            }
            return TaskMetricsBox(metrics: try accumulator.merged(over: communicator))
        }
        return results.map(\.metrics)
    }

    /// The loss, the metrics `keys` and the per-class (per-label) scores of `m` against case `c`.
    static func expectMatches(_ m: any TaskMetrics, _ c: [String: Any], keys: [String], scores: [ClassScores], scoresKey: String,
                              sourceLocation: SourceLocation = #_sourceLocation) throws {
        let name = c["name"] as! String
        expectClose(m.loss, number(c["loss"]), "\(name) loss", tolerance: 1e-6, sourceLocation: sourceLocation)
        for key in keys {
            expectClose(try #require(m.metric(named: key)), number(c[key]), "\(name) \(key)", sourceLocation: sourceLocation)
        }
        let expected = c[scoresKey] as! [String: Any]
        #expect(scores.count == (expected["support"] as! [Int]).count, sourceLocation: sourceLocation)
        for (k, score) in scores.enumerated() {
            expectClose(score.precision, doubles(expected["precision"])[k], "\(name) precision \(k)", sourceLocation: sourceLocation)
            expectClose(score.recall, doubles(expected["recall"])[k], "\(name) recall \(k)", sourceLocation: sourceLocation)
            expectClose(score.f1, doubles(expected["f1"])[k], "\(name) f1 \(k)", sourceLocation: sourceLocation)
            #expect(score.support == (expected["support"] as! [Int])[k], sourceLocation: sourceLocation)
        }
    }

    @Test(arguments: [1, 2, 3])
    func singleLabelMatchesScikitLearn(ranks: Int) throws {
        let cases = Self.fixture["single_label"] as! [[String: Any]]
        #expect(cases.count == 5)
        for c in cases {
            let name = c["name"] as! String, K = c["labels"] as! Int
            let targets = c["targets"] as! [Int]
            let names = (0..<K).map { "class \($0)" }
            let all = try Self.evaluate(task: .crossEntropy(classWeights: nil), labels: names, logits: Self.floats(c["logits"]),
                                        rows: targets.count, ranks: ranks) { batch, row in
                batch.append(tokens: [2, 3], label: Int32(targets[row]), sampleIndex: row)
            }
            for metrics in all {  // every rank has the merged result
                let m = try #require(metrics as? ClassificationMetrics)
                #expect(m.count == targets.count)
                #expect(m.confusion == (c["confusion"] as! [[Int]]), "\(name)")
                try Self.expectMatches(m, c, keys: ["accuracy", "f1_macro", "f1_micro", "mcc"], scores: m.perClass, scoresKey: "per_class")
            }
        }
    }

    @Test(arguments: [1, 2, 3])
    func multiLabelMatchesScikitLearn(ranks: Int) throws {
        let cases = Self.fixture["multi_label"] as! [[String: Any]]
        #expect(cases.count == 3)
        for c in cases {
            let K = c["labels"] as! Int
            let targets = Self.floats(c["targets"])
            let rows = targets.count / K
            let all = try Self.evaluate(task: .binaryCrossEntropy(positiveWeights: nil), labels: (0..<K).map { "label \($0)" },
                                        threshold: Self.number(c["threshold"]), logits: Self.floats(c["logits"]), rows: rows,
                                        ranks: ranks) { batch, row in
                batch.append(tokens: [2, 3], targets: targets[row * K..<(row + 1) * K], sampleIndex: row)
            }
            for metrics in all {
                let m = try #require(metrics as? MultiLabelMetrics)
                #expect(m.count == rows)
                try Self.expectMatches(m, c, keys: ["f1_micro", "f1_macro", "subset_accuracy"], scores: m.perLabel, scoresKey: "per_label")
            }
        }
    }

    @Test(arguments: [1, 2, 3])
    func regressionMatchesScipy(ranks: Int) throws {
        let cases = Self.fixture["regression"] as! [[String: Any]]
        #expect(cases.count == 4)
        for c in cases {
            let name = c["name"] as! String
            let predictions = Self.floats(c["predictions"]), targets = Self.floats(c["targets"])
            let all = try Self.evaluate(task: .meanSquaredError, labels: ["LABEL_0"], logits: predictions, rows: targets.count,
                                        ranks: ranks) { batch, row in
                batch.append(tokens: [2, 3], value: targets[row], sampleIndex: row)
            }
            for metrics in all {
                let m = try #require(metrics as? RegressionMetrics)
                #expect(m.predictions == predictions && m.targets == targets, "\(name): gathered in example order")
                Self.expectClose(m.loss, Self.number(c["loss"]), "\(name) loss", tolerance: 1e-5)
                for key in ["mse", "pearson", "spearman"] {
                    Self.expectClose(try #require(m.metric(named: key)), Self.number(c[key]), "\(name) \(key)")
                }
            }
        }
    }

    @Test func averageRanksAsScipyRankdata() {
        #expect(averageRanks([3, 1, 4, 1, 5, 9, 2, 6, 5]) == [4, 1.5, 5, 1.5, 6.5, 9, 3, 8, 6.5])
        #expect(averageRanks([2, 2, 2]) == [2, 2, 2])
        #expect(averageRanks([]) == [])
        #expect(pearsonCorrelation([1], [2]).isNaN)
    }

    @Test func jsonShapesAndMetricLookup() throws {
        let single = ClassificationMetrics(labels: ["neg", "pos"], confusion: [[3, 1], [0, 4]], lossSum: 2.4)
        let object = try #require(single.json.fields)
        #expect(Set(object.keys) == ["n", "accuracy", "loss", "f1_macro", "f1_micro", "mcc", "per_class", "confusion"])
        #expect(object["n"] == .number(8) && object["accuracy"] == .number(0.875) && object["loss"] == .number(0.3))
        #expect(single.metric(named: "eval_accuracy") == 0.875 && single.metric(named: "accuracy") == 0.875)
        #expect(single.metric(named: "pearson") == nil && single.metric(named: "f1/neg") == nil)
        #expect(single.scalars.map(\.name) == ClassificationMetrics.metricNames)
        #expect(TaskLoss.crossEntropy(classWeights: [1, 2]).metricNames == ClassificationMetrics.metricNames)
        // Weighted: the loss is the weighted mean (its denominator is the sum of the weights).
        let weighted = ClassificationMetrics(labels: ["neg", "pos"], confusion: [[3, 1], [0, 4]], lossSum: 2.4, lossDenominator: 12)
        #expect(abs(weighted.loss - 0.2) < 1e-15 && weighted.count == 8)

        let multi = MultiLabelMetrics(labels: ["a", "b"], threshold: 0.5, truePositives: [1, 0], falsePositives: [0, 0],
                                      falseNegatives: [1, 0], exactMatches: 1, count: 2, lossSum: 1, lossDenominator: 4)
        let multiObject = try #require(multi.json.fields)
        #expect(Set(multiObject.keys) == ["n", "loss", "f1_micro", "f1_macro", "subset_accuracy", "threshold", "per_label"])
        #expect(multi.scalars.map(\.name) == MultiLabelMetrics.metricNames)
        #expect(multi.f1Macro == (2.0 / 3.0) / 2 && multi.loss == 0.25)

        let constant = RegressionMetrics(predictions: [2, 2, 2], targets: [1, 2, 3], lossSum: 2, lossDenominator: 3)
        let regressionObject = try #require(constant.json.fields)
        #expect(Set(regressionObject.keys) == ["n", "loss", "mse", "pearson", "spearman"])
        #expect(regressionObject["pearson"] == .null && regressionObject["spearman"] == .null)  // undefined, as scipy's NaN
        #expect(constant.json.compact.contains("\"pearson\":null"))
        #expect(constant.scalars.map(\.name) == RegressionMetrics.metricNames)
        #expect(constant.table.contains("pearson nan"))
        // eval's text report names on its first line every metric its JSON has (SPEC).
        for metrics in [single, multi, constant] as [any TaskMetrics] {
            let headline = metrics.table.split(separator: "\n")[0]
            for name in metrics.scalars.map(\.name) { #expect(headline.contains("\(name) "), "\(name) in \(headline)") }
        }
    }

    @Test func greaterIsBetterAsHFInfersIt() {
        for name in ["loss", "eval_loss", "mse", "eval_mse"] { #expect(!metricGreaterIsBetter(name), "\(name)") }
        for name in ["accuracy", "f1_macro", "f1_micro", "mcc", "subset_accuracy", "pearson", "spearman", "eval_f1_macro"] {
            #expect(metricGreaterIsBetter(name), "\(name)")
        }
    }
}

/// `any TaskMetrics` across the rank threads.
struct TaskMetricsBox: Sendable {
    let metrics: any TaskMetrics
}
