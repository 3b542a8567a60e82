import Data
import Foundation
import Model
import Storage
import Options
import Testing
@testable import Training

/// Checkpoints: complete folders, resume equal to an uninterrupted run on any rank count and
/// with sharding switched, fallback past damaged checkpoints, stop on a signal.
@Suite(.serialized) struct CheckpointTests {
    func runToCompletion(ranks: Int, sharded: Bool, output: URL) throws -> [String: [Float]] {
        var options = tinyOptions(output: output, ["--checkpoint-every", "2", "--keep-checkpoints", "10"])
        options.parallel.shardOptimizer = sharded
        try train(options, ranks: ranks, data: try syntheticData())
        return try finalWeights(output, step: 6)
    }

    @Test func folderHoldsWhatSpecSays() throws {
        let output = temporaryDirectory()
        _ = try runToCompletion(ranks: 2, sharded: true, output: output)
        let folder = output.appendingPathComponent("checkpoint-6")
        let names = Set(try FileManager.default.contentsOfDirectory(atPath: folder.path))
        #expect(names == ["model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json", "trainer_state.pb", "training_args.json",
                          "optimizer-00000-of-00002.safetensors", "optimizer-00001-of-00002.safetensors"])
        let state = try CheckpointFolder.verify(folder)
        #expect(state.step == 6 && state.worldSize == 2 && state.shardOptimizer && state.files.count == 7)
        #expect(try String(contentsOf: output.appendingPathComponent("latest"), encoding: .utf8) == "checkpoint-6\n")
        let config = try JSONValue.readFieldsIfPresent(folder.appendingPathComponent("config.json"))!
        #expect(config["architectures"] == .array([.string("BertForSequenceClassification")]))
        #expect(config["num_labels"] == .number(4))
        #expect(config["id2label"] == JSONValue(object: ["0": .string("World"), "1": .string("Sports"), "2": .string("Business"), "3": .string("Sci/Tech")]))
        // Names are Hugging Face's.
        let weights = try SafeTensorsFile(url: folder.appendingPathComponent("model.safetensors"))
        #expect(weights.records["bert.embeddings.word_embeddings.weight"]?.shape == [99, 32])
        #expect(weights.records["classifier.weight"]?.shape == [4, 32])
    }

    @Test(arguments: [(4, false, 2, false), (4, false, 2, true), (2, true, 3, false), (1, false, 1, false)])
    func resumeOnOtherRanksEqualsUninterrupted(firstRanks: Int, firstSharded: Bool, resumeRanks: Int, resumeSharded: Bool) throws {
        let uninterrupted = try runToCompletion(ranks: firstRanks, sharded: firstSharded, output: temporaryDirectory())
        // A run that died after step 2: only checkpoint-2 survives.
        let output = temporaryDirectory()
        _ = try runToCompletion(ranks: firstRanks, sharded: firstSharded, output: output)
        for step in [4, 6] { try FileManager.default.removeItem(at: output.appendingPathComponent("checkpoint-\(step)")) }
        var options = tinyOptions(output: output, ["--resume", "--checkpoint-every", "2"])
        options.parallel.shardOptimizer = resumeSharded
        try train(options, ranks: resumeRanks, data: try syntheticData())
        let difference = largestRelativeDifference(try finalWeights(output, step: 6), uninterrupted)
        print("resume \(firstRanks)\(firstSharded ? "s" : "") -> \(resumeRanks)\(resumeSharded ? "s" : ""): \(difference)")
        #expect(difference < 1e-5)
    }

    @Test func damagedNewestCheckpointFallsBackToThePreviousOne() throws {
        let reference = try runToCompletion(ranks: 2, sharded: true, output: temporaryDirectory())
        // Any one file of the newest checkpoint corrupted (a flipped byte), truncated or missing.
        let files = ["config.json", "model.safetensors", "optimizer-00000-of-00002.safetensors",
                     "optimizer-00001-of-00002.safetensors", "tokenizer_config.json", "trainer_state.pb", "training_args.json", "vocab.txt"]
        var damages: [(String, (URL) throws -> Void)] = files.map { name in
            ("flipped byte in \(name)", { url in
                let file = url.appendingPathComponent(name)
                var bytes = try Data(contentsOf: file)
                bytes[bytes.count / 2] ^= 0x40
                try bytes.write(to: file)
            })
        }
        damages += [
            ("no trainer_state", { try FileManager.default.removeItem(at: $0.appendingPathComponent("trainer_state.pb")) }),
            ("truncated shard", { url in
                let file = url.appendingPathComponent("optimizer-00001-of-00002.safetensors")
                let bytes = try Data(contentsOf: file)
                try bytes.prefix(bytes.count - 100).write(to: file)
            }),
            ("missing shard", { try FileManager.default.removeItem(at: $0.appendingPathComponent("optimizer-00000-of-00002.safetensors")) }),
            ("garbage trainer_state", { try Data([1, 2, 3]).write(to: $0.appendingPathComponent("trainer_state.pb")) }),
        ]
        for (what, damage) in damages {
            let output = temporaryDirectory()
            _ = try runToCompletion(ranks: 2, sharded: true, output: output)
            try FileManager.default.removeItem(at: output.appendingPathComponent("checkpoint-6"))
            try damage(output.appendingPathComponent("checkpoint-4"))
            #expect(throws: (any Error).self, "\(what) is detected") { try CheckpointFolder.verify(output.appendingPathComponent("checkpoint-4")) }
            let options = tinyOptions(output: output, ["--resume", "--checkpoint-every", "2", "--shard-optimizer"])
            let data = try syntheticData()
            let messages = try InProcessGroupRun.collectingLog(ranks: 2) { communicator, log in
                try trainingRun(options, communicator: communicator, data: data, log: log).run()
            }.log
            #expect(messages.contains { $0.contains("not resuming from checkpoint-4") }, "\(what): \(messages)")
            #expect(messages.contains { $0.contains("resumed from checkpoint-2") }, "\(what): \(messages)")
            #expect(largestRelativeDifference(try finalWeights(output, step: 6), reference) < 1e-5, "\(what)")
        }
    }

    @Test func stopOnOneRankStopsAllAfterTheStepWithACheckpoint() throws {
        // The last rank alone sees the signal; all ranks stop after the same step.
        let output = temporaryDirectory()
        let summary = try train(tinyOptions(output: output), ranks: 2, data: try syntheticData(), stopAfterFirstStep: true)
        #expect(summary.stoppedBySignal && summary.stepsDone == 1)
        let state = try CheckpointFolder.verify(output.appendingPathComponent("checkpoint-1"))
        #expect(state.step == 1 && state.samplesConsumedInEpoch == 8)
    }
}

import Distributed

/// In-process ranks that also collect what rank 0 logs.
enum InProcessGroupRun {
    final class Lines: @unchecked Sendable {
        private let lock = NSLock()
        private var lines: [String] = []
        func append(_ line: String) { lock.lock(); lines.append(line); lock.unlock() }
        var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
    }

    static func collectingLog<R: Sendable>(ranks: Int, _ body: @escaping @Sendable (any Communicator, @escaping (String) -> Void) throws -> R) throws -> (results: [R], log: [String]) {
        let lines = Lines()
        let results = try InProcessGroup.run(worldSize: ranks) { communicator in
            try body(communicator, { lines.append($0) })
        }
        return (results, lines.all)
    }
}

/// eval, predict and merge refuse a damaged checkpoint, naming the bad file.
@Suite struct DamagedCheckpointRefusalTests {
    @Test func evalAndMergeNameTheBadFile() throws {
        let output = temporaryDirectory()
        try train(tinyOptions(output: output, ["--max-steps", "2"]), ranks: 1, data: try syntheticData())
        let checkpoint = output.appendingPathComponent("checkpoint-2")
        let weights = checkpoint.appendingPathComponent("model.safetensors")
        var bytes = try Data(contentsOf: weights)
        bytes[bytes.count - 10] ^= 1
        try bytes.write(to: weights)
        #expect {
            _ = try InferenceModel.load(checkpoint, compute: Compute(threads: 1))
        } throws: { "\($0)".contains("\(weights.path): SHA-256 differs") }
        #expect {
            _ = try merge(checkpoints: [checkpoint], output: temporaryDirectory(), average: false)
        } throws: { "\($0)".contains("\(weights.path): SHA-256 differs") }
        try FileManager.default.removeItem(at: checkpoint.appendingPathComponent("trainer_state.pb"))
        #expect {
            _ = try InferenceModel.load(checkpoint, compute: Compute(threads: 1))
        } throws: { "\($0)".contains("incomplete checkpoint") }
        // Under another name it is still a checkpoint (its optimizer state and training_args.json
        // say so), and still incomplete; a folder that is not there is named as such.
        let renamed = output.appendingPathComponent("copied")
        try FileManager.default.moveItem(at: checkpoint, to: renamed)
        #expect {
            _ = try merge(checkpoints: [renamed], output: temporaryDirectory(), average: false)
        } throws: { "\($0)" == "\(renamed.path): incomplete checkpoint (no trainer_state.pb: it was never finished)" }
        #expect {
            _ = try InferenceModel.load(checkpoint, compute: Compute(threads: 1))
        } throws: { "\($0)".hasPrefix("\(checkpoint.path): no such folder") }
    }
}
