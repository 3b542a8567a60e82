import ArgumentParser
import Foundation
import Options
import Startup
import Training

struct BenchCommand: ParsableCommand, LaunchFacts {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time training steps (forward, backward, gradient sync, AdamW) on synthetic or real batches.",
        discussion: "Under mpirun --batch-size is the global batch. tokens/s counts real tokens, not padding.")

    @OptionGroup var options: BenchmarkOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var process: ProcessOptions

    var launchFacts: [(key: String, value: String)] { process.launchFacts }

    func run() throws {
        let runtime = try process.runtime()
        let (options, json) = (self.options, output.json)
        let status = RankRunner.run(simulatedRanks: nil, collectiveTimeout: process.faults.collectiveTimeout, runtime: runtime,
                                    progressIntervalSeconds: options.parallel.progressIntervalSeconds) { communicator, _ in
            let setup = try RunSetup.forBenchmark(options, compute: runtime.makeCompute(), communicator: communicator)
            let result = try runBenchmark(options, setup: setup, communicator: communicator)
            let log = rootLog(communicator)
            if json { log(result.json.compact) } else { result.lines.forEach(log) }
            if !json, let note = runtime.openBLASNote { log("note: \(note)") }
        }
        if status != 0 { throw ExitCode(status) }
    }
}
