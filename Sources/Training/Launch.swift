import Distributed
import Foundation
import Model

/// An error every rank knows about: the ranks agreed to stop, the lowest failing rank reports it.
public struct AgreedFailure: Error, CustomStringConvertible {
    /// The error to print on this rank, or nil when another rank reports it.
    public let error: (any Error)?
    public var description: String { error.map { "\($0)" } ?? "a peer rank failed" }
}

/// Runs a phase that may fail on some ranks only (reading files, loading weights), then lets
/// all ranks agree: if any failed, every rank throws `AgreedFailure` and the lowest failing rank
/// carries the error to print — one clean line and a clean exit instead of N copies or a hang.
public func collectively<T>(_ communicator: any Communicator, _ body: () throws -> T) throws -> T {
    let result: Result<T, any Error>
    do { result = .success(try body()) } catch { result = .failure(error) }
    var failed = false
    if case .failure = result { failed = true }
    let failures = try communicator.allGather(failed ? 1 : 0)
    if let first = failures.firstIndex(of: 1) {
        if case .failure(let error) = result, first == communicator.rank { throw AgreedFailure(error: error) }
        throw AgreedFailure(error: nil)
    }
    return try result.get()
}

/// Threads per rank for our kernels and split products (a rank's `Compute`): `requested`
/// (--threads), else OPENBLAS_NUM_THREADS (what launch/train sets from cluster.conf), else the
/// CPUs this process may run on divided by the ranks sharing the node (mpirun's
/// OMPI_COMM_WORLD_LOCAL_SIZE).
public func configureThreads(requested: Int?) -> Int {
    let threads: Int
    if let requested {
        threads = max(1, requested)
    } else if let fromEnvironment = ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"].flatMap({ Int($0) }), fromEnvironment > 0 {
        threads = fromEnvironment
    } else {
        let allowed = allowedCPUCount()
        let online = ProcessInfo.processInfo.activeProcessorCount
        let environment = ProcessInfo.processInfo.environment
        let localRanks = Int(environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? environment["SLURM_NTASKS_PER_NODE"] ?? "") ?? 1
        // Bound to fewer CPUs than the node has (mpirun --bind-to): that is our share already.
        let cores = allowed > 0 && allowed < online ? allowed : max(1, online / max(1, localRanks))
        threads = cores
    }
    return threads
}

/// The instruction set of the vector kernels: the best this CPU runs, unless
/// BERT_DIST_KERNELS (baseline, avx2 or avx512) names a narrower one.
public func kernelInstructionSet() -> InstructionSet {
    let best = InstructionSet.best
    guard let cap = ProcessInfo.processInfo.environment["BERT_DIST_KERNELS"].flatMap(InstructionSet.init(rawValue:)),
          let capIndex = InstructionSet.allCases.firstIndex(of: cap), let bestIndex = InstructionSet.allCases.firstIndex(of: best),
          capIndex < bestIndex else { return best }
    return cap
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

/// Writes one line to stderr.
public func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
