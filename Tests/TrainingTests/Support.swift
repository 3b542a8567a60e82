import Distributed
import Data
import Foundation
import Model
import Options
import Testing
@testable import Training
import TestSupport

let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
/// The tiny random BERT of the model parity tests (2 layers, hidden 32, vocab 99).
let tinyModel = repositoryRoot.appendingPathComponent("Tests/ModelTests/Fixtures/tiny_bert")

func temporaryDirectory(_ name: String = "training") -> URL { try! makeTemporaryDirectory(name) }

/// A learnable synthetic task on the tiny vocabulary: the words of a class-k example come from
/// the k-th quarter of the vocabulary, with some shared noise words (the AG News label names).
func syntheticExamples(count: Int, seed: UInt64) -> TokenizedDataset {
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
    return TokenizedDataset.fromTokens(sequences, labels: labels, labelSet: DataPreset.agNews.labelSet, maxLength: 64)
}

func tinyModelFiles() throws -> ModelFiles {
    ModelFiles(config: try JSONValue.readFieldsIfPresent(tinyModel.appendingPathComponent("config.json"))!,
               vocabulary: (0..<99).map { "[unused\($0)]" },
               tokenizerConfig: ["do_lower_case": .bool(true), "tokenizer_class": .string("BertTokenizer")])
}

/// What rank 0 reads for a run (the other ranks receive it): training and eval examples, and
/// the model files checkpoints carry.
struct TrainingData {
    var train: TokenizedDataset
    var eval: TokenizedDataset?
    var files: ModelFiles
}

func syntheticData(train: Int = 64, eval: Int = 0) throws -> TrainingData {
    TrainingData(train: syntheticExamples(count: train, seed: 1), eval: eval > 0 ? syntheticExamples(count: eval, seed: 2) : nil,
                 files: try tinyModelFiles())
}

/// The tiny model, 6 steps of 8: train's own parsing and defaults, and these options.
func tinyOptions(output: URL, _ more: [String] = []) -> TrainingOptions {
    try! TrainingOptions.parse(["--model", tinyModel.path, "--train", "/synthetic", "--output", output.path,
                                "--batch-size", "8", "--max-steps", "6", "--lr", "1e-3", "--dropout", "0.1",
                                "--weight-decay", "0.01", "--warmup-ratio", "0.2", "--log-every", "1000"] + more)
}

/// One rank's setup for training on `data`, as `bert-dist train` makes it (rank 0 has the data;
/// the other ranks receive it).
func trainingSetup(_ options: TrainingOptions, runtime: Runtime = Runtime(), communicator: any Communicator, data: TrainingData) throws -> RunSetup {
    try RunSetup.forTraining(options, compute: runtime.makeCompute(), communicator: communicator) { _ in
        (data.train, data.eval, data.files)
    }
}

/// One rank's training run of `options` on `data`.
func trainingRun(_ options: TrainingOptions, runtime: Runtime = Runtime(), communicator: any Communicator, data: TrainingData,
                 log: @escaping (String) -> Void = { _ in }, stopRequested: @escaping () -> Bool = { false }) throws -> TrainingRun {
    try TrainingRun(options: options, runtime: runtime, communicator: communicator,
                setup: try trainingSetup(options, runtime: runtime, communicator: communicator, data: data), log: log, stopRequested: stopRequested)
}

/// Trains on `ranks` in-process ranks and returns what rank 0 logged. Before it writes a
/// checkpoint (the last step's at least), the run compares every rank's replica with rank 0's bit
/// for bit (parameters, and the Adam moments unless sharded) and logs the ranks that differed:
/// `replicasDiffered(log)` tells. `settings`: the loop's choices that are not options.
func trainLoggingRankZero(_ options: TrainingOptions, ranks: Int, data: TrainingData, runtime: Runtime = Runtime(),
                          settings: TrainingRun.Settings = .init()) throws -> [String] {
    try InProcessGroupRun.collectingLog(ranks: ranks) { communicator, log in
        let run = try trainingRun(options, runtime: runtime, communicator: communicator, data: data, log: log)
        run.settings = settings
        return try run.run().stepsDone
    }.log
}

func replicasDiffered(_ log: [String]) -> Bool { log.contains { $0.contains("had drifted from rank 0") } }

/// Runs training on `ranks` in-process ranks; returns rank 0's summary.
@discardableResult
func train(_ options: TrainingOptions, ranks: Int, data: TrainingData, stopAfterFirstStep: Bool = false,
           runtime: Runtime = Runtime()) throws -> RunSummary {
    let results = try InProcessGroup.run(worldSize: ranks) { communicator in
        try trainingRun(options, runtime: runtime, communicator: communicator, data: data,
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

/// Passes every call to `inner`; test communicators change some of them.
class ForwardingCommunicator: Communicator, @unchecked Sendable {
    let inner: any Communicator

    init(_ inner: any Communicator) { self.inner = inner }

    var rank: Int { inner.rank }
    var worldSize: Int { inner.worldSize }
    func barrier() throws { try inner.barrier() }
    func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws { try inner.broadcast(bytes, root: root) }
    func allGather(_ contribution: UnsafeRawBufferPointer, into result: UnsafeMutableRawBufferPointer) throws {
        try inner.allGather(contribution, into: result)
    }
    func startSend(bytes: UnsafeRawBufferPointer, to destination: Int, tag: Int) throws -> TransferRequest {
        try inner.startSend(bytes: bytes, to: destination, tag: tag)
    }
    func startReceive(bytes: UnsafeMutableRawBufferPointer, from source: Int, tag: Int) throws -> TransferRequest {
        try inner.startReceive(bytes: bytes, from: source, tag: tag)
    }
    func testAll(_ requests: UnsafeMutableBufferPointer<TransferRequest>) throws -> Bool { try inner.testAll(requests) }
    func waitAll(_ requests: UnsafeMutableBufferPointer<TransferRequest>) throws { try inner.waitAll(requests) }
    func setBackgroundProgress(_ active: Bool) { inner.setBackgroundProgress(active) }
    func abort(message: String) -> Never { inner.abort(message: message) }
}
