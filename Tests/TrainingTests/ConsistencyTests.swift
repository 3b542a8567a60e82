import Distributed
import Foundation
import Model
import Testing
@testable import Training

/// A replica that drifts (here: one rank's parameters perturbed after step 2) is found by the
/// periodic checksum comparison, reported, and repaired from rank 0.
@Suite struct ConsistencyTests {
    final class Captured: @unchecked Sendable {
        let lock = NSLock()
        var finalParameters: [Int: [Float]] = [:]
    }

    @Test func perturbedRankIsReportedAndRepaired() throws {
        var settings = tinyOptions(output: temporaryDirectory())
        settings.consistencyEvery = 3
        let options = settings
        let data = try syntheticData()
        let captured = Captured()
        let log = try InProcessGroupRun.collectingLog(ranks: 2) { communicator, log in
            let run = TrainingRun(options: options, runtime: Runtime(), communicator: communicator, data: data, log: log)
            run.afterStep = { step, parameters in
                if step == 2 && communicator.rank == 1 { parameters.base[7] += 0.5 }
                if step == 6 {
                    captured.lock.lock()
                    captured.finalParameters[communicator.rank] = Array(parameters.buffer)
                    captured.lock.unlock()
                }
            }
            return try run.run().stepsDone
        }.log
        #expect(log.contains { $0.contains("step 3: replicas of ranks [1] differed from rank 0 and were repaired") }, "\(log)")
        #expect(!log.contains { $0.contains("step 6: replicas") }, "repaired for good")
        #expect(captured.finalParameters[0] == captured.finalParameters[1])
    }
}
