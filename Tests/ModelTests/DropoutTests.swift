import Foundation
import Testing
@testable import Model

/// Dropout: masks depend only on (seed, step, sample, layer, site, element), so splitting a batch
/// into micro-batches or reordering it changes nothing; and backward is the derivative of the
/// forward that was actually computed.
@Suite struct DropoutTests {
    @Test func microBatchesAndOrderDoNotChangeTheGradient() throws {
        let (model, batch) = try tinyModel(dropout: 0.3)
        try expectMicroBatchesGiveTheSameGradient(model, batch, parts: [[2], [1, 0]], "tiny BERT")   // other grouping and order
    }

    @Test(arguments: [Float(0), 0.2])
    func backwardIsTheDerivativeOfTheDroppedOutForward(probability: Float) throws {
        let (model, batch) = try tinyModel(dropout: probability)
        try expectBackwardIsTheDerivative(model, batch, context: DropoutContext(seed: 3, step: 1), "dropout \(probability)")
    }

    @Test func maskDropsTheRequestedFraction() {
        var values = [Float](repeating: 1, count: 200_000)
        values.withUnsafeMutableBufferPointer {
            applyDropout($0.baseAddress!, count: $0.count, key: 12345, probability: 0.1)
        }
        let dropped = values.filter { $0 == 0 }.count
        #expect(abs(Double(dropped) / 200_000 - 0.1) < 0.005)
        #expect(values.allSatisfy { $0 == 0 || abs($0 - 1 / 0.9) < 1e-6 })
    }
}
