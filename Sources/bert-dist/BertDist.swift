import ArgumentParser

@main
struct BertDist: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bert-dist",
        abstract: "Fine-tune BERT for text classification, data-parallel over MPI ranks.",
        subcommands: [
            // Each subcommand lives in its own file: <Name>Command.swift.
            BenchCommCommand.self,
            TokenizeCommand.self,
            DataCommand.self,
        ]
    )
}
