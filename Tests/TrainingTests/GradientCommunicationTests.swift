import Distributed
import Foundation
import Model
import Options
import Testing
@testable import Training

/// What the trainer's gradient communication choices do to the trained model: the sparse
/// embedding rows change nothing, bf16 compression keeps replicas identical and stays close.
@Suite(.serialized) struct GradientCommunicationTests {
    /// The parameters after the last step (6) of `options` on `ranks` in-process ranks, every
    /// tensor of every rank: rank 0's are its last checkpoint's weights, and every other rank's
    /// were compared with them bit for bit before it was written (`replicasDiffered` is false
    /// when all were equal).
    func trainedParameters(_ options: TrainingOptions, ranks: Int, sparseEmbeddingGradients: Bool = true) throws -> [String: [Float]] {
        let data = try syntheticData()
        var settings = TrainingRun.Settings()
        settings.sparseEmbeddingGradients = sparseEmbeddingGradients
        let log = try trainLoggingRankZero(options, ranks: ranks, data: data, settings: settings)
        #expect(!replicasDiffered(log), "\(log)")
        return try finalWeights(options.checkpoints.folder, step: 6)
    }

    @Test(arguments: [(3, nil, false), (2, 1, true), (4, nil, true)] as [(Int, Int?, Bool)])
    func sparseEmbeddingRowsTrainExactlyTheModelTheDenseSumTrains(ranks: Int, micro: Int?, sharded: Bool) throws {
        var options = tinyOptions(output: temporaryDirectory())
        options.parallel.microBatchSize = micro
        options.parallel.shardOptimizer = sharded
        let dense = try trainedParameters(options, ranks: ranks, sparseEmbeddingGradients: false)
        options.checkpoints.folder = temporaryDirectory()
        let sparse = try trainedParameters(options, ranks: ranks)
        #expect(Set(sparse.keys) == Set(dense.keys))
        for (name, values) in sparse {
            #expect(values.map(\.bitPattern) == dense[name]?.map(\.bitPattern), "\(name)")
        }
        let oneRank = try trainedParameters(tinyOptions(output: temporaryDirectory()), ranks: 1)
        #expect(sparse != oneRank, "ranks and one rank differ in rounding: the comparison sees bits")
    }

    @Test func bf16CompressionKeepsReplicasIdenticalAndTheModelClose() throws {
        var options = tinyOptions(output: temporaryDirectory())
        let exact = try trainedParameters(options, ranks: 4)
        options.checkpoints.folder = temporaryDirectory()
        options.parallel.gradientCompression = .bf16
        // (trainedParameters checks that the 4 replicas are identical.)
        let compressed = try trainedParameters(options, ranks: 4)
        // bf16 keeps 8 bits of mantissa: Adam's update direction barely moves in 6 steps.
        let difference = largestDifference(compressed, exact)
        print("bf16 gradient compression, 4 ranks, 6 steps: largest relative difference \(difference)")
        #expect(difference > 0 && difference < 2e-3)
        options.checkpoints.folder = temporaryDirectory()
        let oneRank = try trainedParameters(options, ranks: 1)
        let oneRankDifference = largestDifference(oneRank, compressed, scale: exact)
        print("bf16 gradient compression, 1 rank against 4 ranks: largest relative difference \(oneRankDifference)")
        #expect(oneRankDifference < 2e-3)
    }

    /// The largest |a - b| over all tensors, relative to the largest |value| of `scale` (default b).
    func largestDifference(_ a: [String: [Float]], _ b: [String: [Float]], scale: [String: [Float]]? = nil) -> Float {
        let largest = (scale ?? b).values.flatMap { $0 }.map(abs).max()!
        return b.keys.map { name in zip(a[name]!, b[name]!).map { abs($0 - $1) }.max() ?? 0 }.max()! / largest
    }
}
