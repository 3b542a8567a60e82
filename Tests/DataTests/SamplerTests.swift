import Foundation
import Testing

@testable import Data

@Suite struct SamplerTests {
    /// Every example index the ranks of `worldSize` process in one global batch, rank by rank and
    /// micro-batch by micro-batch, with the checks that each piece is where it should be.
    static func processedByRanks(_ sampler: Sampler, _ order: [Int32], at position: SamplePosition, worldSize: Int,
                                 microBatchSize: Int) -> [Int32] {
        var processed: [Int32] = []
        var expectedStart = sampler.globalBatchRange(at: position).lowerBound
        var shardSizes: [Int] = []
        for rank in 0..<worldSize {
            let batch = sampler.rankBatch(at: position, rank: rank, worldSize: worldSize, microBatchSize: microBatchSize)
            #expect(batch.shard.lowerBound == expectedStart)  // contiguous, in rank order
            expectedStart = batch.shard.upperBound
            shardSizes.append(batch.shard.count)
            var microStart = batch.shard.lowerBound
            for micro in batch.microBatches {
                #expect(micro.lowerBound == microStart && !micro.isEmpty && micro.count <= microBatchSize)
                microStart = micro.upperBound
                processed += order[micro]
            }
            #expect(microStart == batch.shard.upperBound)
        }
        #expect(expectedStart == sampler.globalBatchRange(at: position).upperBound)
        #expect(shardSizes.max()! - shardSizes.min()! <= 1)  // balanced
        return processed
    }

    @Test(arguments: [1, 7, 37, 100, 257])
    func shardsOfEveryWorldSizeCoverEachGlobalBatchInOrder(exampleCount: Int) {
        for globalBatchSize in [1, 3, 8, 32] {
            for lengths in [nil, (0..<exampleCount).map { Int32(2 + ($0 * 37) % 50) }] {
                let sampler = Sampler(exampleCount: exampleCount, globalBatchSize: globalBatchSize, seed: 1234,
                                      groupByLength: lengths)
                for epoch in 0..<3 {
                    let order = sampler.order(epoch: epoch)
                    #expect(Set(order).count == exampleCount && order.allSatisfy { $0 >= 0 && Int($0) < exampleCount })
                    var seen = [Int](repeating: 0, count: exampleCount)
                    var position = SamplePosition(epoch: epoch, samplesConsumed: 0)
                    var batchCount = 0
                    while position.epoch == epoch {
                        let global = Array(order[sampler.globalBatchRange(at: position)])
                        #expect(global.count == min(globalBatchSize, exampleCount - position.samplesConsumed))
                        for worldSize in [1, 2, 4, 8] {
                            for microBatchSize in [1, 2, 3, 5, 64] {
                                let processed = Self.processedByRanks(sampler, order, at: position, worldSize: worldSize,
                                                                      microBatchSize: microBatchSize)
                                #expect(processed == global, "N=\(exampleCount) B=\(globalBatchSize) W=\(worldSize) m=\(microBatchSize)")
                            }
                        }
                        for index in global { seen[Int(index)] += 1 }
                        position = sampler.position(after: position)
                        batchCount += 1
                    }
                    #expect(seen.allSatisfy { $0 == 1 })  // each example exactly once per epoch
                    #expect(batchCount == sampler.batchesPerEpoch)
                    #expect(position == SamplePosition(epoch: epoch + 1, samplesConsumed: 0))
                }
            }
        }
    }

    @Test func aTinyLastBatchLeavesSomeRanksEmpty() {
        let sampler = Sampler(exampleCount: 19, globalBatchSize: 8, seed: 7)
        let last = SamplePosition(epoch: 0, samplesConsumed: 16)
        let batches = (0..<8).map { sampler.rankBatch(at: last, rank: $0, worldSize: 8, microBatchSize: 2) }
        #expect(batches.map(\.shard.count) == [1, 1, 1, 0, 0, 0, 0, 0])
        #expect(batches[5].microBatches.isEmpty)
        #expect(batches.allSatisfy { $0.globalRange == 16..<19 })
    }

    @Test func ordersDependOnSeedAndEpochOnly() {
        let a = Sampler(exampleCount: 1000, globalBatchSize: 32, seed: 42)
        let b = Sampler(exampleCount: 1000, globalBatchSize: 8, seed: 42)  // batch size does not change the order
        let c = Sampler(exampleCount: 1000, globalBatchSize: 32, seed: 43)
        #expect(a.order(epoch: 0) == b.order(epoch: 0))
        #expect(a.order(epoch: 3) == a.order(epoch: 3))
        #expect(a.order(epoch: 0) != a.order(epoch: 1))
        #expect(a.order(epoch: 0) != c.order(epoch: 0))
        #expect(a.order(epoch: 0) != (0..<1000).map { Int32($0) })
    }

    @Test func orderMatchesDocumentedAlgorithmAndHuggingFaceLengthGrouping() throws {
        // The fixture holds the order computed by a Python re-implementation of the documented
        // generator, and HF's get_length_grouped_indices applied to that order.
        let data = try Data(contentsOf: fixturesDirectory.appendingPathComponent("tokenizer_golden.json"))
        let object = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        let fixture = object["sampler"] as! [String: Any]
        let lengths = (fixture["lengths"] as! [NSNumber]).map { $0.int32Value }
        let batchSize = (fixture["global_batch_size"] as! NSNumber).intValue
        let seed = (fixture["seed"] as! NSNumber).uint64Value
        let plain = Sampler(exampleCount: lengths.count, globalBatchSize: batchSize, seed: seed)
        let grouped = Sampler(exampleCount: lengths.count, globalBatchSize: batchSize, seed: seed, groupByLength: lengths)
        for entry in fixture["epochs"] as! [[String: Any]] {
            let epoch = (entry["epoch"] as! NSNumber).intValue
            #expect(plain.order(epoch: epoch) == (entry["order"] as! [NSNumber]).map { $0.int32Value })
            #expect(grouped.order(epoch: epoch) == (entry["grouped_order"] as! [NSNumber]).map { $0.int32Value })
        }
    }

    @Test func resumeContinuesExactly() {
        let sampler = Sampler(exampleCount: 103, globalBatchSize: 10, seed: 5)
        // Walk 40 steps (almost 4 epochs), remembering every batch.
        var position = SamplePosition(epoch: 0, samplesConsumed: 0)
        var batches: [[Int32]] = []
        for step in 0..<40 {
            #expect(sampler.position(ofStep: step) == position)
            batches.append(Array(sampler.order(epoch: position.epoch)[sampler.globalBatchRange(at: position)]))
            position = sampler.position(after: position)
        }
        // A "resumed" run: a new sampler, starting from the saved position of step 23.
        let resumed = Sampler(exampleCount: 103, globalBatchSize: 10, seed: 5)
        var resumedPosition = resumed.position(ofStep: 23)
        #expect(resumedPosition == SamplePosition(epoch: 2, samplesConsumed: 10))
        for step in 23..<40 {
            #expect(Array(resumed.order(epoch: resumedPosition.epoch)[resumed.globalBatchRange(at: resumedPosition)]) == batches[step])
            resumedPosition = resumed.position(after: resumedPosition)
        }
    }

    @Test func evaluationShardsCountEveryExampleOnce() {
        for count in [0, 1, 3, 7, 8, 9, 100, 7600] {
            for worldSize in 1...9 {
                let shards = (0..<worldSize).map { shardRange(count: count, rank: $0, worldSize: worldSize) }
                #expect(shards.flatMap { Array($0) } == Array(0..<count), "count \(count) world \(worldSize)")
                #expect(shards.map(\.count).max()! - shards.map(\.count).min()! <= 1)
                if count < worldSize {
                    #expect(shards.filter(\.isEmpty).count == worldSize - count)
                }
            }
        }
    }

    @Test func splitMixMatchesItsReferenceOutputs() {
        // The commonly published first outputs of SplitMix64 seeded with 1234567.
        var generator = SplitMix64(seed: 1_234_567)
        #expect(generator.next() == 6_457_827_717_110_365_317)
        #expect(generator.next() == 3_203_168_211_198_807_973)
        #expect(generator.next() == 9_817_491_932_198_370_423)
        var bounded = SplitMix64(seed: 9)
        for bound in [1, 2, 3, 7, 1000, 1 << 40] as [UInt64] {
            #expect(bounded.next(below: bound) < bound)
        }
    }
}

@Suite struct PaddedBatchTests {
    @Test func matchesHuggingFaceDataCollatorWithPadding() throws {
        let data = try Data(contentsOf: fixturesDirectory.appendingPathComponent("tokenizer_golden.json"))
        let object = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        let fixture = object["padded_batch"] as! [String: Any]
        let texts = GoldenCorpus.shared.texts
        let indices = (fixture["text_indices"] as! [NSNumber]).map(\.intValue)
        let maxLength = (fixture["max_length"] as! NSNumber).intValue
        let tokenizer = try loadTokenizer("minilm-uncased")
        let sequences = indices.map { tokenizer.encode(texts[$0], maxLength: maxLength) }
        let batch = PaddedBatch(sequences: sequences, labels: [0, 1, 2, 3, 0], paddingTokenId: tokenizer.paddingTokenId,
                                maxLength: maxLength)
        func flat(_ key: String) -> [Int32] { (fixture[key] as! [[NSNumber]]).flatMap { $0.map(\.int32Value) } }
        #expect(batch.inputIds == flat("input_ids"))
        #expect(batch.attentionMask == flat("attention_mask"))
        #expect(batch.tokenTypeIds == flat("token_type_ids"))
        #expect(batch.batchSize == 5 && batch.sequenceLength == (fixture["input_ids"] as! [[NSNumber]])[0].count)
        #expect(batch.realTokenCount == Int(flat("attention_mask").reduce(0, +)))
        #expect(batch.paddingTokenCount == batch.batchSize * batch.sequenceLength - batch.realTokenCount)
    }
}
