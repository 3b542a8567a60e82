import Distributed
import Foundation
import Model
import Options
import Testing
@testable import Training

/// --bf16 training (the software engine, so these run on any x86-64 CPU): world-size
/// invariance, identical replicas, and fp32 checkpoints.
@Suite(.serialized) struct BF16TrainingTests {
    static let bf16 = { var runtime = Runtime(); runtime.precision = .bf16; runtime.bf16Engine = .software; return runtime }()

    /// `-n 1` vs `-n 4` (and micro-batches, ZeRO-1): the bf16 roundings are of each product's
    /// inputs, which do not depend on the split; what differs is the order of the fp32 sums of
    /// the gradient over ranks and micro-batches, as in fp32 (measured: ~1e-7, against 2e-2
    /// between the bf16 and the fp32 models). But a difference in the last bit can flip the bf16
    /// rounding of a weight in the next copies (2^-8 relative on that one input), and Adam
    /// carries that on: which rank grouping flips one depends on the seed and the split
    /// (issue 21, seeds 1-8 x 2-4 ranks: 1e-7 to 3e-5 with the token split, up to 3.4e-4 with the
    /// equal-count split), hence 1e-3, still 20x below the bf16 against fp32 difference.
    @Test func sameModelForAnyRankCountMicroBatchAndSharding() throws {
        let data = try syntheticData()
        let reference = temporaryDirectory()
        try train(tinyOptions(output: reference), ranks: 1, data: data, runtime: Self.bf16)
        let expected = try finalWeights(reference, step: 6)
        let fp32 = temporaryDirectory()
        try train(tinyOptions(output: fp32), ranks: 1, data: data)
        let fromFP32 = largestRelativeDifference(try finalWeights(fp32, step: 6), expected)
        print("bf16 vs fp32, 1 rank: largest relative difference \(fromFP32)")
        #expect(fromFP32 > 0, "--bf16 trained exactly the fp32 model")

        for (ranks, micro, sharded) in [(4, nil, false), (4, 1, true), (1, 3, false)] as [(Int, Int?, Bool)] {
            let output = temporaryDirectory()
            var options = tinyOptions(output: output)
            options.parallel.microBatchSize = micro
            options.parallel.shardOptimizer = sharded
            try train(options, ranks: ranks, data: data, runtime: Self.bf16)
            let difference = largestRelativeDifference(try finalWeights(output, step: 6), expected)
            print("bf16 ranks \(ranks) micro \(micro.map(String.init) ?? "-") sharded \(sharded): largest relative difference \(difference)")
            #expect(difference < 1e-3, "ranks \(ranks), micro-batch \(String(describing: micro)), sharded \(sharded)")
        }
    }

    /// Every rank ends every step with bit-identical parameters (the bf16 copies are a function
    /// of the identical fp32 parameters; the gradient sum is the same on every rank).
    @Test func replicasStayBitIdentical() throws {
        let data = try syntheticData()
        for sharded in [false, true] {
            var options = tinyOptions(output: temporaryDirectory())
            options.parallel.shardOptimizer = sharded
            options.consistencyEvery = 0   // no repair from rank 0 could hide a divergence
            // The last step's replicas, compared bit for bit before its checkpoint is written.
            let log = try trainLoggingRankZero(options, ranks: 3, data: data, runtime: Self.bf16)
            #expect(log.contains { $0.contains("training tiny_bert") }, "\(log)")
            #expect(!replicasDiffered(log), "sharded \(sharded): \(log)")
        }
    }
}
