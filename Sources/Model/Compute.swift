import CGemm
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

/// The arithmetic of the matrix products (docs/precision.md).
public enum Precision: String, CaseIterable, Sendable {
    /// Everything in fp32 (OpenBLAS sgemm for the Linear layers).
    case fp32
    /// --bf16: every matrix product (the Linear layers and both attention products, forward and
    /// backward) rounds both inputs to bf16 and accumulates in fp32, as PyTorch's bf16 autocast;
    /// everything else (and every stored tensor: weights, gradients, Adam state) stays fp32.
    case bf16
}

/// An engine of CGemm for the bf16 products, and the one place that chooses it (`fastest`).
public enum BF16Engine: Int32, CaseIterable, Sendable {
    /// Portable C, bit-identical to `avx512BF16` on Intel: what the tests use on any x86-64.
    case software = 0
    case avx512BF16 = 1
    case amx = 2

    /// The engine a run uses: the fastest this CPU runs (AMX, else AVX512-BF16, else the
    /// software engine). The default of `Runtime.bf16Engine` and of `Compute`.
    public static var fastest: BF16Engine { [.amx, .avx512BF16].first(where: \.isSupported) ?? .software }
    /// CGemm's answer (CCPU's detector; for AMX, Linux's permission too).
    public var isSupported: Bool { bg_engine_supported(rawValue) != 0 }
    public var name: String { String(cString: bg_engine_name(rawValue)) }

    /// Whether this CPU has bf16 instructions (AVX512-BF16 or AMX-BF16): what --bf16 requires.
    public static var cpuHasBF16: Bool { fastest != .software }

    /// The one-line error of --bf16 on a CPU without bf16 instructions (`cpuHasBF16` false),
    /// nil when --bf16 can run. Checked by the executable before any work, on every rank.
    public static func unsupportedError(cpuHasBF16: Bool) -> String? {
        cpuHasBF16 ? nil : "error: --bf16 needs a CPU with AVX512-BF16 or AMX-BF16 instructions (this CPU has neither; PyTorch's bf16 autocast would be slower than fp32 here too): run without --bf16"
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
    /// fp32, or bf16 products with fp32 accumulation (the model then keeps bf16 weight copies).
    public let precision: Precision
    /// The CGemm engine of the bf16 products (chosen once; never changes inside a run).
    public let bf16Engine: BF16Engine

    /// `bf16Engine` defaults to the fastest this CPU runs; tests pass `.software` to run the bf16
    /// model on any x86-64 CPU.
    public init(threads: Int, instructionSet: InstructionSet = .best, precision: Precision = .fp32,
                bf16Engine: BF16Engine = .fastest) {
        precondition(instructionSet.isSupported, "this CPU cannot run the \(instructionSet.rawValue) kernels")
        precondition(bf16Engine.isSupported, "this CPU cannot run the \(bf16Engine.name) bf16 engine")
        guard let kernels = bd_kernels_for(instructionSet.code) else {
            preconditionFailure("this build has no \(instructionSet.rawValue) kernels")
        }
        self.threads = max(1, threads)
        self.instructionSet = instructionSet
        self.kernels = kernels.pointee
        self.precision = precision
        self.bf16Engine = bf16Engine
        team = WorkerTeam(size: self.threads)
    }

    deinit { team.shutDown() }
}
