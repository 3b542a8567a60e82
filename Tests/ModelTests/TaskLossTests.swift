import Foundation
import Testing
@testable import Model

/// A JSON fixture of tools/make_task_fixtures.py.
func taskFixture(_ name: String) throws -> [String: Any] {
    let data = try Data(contentsOf: fixtures.appendingPathComponent(name))
    return try JSONSerialization.jsonObject(with: data) as! [String: Any]
}

func floats(_ value: Any?) -> [Float] { (value as! [NSNumber]).map { $0.floatValue } }
func doubles(_ value: Any?) -> [Double] { (value as! [NSNumber]).map { $0.doubleValue } }

/// One case of task_losses.json: its loss, logits and a batch holding its targets.
struct LossCase {
    let name: String
    let loss: TaskLoss
    let rows: Int, labels: Int
    let logits: [Float]
    let expectedLoss: Double
    let expectedGradient: [Float]
    let targets: [Float]

    init(_ json: [String: Any]) {
        name = json["name"] as! String
        rows = json["rows"] as! Int
        labels = json["labels"] as! Int
        logits = floats(json["logits"])
        targets = floats(json["targets"])
        expectedLoss = (json["loss"] as! NSNumber).doubleValue
        expectedGradient = floats(json["dlogits"])
        switch json["loss_kind"] as! String {
        case "cross_entropy": loss = .crossEntropy(classWeights: (json["weight"] as? [NSNumber]).map { $0.map(\.floatValue) })
        case "bce_with_logits": loss = .binaryCrossEntropy(positiveWeights: (json["pos_weight"] as? [NSNumber]).map { $0.map(\.floatValue) })
        default: loss = .meanSquaredError
        }
    }

    /// Rows `range` as a batch (two-token sequences; only the targets matter to the loss).
    func batch(_ range: Range<Int>) -> PackedBatch {
        var batch = PackedBatch()
        for r in range {
            switch loss {
            case .crossEntropy: batch.append(tokens: [101, 102], label: Int32(targets[r]), sampleIndex: r)
            case .binaryCrossEntropy: batch.append(tokens: [101, 102], targets: targets[r * labels..<(r + 1) * labels], sampleIndex: r)
            case .meanSquaredError: batch.append(tokens: [101, 102], value: targets[r], sampleIndex: r)
            }
        }
        return batch
    }

    /// Loss sum and dLogits of rows `range`, with the gradient scaled by `lossScale`.
    func run(_ range: Range<Int>, lossScale: Float) -> (lossSum: Double, dLogits: [Float]) {
        let batch = batch(range)
        let K = labels
        var probabilities = [Float](repeating: .nan, count: range.count * K)
        var dLogits = [Float](repeating: .nan, count: range.count * K)
        let rowLogits = Array(logits[range.lowerBound * K..<range.upperBound * K])
        let lossSum = rowLogits.withUnsafeBufferPointer { logits in
            probabilities.withUnsafeMutableBufferPointer { probabilities in
                let sum = loss.forward(logits: logits.baseAddress!, probabilities: probabilities.baseAddress!, batch: batch, labelCount: K).lossSum
                dLogits.withUnsafeMutableBufferPointer {
                    loss.backward(dLogits: $0.baseAddress!, logits: logits.baseAddress!, probabilities: UnsafePointer(probabilities.baseAddress!),
                                  batch: batch, labelCount: K, lossScale: lossScale)
                }
                return sum
            }
        }
        return (lossSum, dLogits)
    }
}

@Suite struct TaskLossTests {
    let cases = try! (taskFixture("task_losses.json")["cases"] as! [[String: Any]]).map(LossCase.init)

    @Test func lossesAndGradientsMatchPyTorch() throws {
        #expect(cases.count == 7)
        for c in cases {
            let batch = c.batch(0..<c.rows)
            #expect(c.loss.batchProblem(batch, labelCount: c.labels) == nil, "\(c.name)")
            let denominator = c.loss.lossDenominator(of: batch, labelCount: c.labels)
            let (lossSum, dLogits) = c.run(0..<c.rows, lossScale: TaskLoss.lossScale(denominator: denominator))
            let loss = lossSum / denominator
            print("\(c.name): loss \(loss) (PyTorch \(c.expectedLoss))")
            #expect(abs(loss - c.expectedLoss) <= 2e-6 * abs(c.expectedLoss), "\(c.name): loss \(loss) vs \(c.expectedLoss)")
            dLogits.withUnsafeBufferPointer { expectClose($0, c.expectedGradient, relativeTolerance: 2e-6, c.name + " dLogits") }
        }
    }

    /// The loss sum is split over micro-batches and ranks; the denominator is the global batch's.
    /// Any split of the rows, each part scaled by the global 1 / denominator, gives PyTorch's
    /// gradient of the mean over the whole batch, and its loss sums add up to the whole one.
    @Test func splitsOfTheGlobalBatchGiveTheWholeBatchGradient() throws {
        for c in cases {
            let whole = c.batch(0..<c.rows)
            let scale = TaskLoss.lossScale(denominator: c.loss.lossDenominator(of: whole, labelCount: c.labels))
            for cuts in [[1], [2, 3], [c.rows - 1]] where cuts.allSatisfy({ $0 > 0 && $0 < c.rows }) {
                let bounds = [0] + cuts + [c.rows]
                var lossSum = 0.0, gradient: [Float] = []
                var denominators = 0.0
                for part in 0..<(bounds.count - 1) {
                    let rows = bounds[part]..<bounds[part + 1]
                    let result = c.run(rows, lossScale: scale)
                    lossSum += result.lossSum
                    gradient += result.dLogits
                    denominators += c.loss.lossDenominator(of: c.batch(rows), labelCount: c.labels)
                }
                let wholeRun = c.run(0..<c.rows, lossScale: scale)
                #expect(abs(lossSum - wholeRun.lossSum) <= 1e-9 * abs(wholeRun.lossSum), "\(c.name) cut at \(cuts)")
                #expect(gradient == wholeRun.dLogits, "\(c.name) cut at \(cuts): the rows' gradients do not depend on the split")
                // The denominator adds up over the parts (what the global batch's is, from its labels).
                #expect(abs(denominators - c.loss.lossDenominator(of: whole, labelCount: c.labels)) <= 1e-12)
                gradient.withUnsafeBufferPointer { expectClose($0, c.expectedGradient, relativeTolerance: 2e-6, "\(c.name) split \(cuts)") }
            }
        }
    }

    /// Without weights the loss keeps the exact arithmetic of the cross-entropy it replaced.
    @Test func unweightedCrossEntropyIsTheSumOfNegativeLogLikelihoods() throws {
        let c = cases.first { $0.name == "ce" }!
        let (lossSum, _) = c.run(0..<c.rows, lossScale: 1)
        var expected = 0.0
        for r in 0..<c.rows {
            let row = c.logits[r * c.labels..<(r + 1) * c.labels].map(Double.init)
            let top = row.max()!
            expected += log(row.map { exp($0 - top) }.reduce(0, +)) + top - row[Int(c.targets[r])]
        }
        #expect(abs(lossSum - expected) <= 1e-5)
        #expect(c.loss.lossDenominator(of: c.batch(0..<c.rows), labelCount: c.labels) == Double(c.rows))
    }

    @Test func weightsOfZeroGiveNoGradientAndAZeroDenominatorNoNaN() throws {
        let loss = TaskLoss.crossEntropy(classWeights: [0, 1])
        var batch = PackedBatch()
        batch.append(tokens: [1, 2], label: 0, sampleIndex: 0)
        batch.append(tokens: [1, 2], label: 0, sampleIndex: 1)
        let denominator = loss.lossDenominator(of: batch, labelCount: 2)
        #expect(denominator == 0 && TaskLoss.lossScale(denominator: denominator) == 0)
        var probabilities = [Float](repeating: 0, count: 4), dLogits = [Float](repeating: .nan, count: 4)
        let logits: [Float] = [1, -1, 0.5, 2]
        let sum = loss.forward(logits: logits, probabilities: &probabilities, batch: batch, labelCount: 2).lossSum
        loss.backward(dLogits: &dLogits, logits: logits, probabilities: probabilities, batch: batch, labelCount: 2, lossScale: 0)
        #expect(sum == 0 && dLogits.allSatisfy { $0 == 0 })
    }

    @Test func balancedWeightsMatchScikitLearn() throws {
        let fixture = try taskFixture("task_losses.json")
        let balanced = fixture["balanced"] as! [String: Any]
        let labels = (balanced["labels"] as! [Int])
        let K = balanced["classes"] as! Int
        var counts = [Int](repeating: 0, count: K)
        for label in labels { counts[label] += 1 }
        let names = (0..<K).map { "c\($0)" }
        let weights = try ClassWeights.balanced.classWeights(classCounts: counts, labels: names)
        #expect(weights == floats(balanced["weights"]))

        let positive = fixture["balanced_positive"] as! [String: Any]
        let rows = positive["rows"] as! Int, labelCount = positive["labels"] as! Int
        let hot = floats(positive["targets"])
        let positives = (0..<labelCount).map { k in (0..<rows).filter { hot[$0 * labelCount + k] == 1 }.count }
        let positiveWeights = try ClassWeights.balanced.positiveWeights(positiveCounts: positives, exampleCount: rows,
                                                                        labels: (0..<labelCount).map { "l\($0)" })
        #expect(positiveWeights == floats(positive["weights"]))
    }

    @Test func classWeightsParseAndCheck() throws {
        #expect(try ClassWeights(parsing: "balanced") == .balanced)
        #expect(try ClassWeights(parsing: "1, 2.5,0,1e-1") == .values([1, 2.5, 0, 0.1]))
        func message(_ body: () throws -> Void) -> String {
            do { try body() } catch { return "\(error)" }
            return "no error"
        }
        for bad in ["1,,2", "1,-2", "nan,1", "inf,1", "1,two", "0x10,1", ""] {
            #expect(message({ _ = try ClassWeights(parsing: bad) }).contains("is not a number >= 0"), "\(bad)")
        }
        let names = ["neg", "pos", "neutral"]
        #expect(message({ _ = try ClassWeights.values([1, 2]).classWeights(classCounts: [3, 3, 3], labels: names) }) == "--class-weights: 2 weights for 3 labels (neg, pos, neutral); give one per label, in label order")
        #expect(message({ _ = try ClassWeights.values([0, 0, 0]).classWeights(classCounts: [3, 3, 3], labels: names) }).contains("every weight is 0"))
        #expect(try ClassWeights.values([0, 0, 0]).positiveWeights(positiveCounts: [1, 1, 1], exampleCount: 3, labels: names) == [0, 0, 0])
        #expect(message({ _ = try ClassWeights.balanced.classWeights(classCounts: [3, 0, 2], labels: names) }).contains("no training example has the label \"pos\""))
        #expect(message({ _ = try ClassWeights.balanced.positiveWeights(positiveCounts: [1, 0, 2], exampleCount: 4, labels: names) }).contains("the label \"pos\" is positive in no training row"))
        #expect(message({ _ = try ClassWeights.balanced.positiveWeights(positiveCounts: [1, 2, 4], exampleCount: 4, labels: names) }).contains("the label \"neutral\" is positive in every training row"))
    }

    @Test func batchProblemsAreNamed() throws {
        var single = PackedBatch()
        single.append(tokens: [1, 2], label: 3, sampleIndex: 0)
        #expect(TaskLoss.crossEntropy(classWeights: nil).batchProblem(single, labelCount: 3) == "label 3 is outside 0..<3")
        #expect(TaskLoss.crossEntropy(classWeights: [1, 1]).batchProblem(single, labelCount: 4) == "2 class weights for 4 labels")
        #expect(TaskLoss.binaryCrossEntropy(positiveWeights: nil).batchProblem(single, labelCount: 4) == "0 targets for 1 sequences of 4 labels")
        var multi = PackedBatch()
        multi.append(tokens: [1, 2], positiveLabels: [Int32](), labelCount: 3, sampleIndex: 0)
        multi.append(tokens: [1, 2, 3], positiveLabels: [2, 0], labelCount: 3, sampleIndex: 1)
        #expect(multi.targets == [0, 0, 0, 1, 0, 1] && multi.sequenceCount == 2 && multi.labels.isEmpty)
        #expect(TaskLoss.binaryCrossEntropy(positiveWeights: nil).batchProblem(multi, labelCount: 3) == nil)
        #expect(TaskLoss.crossEntropy(classWeights: nil).batchProblem(multi, labelCount: 3) == "0 class labels for 2 sequences")
        multi.targets[1] = 2
        #expect(TaskLoss.binaryCrossEntropy(positiveWeights: nil).batchProblem(multi, labelCount: 3) == "multi-label target 2.0 is not in [0, 1]")
        var regression = PackedBatch()
        regression.append(tokens: [1, 2], value: 2.5, sampleIndex: 0)
        #expect(TaskLoss.meanSquaredError.batchProblem(regression, labelCount: 1) == nil)
        #expect(TaskLoss.meanSquaredError.batchProblem(regression, labelCount: 2) == "regression has 1 output, the classifier has 2")
        regression.append(tokens: [1, 2], value: .infinity, sampleIndex: 1)
        #expect(TaskLoss.meanSquaredError.batchProblem(regression, labelCount: 1) == "regression target inf is not a finite number")
        regression.removeAll()
        #expect(regression.sequenceCount == 0 && regression.targets.isEmpty && regression.sequenceStarts == [0])
    }
}
