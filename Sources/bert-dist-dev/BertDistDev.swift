import ArgumentParser
import Startup

@main
enum Entry {
    static func main() { CommandLineEntry.run(BertDistDev.self) }
}

/// The development tools: what benchmarks/ and the fault tests run, kept out of the shipped
/// `bert-dist` (built by `swift build` next to it; benchmarks/README.md says which script runs
/// which tool).
struct BertDistDev: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bert-dist-dev",
        abstract: "bert-dist's development tools: communication checks and timings, the fault-test soak, probed benchmarks.",
        subcommands: [
            BenchCommCommand.self,
            SoakCommand.self,
            DevBenchCommand.self,
            TokenizerBenchCommand.self,
        ]
    )
}
