import Data
import Foundation
import Model
import Options
import Testing
@testable import Training

/// Splitting each global batch by tokens instead of into equal example counts changes which rank
/// computes which example, not the gradient sum (float summation order aside): the same model.
@Suite(.serialized) struct TokenSplitTests {
    @Test func theTokenSplitTrainsTheModelTheExampleSplitTrains() throws {
        let data = try syntheticData()
        for (ranks, micro, sharded) in [(1, nil, false), (1, 3, false), (2, nil, false), (3, nil, true), (4, 1, false), (4, 2, true)]
            as [(Int, Int?, Bool)] {
            var weights: [[String: [Float]]] = []
            for splitByExamples in [true, false] {
                var options = tinyOptions(output: temporaryDirectory())
                options.parallel.microBatchSize = micro
                options.parallel.shardOptimizer = sharded
                let log = try InProcessGroupRun.collectingLog(ranks: ranks) { [options] communicator, log in
                    let run = try trainingRun(options, communicator: communicator, data: data, log: log)
                    run.settings.splitByExamples = splitByExamples
                    return try run.run().stepsDone
                }.log
                #expect(!replicasDiffered(log), "\(log)")
                weights.append(try finalWeights(options.checkpoints.folder, step: 6))
            }
            let what = "ranks \(ranks), micro-batch \(micro.map(String.init) ?? "-"), sharded \(sharded)"
            if ranks == 1 {
                // One rank takes each batch in order either way: the same bits.
                #expect(weights[0].mapValues { $0.map(\.bitPattern) } == weights[1].mapValues { $0.map(\.bitPattern) }, "\(what)")
            } else {
                let difference = largestRelativeDifference(weights[1], weights[0])
                print("\(what): token split against example split, largest relative difference \(difference)")
                #expect(difference < 1e-5, "\(what)")
            }
        }
    }

    /// The synthetic batches are uneven (3-20 tokens), so the token split really moves examples
    /// between ranks, and every rank gets some in every batch.
    @Test func theSplitsDifferOnTheseBatchesAndNoRankIsIdle() throws {
        let data = try syntheticData()
        let lengths = (0..<data.train.count).map { Int32(data.train.tokens(at: $0).count) }
        for ranks in [2, 3, 4] {
            let options = tinyOptions(output: temporaryDirectory())
            let byTokens = try TrainingPlan(options: options, lengths: lengths, worldSize: ranks, hiddenSize: 32)
            let byExamples = try TrainingPlan(options: options, lengths: lengths, worldSize: ranks, hiddenSize: 32, splitByExamples: true)
            var tokenCursor = BatchCursor(plan: byTokens, position: SamplePosition(epoch: 0, samplesConsumed: 0))
            var exampleCursor = BatchCursor(plan: byExamples, position: SamplePosition(epoch: 0, samplesConsumed: 0))
            var differing = 0
            for _ in 0..<byTokens.totalSteps {
                for rank in 0..<ranks {
                    let tokenShare = tokenCursor.current(rank: rank).share, exampleShare = exampleCursor.current(rank: rank).share
                    #expect(!tokenShare.slots.isEmpty, "\(ranks) ranks: rank \(rank) idle")
                    if Array(tokenShare.slots) != Array(exampleShare.slots) { differing += 1 }
                }
                tokenCursor.advance()
                exampleCursor.advance()
            }
            #expect(differing > 0, "\(ranks) ranks: the token split never differed from the example split")
        }
    }
}
