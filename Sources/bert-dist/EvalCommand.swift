import ArgumentParser
import Foundation
import Options
import Startup
import Training

struct EvalCommand: ParsableCommand, LaunchFacts {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Accuracy, loss, per-class precision/recall/F1 and confusion matrix of a checkpoint on a labelled file.",
        discussion: """
            Under mpirun each rank evaluates a contiguous share; every example is counted exactly once. \
            The labels are the checkpoint's (config.json id2label): a label of the data that is not one of them \
            is an error naming its line. Columns of a header CSV, TSV or JSONL file: as for train.
            """)

    @OptionGroup var options: EvaluationOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var process: ProcessOptions

    var launchFacts: [(key: String, value: String)] { process.launchFacts }

    func run() throws {
        let runtime = try process.runtime()
        let cacheDirectory = try ProcessEnvironment.current.tokenCacheDirectory(requested: options.data.cacheDir)
        let (options, json) = (self.options, output.json)
        let status = RankRunner.run(simulatedRanks: nil, collectiveTimeout: process.faults.collectiveTimeout, runtime: runtime) { communicator, _ in
            let setup = try RunSetup.forEvaluation(options, cacheDirectory: cacheDirectory, compute: runtime.makeCompute(),
                                                   communicator: communicator, log: { printError($0) })
            let metrics = try runEvaluation(setup, batchSize: options.batchSize, communicator: communicator)
            let log = rootLog(communicator)
            if json { log(metrics.json.compact) } else { metrics.table.split(separator: "\n", omittingEmptySubsequences: false).forEach { log(String($0)) } }
        }
        if status != 0 { throw ExitCode(status) }
    }
}
