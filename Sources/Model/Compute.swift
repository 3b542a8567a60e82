import CKernels

/// The vector instructions the kernels of CKernels are compiled for (one table each).
public enum InstructionSet: String, CaseIterable, Sendable {
    case baseline, avx2, avx512

    /// The widest instruction set this CPU supports.
    public static var best: InstructionSet { allCases.last { $0.isSupported } ?? .baseline }

    /// Whether this CPU (and this build) runs the kernels of this instruction set.
    public var isSupported: Bool { bd_isa_supported(code) != 0 }

    var code: Int32 {
        switch self {
        case .baseline: Int32(BD_ISA_BASELINE)
        case .avx2: Int32(BD_ISA_AVX2)
        case .avx512: Int32(BD_ISA_AVX512)
        }
    }
}

/// How one rank computes: its thread team and the instruction set of its vector kernels.
/// Made once per rank by the executable (or a test); used from that rank's thread only.
///
/// Everything that runs kernels (the model, the optimizer, the gradient norm) is handed the
/// rank's Compute and splits its work over `team`; `kernels` is the CKernels table of
/// `instructionSet`. Simulated in-process ranks each make their own, so no two ranks share a
/// team and nothing is chosen through a global.
public final class Compute {
    /// Threads of the team, the calling thread included; OpenBLAS itself runs single-threaded
    /// inside each of them (BLASSetup.keepOpenBLASSingleThreaded).
    public let threads: Int
    public let instructionSet: InstructionSet
    /// The entry points of `instructionSet` (static data of CKernels, valid forever).
    let kernels: bd_kernel_table
    let team: WorkerTeam

    public init(threads: Int, instructionSet: InstructionSet = .best) {
        precondition(instructionSet.isSupported, "this CPU cannot run the \(instructionSet.rawValue) kernels")
        guard let kernels = bd_kernels_for(instructionSet.code) else {
            preconditionFailure("this build has no \(instructionSet.rawValue) kernels")
        }
        self.threads = max(1, threads)
        self.instructionSet = instructionSet
        self.kernels = kernels.pointee
        team = WorkerTeam(size: self.threads)
    }

    deinit { team.shutDown() }
}
