import ArgumentParser
import Foundation
import Training

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Accuracy, loss, per-class precision/recall/F1 and confusion matrix of a checkpoint on a labelled file.",
        discussion: "Under mpirun each rank evaluates a contiguous share; every example is counted exactly once.")

    @Option(help: "A checkpoint folder (verified first), a merged model folder, or a training output folder (its latest checkpoint).")
    var checkpoint: String
    @Option(help: "Labelled data: AG News .csv or .jsonl.")
    var data: String
    @Option(help: "Examples per forward pass.")
    var batchSize = 64
    @Option(help: "Longest tokenised text; longer ones are truncated.")
    var maxSeqLen = 128
    @Flag(help: "Skip malformed rows instead of stopping.")
    var skipBadRows = false
    @Option(help: "Threads per rank.")
    var threads: Int?
    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    func validate() throws {
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if maxSeqLen < 2 { throw ValidationError("--max-seq-len must be at least 2") }
    }

    func run() throws {
        let (checkpoint, data, batchSize, maxSeqLen, skipBadRows, json) =
            (URL(fileURLWithPath: checkpoint), URL(fileURLWithPath: data), batchSize, maxSeqLen, skipBadRows, json)
        let status = RankRunner.run(simulatedRanks: nil, threads: threads) { communicator, compute in
            let log = rootLog(communicator)
            let metrics = try runEvaluation(checkpoint: checkpoint, data: data, batchSize: batchSize, maxSequenceLength: maxSeqLen,
                                            skipBadRows: skipBadRows, communicator: communicator, compute: compute,
                                            log: { printError($0) })
            log(json ? metrics.json.compact : metrics.table)
        }
        if status != 0 { throw ExitCode(status) }
    }
}
