import ArgumentParser
import Data
import Foundation
import Model
import Options
import Startup
import Training

/// `bert-dist-dev bench`: `bert-dist bench` with what benchmarks/ measure besides the step, from
/// outside it: the step without gradient communication (benchmarks/communication.sh), the
/// allocations of every step with benchmarks/malloc_counter.c preloaded (check_allocations.sh),
/// the sgemm peak alone (blas_cores.sh).
struct DevBenchCommand: ParsableCommand, LaunchFacts {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "bert-dist bench, plus --no-gradient-sync, --example-split, --update-overlapped, --sgemm-only and allocation counts (with benchmarks/malloc_counter.c preloaded).")

    @OptionGroup var options: BenchmarkOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var process: ProcessOptions
    @Flag(help: "Each rank sums its gradients over a world of its own: the step without gradient communication (the replicas drift apart).")
    var noGradientSync = false
    @Flag(help: "Only the sgemm peak of --batch-size x --seq-len tokens per rank, as JSON.")
    var sgemmOnly = false
    @Flag(help: "Split each global batch into equal example counts per rank (the split before token balancing), for comparisons.")
    var exampleSplit = false
    @Flag(help: "Apply the optimizer's update to each part as its gradient sum arrives, while later parts still travel (training updates once every sum has arrived), for comparisons.")
    var updateOverlapped = false

    var launchFacts: [(key: String, value: String)] { process.launchFacts }

    func run() throws {
        let runtime = try process.runtime()
        let (command, json) = (self, output.json)
        let status = RankRunner.run(simulatedRanks: nil, collectiveTimeout: process.faults.collectiveTimeout, runtime: runtime,
                                    progressIntervalSeconds: options.parallel.progressIntervalSeconds) { communicator, _ in
            let log = rootLog(communicator)
            let options = command.options
            if command.sgemmOnly {
                let config = try BertConfig.load(modelDirectory: options.model.directory)
                try communicator.barrier()
                let length = try RunDescription(config: config, requestedSequenceLength: options.sequenceLength, option: "--seq-len",
                                                modelDirectory: options.model.directory).maxSequenceLength
                let peak = try communicator.allReduce(sgemmPeakFLOPsPerSecond(config: config, rows: options.globalBatchSize * length,
                                                                              compute: runtime.makeCompute()), .sum)
                log(String(format: "{\"blas_core\": \"%@\", \"sgemm_peak_gflops_per_s\": %.1f}", BLASSetup.coreName, peak / 1e9))
                return
            }
            let setup = try RunSetup.forBenchmark(options, compute: runtime.makeCompute(), communicator: communicator)
            var probes = BenchmarkProbes()
            probes.counter = AllocationCounters()
            if command.noGradientSync { probes.gradientCommunicator = SingleRankCommunicator() }
            probes.splitByExamples = command.exampleSplit
            probes.updateOverlapped = command.updateOverlapped
            let result = try runBenchmark(options, setup: setup, communicator: communicator, probes: probes)
            guard let heap = result.countsPerStep, let model = result.modelCountsPerStep else {
                if json { log(result.json.compact) } else { result.lines.forEach(log) }
                return
            }
            if json {
                guard var fields = result.json.fields else { return }
                fields["heap_allocations_per_step"] = .number(Double(heap[0]))
                fields["memory_mappings_per_step"] = .number(Double(heap[1]))
                fields["model_heap_allocations_per_step"] = .number(Double(model[0]))
                fields["model_memory_mappings_per_step"] = .number(Double(model[1]))
                log(JSONValue(object: fields).compact)
            } else {
                result.lines.forEach(log)
                log("allocations per timed step (most of any step and rank): \(heap[0]) heap, \(heap[1]) mmap; model forward + backward + AdamW alone: \(model[0]) heap, \(model[1]) mmap")
            }
        }
        if status != 0 { throw ExitCode(status) }
    }
}
