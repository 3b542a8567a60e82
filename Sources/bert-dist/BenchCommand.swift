import ArgumentParser
import Foundation
import Model
import Training

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time training steps (forward, backward, gradient sync, AdamW) on synthetic or real batches.",
        discussion: "Under mpirun --batch-size is the global batch. tokens/s counts real tokens, not padding.")

    @OptionGroup var model: ModelOptions
    @Option(help: "Global batch size (split over ranks under mpirun).")
    var batchSize = 8
    @Option(help: "Synthetic sequence length, or truncation of real rows.")
    var seqLen = 128
    @Option(help: "Time consecutive real rows of this file instead of synthetic sequences (any data file of train).")
    var data: String?
    @OptionGroup var columns: ColumnOptions
    @Option(help: "Timed steps (after 3 warm-up steps).")
    var steps = 20
    @OptionGroup var parallel: ParallelOptions
    @OptionGroup var precision: PrecisionOptions
    @Flag(help: "Initialise from config.json alone (e.g. to time bert-base without its weights).")
    var randomWeights = false
    @OptionGroup var output: OutputOptions
    @OptionGroup var faults: FaultOptions
    @Flag(help: .hidden)
    var noGradientSync = false   // benchmarks/communication.sh: the step without gradient communication
    @Flag(help: .hidden)
    var sgemmOnly = false   // benchmarks/blas_cores.sh: only the sgemm peak of batch-size x seq-len tokens per rank

    func validate() throws {
        if batchSize < 1 || seqLen < 2 || steps < 1 { throw ValidationError("--batch-size, --steps must be at least 1 and --seq-len at least 2") }
    }

    /// The steps follow the training options a `bert-dist train` with these flags would use.
    var options: BenchmarkOptions {
        var training = TrainingOptions(modelDirectory: model.directory, trainFile: data.map { URL(fileURLWithPath: $0) })
        training.globalBatchSize = batchSize
        training.maxSequenceLength = seqLen
        training.columns = columns.columns
        parallel.apply(to: &training)
        var options = BenchmarkOptions(training: training)
        options.steps = steps
        options.randomWeights = randomWeights
        options.skipGradientSync = noGradientSync
        return options
    }

    func run() throws {
        let benchmark = options
        try precision.checkCPU()
        let runtime = ProcessEnvironment.current.runtime(threads: parallel.threads.threads, precision: precision.precision)
        let (json, sgemmOnly, tokens) = (output.json, sgemmOnly, batchSize * seqLen)
        let status = RankRunner.run(simulatedRanks: nil, collectiveTimeout: faults.collectiveTimeout, runtime: runtime,
                                    progressIntervalSeconds: parallel.progressIntervalSeconds) { communicator, _ in
            if sgemmOnly {
                let config = try BertConfig.load(modelDirectory: benchmark.training.modelDirectory)
                try communicator.barrier()
                let peak = try communicator.allReduce(sgemmPeakFLOPsPerSecond(config: config, rows: tokens, compute: runtime.makeCompute()), .sum)
                rootLog(communicator)(String(format: "{\"blas_core\": \"%@\", \"sgemm_peak_gflops_per_s\": %.1f}", BLASSetup.coreName, peak / 1e9))
                return
            }
            let result = try runBenchmark(benchmark, runtime: runtime, communicator: communicator)
            let log = rootLog(communicator)
            if json {
                log(result.json.compact)
            } else {
                log(String(format: "step %.3f s (median), %.3f s (min); %.0f tokens/s, %.1f examples/s; %d rank(s) x %d thread(s)",
                           result.stepSecondsMedian, result.stepSecondsMin, result.tokensPerSecond, result.examplesPerSecond,
                           result.ranks, result.threads))
                log(String(format: "model %.1f GFLOP/s = %.0f%% of the sgemm peak measured now (%.1f GFLOP/s, %@ kernels); comm wait %.3f s/step; peak RSS %.0f MB/rank",
                           result.modelFLOPsPerSecond / 1e9, 100 * result.modelFLOPsPerSecond / max(result.sgemmPeakFLOPsPerSecond, 1),
                           result.sgemmPeakFLOPsPerSecond / 1e9, result.blasCore, result.communicationWaitSecondsMedian, result.peakResidentMegabytes))
                log(String(format: "real tokens per batch %.0f (padded to the longest: %.0f); %@ kernels; %@ products%@", result.realTokensPerBatch,
                           result.paddedTokensPerBatch, result.kernelInstructionSet, result.precision,
                           result.bf16Engine.isEmpty ? "" : " (\(result.bf16Engine))"))
                let phases = ["data", "forward", "backward", "sync", "optimizer"].map { String(format: "%@ %.3f", $0, result.phaseSecondsMedian[$0] ?? 0) }
                log("phases (s, median of the slowest rank): " + phases.joined(separator: ", "))
                log(String(format: "gradient sum sent %.1f MB per step (busiest rank)", result.gradientBytesSentPerStep / 1e6)
                    + (result.interfaceBytesSentPerStep.map { String(format: "; network interfaces sent %.1f MB per step (busiest host)", $0 / 1e6) } ?? ""))
                if let heap = result.heapAllocationsPerStep, let mappings = result.memoryMappingsPerStep,
                   let modelHeap = result.modelHeapAllocationsPerStep, let modelMappings = result.modelMemoryMappingsPerStep {
                    log("allocations per timed step (most of any step and rank): \(heap) heap, \(mappings) mmap; model forward + backward + AdamW alone: \(modelHeap) heap, \(modelMappings) mmap")
                }
            }
        }
        if status != 0 { throw ExitCode(status) }
    }
}
