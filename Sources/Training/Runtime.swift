import Foundation
import Model

/// Facts and choices about this process that are not training options: decided once by the
/// executable (from the command line, the environment and the CPU) and passed down as a value,
/// so nothing below the executable reads the environment or a mutable global.
public struct Runtime: Sendable {
    /// Threads per rank: the size of each rank's kernel team (GEMMs split over them, vector
    /// kernels); ProcessEnvironment.threadsPerRank decides it.
    public var threadsPerRank: Int
    /// The instruction set of each rank's vector kernels.
    public var instructionSet: InstructionSet
    /// fp32, or --bf16 (docs/precision.md; the executable has checked that the CPU has bf16
    /// instructions). The bf16 engine is the fastest this CPU runs.
    public var precision: Precision
    /// The CGemm engine of --bf16: the fastest this CPU runs (tests choose the software engine).
    public var bf16Engine: BF16Engine = .fastest
    /// How rank 0 shows progress: a redrawn bar on a terminal, or plain periodic lines.
    public var progress: ProgressMode
    /// Who started this process.
    public var launcher: Launcher
    /// The host this process runs on, as reports name it (stragglers, silent peers).
    public var hostName: String
    /// What the environment's OPENBLAS_CORETYPE costs the fp32 products, when it names kernels
    /// narrower than this CPU's (BLASSetup.narrowCoreTypeNote); train and bench say it on rank 0.
    public var openBLASNote: String?

    public init(threadsPerRank: Int = 1, instructionSet: InstructionSet = .best, precision: Precision = .fp32,
                progress: ProgressMode = .lines, launcher: Launcher = .standalone, hostName: String = "localhost",
                openBLASNote: String? = nil) {
        self.threadsPerRank = max(1, threadsPerRank)
        self.instructionSet = instructionSet
        self.precision = precision
        self.progress = progress
        self.launcher = launcher
        self.hostName = hostName
        self.openBLASNote = openBLASNote
    }

    /// A rank's Compute: its team of `threadsPerRank` threads, the `instructionSet` kernels and
    /// the `precision` of the matrix products. Each rank makes its own, on its own thread
    /// (simulated in-process ranks too), once.
    public func makeCompute() -> Compute {
        Compute(threads: threadsPerRank, instructionSet: instructionSet, precision: precision, bf16Engine: bf16Engine)
    }
}

public enum ProgressMode: String, Sendable {
    case bar, lines
}

/// How the process was started.
public enum Launcher: Sendable, Equatable {
    /// A plain process (an MPI singleton of world size 1, or in-process simulated ranks).
    case standalone
    /// One rank of mpirun or srun: its world rank and how many ranks share its node.
    case mpi(rank: Int, ranksOnNode: Int)

    /// The rank the launcher gave this process (0 when standalone).
    public var rank: Int {
        if case .mpi(let rank, _) = self { return rank }
        return 0
    }
}
