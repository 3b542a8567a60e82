import Data
import Distributed
import Foundation
import Model
import Options
import Testing
@testable import Training

/// Text pairs through the training path: examples with second segments become packed batches
/// with token types 1 (checked against PyTorch's logits for the same pairs), travel from rank 0
/// to the others intact, and train the same model on any number of ranks.
@Suite(.serialized) struct PairTrainingTests {
    /// The pairs of tools/make_model_fixtures.py (tiny_pairs_reference.safetensors) as a dataset:
    /// [CLS] A [SEP] B [SEP], the second segment starting after the first [SEP].
    static func fixturePairs() throws -> (dataset: TokenizedDataset, reference: SafeTensorsFile) {
        let reference = try SafeTensorsFile(url: repositoryRoot.appendingPathComponent("Tests/ModelTests/Fixtures/tiny_pairs_reference.safetensors"))
        let ids = try reference.integers("input_ids"), mask = try reference.integers("attention_mask")
        let columns = try reference.record("input_ids").shape[1]
        var sequences: [[Int32]] = [], starts: [Int] = []
        for row in 0..<(ids.count / columns) {
            let length = (0..<columns).filter { mask[row * columns + $0] == 1 }.count
            let sequence = (0..<length).map { Int32(ids[row * columns + $0]) }
            sequences.append(sequence)
            starts.append(sequence.firstIndex(of: 3)! + 1)
        }
        let labels = try reference.integers("labels").map { Int32($0) }
        let dataset = TokenizedDataset.fromTokens(sequences, secondSegmentStarts: starts, labels: labels,
                                                  labelSet: try LabelSet(names: ["a", "b\nwith a line break", "c", "d"], origin: "test"),
                                                  maxLength: 64)
        return (dataset, reference)
    }

    @Test func packedPairsCarryPyTorchsTokenTypesAndLogits() throws {
        let (dataset, reference) = try Self.fixturePairs()
        var batch = PackedBatch()
        for index in 0..<dataset.count { batch.append(dataset, index: index) }
        let types = try reference.integers("token_type_ids"), mask = try reference.integers("attention_mask")
        #expect(batch.tokenTypeIds == zip(types, mask).filter { $0.1 == 1 }.map { Int32($0.0) })
        #expect(batch.tokenTypeIds.contains(1))

        let (model, _) = try BertForSequenceClassification.load(modelDirectory: tinyModel, labelCount: nil, seed: 0, compute: Compute(threads: 1))
        let table = "bert.embeddings.token_type_embeddings.weight"
        try reference.copyFloats(table, into: model.parameters[model.layout[table].range])
        try model.forward(batch, dropout: nil)
        let expected = try reference.floats("logits")
        let largest = zip(model.logits, expected).map { abs($0 - $1) }.max()!
        #expect(largest <= 1e-5 * expected.map(abs).max()!, "logits differ from PyTorch's by \(largest)")
    }

    @Test func rankZerosPairsReachEveryRankIntact() throws {
        let (dataset, _) = try Self.fixturePairs()
        let received = try InProcessGroup.run(worldSize: 3) { communicator in
            let shared = try shareExamples(communicator.rank == 0 ? dataset : nil, communicator: communicator)
            return (0..<shared.count).map { (Array(shared.tokens(at: $0)), shared.secondSegmentStart(at: $0), shared.label(at: $0)) }
                .map { "\($0.0) \($0.1) \($0.2)" } + shared.labelSet.names
        }
        let expected = (0..<dataset.count).map { "\(Array(dataset.tokens(at: $0))) \(dataset.secondSegmentStart(at: $0)) \(dataset.label(at: $0))" }
            + dataset.labelSet.names
        #expect(received.allSatisfy { $0 == expected })
        #expect(expected.contains("b\nwith a line break"))
    }

    /// Synthetic pairs: the label says whether A and B draw their words from the same quarter of
    /// the vocabulary. `typed` false: the same ids as single texts (token types all 0).
    static func pairExamples(count: Int, typed: Bool, labels labelSet: LabelSet) -> TokenizedDataset {
        var state: UInt64 = 7
        func next(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
        var sequences: [[Int32]] = [], starts: [Int] = [], labels: [Int32] = []
        for _ in 0..<count {
            let first = next(4), same = next(2) == 0
            let second = same ? first : (first + 1 + next(3)) % 4
            let a = (0..<(1 + next(8))).map { _ in Int32(5 + 23 * first + next(23)) }
            let b = (0..<(1 + next(8))).map { _ in Int32(5 + 23 * second + next(23)) }
            sequences.append([2] + a + [3] + b + [3])
            starts.append(a.count + 2)
            labels.append(same ? 1 : 0)
        }
        return TokenizedDataset.fromTokens(sequences, secondSegmentStarts: typed ? starts : nil, labels: labels, labelSet: labelSet, maxLength: 64)
    }

    @Test func pairsTrainTheSameModelOnAnyRankCountAndTheirTypesMatter() throws {
        let labels = try LabelSet(names: ["different", "same"], origin: "test")
        func data(typed: Bool) throws -> TrainingData {
            TrainingData(train: Self.pairExamples(count: 64, typed: typed, labels: labels), eval: nil, files: try tinyModelFiles())
        }
        // The tiny model's head has 4 labels.
        let options = tinyOptions(output: temporaryDirectory(), ["--ignore-mismatched-sizes"])
        try train(options, ranks: 1, data: try data(typed: true))
        let expected = try finalWeights(options.checkpoints.folder, step: 6)
        for (ranks, micro, sharded) in [(2, nil, false), (3, 1, true)] as [(Int, Int?, Bool)] {
            var other = options
            other.checkpoints.folder = temporaryDirectory()
            other.parallel.microBatchSize = micro
            other.parallel.shardOptimizer = sharded
            try train(other, ranks: ranks, data: try data(typed: true))
            let difference = largestRelativeDifference(try finalWeights(other.checkpoints.folder, step: 6), expected)
            #expect(difference < 1e-5, "ranks \(ranks), micro-batch \(String(describing: micro)), sharded \(sharded): \(difference)")
        }
        var untyped = options
        untyped.checkpoints.folder = temporaryDirectory()
        try train(untyped, ranks: 1, data: try data(typed: false))
        let typeTable = "bert.embeddings.token_type_embeddings.weight"
        let withoutTypes = try finalWeights(untyped.checkpoints.folder, step: 6)
        #expect(withoutTypes[typeTable] != expected[typeTable], "row 1 of the token type table trains only on second segments")
    }
}
