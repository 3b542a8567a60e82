import ArgumentParser
import Foundation
import Training

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Accuracy, loss, per-class precision/recall/F1 and confusion matrix of a checkpoint on a labelled file.",
        discussion: """
            Under mpirun each rank evaluates a contiguous share; every example is counted exactly once. \
            The labels are the checkpoint's (config.json id2label): a label of the data that is not one of them \
            is an error naming its line. Columns of a header CSV, TSV or JSONL file: as for train.
            """)

    @OptionGroup var checkpoint: CheckpointInputOptions
    @Option(help: "Labelled data: AG News .csv, a header .csv/.tsv (with the column options) or .jsonl.")
    var data: String
    @Option(help: "Examples per forward pass.")
    var batchSize = 64
    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var threads: ThreadOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var faults: FaultOptions

    func validate() throws {
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if dataOptions.labels != nil { throw ValidationError("eval uses the checkpoint's labels (its config.json id2label); --labels is for train") }
    }

    func run() throws {
        let (checkpoint, data, batchSize, json) = (checkpoint.folder, URL(fileURLWithPath: data), batchSize, output.json)
        let (maxSequenceLength, skipBadRows, columns) = (dataOptions.sequence.maxSeqLen, dataOptions.skipBadRows, dataOptions.columns.columns)
        let cacheDirectory = try dataOptions.cacheDirectory(.current)
        let runtime = ProcessEnvironment.current.runtime(threads: threads.threads)
        let status = RankRunner.run(simulatedRanks: nil, collectiveTimeout: faults.collectiveTimeout, runtime: runtime) { communicator, _ in
            let metrics = try runEvaluation(checkpoint: checkpoint, data: data, columns: columns, cacheDirectory: cacheDirectory,
                                            batchSize: batchSize, maxSequenceLength: maxSequenceLength, skipBadRows: skipBadRows,
                                            runtime: runtime, communicator: communicator, log: { printError($0) })
            rootLog(communicator)(json ? metrics.json.compact : metrics.table)
        }
        if status != 0 { throw ExitCode(status) }
    }
}
