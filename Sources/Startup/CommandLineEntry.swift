import ArgumentParser
import Foundation
import Model
import Options
import Storage
import Training

/// The `main` of both executables (bert-dist, bert-dist-dev): OpenBLAS first, then the command
/// line of `Root`; a failure is one `error: ...` line on stderr and a non-zero exit.
public enum CommandLineEntry {
    public static func run<Root: ParsableCommand>(_ root: Root.Type) -> Never {
        let environment = ProcessEnvironment.current
        if environment.variables["BERT_DIST_LAUNCH_QUERY"] == "1" {
            answerLaunchQuery(root)
        }
        // Before anything loads BLAS work or MPI: OpenBLAS single-threaded, with the kernels the
        // CPU deserves (re-executes this process with OPENBLAS_CORETYPE set when needed).
        if let note = startOpenBLAS(environment) { printError("warning: \(note)") }
        do {
            var command = try Root.parseAsRoot(try commandLine(root))
            try command.run()
            exit(0)
        } catch {
            fail(root, error)
        }
    }

    /// The arguments of this process, with the options of a `--config FILE` placed before the
    /// command line's own (ResolvedOptions): parsing, the launch query and training_args.json
    /// all see them as if typed.
    private static func commandLine<Root: ParsableCommand>(_ root: Root.Type) throws -> [String] {
        try ResolvedOptions.expandingConfigFile(Array(CommandLine.arguments.dropFirst()), root: root)
    }

    /// launch/train runs the binary once with its arguments and BERT_DIST_LAUNCH_QUERY=1 before it
    /// places the ranks: the command line is parsed and checked (a mistake fails here, before
    /// any rank starts), and the facts of `LaunchFacts` are printed, one `key=value` a line after
    /// the line `launchFactsHeader` (without it, e.g. for --help, launch/train shows the output
    /// and ends).
    private static func answerLaunchQuery<Root: ParsableCommand>(_ root: Root.Type) -> Never {
        do {
            let command = try Root.parseAsRoot(try commandLine(root))
            print(launchFactsHeader)
            for (key, value) in (command as? LaunchFacts)?.launchFacts ?? [] { print("\(key)=\(value)") }
            exit(0)
        } catch {
            fail(root, error)
        }
    }

    private static func fail<Root: ParsableCommand>(_ root: Root.Type, _ error: any Error) -> Never {
        // --help and --version are "errors" that succeed; ExitCode means already reported.
        let code = Root.exitCode(for: error)
        if code == .success {
            print(Root.fullMessage(for: error))
        } else if !(error is ExitCode) {
            // docs/commands.md: one line `error: ...` on stderr (ArgumentParser would print "Error:" and the
            // usage); a usage mistake points at --help, a failure of the work does not. A value or
            // path with a line break is shown escaped, not cut at it; a 70 KB value is cut.
            // A value the parser could not read is named with the --config file it came from.
            let message = ResolvedOptions.namingConfigFile(Root.message(for: error), arguments: Array(CommandLine.arguments.dropFirst()), root: Root.self)
            printError("error: \(errorLine(message))" + (code == .validationFailure ? " (see --help)" : ""))
        }
        exit(code.rawValue)
    }
}

/// The first line of an answer to launch/train's query.
let launchFactsHeader = "bert-dist launch facts"

/// What launch/train needs to know of a command line, as bert-dist parsed it (so that the
/// launcher repeats no option and no default of bert-dist):
///   threads              --threads when given, "" when not (launch/train then passes its own);
///                        absent for a command without --threads
///   collective_timeout   the peer watchdog's timeout in seconds (launch/train sets Open MPI's
///                        daemon keepalive just beyond it)
///   output               the folder checkpoints go to (named after a failed run)
///   resume               yes when --resume was given (a restart adds it otherwise)
///   shard_optimizer      yes with --shard-optimizer (no emergency checkpoint to give time to)
public protocol LaunchFacts {
    var launchFacts: [(key: String, value: String)] { get }
}

extension ProcessOptions {
    /// This process's Runtime (threads per rank, precision, ...), after checking --bf16 against the CPU.
    public func runtime(simulatedRanks: Int? = nil) throws -> Runtime {
        try precision.checkCPU()
        return ProcessEnvironment.current.runtime(threads: threads.threads, simulatedRanks: simulatedRanks, precision: precision.precision)
    }

    /// What launch/train asks of every command that runs ranks.
    public var launchFacts: [(key: String, value: String)] {
        [("threads", threads.threads.map(String.init) ?? ""), ("collective_timeout", "\(faults.collectiveTimeout)")]
    }
}

extension PrecisionOptions {
    /// Before any work (before MPI, before reading anything), on every rank: --bf16 on a CPU
    /// without bf16 instructions is the one-line error, so a rank on a weaker host stops the job
    /// with a message instead of SIGILL.
    public func checkCPU(cpuHasBF16: Bool = BF16Engine.cpuHasBF16) throws {
        guard bf16, let message = BF16Engine.unsupportedError(cpuHasBF16: cpuHasBF16) else { return }
        printError(message)
        throw ExitCode(1)
    }
}
