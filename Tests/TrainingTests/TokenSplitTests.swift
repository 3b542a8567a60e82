import Data
import Foundation
import Model
import Options
import TestSupport
import Testing
@testable import Training

/// Splitting each global batch by tokens instead of into equal example counts changes which rank
/// computes which example, not the gradient sum (float summation order aside): the same model.
@Suite(.serialized) struct TokenSplitTests {
    /// The last step's weights of `options` (6 steps) on `ranks` in-process ranks, each batch split
    /// by examples or by tokens (each run in a folder of its own); the replicas stayed identical.
    func trainedWeights(_ options: TrainingOptions, ranks: Int, data: TrainingData, splitByExamples: Bool) throws -> [String: [Float]] {
        var options = options
        options.checkpoints.folder = temporaryDirectory()
        var settings = TrainingRun.Settings()
        settings.splitByExamples = splitByExamples
        let log = try trainLoggingRankZero(options, ranks: ranks, data: data, settings: settings)
        #expect(!replicasDiffered(log), "\(log)")
        return try finalWeights(options.checkpoints.folder, step: 6)
    }

    @Test func theTokenSplitTrainsTheModelTheExampleSplitTrains() throws {
        let data = try syntheticData()
        for (ranks, micro, sharded) in [(1, nil, false), (1, 3, false), (2, nil, false), (3, nil, true), (4, 1, false), (4, 2, true)]
            as [(Int, Int?, Bool)] {
            var options = tinyOptions(output: temporaryDirectory())
            options.parallel.microBatchSize = micro
            options.parallel.shardOptimizer = sharded
            let weights = try [true, false].map { try trainedWeights(options, ranks: ranks, data: data, splitByExamples: $0) }
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

    /// Every encoder family: the split moves whole examples, and each packed sequence's position
    /// ids start again (RoBERTa's from pad_token_id + 1), so which rank or micro-batch an example
    /// lands in does not change its positions: the same model either way.
    @Test(arguments: FamilyTrainingTests.families)
    func everyFamilyTrainsTheSameModelEitherWay(family: String) throws {
        let data = try FamilyTrainingTests.data(family)
        for (ranks, micro) in [(2, nil), (3, 1)] as [(Int, Int?)] {
            var options = FamilyTrainingTests.options(family, output: temporaryDirectory())
            options.parallel.microBatchSize = micro
            let weights = try [true, false].map { withoutKeyBiases(try trainedWeights(options, ranks: ranks, data: data, splitByExamples: $0)) }
            let difference = largestRelativeDifference(weights[1], weights[0])
            print("\(family) ranks \(ranks) micro \(micro.map(String.init) ?? "-"): token split against example split, largest relative difference \(difference)")
            #expect(difference < 1e-5, "\(family): ranks \(ranks), micro-batch \(String(describing: micro))")
        }
        // The family's pairs are uneven enough that the token split differs from the example split.
        let lengths = (0..<data.train.count).map { Int32(data.train.tokens(at: $0).count) }
        let options = FamilyTrainingTests.options(family, output: temporaryDirectory())
        let byTokens = try TrainingPlan(options: options, lengths: lengths, worldSize: 2, hiddenSize: 32)
        let byExamples = try TrainingPlan(options: options, lengths: lengths, worldSize: 2, hiddenSize: 32, splitByExamples: true)
        var tokenCursor = BatchCursor(plan: byTokens, position: SamplePosition(epoch: 0, samplesConsumed: 0))
        var exampleCursor = BatchCursor(plan: byExamples, position: SamplePosition(epoch: 0, samplesConsumed: 0))
        var differing = 0
        for _ in 0..<byTokens.totalSteps {
            if Array(tokenCursor.current(rank: 0).share.slots) != Array(exampleCursor.current(rank: 0).share.slots) { differing += 1 }
            tokenCursor.advance()
            exampleCursor.advance()
        }
        #expect(differing > 0, "\(family): the token split never differed from the example split")
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
