import Data
import Distributed
import Foundation
import Model
import Options

/// What a development tool adds to the bench (bert-dist-dev bench), from outside the step: the
/// step itself is training's.
public struct BenchmarkProbes {
    /// The communicator each rank's replica sums its gradients over instead of the bench's own
    /// (a world of one rank: the step without gradient communication).
    public var gradientCommunicator: (any Communicator)?
    /// Read around every timed step, and around a few more steps of the model's own forward +
    /// backward + AdamW (bert-dist-dev's allocation counters).
    public var counter: (any StepCounter)?
    /// The split before token balancing (equal example counts per rank), for comparisons.
    public var splitByExamples = false
    /// The optimizer's update once every sum has arrived (the schedule before the overlap), for comparisons.
    public var updateOverlapped = false

    public init() {}
}

/// Counts two things of the process so far (e.g. heap allocations and memory mappings), without
/// allocating.
public protocol StepCounter {
    func read() -> SIMD2<Int>
    /// On for the last timed step only (e.g. a backtrace of each of its allocations).
    func trace(_ on: Bool)
}

public struct BenchmarkResult: Sendable {
    public var stepSecondsMedian = 0.0, stepSecondsMin = 0.0
    public var tokensPerSecond = 0.0, examplesPerSecond = 0.0
    public var ranks = 1, threads = 1
    /// Median time per step spent waiting for gradient communication (slowest rank).
    public var communicationWaitSecondsMedian = 0.0
    /// Medians (slowest rank) of the phases of a step (Replica.PhaseSeconds): zeroing gradients
    /// and packing the batch, forward, backward, what is left of the gradient sum after backward,
    /// the gradient norm with the step's metrics collective, the update (clip + AdamW).
    public var phaseSecondsMedian: [String: Double] = [:]
    /// Median over the timed steps of the slowest rank's compute seconds (data, forward,
    /// backward) minus the fastest's: how long the fastest rank waits for the others' gradients
    /// even with no byte in flight. 0 with one rank.
    public var rankComputeSpreadSecondsMedian = 0.0
    /// Matrix-product FLOPs of the model per second, and the sgemm peak of all ranks measured
    /// in this run with the same threads.
    public var modelFLOPsPerSecond = 0.0, sgemmPeakFLOPsPerSecond = 0.0
    /// Largest peak resident memory of a rank.
    public var peakResidentMegabytes = 0.0
    /// Real tokens per global batch, and what padding to the longest sequence would process.
    public var realTokensPerBatch = 0.0, paddedTokensPerBatch = 0.0
    public var blasCore = ""
    /// With a `StepCounter`: the most it counted in any timed step on any rank (per count), and
    /// the same for the model's own part alone (forward, backward, AdamW), measured on a few
    /// extra steps. nil without one.
    public var countsPerStep: SIMD2<Int>?, modelCountsPerStep: SIMD2<Int>?
    public var kernelInstructionSet = ""
    /// "fp32", or "bf16" and the CGemm engine of its products ("amx", "avx512-bf16").
    public var precision = "fp32", bf16Engine = ""
    /// Median over the timed steps of the payload bytes the gradient sum sent (the rank that sent
    /// most), and the bytes this host's network interfaces sent per timed step (every interface
    /// but loopback, from /proc/net/dev: protocol headers and every other sender on the host
    /// included; the busiest rank's host). nil where /proc/net/dev is unreadable.
    public var gradientBytesSentPerStep = 0.0
    public var interfaceBytesSentPerStep: Double?
    /// "tokens" (token-balanced) or "examples": how the global batches were split; "overlapped"
    /// or "at-the-end": when the optimizer's update ran.
    public var split = "tokens", update = "at-the-end"
    /// Medians over the timed steps of how far the busiest rank was above the mean of the ranks
    /// (max / mean - 1), in tokens and in cost (`SequenceCost`), under each split (the one not
    /// used is computed, not run): keys "examples" and "tokens", each [tokens, cost].
    public var imbalance: [String: [Double]] = [:]

    public var json: JSONValue {
        JSONValue(object: [
            "step_s_median": .number(stepSecondsMedian), "step_s_min": .number(stepSecondsMin),
            "tokens_per_s": .number(tokensPerSecond), "examples_per_s": .number(examplesPerSecond),
            "ranks": .number(Double(ranks)), "threads": .number(Double(threads)),
            "comm_wait_s_median": .number(communicationWaitSecondsMedian),
            "rank_compute_spread_s_median": .number(rankComputeSpreadSecondsMedian),
            "model_gflops_per_s": .number(modelFLOPsPerSecond / 1e9), "sgemm_peak_gflops_per_s": .number(sgemmPeakFLOPsPerSecond / 1e9),
            "fraction_of_sgemm_peak": .number(sgemmPeakFLOPsPerSecond > 0 ? modelFLOPsPerSecond / sgemmPeakFLOPsPerSecond : 0),
            "peak_rss_mb": .number(peakResidentMegabytes),
            "real_tokens_per_batch": .number(realTokensPerBatch), "padded_tokens_per_batch": .number(paddedTokensPerBatch),
            "blas_core": .string(blasCore), "kernels": .string(kernelInstructionSet),
            "precision": .string(precision), "bf16_engine": .string(bf16Engine),
            "phases_s_median": JSONValue(object: phaseSecondsMedian.mapValues { .number($0) }),
            "gradient_bytes_sent_per_step": .number(gradientBytesSentPerStep),
            "split": .string(split), "update": .string(update),
            "imbalance_median": JSONValue(object: imbalance.mapValues { JSONValue(object: ["tokens": .number($0[0]), "cost": .number($0[1])]) }),
        ].merging(interfaceBytesSentPerStep.map { ["interface_bytes_sent_per_step": .number($0)] } ?? [:]) { first, _ in first })
    }

    /// The text report (what `bert-dist bench` prints without --json).
    public var lines: [String] {
        [String(format: "step %.3f s (median), %.3f s (min); %.0f tokens/s, %.1f examples/s; %d rank(s) x %d thread(s)",
                stepSecondsMedian, stepSecondsMin, tokensPerSecond, examplesPerSecond, ranks, threads),
         String(format: "model %.1f GFLOP/s = %.0f%% of the sgemm peak measured now (%.1f GFLOP/s, %@ kernels); comm wait %.3f s/step; peak RSS %.0f MB/rank",
                modelFLOPsPerSecond / 1e9, 100 * modelFLOPsPerSecond / max(sgemmPeakFLOPsPerSecond, 1),
                sgemmPeakFLOPsPerSecond / 1e9, blasCore, communicationWaitSecondsMedian, peakResidentMegabytes),
         String(format: "real tokens per batch %.0f (padded to the longest: %.0f); %@ kernels; %@ products%@", realTokensPerBatch,
                paddedTokensPerBatch, kernelInstructionSet, precision, bf16Engine.isEmpty ? "" : " (\(bf16Engine))"),
         "phases (s, median of the slowest rank): "
            + Replica.PhaseSeconds.names.map { String(format: "%@ %.3f", $0, phaseSecondsMedian[$0] ?? 0) }.joined(separator: ", ")
            + String(format: "; slowest rank's compute above the fastest's %.3f s", rankComputeSpreadSecondsMedian),
         String(format: "gradient sum sent %.1f MB per step (busiest rank)", gradientBytesSentPerStep / 1e6)
            + (interfaceBytesSentPerStep.map { String(format: "; network interfaces sent %.1f MB per step (busiest host)", $0 / 1e6) } ?? ""),
         "batches split by \(split), update \(update); busiest rank above the mean (median): "
            + ["tokens", "examples"].compactMap { name in imbalance[name].map { String(format: "%@ split %.1f%% tokens, %.1f%% cost", name, 100 * $0[0], 100 * $0[1]) } }
                .joined(separator: "; ")]
    }
}

/// How far the largest of `values` is above their mean: max / mean - 1 (0 when all are 0).
private func excess(_ values: [Int]) -> Double {
    let total = values.reduce(0, +)
    return total == 0 ? 0 : Double(values.max()!) * Double(values.count) / Double(total) - 1
}

/// `bert-dist bench` on one rank, with the setup of `RunSetup.forBenchmark`: full training steps
/// (forward, backward, gradient sum, AdamW) after warm-up, through the same plan and sampler as
/// training, in file order, with train's optimizer and its defaults.
public func runBenchmark(_ options: BenchmarkOptions, setup: RunSetup, communicator: any Communicator,
                         probes: BenchmarkProbes = BenchmarkProbes()) throws -> BenchmarkResult {
    let rank = communicator.rank, worldSize = communicator.worldSize
    guard let examples = setup.train else { throw TrainingError.invalidInput("the bench needs rows to time") }
    let model = setup.model, compute = model.compute
    let optimizer = try OptimizerOptions.parse([])  // train's optimizer as train takes it by default
    let replica = try Replica(model: model, hyperparameters: optimizer.adamHyperparameters,
                              communicator: probes.gradientCommunicator ?? communicator, parallel: options.parallel)
    replica.updateSchedule = probes.updateOverlapped ? .overlapped : .atTheEnd
    let stepCount = BenchmarkOptions.warmupSteps + options.steps
    let lengths = (0..<examples.count).map { Int32(examples.tokens(at: $0).count) }
    let cost = SequenceCost(hiddenSize: model.config.hiddenSize)
    let plan = try TrainingPlan(globalBatchSize: options.globalBatchSize, microBatchSize: options.parallel.microBatchSize, totalSteps: stepCount,
                                schedule: LearningRateSchedule(shape: .constant, baseLearningRate: optimizer.learningRate, warmupSteps: 0,
                                                               totalSteps: stepCount),
                                seed: 0, lengths: lengths, worldSize: worldSize, shuffle: false,
                                splitting: probes.splitByExamples ? .examples : .tokens(cost))
    replica.reserve(plan, maxSequenceLength: setup.description.maxSequenceLength)
    // Both splits of every timed batch, to report how even each is.
    var balanced = BalancedSplit(worldSize: worldSize, cost: cost)
    var imbalances: [String: [[Double]]] = ["examples": [], "tokens": []]
    var cursor = BatchCursor(plan: plan, position: SamplePosition(epoch: 0, samplesConsumed: 0))

    let counter = probes.counter
    var mostPerStep = SIMD2<Int>.zero
    var stepSeconds: [Double] = [], sentBytes: [Double] = []
    var interfaceBytesAtStart: Int?
    let phaseNames = Replica.PhaseSeconds.names
    var phaseSeconds: [[Double]] = Array(repeating: [], count: phaseNames.count)
    var computeSpreads: [Double] = []
    var timedLengths: [[Int]] = []
    var result = BenchmarkResult()
    for step in 0..<stepCount {
        let (share, order) = cursor.current(rank: rank)
        if step >= BenchmarkOptions.warmupSteps {
            let global = share.globalRange
            timedLengths.append(global.map { Int(lengths[Int(order[$0])]) })
            let exampleSplit = (0..<worldSize).map { shardRange(count: global.count, rank: $0, worldSize: worldSize) }
                .map { shard in shard.map { Int(lengths[Int(order[global.lowerBound + $0])]) } }
            imbalances["examples"]!.append([excess(exampleSplit.map { $0.reduce(0, +) }), excess(exampleSplit.map { $0.map(cost.callAsFunction).reduce(0, +) })])
            balanced.split(global) { Int(lengths[Int(order[$0])]) }
            imbalances["tokens"]!.append([excess(balanced.rankTokens), excess(balanced.rankCosts)])
        }
        try communicator.barrier()
        if step == BenchmarkOptions.warmupSteps { interfaceBytesAtStart = interfaceBytesSent() }
        if step == stepCount - 1 { counter?.trace(true) }
        let countsBefore = counter?.read()
        let start = DispatchTime.now().uptimeNanoseconds
        let outcome = try replica.step(microBatchCount: share.microBatchCount,
                                       lossDenominator: model.task.lossDenominator(globalBatch: share, order: order, examples: examples),
                                       stepIndex: step, learningRate: optimizer.learningRate, maxGradNorm: optimizer.maxGradNorm,
                                       dropout: DropoutContext(seed: 1, step: step), stopRequested: false) { micro, batch in
            batch.append(micro: micro, of: share, order: order, from: examples)
        }
        cursor.advance()
        // The step ends when the slowest rank is done.
        if let counter, let countsBefore, step >= BenchmarkOptions.warmupSteps {
            let countsAfter = counter.read()
            counter.trace(false)
            mostPerStep = pointwiseMax(mostPerStep, countsAfter &- countsBefore)
        }
        let phases = outcome.phaseSeconds
        // Maxima over the ranks; the negated compute seconds give the fastest rank's.
        let elapsed = try communicator.allReduce([Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9,
                                                  Double(replica.synchronizer.lastSentBytes), phases.compute, -phases.compute]
                                                 + phases.values, .max)
        if step >= BenchmarkOptions.warmupSteps {
            stepSeconds.append(elapsed[0])
            sentBytes.append(elapsed[1])
            computeSpreads.append(elapsed[2] + elapsed[3])
            for p in phaseNames.indices { phaseSeconds[p].append(elapsed[4 + p]) }
        }
    }
    // The timed steps' interface bytes (the per-step collectives' few bytes included).
    let interfaceBytes = interfaceBytesAtStart.flatMap { start in interfaceBytesSent().map { Double($0 - start) } }
    let busiestInterface = try communicator.allReduce(interfaceBytes ?? -1, .max)
    if busiestInterface >= 0 { result.interfaceBytesSentPerStep = busiestInterface / Double(options.steps) }
    func median(_ values: [Double]) -> Double { let s = values.sorted(); return s.isEmpty ? 0 : s[s.count / 2] }
    result.gradientBytesSentPerStep = median(sentBytes)
    result.split = probes.splitByExamples ? "examples" : "tokens"
    result.update = probes.updateOverlapped ? "overlapped" : "at-the-end"
    result.imbalance = imbalances.mapValues { steps in [median(steps.map { $0[0] }), median(steps.map { $0[1] })] }
    func mean(_ values: [Double]) -> Double { values.reduce(0, +) / Double(max(values.count, 1)) }
    result.stepSecondsMedian = median(stepSeconds)
    result.stepSecondsMin = stepSeconds.min() ?? 0
    result.rankComputeSpreadSecondsMedian = median(computeSpreads)
    for p in phaseNames.indices { result.phaseSecondsMedian[phaseNames[p]] = median(phaseSeconds[p]) }
    // The wait for the gradient sum is the sync phase (the slowest rank's).
    result.communicationWaitSecondsMedian = result.phaseSecondsMedian["sync"] ?? 0
    let realTokens = mean(timedLengths.map { Double($0.reduce(0, +)) })
    result.realTokensPerBatch = realTokens
    result.paddedTokensPerBatch = mean(timedLengths.map { Double($0.count * ($0.max() ?? 0)) })
    let flops = mean(timedLengths.map { trainingFLOPs(config: model.config, labelCount: model.labelCount, sequenceLengths: $0) })
    result.tokensPerSecond = realTokens / result.stepSecondsMedian
    result.examplesPerSecond = Double(options.globalBatchSize) / result.stepSecondsMedian
    result.modelFLOPsPerSecond = flops / result.stepSecondsMedian
    result.ranks = worldSize
    result.threads = compute.threads
    result.blasCore = BLASSetup.coreName
    result.kernelInstructionSet = compute.instructionSet.rawValue
    result.precision = compute.precision.rawValue
    result.bf16Engine = compute.precision == .bf16 ? compute.bf16Engine.name : ""
    if let counter {
        // The model's own part alone, on this rank's first micro-batch of the first batch (already seen).
        var firstBatch = BatchCursor(plan: plan, position: SamplePosition(epoch: 0, samplesConsumed: 0))
        let (first, firstOrder) = firstBatch.current(rank: rank)
        var batch = PackedBatch()
        if first.microBatchCount > 0 { batch.append(micro: 0, of: first, order: firstOrder, from: examples) }
        var modelMost = SIMD2<Int>.zero
        for step in 0..<3 where batch.sequenceCount > 0 {
            let before = counter.read()
            replica.model.gradients.zero()
            try replica.model.forward(batch, dropout: DropoutContext(seed: 1, step: step))
            try replica.model.backward(batch, dropout: DropoutContext(seed: 1, step: step), lossScale: 1 / Float(batch.sequenceCount))
            replica.optimizer.step(parameters: replica.model.parameters, gradients: replica.model.gradients, learningRate: 0, gradientScale: 1)
            replica.model.parametersChanged()
            replica.model.refreshBF16WeightsIfNeeded()
            modelMost = pointwiseMax(modelMost, counter.read() &- before)
        }
        let worst = try communicator.allReduce([mostPerStep[0], mostPerStep[1], modelMost[0], modelMost[1]].map(Double.init), .max).map { Int($0) }
        result.countsPerStep = SIMD2(worst[0], worst[1])
        result.modelCountsPerStep = SIMD2(worst[2], worst[3])
    }
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    result.peakResidentMegabytes = try communicator.allReduce(Double(usage.ru_maxrss) / 1024, .max)
    // The sgemm peak of this configuration: every rank at once, the products of one training
    // step of the model's linear layers on this rank's share of the tokens, each as fast as
    // OpenBLAS can do it with this rank's threads (split over the team as the model does, or on
    // OpenBLAS's own threads, whichever is faster).
    try communicator.barrier()
    let tokensPerRank = max(64, Int(realTokens) / worldSize)
    let peak = sgemmPeakFLOPsPerSecond(config: model.config, rows: tokensPerRank, compute: compute)
    result.sgemmPeakFLOPsPerSecond = try communicator.allReduce(peak, .sum)
    return result
}


/// The bench's examples: one synthetic batch of full-length sequences (every step takes it), or
/// as many consecutive rows of the data file (read with the training options' columns; text
/// pairs as pairs; their labels not read) as the steps take, up to the whole file (tokenised,
/// truncated to the sequence length; the steps wrap around). Labels cycle through
/// `syntheticLabelCount` classes (at least 2).
func benchmarkExamples(_ options: BenchmarkOptions, sequenceLength length: Int, config: BertConfig,
                       syntheticLabelCount: Int) throws -> TokenizedDataset {
    let batchSize = options.globalBatchSize, vocabularySize = config.vocabSize
    // Labels cycling through the classes of the model's head (the rows' own labels are not read).
    let labels = try LabelSet(names: LabelSet.defaultNames(count: max(2, syntheticLabelCount)), origin: "the bench's rows")
    guard let dataFile = options.dataFile else {
        // Ordinary word pieces: past the first 1000 ids (special and unused tokens) of a real
        // vocabulary; past the 5 special tokens of a tiny one.
        let first = vocabularySize > 2000 ? 1000 : min(5, vocabularySize - 1)
        let sequences = (0..<batchSize).map { s in
            (0..<length).map { Int32(first + ($0 * 7919 + s * 104729) % max(1, vocabularySize - first)) }
        }
        return TokenizedDataset.fromTokens(sequences, labels: (0..<batchSize).map { Int32($0 % labels.count) }, labelSet: labels,
                                           maxLength: length)
    }
    let tokenizer = try loadTextTokenizer(modelDirectory: options.model.directory, modelType: config.family.rawValue)
    let format = try DataFormat(of: dataFile, columns: options.columns.columns)
    try tokenizer.checkMaxLength(length, pairs: format.hasPairs, option: "--seq-len")
    // The texts alone: the bench times single-label steps whatever the file's labels are. A
    // malformed row is an error (FILE:LINE), as in training: the bench has no --skip-bad-rows.
    let texts = try LabeledTexts.read(dataFile, format: format, skipBadRows: false, readsLabels: false)
    guard texts.count >= batchSize else {
        throw TrainingError.invalidInput("\(dataFile.path): \(texts.count) rows, fewer than one batch of \(batchSize)")
    }
    let count = min(texts.count / batchSize, BenchmarkOptions.warmupSteps + options.steps) * batchSize
    var sequences: [[Int32]] = [], starts: [Int] = []
    for i in 0..<count {
        var ids: [Int32] = []
        if texts.hasPairs {
            starts.append(texts.withPairBytes(at: i) { tokenizer.encodePair(utf8: $0, utf8: $1, maxLength: length, appendingTo: &ids) })
        } else {
            texts.withTextBytes(at: i) { tokenizer.encode(utf8: $0, maxLength: length, appendingTo: &ids) }
        }
        sequences.append(ids)
    }
    return TokenizedDataset.fromTokens(sequences, secondSegmentStarts: texts.hasPairs ? starts : nil,
                                       labels: (0..<count).map { Int32($0 % labels.count) }, labelSet: labels, maxLength: length)
}

/// FLOP/s of the GEMMs of one training step of the model's linear layers for `rows` tokens:
/// forward (x Wᵀ), input gradient (dy W) and weight gradient (dyᵀ x) of the Q/K/V, attention
/// output and both feed-forward weights, each timed as the best of a few runs, with this rank's
/// threads: split over the team of `compute` (as the model runs them) or OpenBLAS's own
/// threads, whichever is faster for that product.
public func sgemmPeakFLOPsPerSecond(config: BertConfig, rows: Int, compute: Compute) -> Double {
    let threads = compute.threads
    let C = config.hiddenSize, I = config.intermediateSize
    let shapes = [(C, 3 * C), (C, C), (C, I), (I, C)]
    var flops = 0.0
    var best = [Double](repeating: .infinity, count: shapes.count * LinearProduct.allCases.count)
    // Team first: OpenBLAS's own threads keep spinning for a while after their last product.
    for openBLASThreads in threads > 1 ? [1, threads] : [1] {
        BLASSetup.setOpenBLASThreads(openBLASThreads)
        for (s, (inFeatures, outFeatures)) in shapes.enumerated() {
            let input = FloatArena(count: rows * inFeatures), weight = FloatArena(count: outFeatures * inFeatures)
            let output = FloatArena(count: rows * outFeatures)
            for i in 0..<input.count { input.base[i] = Float(i % 7) * 0.1 }
            for i in 0..<weight.count { weight.base[i] = Float(i % 5) * 0.01 }
            for i in 0..<output.count { output.base[i] = Float(i % 3) * 0.1 }
            for (p, product) in LinearProduct.allCases.enumerated() {
                if openBLASThreads == 1 { flops += 2 * Double(rows) * Double(inFeatures) * Double(outFeatures) }
                for _ in 0..<4 {
                    let start = DispatchTime.now().uptimeNanoseconds
                    linearLayerProduct(product, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures,
                                       input: input.base, weight: weight.base, output: output.base,
                                       splitOverTeam: openBLASThreads == 1, compute: compute)
                    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                    best[s * LinearProduct.allCases.count + p] = min(best[s * LinearProduct.allCases.count + p], seconds)
                }
            }
        }
    }
    BLASSetup.keepOpenBLASSingleThreaded()
    return flops / best.reduce(0, +)
}

/// Bytes sent so far by this network namespace's interfaces other than loopback (the transmit
/// bytes column of /proc/net/dev), or nil where it cannot be read.
func interfaceBytesSent() -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/net/dev", encoding: .utf8) else { return nil }
    var total = 0
    for line in text.split(separator: "\n") {
        let parts = line.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces) != "lo" else { continue }
        let fields = parts[1].split(separator: " ")
        // receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes ...
        guard fields.count >= 9, let sent = Int(fields[8]) else { continue }
        total += sent
    }
    return total
}
