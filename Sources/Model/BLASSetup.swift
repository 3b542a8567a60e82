import CBLAS
import Foundation

/// OpenBLAS start-up: kernel selection, threads, and a self-test of the kernels in use.
///
/// Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) picks its kernels when the library loads. On CPUs
/// newer than it knows it can fall back to generic "Prescott" SSE kernels, about 4x slower.
/// OPENBLAS_CORETYPE, read at load time, overrides the choice; so when the detected kernels are
/// weaker than what the CPU supports we set it and re-execute ourselves before doing anything
/// else. A user's own OPENBLAS_CORETYPE always wins.
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

    /// The best core type this CPU supports, from /proc/cpuinfo's flags (Linux, x86_64).
    static func bestCoreTypeForThisCPU() -> (name: String, level: Int)? {
        guard let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        let flags = Set(line.split(separator: " ").map(String.init))
        if ["avx512f", "avx512bw", "avx512vl", "avx512dq"].allSatisfy(flags.contains) { return ("SkylakeX", 3) }
        if flags.contains("avx2") && flags.contains("fma") { return ("Haswell", 2) }
        if flags.contains("avx") { return ("Sandybridge", 1) }
        return nil
    }

    /// Call first thing in `main`, before MPI starts: re-executes the program with a better
    /// OPENBLAS_CORETYPE when OpenBLAS chose weaker kernels than the CPU supports. Returns the
    /// note to print (or nil) when nothing needed doing or re-execution was not possible.
    public static func selectKernelsOrReexecute() -> String? {
        let environment = ProcessInfo.processInfo.environment
        if environment["OPENBLAS_CORETYPE"] != nil || environment["BERT_DIST_BLAS_REEXEC"] != nil { return nil }
        let detected = coreName
        guard let detectedLevel = level(ofCore: detected), let best = bestCoreTypeForThisCPU(),
              best.level > detectedLevel else { return nil }
        setenv("OPENBLAS_CORETYPE", best.name, 1)
        setenv("BERT_DIST_BLAS_REEXEC", "1", 1)
        let arguments = CommandLine.arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", arguments)
        // Only reached if execv failed: carry on with the detected kernels.
        return "OpenBLAS chose \(detected) kernels on a CPU that supports \(best.name); re-executing failed (\(String(cString: strerror(errno)))), set OPENBLAS_CORETYPE=\(best.name) to fix the speed"
    }

    /// Threads for the matrix products of a rank of `count` threads. The rank's WorkerTeam
    /// (`kernelThreadCount` members) splits every large product itself and each member calls
    /// OpenBLAS single-threaded, so OpenBLAS's own pool is kept at 1: two single-threaded
    /// products side by side run faster here than one product on OpenBLAS's threads, and its
    /// idle threads no longer spin (sched_yield) against ours.
    public static func setThreads(_ count: Int) { openblas_set_num_threads(1) }
    /// OpenBLAS's own threads (1 unless a benchmark changed it with `setOpenBLASThreads`).
    public static var threads: Int { Int(openblas_get_num_threads()) }
    /// For benchmarks of OpenBLAS's own threading only.
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
