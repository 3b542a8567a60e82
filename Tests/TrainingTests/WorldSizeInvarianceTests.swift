import Foundation
import Options
import Testing
@testable import Training

/// For one global batch size, any number of ranks, any micro-batch size and sharded or
/// replicated Adam train the same model (float summation order aside), dropout on.
@Suite(.serialized) struct WorldSizeInvarianceTests {
    @Test func sameModelForAnyRankCountMicroBatchAndSharding() throws {
        let data = try syntheticData()
        let reference = temporaryDirectory()
        try train(tinyOptions(output: reference), ranks: 1, data: data)
        let expected = try finalWeights(reference, step: 6)

        for (ranks, micro, sharded) in [(2, nil, false), (4, nil, false), (4, 1, true), (1, 3, false), (2, 2, true)] as [(Int, Int?, Bool)] {
            let output = temporaryDirectory()
            var options = tinyOptions(output: output)
            options.parallel.microBatchSize = micro
            options.parallel.shardOptimizer = sharded
            try train(options, ranks: ranks, data: data)
            let difference = largestRelativeDifference(try finalWeights(output, step: 6), expected)
            print("ranks \(ranks) micro \(micro.map(String.init) ?? "-") sharded \(sharded): largest relative difference \(difference)")
            #expect(difference < 1e-5, "ranks \(ranks), micro-batch \(String(describing: micro)), sharded \(sharded)")
        }
    }

    @Test func shardedAndReplicatedAreBitIdenticalForTheSameRanks() throws {
        // Both sum every gradient element by its owner in rank order: exactly the same numbers.
        let data = try syntheticData()
        var results: [[String: [Float]]] = []
        for sharded in [false, true] {
            let output = temporaryDirectory()
            var options = tinyOptions(output: output)
            options.parallel.shardOptimizer = sharded
            try train(options, ranks: 3, data: data)
            results.append(try finalWeights(output, step: 6))
        }
        #expect(results[0] == results[1])
    }

    @Test func trainingLearnsTheSyntheticTask() throws {
        let data = try syntheticData(train: 256, eval: 64)
        let options = tinyOptions(output: temporaryDirectory(), ["--max-steps", "100", "--batch-size", "16", "--lr", "3e-3"])
        let summary = try train(options, ranks: 2, data: data)
        let accuracy = try #require(summary.finalEvaluation?.metric(named: "accuracy"))
        print("synthetic task accuracy after 100 steps: \(accuracy)")
        #expect(accuracy > 0.6)  // chance is 0.25
    }
}
