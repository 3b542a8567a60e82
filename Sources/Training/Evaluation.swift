import Data
import Distributed
import Foundation
import Model

/// Evaluation over `examples` for the run's task, distributed: rank r takes the contiguous range
/// r of a balanced split (no padding duplicates), so every example is counted exactly once for
/// any rank count; the task's counts and sums are added over ranks (MetricsAccumulator). The
/// loss is the task's plain one: --class-weights weigh training alone, so that train's
/// evaluations and `bert-dist eval` of its checkpoints report the same numbers.
func evaluate(model: BertForSequenceClassification, examples: any TokenizedExamples, labels: LabelSet, task: RunTask,
              communicator: any Communicator, batchSize: Int, batch: inout PackedBatch) throws -> any TaskMetrics {
    model.parametersChanged()   // the parameters may have been written since the last forward (--bf16 copies)
    var plain = task
    plain.classWeights = nil
    let trainingLoss = model.task
    model.task = plain.loss
    defer { model.task = trainingLoss }
    let range = shardRange(count: examples.count, rank: communicator.rank, worldSize: communicator.worldSize)
    var accumulator = plain.metricsAccumulator(labels: labels)
    var start = range.lowerBound
    while start < range.upperBound {
        let end = min(start + batchSize, range.upperBound)
        batch.removeAll()
        for i in start..<end { batch.append(examples, index: i) }
        let result = try model.forward(batch, dropout: nil)
        accumulator.add(logits: model.logits, batch: batch, lossSum: result.lossSum)
        start = end
    }
    return try accumulator.merged(over: communicator)
}
