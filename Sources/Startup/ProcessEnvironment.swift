import Data
import Foundation
import Model
import Training

/// Everything bert-dist takes from the process environment, read in this one place; the
/// libraries below the executables get the decisions as values (`Runtime`).
///
/// - Launchers: Open MPI's mpirun (OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_LOCAL_SIZE), PMIx/PMI
///   (PMIX_RANK, PMI_RANK, under srun), Slurm (SLURM_NTASKS_PER_NODE).
/// - BERT_DIST_LAUNCH_QUERY=1: launch/train asks what it needs of a command line (`LaunchFacts`).
/// - BERT_DIST_PROGRESS=bar|lines: launch/train tells the ranks whether its own stdout is a
///   terminal (mpirun gives every rank a pseudo-terminal, so they cannot tell by themselves).
/// - BERT_DIST_RESTART: launch/train's record of the failed attempt before this one
///   (--max-restarts; `RestartRecord`).
/// - BERT_DIST_KERNELS=baseline|avx2|avx512: caps the instruction set of the vector kernels
///   (benchmarks, profiling under valgrind).
/// - OPENBLAS_CORETYPE (the user's choice of OpenBLAS kernels wins) and BERT_DIST_BLAS_REEXEC /
///   BERT_DIST_BLAS_DETECTED (set for our own re-execution): see startOpenBLAS.
public struct ProcessEnvironment: Sendable {
    public let variables: [String: String]

    public static let current = ProcessEnvironment(variables: ProcessInfo.processInfo.environment)

    /// The rank a launcher gave this process and the ranks on its node, or nil when standalone.
    public var launcher: Launcher {
        guard let rank = (variables["OMPI_COMM_WORLD_RANK"] ?? variables["PMIX_RANK"] ?? variables["PMI_RANK"]).flatMap({ Int($0) }) else {
            return .standalone
        }
        let onNode = Int(variables["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? variables["SLURM_NTASKS_PER_NODE"] ?? "") ?? 1
        return .mpi(rank: rank, ranksOnNode: max(1, onNode))
    }

    /// Started by a launcher as a rank other than 0 (known before, and without, starting MPI).
    public var isNonZeroRank: Bool { launcher.rank != 0 }

    /// A progress bar needs a terminal; under a launcher only launch/train can say.
    var progress: ProgressMode {
        switch variables["BERT_DIST_PROGRESS"] {
        case "bar": return .bar
        case "lines": return .lines
        default:
            if launcher != .standalone { return .lines }
            return isatty(STDOUT_FILENO) == 1 && variables["TERM"] != "dumb" ? .bar : .lines
        }
    }

    /// Threads per rank (each rank's kernel team; OpenBLAS itself stays single-threaded), decided
    /// here and nowhere else: `requested` (--threads, which launch/train passes from cluster.conf);
    /// with `simulatedRanks` the CPUs divided among them; else the CPUs this process may run on
    /// when bound to fewer than the node has (mpirun --bind-to: that is our share already); else
    /// the node's CPUs divided by the launcher's ranks on the node.
    func threadsPerRank(requested: Int?, simulatedRanks: Int? = nil) -> Int {
        let online = ProcessInfo.processInfo.activeProcessorCount
        if let requested { return max(1, requested) }
        if let simulatedRanks { return max(1, online / max(1, simulatedRanks)) }
        let allowed = allowedCPUCount()
        if allowed > 0 && allowed < online { return allowed }
        guard case .mpi(_, let ranksOnNode) = launcher else { return online }
        return max(1, online / ranksOnNode)
    }

    /// The instruction set of the vector kernels: the best this CPU runs, unless
    /// BERT_DIST_KERNELS names a narrower one.
    var instructionSet: InstructionSet {
        let best = InstructionSet.best
        guard let cap = variables["BERT_DIST_KERNELS"].flatMap(InstructionSet.init(rawValue:)),
              let capIndex = InstructionSet.allCases.firstIndex(of: cap),
              let bestIndex = InstructionSet.allCases.firstIndex(of: best), capIndex < bestIndex else { return best }
        return cap
    }

    /// The run-time value of this process (see `Runtime`).
    public func runtime(threads requested: Int?, simulatedRanks: Int? = nil, precision: Precision = .fp32) -> Runtime {
        Runtime(threadsPerRank: threadsPerRank(requested: requested, simulatedRanks: simulatedRanks),
                instructionSet: instructionSet, precision: precision, progress: progress, launcher: launcher, hostName: hostName,
                openBLASNote: precision == .fp32 ? openBLASNote : nil)
    }

    /// The user's OPENBLAS_CORETYPE when it names kernels narrower than this CPU's (not the one
    /// startOpenBLAS set for its own re-execution): what it costs, for rank 0 to say.
    var openBLASNote: String? {
        guard variables["BERT_DIST_BLAS_REEXEC"] == nil, let requested = variables["OPENBLAS_CORETYPE"] else { return nil }
        return BLASSetup.narrowCoreTypeNote(requested: requested)
    }

    /// Where rank 0 keeps the token caches of data files: `requested` (--cache-dir), else
    /// $XDG_CACHE_HOME/bert-dist or ~/.cache/bert-dist. Without HOME that is an error on rank 0;
    /// other ranks read no files and get nil.
    public func tokenCacheDirectory(requested: String?) throws -> URL? {
        if let requested { return URL(fileURLWithPath: requested, isDirectory: true) }
        if isNonZeroRank { return try? TokenCache.defaultDirectory(environment: variables) }
        return try TokenCache.defaultDirectory(environment: variables)
    }

    /// launch/train's record of the attempt this one restarts (nil: not a restart).
    public var restartRecord: RestartRecord? {
        variables["BERT_DIST_RESTART"].flatMap(RestartRecord.init(parsing:))
    }

    /// The interfaces (or subnets) MPI's TCP transport may use, as launch/train passes cluster.conf's
    /// network_interface: the peer watchdog's heartbeats take the same network.
    public var mpiNetworkInterfaces: [String] {
        (variables["OMPI_MCA_btl_tcp_if_include"] ?? "").split(separator: ",").map(String.init)
    }

    /// The program name of process `pid` (/proc/PID/comm, e.g. "orted"), or nil.
    public static func programName(of pid: pid_t) -> String? {
        (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// This machine's name (gethostname; no name lookup).
    public var hostName: String {
        var name = [CChar](repeating: 0, count: 256)
        guard gethostname(&name, name.count - 1) == 0 else { return "unknown-host" }
        return String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// CPUs in this process's affinity mask ("Cpus_allowed_list: 0-3,8" in /proc/self/status); 0 if unknown.
func allowedCPUCount() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }) else { return 0 }
    var count = 0
    for part in line.dropFirst("Cpus_allowed_list:".count).split(separator: ",") {
        let bounds = part.trimmingCharacters(in: .whitespaces).split(separator: "-").compactMap { Int($0) }
        if bounds.count == 2 { count += bounds[1] - bounds[0] + 1 } else if bounds.count == 1 { count += 1 }
    }
    return count
}
