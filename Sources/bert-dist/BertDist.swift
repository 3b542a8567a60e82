import ArgumentParser
import Startup

@main
enum Entry {
    static func main() { CommandLineEntry.run(BertDist.self) }
}

/// The shipped executable: the user's commands only (development tools: bert-dist-dev).
struct BertDist: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bert-dist",
        abstract: "Fine-tune BERT-family encoders (BERT, DistilBERT, ELECTRA, RoBERTa, XLM-R, CamemBERT) for text classification, data-parallel over MPI ranks.",
        discussion: """
            Run `mpirun -n N bert-dist train ...` (or launch/train -n N ...) for N ranks, or plain \
            `bert-dist train ...` for one; `bert-dist train --debug --simulate-ranks N` runs N ranks in one process.
            """,
        subcommands: [
            // Each subcommand lives in its own file: <Name>Command.swift.
            TrainCommand.self,
            EvalCommand.self,
            PredictCommand.self,
            MergeCommand.self,
            BenchCommand.self,
            TokenizeCommand.self,
            DataCommand.self,
        ]
    )
}
