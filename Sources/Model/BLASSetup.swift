import CBLAS
import CCPU
import Foundation

/// OpenBLAS start-up: which kernel set to ask for, its threads, and a self-test of the kernels
/// in use. Decisions only: the executable acts on them before anything else runs.
///
/// Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) picks its kernels when the library loads. On CPUs
/// newer than it knows it can fall back to generic "Prescott" SSE kernels, about 4x slower; on
/// others its choice is not the fastest (see `preferredCoreType`). OPENBLAS_CORETYPE, read at
/// load time, overrides the choice; so when `coreTypeToRequest` names another kernel set, the
/// executable sets it and re-executes itself, then runs `selfTest` on the new kernels. A user's
/// own OPENBLAS_CORETYPE always wins (the executable does not ask then).
public enum BLASSetup {
    public static var coreName: String { String(cString: openblas_get_corename()) }

    /// 0 = SSE only, 1 = AVX, 2 = AVX2 + FMA, 3 = AVX-512; nil for names we do not know.
    static func level(ofCore name: String) -> Int? {
        switch name.lowercased() {
        case "prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "opteron", "opteron_sse3",
             "barcelona", "bobcat", "katmai", "coppermine", "northwood", "banias", "athlon", "nano":
            return 0
        case "sandybridge", "bulldozer", "piledriver": return 1
        case "haswell", "zen", "steamroller", "excavator", "alderlake": return 2
        case "skylakex", "cooperlake", "sapphirerapids": return 3
        default: return nil
        }
    }

    /// What decides the kernel set: the CPU as this process sees it (cpuid).
    struct CPU: Equatable {
        var vendor: String
        var family: Int
        /// The widest vector level the CPU and OS support: 1 = AVX, 2 = AVX2 + FMA, 3 = AVX-512
        /// (F, BW, DQ, VL); 0 otherwise.
        var vectorLevel: Int

        static var current: CPU {
            let level = InstructionSet.avx512.isSupported ? 3 : InstructionSet.avx2.isSupported ? 2 : 0
            let vendor = withUnsafeTemporaryAllocation(of: CChar.self, capacity: 13) { buffer in
                bd_cpu_vendor(buffer.baseAddress!)
                return String(cString: buffer.baseAddress!)
            }
            return CPU(vendor: vendor, family: Int(bd_cpu_family()), vectorLevel: level)
        }

        /// AMD family 19h with AVX-512 (Zen 4): 512-bit FMAs run as two 256-bit halves.
        var isZen4WithAVX512: Bool { vendor == "AuthenticAMD" && family == 0x19 && vectorLevel >= 3 }
    }

    /// The OpenBLAS kernel set to use instead of the `detected` one on `cpu`, or nil to keep it.
    ///
    /// - Measured (benchmarks/blas_cores.sh, the model's own products): on AMD family 19h with
    ///   AVX-512 (Zen 4), where OpenBLAS 0.3.21 detects Cooperlake, the Haswell (AVX2 + FMA)
    ///   kernels are 3-5% faster with 1 and 2 threads — Zen 4 executes 512-bit FMAs as two
    ///   256-bit halves, so the wider kernels gain nothing and lose on register blocking.
    /// - Otherwise, when OpenBLAS fell back to kernels weaker than the CPU supports (e.g. its
    ///   generic Prescott ones on a CPU it does not know), the widest kernel set the CPU runs.
    static func preferredCoreType(detected: String, cpu: CPU) -> String? {
        if cpu.isZen4WithAVX512 {
            return detected.lowercased() == "haswell" ? nil : "Haswell"
        }
        let widest: (name: String, level: Int)? = switch cpu.vectorLevel {
        case 3: ("SkylakeX", 3)
        case 2: ("Haswell", 2)
        default: nil
        }
        guard let widest, let detectedLevel = level(ofCore: detected), widest.level > detectedLevel else { return nil }
        return widest.name
    }

    /// A note for the user whose OPENBLAS_CORETYPE (`requested`) names kernels narrower than the
    /// ones bert-dist runs on `cpu` without it (`preferredCoreType`: AVX2 on Zen 4, else the widest
    /// the CPU runs), or nil. Their choice stands; the note says that it costs speed (on AMD Zen 5,
    /// Haswell's AVX2 kernels made a MiniLM step 1.75x slower than the AVX-512 ones OpenBLAS
    /// picks: benchmarks/communication.md).
    public static func narrowCoreTypeNote(requested: String) -> String? { narrowCoreTypeNote(requested: requested, cpu: .current) }

    static func narrowCoreTypeNote(requested: String, cpu: CPU) -> String? {
        guard let requestedLevel = level(ofCore: requested) else { return nil }
        let preferredLevel = cpu.isZen4WithAVX512 ? 2 : cpu.vectorLevel
        guard preferredLevel >= 2, requestedLevel < preferredLevel else { return nil }
        let names = ["SSE", "AVX", "AVX2", "AVX-512"]
        return "OPENBLAS_CORETYPE=\(requested) in the environment selects OpenBLAS's \(names[requestedLevel]) kernels on a CPU that runs "
            + "\(names[preferredLevel]) ones: matrix products may run well below this CPU's speed; unset it to let bert-dist choose"
    }

    /// The OpenBLAS kernel set this process should run with instead of the one OpenBLAS chose
    /// at load time, or nil to keep it: `preferredCoreType` of the detected kernels on this CPU.
    public static func coreTypeToRequest() -> String? {
        preferredCoreType(detected: coreName, cpu: .current)
    }

    /// Keeps OpenBLAS's own thread pool at one thread. Each rank's `Compute` team splits every
    /// large product itself and each member calls OpenBLAS single-threaded: two single-threaded
    /// products side by side run faster here than one product on OpenBLAS's threads, and its
    /// idle threads no longer spin (sched_yield) against ours. The pool size is a global of the
    /// C library, shared by every rank of the process: the executable sets it once at start-up.
    public static func keepOpenBLASSingleThreaded() { openblas_set_num_threads(1) }

    /// For benchmarks of OpenBLAS's own threading only (the same C-library global; put it back
    /// with `keepOpenBLASSingleThreaded`).
    public static func setOpenBLASThreads(_ count: Int) { openblas_set_num_threads(Int32(max(1, count))) }

    /// Checks the kernels in use against a naive product on awkward shapes and all transposes.
    public static func selfTest() throws {
        for (m, n, k) in [(1, 1, 1), (7, 13, 5), (33, 17, 65), (64, 96, 128), (130, 3, 257)] {
            for transA in [false, true] {
                for transB in [false, true] {
                    let a: [Float] = (0..<(m * k)).map { (i: Int) -> Float in Float((i * 7 + 3) % 17) / 8 - 1 }
                    let b: [Float] = (0..<(k * n)).map { (i: Int) -> Float in Float((i * 5 + 1) % 13) / 6 - 1 }
                    var c = [Float](repeating: 0.5, count: m * n)
                    let lda = transA ? m : k, ldb = transB ? k : n
                    a.withUnsafeBufferPointer { a in b.withUnsafeBufferPointer { b in c.withUnsafeMutableBufferPointer { c in
                        sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1, a: a.baseAddress!, lda: lda,
                              b: b.baseAddress!, ldb: ldb, beta: 1, c: c.baseAddress!, ldc: n)
                    }}}
                    for i in 0..<m {
                        for j in 0..<n {
                            var expected: Double = 0.5
                            for p in 0..<k {
                                let x = transA ? a[p * m + i] : a[i * k + p]
                                let y = transB ? b[j * k + p] : b[p * n + j]
                                expected += Double(x) * Double(y)
                            }
                            if abs(Double(c[i * n + j]) - expected) > 1e-4 * max(1, abs(expected)) {
                                throw BLASError.wrongResults(core: coreName, detail: "sgemm \(m)x\(n)x\(k) transA=\(transA) transB=\(transB) gives \(c[i * n + j]) at (\(i),\(j)), expected \(expected)")
                            }
                        }
                    }
                }
            }
        }
    }
}

public enum BLASError: Error, CustomStringConvertible {
    case wrongResults(core: String, detail: String)
    public var description: String {
        switch self {
        case let .wrongResults(core, detail):
            return "OpenBLAS kernels \(core) compute wrong results (\(detail)); set OPENBLAS_CORETYPE to another core type, e.g. Haswell"
        }
    }
}
