import ArgumentParser
import Foundation
import Startup
import Storage
import Training

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Turn checkpoints into one evaluation model (consolidate; average weights of several).",
        discussion: """
            One checkpoint: a standalone model folder (weights, config, tokenizer; no optimizer state), after verifying \
            the checkpoint is complete. Several with --average: the element-wise mean of their weights. The output \
            loads in bert-dist eval/predict and in BertForSequenceClassification.from_pretrained.
            """)

    @Option(help: "Folder to write the model into.")
    var output: String
    @Argument(help: "Checkpoint folders.")
    var checkpoints: [String]
    @Flag(help: "Average the weights of several checkpoints.")
    var average = false

    func validate() throws {
        if checkpoints.isEmpty { throw ValidationError("give at least one checkpoint folder") }
        if checkpoints.count > 1 && !average { throw ValidationError("several checkpoints: add --average to average them") }
    }

    func run() throws {
        try RankRunner.onRankZeroOnly {
            for note in try merge(checkpoints: checkpoints.map { URL(fileURLWithPath: $0) }, output: URL(fileURLWithPath: output),
                                  average: average) {
                print(oneLine(note))
            }
        }
    }
}
