import ArgumentParser
import Foundation
import Model
import Training

@main
enum Entry {
    static func main() {
        // Before anything loads BLAS work or MPI: OpenBLAS single-threaded, with the kernels the
        // CPU deserves (re-executes this process with OPENBLAS_CORETYPE set when needed).
        if let note = startOpenBLAS(.current) { printError("warning: \(note)") }
        do {
            var command = try BertDist.parseAsRoot()
            try command.run()
        } catch {
            // --help and --version are "errors" that succeed; ExitCode means already reported.
            let code = BertDist.exitCode(for: error)
            if code == .success {
                print(BertDist.fullMessage(for: error))
            } else if !(error is ExitCode) {
                // docs/commands.md: one line `error: ...` on stderr (ArgumentParser would print "Error:" and the
                // usage); a usage mistake points at --help, a failure of the work does not.
                let message = BertDist.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
                printError("error: \(message)" + (code == .validationFailure ? " (see --help)" : ""))
            }
            exit(code.rawValue)
        }
    }
}

struct BertDist: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bert-dist",
        abstract: "Fine-tune BERT for text classification, data-parallel over MPI ranks.",
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
            BenchCommCommand.self,
            TokenizeCommand.self,
            DataCommand.self,
        ]
    )
}
