import Foundation
import Testing
@testable import Model

/// AdamW applied in pieces (a trainer updates each gradient bucket as its sum arrives) equals the
/// whole update at the end bit for bit: every element's arithmetic is the same whatever the
/// pieces, their order, the kernels' instruction set or the team's size.
@Suite struct OptimizerPiecesTests {
    /// The tiny BERT's layout (tensors with and without weight decay, alignment gaps), filled
    /// with values of every sign and scale.
    func arenas(_ layout: ParameterLayout, seed: UInt64) -> (parameters: FloatArena, gradients: FloatArena) {
        var state = seed
        func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state >> 11) % 2_000_001 - 1_000_000) / 1e6
        }
        let parameters = FloatArena(count: layout.totalCount), gradients = FloatArena(count: layout.totalCount)
        for i in 0..<layout.totalCount {
            parameters.base[i] = next()
            gradients.base[i] = next() * (i % 7 == 0 ? 1e-3 : 1)
        }
        return (parameters, gradients)
    }

    /// Random cuts of `range` into pieces of 1 to `largest` floats, shuffled.
    func pieces(of range: Range<Int>, largest: Int, seed: UInt64) -> [Range<Int>] {
        var state = seed
        func below(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
        var cuts: [Range<Int>] = [], start = range.lowerBound
        while start < range.upperBound {
            let end = min(range.upperBound, start + 1 + below(largest))
            cuts.append(start..<end)
            start = end
        }
        for i in stride(from: cuts.count - 1, to: 0, by: -1) { cuts.swapAt(i, below(i + 1)) }
        return cuts
    }

    /// The tiny BERT with a vocabulary of 5000: an arena of ~200k floats, large enough for a
    /// team of 2 to split its pieces.
    func layout() throws -> ParameterLayout {
        var config = try BertConfig.load(modelDirectory: fixtures.appendingPathComponent("tiny_bert"))
        config.vocabSize = 5000
        return ParameterLayout(config: config, labelCount: 4)
    }

    @Test(arguments: [OptimizerKind.adamw, .adam])
    func updatesInPiecesEqualTheWholeUpdate(kind: OptimizerKind) throws {
        let layout = try layout()
        let hyperparameters = AdamHyperparameters(kind: kind, weightDecay: 0.01)
        let scales: [Float] = [1, 0.37, 1]  // clipping in the second step
        for isa in InstructionSet.allCases where isa.isSupported {
            // The reference: three whole steps on one thread.
            let (referenceParameters, gradients) = arenas(layout, seed: 1)
            let reference = AdamOptimizer(hyperparameters: hyperparameters, layout: layout, range: 0..<layout.totalCount,
                                          compute: Compute(threads: 1, instructionSet: isa))
            for scale in scales {
                reference.step(parameters: referenceParameters, gradients: gradients, learningRate: 1e-3, gradientScale: scale)
            }
            for threads in [1, 2] {
                for (trial, largest) in [5, 4096, 1_000_000].enumerated() {
                    let (parameters, _) = arenas(layout, seed: 1)
                    let optimizer = AdamOptimizer(hyperparameters: hyperparameters, layout: layout, range: 0..<layout.totalCount,
                                                  compute: Compute(threads: threads, instructionSet: isa))
                    for (step, scale) in scales.enumerated() {
                        let update = optimizer.beginStep(learningRate: 1e-3, gradientScale: scale)
                        for piece in pieces(of: 0..<layout.totalCount, largest: largest, seed: UInt64(100 * trial + step)) {
                            optimizer.apply(update, to: piece, parameters: parameters, gradients: gradients)
                        }
                    }
                    let what = "\(isa.rawValue), \(threads) thread(s), pieces of up to \(largest)"
                    #expect(optimizer.stepCount == reference.stepCount)
                    #expect(Array(parameters.buffer).map(\.bitPattern) == Array(referenceParameters.buffer).map(\.bitPattern), "\(what): parameters")
                    #expect(Array(optimizer.m.buffer).map(\.bitPattern) == Array(reference.m.buffer).map(\.bitPattern), "\(what): m")
                    #expect(Array(optimizer.v.buffer).map(\.bitPattern) == Array(reference.v.buffer).map(\.bitPattern), "\(what): v")
                }
            }
        }
    }

    @Test func aShardUpdatesOnlyItsRangeAndAgreesWithTheWholeArena() throws {
        // ZeRO-1: an optimizer for part of the arena, applied to pieces that stick out of it.
        let layout = try layout()
        let hyperparameters = AdamHyperparameters(kind: .adamw, weightDecay: 0.01)
        let (whole, gradients) = arenas(layout, seed: 3)
        let (sharded, _) = arenas(layout, seed: 3)
        let before = Array(sharded.buffer)
        let shard = (layout.totalCount / 3)..<(2 * layout.totalCount / 3)
        let all = AdamOptimizer(hyperparameters: hyperparameters, layout: layout, range: 0..<layout.totalCount, compute: Compute(threads: 1))
        let part = AdamOptimizer(hyperparameters: hyperparameters, layout: layout, range: shard, compute: Compute(threads: 2))
        all.step(parameters: whole, gradients: gradients, learningRate: 2e-3, gradientScale: 0.5)
        let update = part.beginStep(learningRate: 2e-3, gradientScale: 0.5)
        for piece in pieces(of: 0..<layout.totalCount, largest: 50_000, seed: 9) {
            part.apply(update, to: piece, parameters: sharded, gradients: gradients)
        }
        for i in 0..<layout.totalCount {
            let expected = shard.contains(i) ? whole.base[i] : before[i]
            if sharded.base[i].bitPattern != expected.bitPattern {
                Issue.record("element \(i): \(sharded.base[i]) != \(expected)")
                return
            }
        }
    }
}
