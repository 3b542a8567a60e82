import Data
import Distributed
import Foundation
import Model

/// `bert-dist bench`: full training steps (forward, backward, gradient sync, AdamW) after
/// warm-up, on synthetic sequences of `sequenceLength` tokens or on consecutive real rows.
public struct BenchmarkOptions: Sendable {
    public var modelDirectory: URL
    /// Global batch (split over ranks).
    public var batchSize = 8
    public var sequenceLength = 128
    public var dataFile: URL?
    public var steps = 20
    public var warmupSteps = 3
    public var microBatchSize: Int?
    public var shardOptimizer = false
    /// Initialise from config.json alone (timing a model whose weights are not at hand).
    public var randomWeights = false
    public init(modelDirectory: URL) { self.modelDirectory = modelDirectory }
}

public struct BenchmarkResult: Sendable {
    public var stepSecondsMedian = 0.0, stepSecondsMin = 0.0
    public var tokensPerSecond = 0.0, examplesPerSecond = 0.0
    public var ranks = 1, threads = 1
    /// Median time per step spent waiting for gradient communication (slowest rank).
    public var communicationWaitSecondsMedian = 0.0
    /// Matrix-product FLOPs of the model per second, and the sgemm peak of all ranks measured
    /// in this run with the same threads.
    public var modelFLOPsPerSecond = 0.0, sgemmPeakFLOPsPerSecond = 0.0
    /// Largest peak resident memory of a rank.
    public var peakResidentMegabytes = 0.0
    /// Real tokens per global batch, and what padding to the longest sequence would process.
    public var realTokensPerBatch = 0.0, paddedTokensPerBatch = 0.0
    public var blasCore = ""

    public var json: JSONValue {
        .object([
            "step_s_median": .number(stepSecondsMedian), "step_s_min": .number(stepSecondsMin),
            "tokens_per_s": .number(tokensPerSecond), "examples_per_s": .number(examplesPerSecond),
            "ranks": .number(Double(ranks)), "threads": .number(Double(threads)),
            "comm_wait_s_median": .number(communicationWaitSecondsMedian),
            "model_gflops_per_s": .number(modelFLOPsPerSecond / 1e9), "sgemm_peak_gflops_per_s": .number(sgemmPeakFLOPsPerSecond / 1e9),
            "fraction_of_sgemm_peak": .number(sgemmPeakFLOPsPerSecond > 0 ? modelFLOPsPerSecond / sgemmPeakFLOPsPerSecond : 0),
            "peak_rss_mb": .number(peakResidentMegabytes),
            "real_tokens_per_batch": .number(realTokensPerBatch), "padded_tokens_per_batch": .number(paddedTokensPerBatch),
            "blas_core": .string(blasCore),
        ])
    }
}

public func runBenchmark(_ options: BenchmarkOptions, threads: Int, communicator: any Communicator) throws -> BenchmarkResult {
    let rank = communicator.rank, worldSize = communicator.worldSize
    let labelCount = 4
    let (model, batches) = try collectively(communicator) { () throws -> (BertForSequenceClassification, [[(tokens: [Int32], label: Int)]]) in
        let model: BertForSequenceClassification
        if options.randomWeights {
            model = BertForSequenceClassification(config: try BertConfig.load(modelDirectory: options.modelDirectory), labelCount: labelCount)
            model.initializeRandomly(seed: 1)
        } else {
            model = try BertForSequenceClassification.load(modelDirectory: options.modelDirectory, labelCount: labelCount, seed: 1).0
        }
        return (model, try benchmarkBatches(options, vocabularySize: model.config.vocabSize))
    }
    let replica = try Replica(model: model, hyperparameters: AdamHyperparameters(), communicator: communicator,
                              shardOptimizer: options.shardOptimizer, bucketFloats: GradientBucketDefaults.floats)
    let largestShard = (options.batchSize + worldSize - 1) / worldSize
    let micro = min(options.microBatchSize ?? largestShard, largestShard)
    replica.reserve(microBatchSize: micro, maxSequenceLength: options.sequenceLength)

    var stepSeconds: [Double] = [], waitSeconds: [Double] = []
    var result = BenchmarkResult()
    for step in 0..<(options.warmupSteps + options.steps) {
        let global = batches[step % batches.count]
        let shard = rankShard(global.count, rank: rank, worldSize: worldSize)
        let microCount = (shard.count + micro - 1) / micro
        try communicator.barrier()
        let start = DispatchTime.now().uptimeNanoseconds
        let outcome = try replica.step(microBatchCount: microCount, globalBatchSize: global.count, stepIndex: step, learningRate: 2e-5,
                                       maxGradNorm: 1, dropout: DropoutContext(seed: 1, step: step), stopRequested: false) { m, batch in
            for i in (shard.lowerBound + m * micro)..<min(shard.lowerBound + (m + 1) * micro, shard.upperBound) {
                batch.append(tokens: global[i].tokens, label: Int32(global[i].label), sampleIndex: i)
            }
        }
        // The step ends when the slowest rank is done.
        let elapsed = try communicator.allReduce([Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9, outcome.phaseSeconds.sync], .max)
        if step >= options.warmupSteps {
            stepSeconds.append(elapsed[0])
            waitSeconds.append(elapsed[1])
        }
    }
    func median(_ values: [Double]) -> Double { let s = values.sorted(); return s.isEmpty ? 0 : s[s.count / 2] }
    result.stepSecondsMedian = median(stepSeconds)
    result.stepSecondsMin = stepSeconds.min() ?? 0
    result.communicationWaitSecondsMedian = median(waitSeconds)
    let timed = (options.warmupSteps..<(options.warmupSteps + options.steps)).map { batches[$0 % batches.count] }
    let realTokens = timed.map { Double($0.reduce(0) { $0 + $1.tokens.count }) }.reduce(0, +) / Double(timed.count)
    let padded = timed.map { b in Double(b.count * (b.map(\.tokens.count).max() ?? 0)) }.reduce(0, +) / Double(timed.count)
    let flops = timed.map { trainingFLOPs(config: model.config, labelCount: labelCount, sequenceLengths: $0.map(\.tokens.count)) }
        .reduce(0, +) / Double(timed.count)
    result.realTokensPerBatch = realTokens
    result.paddedTokensPerBatch = padded
    result.tokensPerSecond = realTokens / result.stepSecondsMedian
    result.examplesPerSecond = Double(options.batchSize) / result.stepSecondsMedian
    result.modelFLOPsPerSecond = flops / result.stepSecondsMedian
    result.ranks = worldSize
    result.threads = threads
    result.blasCore = BLASSetup.coreName
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    result.peakResidentMegabytes = try communicator.allReduce(Double(usage.ru_maxrss) / 1024, .max)
    // The sgemm peak of this configuration: every rank at once, the model's biggest GEMM shape.
    try communicator.barrier()
    let tokensPerRank = max(64, Int(realTokens) / worldSize)
    let peak = sgemmFLOPsPerSecond(m: tokensPerRank, n: model.config.intermediateSize, k: model.config.hiddenSize)
    result.sgemmPeakFLOPsPerSecond = try communicator.allReduce(peak, .sum)
    return result
}

enum GradientBucketDefaults {
    static let floats = GradientSynchronizer.defaultBucketFloats
}

/// Global batches for the benchmark: one synthetic batch of full-length sequences, or
/// consecutive rows of the data file (tokenised, truncated to the sequence length).
func benchmarkBatches(_ options: BenchmarkOptions, vocabularySize: Int) throws -> [[(tokens: [Int32], label: Int)]] {
    guard let dataFile = options.dataFile else {
        let batch = (0..<options.batchSize).map { s -> (tokens: [Int32], label: Int) in
            let tokens = (0..<options.sequenceLength).map { Int32(1000 + ($0 * 7919 + s * 104729) % max(1, vocabularySize - 1000)) }
            return (tokens, s % 4)
        }
        return [batch]
    }
    let tokenizer = try BertTokenizer(modelDirectory: options.modelDirectory)
    let texts = try LabeledTexts.read(dataFile, skipBadRows: true)
    guard texts.count >= options.batchSize else {
        throw TrainingError.invalidInput("\(dataFile.path): \(texts.count) rows, fewer than one batch of \(options.batchSize)")
    }
    let batchCount = min(texts.count / options.batchSize, options.warmupSteps + options.steps)
    return (0..<batchCount).map { b in
        (0..<options.batchSize).map { s in
            let i = b * options.batchSize + s
            var ids: [Int32] = []
            texts.withTextBytes(at: i) { tokenizer.encode(utf8: $0, maxLength: options.sequenceLength, appendingTo: &ids) }
            return (ids, Int(texts.labels[i]))
        }
    }
}

/// The best of a few sgemm runs of (m, k) x (k, n), in FLOP/s.
func sgemmFLOPsPerSecond(m: Int, n: Int, k: Int) -> Double {
    let a = FloatArena(count: m * k), b = FloatArena(count: k * n), c = FloatArena(count: m * n)
    for i in 0..<a.count { a.base[i] = Float(i % 7) * 0.1 }
    for i in 0..<b.count { b.base[i] = Float(i % 5) * 0.1 }
    var best = 0.0
    for _ in 0..<5 {
        let start = DispatchTime.now().uptimeNanoseconds
        matrixMultiply(m: m, n: n, k: k, a: a.base, b: b.base, c: c.base)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        best = max(best, 2 * Double(m) * Double(n) * Double(k) / seconds)
    }
    return best
}
