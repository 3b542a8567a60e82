import Foundation
import Testing

@testable import Data

/// The token-balanced split of a global batch: a partition of the batch in batch order, no idle
/// rank, the activation budget kept, the same on every rank, and more even than the example split.
@Suite struct BalancedSplitTests {
    /// Lengths of `count` examples: AG News-like (24-128 tokens), all equal, one long among short
    /// ones, a few very long among many short ones, and with empty sequences.
    static func lengths(_ shape: Int, count: Int, seed: UInt64) -> [Int] {
        var generator = SplitMix64(seed: seed)
        return (0..<count).map { index in
            switch shape {
            case 0: return 24 + Int(generator.next(below: 105))
            case 1: return 50
            case 2: return index == count / 2 ? 512 : 3 + Int(generator.next(below: 5))
            case 3: return generator.next(below: 8) == 0 ? 400 + Int(generator.next(below: 112)) : 2 + Int(generator.next(below: 30))
            default: return Int(generator.next(below: 3))
            }
        }
    }

    static let cost = SequenceCost(hiddenSize: 384)

    /// Each rank's (tokens, cost) under the example split.
    static func exampleSplit(_ lengths: [Int], worldSize: Int) -> [(tokens: Int, cost: Int)] {
        (0..<worldSize).map { rank in
            let shard = shardRange(count: lengths.count, rank: rank, worldSize: worldSize)
            return (shard.reduce(0) { $0 + lengths[$1] }, shard.reduce(0) { $0 + cost(lengths[$1]) })
        }
    }

    @Test func everyExampleOnceInBatchOrderNoIdleRankAndTheBudgetKept() {
        var split: [Int: BalancedSplit] = [:]
        for worldSize in 1...9 {
            split[worldSize] = BalancedSplit(worldSize: worldSize, cost: Self.cost)
        }
        for shape in 0..<5 {
            for count in [1, 2, 3, 5, 8, 9, 16, 31, 32, 70] {
                let lengths = Self.lengths(shape, count: count, seed: UInt64(100 * shape + count))
                let start = 1000 + count  // positions in the epoch order
                let longest = lengths.max()!
                for worldSize in 1...9 {
                    let what = "shape \(shape), \(count) examples, \(worldSize) ranks"
                    split[worldSize]!.split(start..<(start + count)) { lengths[$0 - start] }
                    let result = split[worldSize]!
                    var covered: [Int] = []
                    for rank in 0..<worldSize {
                        let slots = Array(result.slots(ofRank: rank))
                        #expect(slots == slots.sorted(), "\(what): rank \(rank) in batch order")
                        covered += slots
                        #expect(result.rankTokens[rank] == slots.reduce(0) { $0 + lengths[$1 - start] }, "\(what): tokens")
                        #expect(result.rankCosts[rank] == slots.reduce(0) { $0 + Self.cost(lengths[$1 - start]) }, "\(what): costs")
                        // The activation memory reserved: ceil(count / ranks) sequences of the longest length.
                        #expect(result.rankTokens[rank] <= (count + worldSize - 1) / worldSize * longest, "\(what): budget")
                        if count >= worldSize { #expect(!slots.isEmpty, "\(what): rank \(rank) has no example") }
                    }
                    #expect(covered.sorted() == Array(start..<(start + count)), "\(what): each example once")
                    if count < worldSize {
                        #expect((0..<worldSize).filter { !result.slots(ofRank: $0).isEmpty }.count == count, "\(what): one each")
                    }
                    if worldSize == 1 { #expect(Array(result.slots) == Array(start..<(start + count)), "one rank takes the batch as it is") }
                    // Every rank computes the same split: a fresh one, and one that split other batches before.
                    var fresh = BalancedSplit(worldSize: worldSize, cost: Self.cost)
                    fresh.split(start..<(start + count)) { lengths[$0 - start] }
                    #expect(fresh.slots == result.slots && fresh.rankStarts == result.rankStarts, "\(what): deterministic")
                    // Never worse than the example split.
                    let examples = Self.exampleSplit(lengths, worldSize: worldSize)
                    #expect(result.rankCosts.max()! <= examples.map(\.cost).max()!, "\(what): worse than the example split")
                }
            }
        }
    }

    @Test func moreEvenThanTheExampleSplitOnRealisticBatches() {
        // AG News-like lengths: the busiest rank's cost above the mean, median over 200 batches.
        for (batch, worldSize) in [(8, 2), (32, 2), (32, 4), (64, 8)] {
            var split = BalancedSplit(worldSize: worldSize, cost: Self.cost)
            var balanced: [Double] = [], byExamples: [Double] = []
            for seed in 0..<200 {
                let lengths = Self.lengths(0, count: batch, seed: UInt64(seed))
                split.split(0..<batch) { lengths[$0] }
                let mean = Double(split.rankCosts.reduce(0, +)) / Double(worldSize)
                balanced.append(Double(split.rankCosts.max()!) / mean - 1)
                byExamples.append(Double(Self.exampleSplit(lengths, worldSize: worldSize).map(\.cost).max()!) / mean - 1)
                // Longest processing time first: at most one example's cost above the mean.
                #expect(Double(split.rankCosts.max()!) <= mean + Double(Self.cost(lengths.max()!)))
            }
            let median = { (values: [Double]) in values.sorted()[values.count / 2] }
            print(String(format: "batch %d over %d ranks: busiest rank's cost above the mean, median %.4f (example split %.4f)",
                         batch, worldSize, median(balanced), median(byExamples)))
            #expect(median(balanced) < median(byExamples) / 4)
        }
    }
}
