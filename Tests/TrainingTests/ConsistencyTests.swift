import Distributed
import Foundation
import Model
import Options
import Testing
@testable import Training

/// A replica that drifts (here: rank 1 receives rank 0's starting weights with one value changed,
/// as a corrupted transfer would leave them) is found by the periodic checksum comparison,
/// reported, and repaired from rank 0.
@Suite struct ConsistencyTests {
    @Test func perturbedRankIsReportedAndRepaired() throws {
        let options = tinyOptions(output: temporaryDirectory(), ["--consistency-every", "3"])
        let data = try syntheticData()
        let parameterBytes = 4 * BertForSequenceClassification(config: try BertConfig.load(modelDirectory: tinyModel), labelCount: 4,
                                                                compute: Compute(threads: 1)).layout.totalCount
        let log = try InProcessGroupRun.collectingLog(ranks: 2) { communicator, log in
            let perturbed = communicator.rank == 1 ? PerturbingCommunicator(communicator, broadcastOf: parameterBytes) : communicator
            return try trainingRun(options, communicator: perturbed, data: data, log: log).run().stepsDone
        }.log
        #expect(log.contains { $0.contains("step 3: replicas of ranks [1] differed from rank 0 and were repaired") }, "\(log)")
        #expect(!log.contains { $0.contains("step 6: replicas") }, "repaired for good")
        // Compared bit for bit once more before the last checkpoint.
        #expect(!replicasDiffered(log), "\(log)")
    }
}

/// Passes everything to `inner`, but adds 0.5 to the 8th float received in the first broadcast of
/// `byteCount` bytes (the starting weights).
final class PerturbingCommunicator: ForwardingCommunicator, @unchecked Sendable {
    let byteCount: Int
    private var perturbed = false

    init(_ inner: any Communicator, broadcastOf byteCount: Int) {
        self.byteCount = byteCount
        super.init(inner)
    }

    override func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws {
        try inner.broadcast(bytes, root: root)
        if !perturbed && bytes.count == byteCount {
            perturbed = true
            bytes.baseAddress!.assumingMemoryBound(to: Float.self)[7] += 0.5
        }
    }
}
