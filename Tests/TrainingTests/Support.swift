import Distributed
import Data
import Foundation
import Model
import Testing
@testable import Training

let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
/// The tiny random BERT of the model parity tests (2 layers, hidden 32, vocab 99).
let tinyModel = repositoryRoot.appendingPathComponent("Tests/ModelTests/Fixtures/tiny_bert")

func temporaryDirectory(_ name: String = "training") -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)")
    try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// A learnable synthetic task on the tiny vocabulary: the words of a class-k example come from
/// the k-th quarter of the vocabulary, with some shared noise words.
func syntheticExamples(count: Int, seed: UInt64) -> InMemoryExamples {
    var state = seed
    func next(_ bound: Int) -> Int {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Int((state >> 33) % UInt64(bound))
    }
    var sequences: [[Int32]] = [], labels: [Int32] = []
    for _ in 0..<count {
        let length = 3 + next(18)
        let label = next(4)
        var ids: [Int32] = [2]
        for _ in 0..<(length - 2) { ids.append(Int32(next(3) == 0 ? 5 + next(94) : 5 + 23 * label + next(23))) }
        ids.append(3)
        sequences.append(ids)
        labels.append(Int32(label))
    }
    return InMemoryExamples(sequences: sequences, labels: labels)
}

func tinyModelFiles() throws -> ModelFiles {
    ModelFiles(config: try JSONValue.readObject(tinyModel.appendingPathComponent("config.json"))!,
               vocabulary: (0..<99).map { "[unused\($0)]" },
               tokenizerConfig: ["do_lower_case": .bool(true), "tokenizer_class": .string("BertTokenizer")])
}

func syntheticData(train: Int = 64, eval: Int = 0) throws -> PreparedData {
    PreparedData(train: syntheticExamples(count: train, seed: 1), eval: eval > 0 ? syntheticExamples(count: eval, seed: 2) : nil,
                 labels: DataPreset.agNews.labelSet, trainFingerprint: "synthetic-\(train)", modelFiles: try tinyModelFiles())
}

func tinyOptions(output: URL) -> TrainingOptions {
    var options = TrainingOptions(modelDirectory: tinyModel, trainFile: URL(fileURLWithPath: "/synthetic"), evalFile: nil, outputDirectory: output)
    options.globalBatchSize = 8
    options.maxSteps = 6
    options.learningRate = 1e-3
    options.dropout = 0.1
    options.weightDecay = 0.01
    options.warmupRatio = 0.2
    options.logEvery = 1000
    return options
}

/// Runs training on `ranks` in-process ranks; returns rank 0's summary.
@discardableResult
func train(_ options: TrainingOptions, ranks: Int, data: PreparedData, stopAfterFirstStep: Bool = false) throws -> RunSummary {
    let results = try InProcessGroup.run(worldSize: ranks) { communicator in
        try TrainingRun(options: options, runtime: Runtime(), communicator: communicator, data: data, log: { _ in },
                        stopRequested: { stopAfterFirstStep && communicator.rank == ranks - 1 }).run()
    }
    return results[0]
}

func finalWeights(_ output: URL, step: Int) throws -> [String: [Float]] {
    let file = try SafeTensorsFile(url: output.appendingPathComponent("checkpoint-\(step)/model.safetensors"))
    var weights: [String: [Float]] = [:]
    for name in file.records.keys { weights[name] = try file.floats(name) }
    return weights
}

/// Largest |a - b| / max|b| over all tensors.
func largestRelativeDifference(_ a: [String: [Float]], _ b: [String: [Float]]) -> Float {
    var worst: Float = 0
    for (name, expected) in b {
        let actual = a[name]!
        let scale = max(expected.map(abs).max() ?? 0, 1e-6)
        let diff = zip(actual, expected).map { abs($0 - $1) }.max() ?? 0
        worst = max(worst, diff / scale)
    }
    return worst
}
