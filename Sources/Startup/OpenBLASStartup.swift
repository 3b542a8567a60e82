import Foundation
import Model

/// OpenBLAS at start-up, before anything loads BLAS work or MPI: its own thread pool kept at
/// one thread (each rank's Compute splits the products), and the kernel set the CPU deserves
/// (BLASSetup.coreTypeToRequest). OPENBLAS_CORETYPE is read only when the library loads, so
/// asking for other kernels means re-executing this process with it set; the new kernels are
/// then checked with BLASSetup.selfTest, and if they compute wrong results the process
/// re-executes once more with OpenBLAS's own choice. A user's OPENBLAS_CORETYPE always wins.
/// Returns a note to print, or nil.
func startOpenBLAS(_ environment: ProcessEnvironment) -> String? {
    BLASSetup.keepOpenBLASSingleThreaded()
    let environment = environment.variables
    if let stage = environment["BERT_DIST_BLAS_REEXEC"] {
        guard stage == "preferred", let detected = environment["BERT_DIST_BLAS_DETECTED"] else { return nil }
        do {
            try BLASSetup.selfTest()
            return nil
        } catch {
            // The preferred kernels are wrong on this machine: back to the detected ones.
            setenv("OPENBLAS_CORETYPE", detected, 1)
            setenv("BERT_DIST_BLAS_REEXEC", "fallback", 1)
            reexecute()
            return "\(error); re-executing with OpenBLAS's own choice \(detected) failed (\(String(cString: strerror(errno))))"
        }
    }
    if environment["OPENBLAS_CORETYPE"] != nil { return nil }
    guard let preferred = BLASSetup.coreTypeToRequest() else { return nil }
    let detected = BLASSetup.coreName
    setenv("OPENBLAS_CORETYPE", preferred, 1)
    setenv("BERT_DIST_BLAS_REEXEC", "preferred", 1)
    setenv("BERT_DIST_BLAS_DETECTED", detected, 1)
    reexecute()
    // Only reached if execv failed: carry on with the detected kernels.
    return "OpenBLAS chose \(detected) kernels where \(preferred) ones are faster on this CPU; re-executing failed (\(String(cString: strerror(errno)))), set OPENBLAS_CORETYPE=\(preferred) to fix the speed"
}

private func reexecute() {
    let arguments = CommandLine.arguments.map { strdup($0) } + [nil]
    execv("/proc/self/exe", arguments)
}
