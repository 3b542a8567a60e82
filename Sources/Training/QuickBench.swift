import Foundation
import Model

/// Temporary: single-process timing of forward + backward + AdamW on synthetic batches.
public func quickBench(modelDirectory: URL, batch: Int, sequenceLength: Int, steps: Int, threads: Int) throws {
    BLASSetup.setThreads(threads)
    kernelThreadCount = threads
    let (model, _) = try BertForSequenceClassification.load(modelDirectory: modelDirectory, labelCount: 4, seed: 1)
    model.reserve(sequences: batch, longestSequence: sequenceLength)
    var packed = PackedBatch()
    for s in 0..<batch {
        packed.append(tokens: (0..<sequenceLength).map { Int32(1000 + ($0 * 7 + s) % 20000) }, label: Int32(s % 4), sampleIndex: s)
    }
    let optimizer = AdamOptimizer(hyperparameters: AdamHyperparameters(), layout: model.layout, range: 0..<model.layout.totalCount)
    var times: [Double] = []
    var phases = [Double](repeating: 0, count: 3)
    for step in 0..<(steps + 2) {
        let t0 = Date()
        model.gradients.zero()
        let ctx = DropoutContext(seed: 1, step: step)
        try model.forward(packed, dropout: ctx)
        let t1 = Date()
        try model.backward(packed, dropout: ctx, lossScale: 1 / Float(batch))
        let t2 = Date()
        optimizer.step(parameters: model.parameters, gradients: model.gradients, learningRate: 2e-5, gradientScale: 1)
        let t3 = Date()
        if step >= 2 {
            times.append(t3.timeIntervalSince(t0))
            phases[0] += t1.timeIntervalSince(t0); phases[1] += t2.timeIntervalSince(t1); phases[2] += t3.timeIntervalSince(t2)
        }
    }
    times.sort()
    let flops = trainingFLOPs(config: model.config, labelCount: 4, sequenceLengths: Array(repeating: sequenceLength, count: batch))
    print(String(format: "core %@ median %.3f s min %.3f s  fwd %.3f bwd %.3f adam %.3f  %.1f GFLOP/s", BLASSetup.coreName,
                 times[times.count / 2], times[0], phases[0] / Double(steps), phases[1] / Double(steps), phases[2] / Double(steps),
                 flops / times[times.count / 2] / 1e9))
}
