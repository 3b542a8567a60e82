import Distributed
import Foundation
import Model
import Testing
@testable import Training

/// What the trainer's gradient communication choices do to the trained model: the sparse
/// embedding rows change nothing, bf16 compression keeps replicas identical and stays close.
@Suite(.serialized) struct GradientCommunicationTests {
    final class Captured: @unchecked Sendable {
        let lock = NSLock()
        var parameters: [Int: [Float]] = [:]
        func store(_ values: [Float], rank: Int) {
            lock.lock()
            parameters[rank] = values
            lock.unlock()
        }
    }

    /// Every rank's parameters after the last step (6) of `options` on `ranks` in-process ranks.
    func trainedParameters(_ options: TrainingOptions, ranks: Int) throws -> [[Float]] {
        let data = try syntheticData()
        let captured = Captured()
        _ = try InProcessGroup.run(worldSize: ranks) { communicator in
            let run = TrainingRun(options: options, runtime: Runtime(), communicator: communicator, data: data, log: { _ in })
            run.afterStep = { step, parameters in
                if step == options.maxSteps { captured.store(Array(parameters.buffer), rank: communicator.rank) }
            }
            return try run.run().stepsDone
        }
        return (0..<ranks).map { captured.parameters[$0]! }
    }

    @Test(arguments: [(3, nil, false), (2, 1, true), (4, nil, true)] as [(Int, Int?, Bool)])
    func sparseEmbeddingRowsTrainExactlyTheModelTheDenseSumTrains(ranks: Int, micro: Int?, sharded: Bool) throws {
        var options = tinyOptions(output: temporaryDirectory())
        options.microBatchSize = micro
        options.shardOptimizer = sharded
        options.sparseEmbeddingGradients = false
        let dense = try trainedParameters(options, ranks: ranks)
        options.outputDirectory = temporaryDirectory()
        options.sparseEmbeddingGradients = true
        let sparse = try trainedParameters(options, ranks: ranks)
        for rank in 0..<ranks {
            #expect(sparse[rank].map(\.bitPattern) == dense[rank].map(\.bitPattern), "rank \(rank)")
        }
        let oneRank = try trainedParameters(tinyOptions(output: temporaryDirectory()), ranks: 1)[0]
        #expect(sparse[0] != oneRank, "ranks and one rank differ in rounding: the comparison sees bits")
    }

    @Test func bf16CompressionKeepsReplicasIdenticalAndTheModelClose() throws {
        var options = tinyOptions(output: temporaryDirectory())
        let exact = try trainedParameters(options, ranks: 4)
        options.outputDirectory = temporaryDirectory()
        options.gradientCompression = .bf16
        let compressed = try trainedParameters(options, ranks: 4)
        for rank in 1..<4 { #expect(compressed[rank] == compressed[0], "rank \(rank)") }
        // bf16 keeps 8 bits of mantissa: Adam's update direction barely moves in 6 steps.
        let scale = exact[0].map(abs).max()!
        let difference = zip(compressed[0], exact[0]).map { abs($0 - $1) }.max()! / scale
        print("bf16 gradient compression, 4 ranks, 6 steps: largest relative difference \(difference)")
        #expect(difference > 0 && difference < 2e-3)
        options.outputDirectory = temporaryDirectory()
        let oneRank = try trainedParameters(options, ranks: 1)
        let oneRankDifference = zip(oneRank[0], compressed[0]).map { abs($0 - $1) }.max()! / scale
        print("bf16 gradient compression, 1 rank against 4 ranks: largest relative difference \(oneRankDifference)")
        #expect(oneRankDifference < 2e-3)
    }
}
