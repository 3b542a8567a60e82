import Distributed
import Foundation
import Model
import Training

/// Runs `body` once per rank — MPI ranks (also the plain single process, an MPI singleton), or
/// with `simulatedRanks` N threads of this process, each with its own Compute of `threads`
/// threads — and turns failures into one
/// `error: ...` line and a non-zero exit. Errors all ranks agreed on (`collectively`) exit
/// cleanly; an error on one rank alone aborts the job so that no peer waits for it forever.
enum RankRunner {
    /// Started by mpirun as a rank other than 0 (read from the launcher's environment, before
    /// and without initialising MPI).
    static var isNonZeroMPIRank: Bool {
        let environment = ProcessInfo.processInfo.environment
        guard let rank = environment["OMPI_COMM_WORLD_RANK"] ?? environment["PMIX_RANK"] ?? environment["PMI_RANK"] else { return false }
        return rank != "0"
    }

    static func run(simulatedRanks: Int?, threads: Int?, _ body: @escaping @Sendable (any Communicator, Compute) throws -> Void) -> Int32 {
        if let simulatedRanks {
            do {
                _ = try InProcessGroup.run(worldSize: simulatedRanks) { communicator in
                    let threads = configureThreads(requested: threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount / simulatedRanks))
                    let compute = Compute(threads: threads, instructionSet: kernelInstructionSet())
                    try body(communicator, compute)
                }
                return 0
            } catch let failure as AgreedFailure {
                if let error = failure.error { printError("error: \(error)") }
                return 1
            } catch {
                printError("error: \(error)")
                return 1
            }
        }
        let communicator: MPICommunicator
        do { communicator = try MPICommunicator() } catch {
            printError("error: \(error)")
            return 1
        }
        let compute = Compute(threads: configureThreads(requested: threads), instructionSet: kernelInstructionSet())
        let prefix = communicator.rank == 0 ? "" : "rank \(communicator.rank): "
        do {
            try body(communicator, compute)
            try communicator.finalize()
            return 0
        } catch let failure as AgreedFailure {
            if let error = failure.error { printError("\(prefix)error: \(error)") }
            try? communicator.finalize()
            return 1
        } catch {
            printError("\(prefix)error: \(error)")
            if communicator.worldSize > 1 { communicator.abort(message: "\(prefix)stopping all ranks") }
            try? communicator.finalize()
            return 1
        }
    }
}

/// stdout from rank 0 only.
func rootLog(_ communicator: any Communicator) -> @Sendable (String) -> Void {
    let isRoot = communicator.rank == 0
    return { line in
        guard isRoot else { return }
        print(line)
        fflush(nil)
    }
}
