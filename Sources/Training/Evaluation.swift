import Data
import Distributed
import Foundation
import Model

/// Evaluation over `examples`, distributed: rank r takes the contiguous range r of a balanced
/// split (no padding duplicates), so every example is counted exactly once for any rank count;
/// the confusion matrices and loss sums are added over ranks.
func evaluate(model: BertForSequenceClassification, examples: any TokenizedExamples, labels: [String],
              communicator: any Communicator, batchSize: Int, batch: inout PackedBatch) throws -> ClassificationMetrics {
    let K = model.labelCount
    model.parametersChanged()   // the parameters may have been written since the last forward (--bf16 copies)
    let range = shardRange(count: examples.count, rank: communicator.rank, worldSize: communicator.worldSize)
    var confusion = [Double](repeating: 0, count: K * K)
    var lossSum = 0.0
    var start = range.lowerBound
    while start < range.upperBound {
        let end = min(start + batchSize, range.upperBound)
        batch.removeAll()
        for i in start..<end { batch.append(examples, index: i) }
        let result = try model.forward(batch, dropout: nil)
        lossSum += result.lossSum
        let logits = model.logits
        for s in 0..<batch.sequenceCount {
            var best = 0
            for k in 1..<K where logits[s * K + k] > logits[s * K + best] { best = k }
            confusion[Int(batch.labels[s]) * K + best] += 1
        }
        start = end
    }
    let reduced = try communicator.allReduce(confusion + [lossSum], .sum)
    let matrix = (0..<K).map { row in (0..<K).map { Int(reduced[row * K + $0]) } }
    return ClassificationMetrics(labels: labels, confusion: matrix, lossSum: reduced[K * K])
}
