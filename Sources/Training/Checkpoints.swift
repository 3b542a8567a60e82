import Data
import Distributed
import Foundation
import Model
import Storage

// Checkpoint folders (docs/checkpoints.md): OUTPUT/checkpoint-STEP/ with model.safetensors (HF names),
// config.json, vocab.txt, tokenizer_config.json, the Adam state (optimizer.safetensors, or one
// optimizer-RRRRR-of-NNNNN.safetensors per rank with --shard-optimizer) and trainer_state.pb,
// written last: it lists the size and SHA-256 of every other file and is the commit. Every file
// is written under a temporary name, fsynced and renamed; OUTPUT/latest is updated after it.

public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case incomplete(folder: String, reason: String)
    case damaged(file: String, reason: String)
    case incompatible(folder: String, reason: String)
    case writeFailed(folder: String, reason: String)

    public var description: String {
        switch self {
        case let .incomplete(folder, reason): return "\(folder): incomplete checkpoint (\(reason))"
        case let .damaged(file, reason): return "\(file): \(reason)"
        case let .incompatible(folder, reason): return "\(folder): \(reason)"
        case let .writeFailed(folder, reason):
            return "writing \(folder) failed: \(reason); earlier checkpoints are untouched (--resume continues from the newest complete one)"
        }
    }
}

/// The files of a model folder that travel with every checkpoint: config.json (as read, with
/// our fields updated), vocab.txt and tokenizer_config.json.
public struct ModelFiles: Sendable {
    /// config.json as a JSON object, keys we do not model kept as they were.
    public var config: [String: JSONValue]
    public var vocabulary: [String]
    public var tokenizerConfig: [String: JSONValue]

    /// config.json for a BertForSequenceClassification with these labels (HF reads `id2label`
    /// for num_labels; LabelSet guarantees names distinct as JSON keys), the task (HF's
    /// `problem_type`, which picks its loss) and the dropout actually used.
    func configJSON(labels: LabelSet, problemType: ProblemType, modelConfig: BertConfig) -> [UInt8] {
        var object = config
        let names = labels.names
        object["architectures"] = .array([.string("BertForSequenceClassification")])
        object["model_type"] = .string("bert")
        object["id2label"] = .object(Dictionary(uniqueKeysWithValues: names.enumerated().map { (String($0.offset), .string($0.element)) }))
        object["label2id"] = .object(Dictionary(uniqueKeysWithValues: names.enumerated().map { ($0.element, .number(Double($0.offset))) }))
        object["problem_type"] = .string(problemType.rawValue)
        // Float -> shortest decimal -> Double, so 0.1 is written "0.1", not 0.10000000149011612.
        object["hidden_dropout_prob"] = .number(Double("\(modelConfig.hiddenDropoutProb)")!)
        object["attention_probs_dropout_prob"] = .number(Double("\(modelConfig.attentionDropoutProb)")!)
        object["num_labels"] = .number(Double(labels.count))  // HF also derives it from id2label
        return JSONValue.object(object).serialized()
    }

    var vocabularyText: [UInt8] { Array((vocabulary.joined(separator: "\n") + "\n").utf8) }
    var tokenizerConfigJSON: [UInt8] { JSONValue.object(tokenizerConfig).serialized() }
}

enum CheckpointFolder {
    static let prefix = "checkpoint-"
    static let modelFile = "model.safetensors"
    static let replicatedOptimizerFile = "optimizer.safetensors"
    static let trainingArgumentsFile = "training_args.json"
    /// OUTPUT/best: the name of the checkpoint with the best --metric-for-best-model.
    static let bestFile = "best"

    /// The checkpoint folder name a pointer file of `output` (latest, best) holds; nil without one.
    static func named(by pointer: String, in output: URL) -> String? {
        guard let text = try? String(contentsOf: output.appendingPathComponent(pointer), encoding: .utf8) else { return nil }
        let name = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return name.isEmpty ? nil : name
    }

    static func name(step: Int) -> String { "\(prefix)\(step)" }

    static func optimizerShardFile(rank: Int, worldSize: Int) -> String {
        String(format: "optimizer-%05d-of-%05d.safetensors", rank, worldSize)
    }

    /// A training checkpoint (to be verified before use) rather than a plain model folder.
    static func isCheckpoint(_ folder: URL) -> Bool {
        folder.lastPathComponent.hasPrefix(prefix)
            || FileManager.default.fileExists(atPath: folder.appendingPathComponent(TrainerState.fileName).path)
    }

    /// Checkpoint folders of `output`, newest (highest step) first.
    static func candidates(in output: URL) -> [(step: Int, url: URL)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: output.path)) ?? []
        return names.compactMap { name -> (Int, URL)? in
            guard name.hasPrefix(prefix), let step = Int(name.dropFirst(prefix.count)) else { return nil }
            return (step, output.appendingPathComponent(name))
        }.sorted { $0.0 > $1.0 }
    }

    /// Checks that `folder` is a complete checkpoint: trainer_state.pb decodes, and every file
    /// it lists exists with the recorded size and SHA-256. Returns the state.
    static func verify(_ folder: URL) throws -> TrainerState {
        let stateURL = folder.appendingPathComponent(TrainerState.fileName)
        guard FileManager.default.fileExists(atPath: stateURL.path) else {
            throw CheckpointError.incomplete(folder: folder.path, reason: "no \(TrainerState.fileName): it was never finished")
        }
        let state = try TrainerState(contentsOf: stateURL)  // errors name the file
        for file in state.files {
            let url = folder.appendingPathComponent(file.name)
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: url.path),
                  let size = attributes[.size] as? Int else {
                throw CheckpointError.damaged(file: url.path, reason: "missing (listed in \(TrainerState.fileName))")
            }
            guard size == file.sizeBytes else {
                throw CheckpointError.damaged(file: url.path, reason: "\(size) bytes, \(TrainerState.fileName) records \(file.sizeBytes) (truncated?)")
            }
            guard try SHA256.hash(fileAt: url) == file.sha256 else {
                throw CheckpointError.damaged(file: url.path, reason: "SHA-256 differs from the one in \(TrainerState.fileName) (corrupted)")
            }
        }
        return state
    }
}

/// Writes one checkpoint. A collective: every rank calls it with the same step. Rank 0 writes
/// every file, so the hosts need not share a disk: with a sharded optimizer the other ranks'
/// Adam moments reach it in chunks (one chunk of memory on rank 0, no second copy of the state)
/// and it writes one optimizer file per shard, as the ranks would have.
struct CheckpointWriter {
    let output: URL
    let communicator: any Communicator
    let keep: Int
    /// Floats per message when the shards travel to rank 0 (4 MB).
    static let chunkFloats = 1 << 20

    /// What rank 0 needs besides the arenas to fill trainer_state.pb.
    struct Content {
        var state: TrainerState
        var labels: LabelSet
        var problemType: ProblemType
        var files: ModelFiles
        /// training_args.json: the resolved options of the run.
        var trainingArguments: [UInt8]
        /// The checkpoint holds the best model so far: OUTPUT/best names it.
        var isBest = false
    }

    func write(step: Int, replica: Replica, content: Content) throws -> URL {
        let folder = output.appendingPathComponent(CheckpointFolder.name(step: step))
        let isRoot = communicator.rank == 0
        // Rank 0's first failure; after one, it writes nothing more but still takes part in the transfers.
        var failure: String?
        var written: [TrainerState.FileChecksum] = []
        func attempt(_ body: () throws -> Void) {
            guard isRoot && failure == nil else { return }
            do { try body() } catch { failure = "\(error)" }
        }
        func record(_ name: String, _ digest: SHA256Digest) throws {
            let attributes = try FileManager.default.attributesOfItem(atPath: folder.appendingPathComponent(name).path)
            written.append(.init(name: name, sizeBytes: (attributes[.size] as? Int) ?? 0, sha256: digest))
        }
        attempt {
            // Re-writing a step (after a resume) first removes the old commit record.
            try? FileManager.default.removeItem(at: folder.appendingPathComponent(TrainerState.fileName))
            do { try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true) } catch {
                throw CheckpointError.writeFailed(folder: folder.path, reason: "cannot create it: \(error.localizedDescription)")
            }
        }
        attempt {
            let model = replica.model
            try record(CheckpointFolder.modelFile, try writeModelWeights(model, to: folder.appendingPathComponent(CheckpointFolder.modelFile)))
            try record("config.json", try writeFileAtomically(folder.appendingPathComponent("config.json"),
                                                             bytes: content.files.configJSON(labels: content.labels, problemType: content.problemType,
                                                                                             modelConfig: model.config)))
            try record(CheckpointFolder.trainingArgumentsFile, try writeFileAtomically(folder.appendingPathComponent(CheckpointFolder.trainingArgumentsFile),
                                                                                       bytes: content.trainingArguments))
            try record("vocab.txt", try writeFileAtomically(folder.appendingPathComponent("vocab.txt"), bytes: content.files.vocabularyText))
            try record("tokenizer_config.json", try writeFileAtomically(folder.appendingPathComponent("tokenizer_config.json"),
                                                                       bytes: content.files.tokenizerConfigJSON))
            if !replica.shardOptimizer {
                let url = folder.appendingPathComponent(CheckpointFolder.replicatedOptimizerFile)
                try record(CheckpointFolder.replicatedOptimizerFile, try writeOptimizer(replica.optimizer, to: url, layout: model.layout))
            }
        }
        if replica.shardOptimizer {
            try writeOptimizerShards(of: replica, into: folder, failure: &failure) { try record($0, $1) }
        }
        attempt {
            var state = content.state
            state.files = written.sorted { $0.name < $1.name }
            try state.write(to: folder.appendingPathComponent(TrainerState.fileName))
            try writeFileAtomically(output.appendingPathComponent("latest"), bytes: Array("\(CheckpointFolder.name(step: step))\n".utf8))
            if content.isBest {
                try writeFileAtomically(output.appendingPathComponent(CheckpointFolder.bestFile), bytes: Array("\(CheckpointFolder.name(step: step))\n".utf8))
            }
            pruneOldCheckpoints()
        }
        // Every rank learns how it went, with rank 0's reason.
        let reason = try communicator.broadcast(bytes: Array((failure ?? "").utf8), root: 0)
        guard reason.isEmpty else {
            if isRoot { try? FileManager.default.removeItem(at: folder) }
            throw CheckpointError.writeFailed(folder: folder.path, reason: String(decoding: reason, as: UTF8.self))
        }
        return folder
    }

    /// ZeRO-1 Adam state: one file per rank's shard, `exp_avg` then `exp_avg_sq`, written by
    /// rank 0 as the moments stream in (first every rank's m, then every rank's v).
    private func writeOptimizerShards(of replica: Replica, into folder: URL, failure: inout String?,
                                      record: (String, SHA256Digest) throws -> Void) throws {
        let isRoot = communicator.rank == 0, worldSize = communicator.worldSize
        let optimizer = replica.optimizer, layout = replica.shards
        var writers: [AtomicFileWriter] = []
        if isRoot && failure == nil {
            do {
                for rank in 0..<worldSize {
                    let range = layout.range(of: rank)
                    let writer = try AtomicFileWriter(destination: folder.appendingPathComponent(CheckpointFolder.optimizerShardFile(rank: rank, worldSize: worldSize)))
                    writers.append(writer)
                    try writer.write(optimizerFileHeader(range: range, step: optimizer.stepCount, layout: replica.model.layout))
                }
            } catch { failure = "\(error)" }
        }
        for moment in [optimizer.m, optimizer.v] {
            do {
                try communicator.streamToRoot(UnsafeBufferPointer(moment.buffer), root: 0, chunkFloats: Self.chunkFloats) { rank, _, chunk in
                    guard failure == nil else { return }
                    try writers[rank].write(UnsafeRawBufferPointer(chunk))
                }
            } catch let error where isRoot {
                if failure == nil { failure = "\(error)" }
            }
        }
        guard isRoot else { return }
        if failure == nil {
            do {
                for (rank, writer) in writers.enumerated() {
                    try record(CheckpointFolder.optimizerShardFile(rank: rank, worldSize: worldSize), try writer.commit())
                }
                return
            } catch { failure = "\(error)" }
        }
        for writer in writers { writer.abandon() }
    }

    /// Keeps the `keep` newest complete checkpoints (a folder with trainer_state.pb), and the
    /// one OUTPUT/best names.
    private func pruneOldCheckpoints() {
        guard keep > 0 else { return }
        let complete = CheckpointFolder.candidates(in: output).filter {
            FileManager.default.fileExists(atPath: $0.url.appendingPathComponent(TrainerState.fileName).path)
        }
        let best = CheckpointFolder.named(by: CheckpointFolder.bestFile, in: output)
        for old in complete.dropFirst(keep) where old.url.lastPathComponent != best {
            try? FileManager.default.removeItem(at: old.url)
        }
    }
}

/// model.safetensors with HF names, F32, from the parameter arena (no copy).
func writeModelWeights(_ model: BertForSequenceClassification, to url: URL) throws -> SHA256Digest {
    let writer = try AtomicFileWriter(destination: url)
    let entries = model.layout.tensors.map {
        SafeTensorsEntry(name: $0.name, shape: $0.shape, values: UnsafeBufferPointer(model.parameters[$0.range]))
    }
    do {
        try writeSafeTensors(entries, metadata: ["format": "pt"]) { try writer.write($0) }
        return try writer.commit()
    } catch {
        writer.abandon()
        throw error
    }
}

/// The header of an optimizer file holding the Adam moments of `range` of the flat layout:
/// tensors `exp_avg` and `exp_avg_sq`, metadata start/count/step/layout so that any rank count
/// can read them back.
func optimizerFileHeader(range: Range<Int>, step: Int, layout: ParameterLayout) -> [UInt8] {
    safeTensorsHeader([("exp_avg", [range.count]), ("exp_avg_sq", [range.count])],
                      metadata: ["start": String(range.lowerBound), "count": String(range.count),
                                 "step": String(step), "layout": layout.fingerprint])
}

/// The whole optimizer state of one rank in one file (see `optimizerFileHeader`).
func writeOptimizer(_ optimizer: AdamOptimizer, to url: URL, layout: ParameterLayout) throws -> SHA256Digest {
    let writer = try AtomicFileWriter(destination: url)
    do {
        try writer.write(optimizerFileHeader(range: optimizer.range, step: optimizer.stepCount, layout: layout))
        try writer.write(UnsafeRawBufferPointer(optimizer.m.buffer))
        try writer.write(UnsafeRawBufferPointer(optimizer.v.buffer))
        return try writer.commit()
    } catch {
        writer.abandon()
        throw error
    }
}

/// The Adam moments of a checkpoint, read by element range of the flat layout whatever rank
/// count or sharding wrote them: each optimizer file holds one range of the same layout.
final class OptimizerFiles {
    let folder: URL
    let state: TrainerState
    private var opened: [Int: SafeTensorsFile] = [:]

    init(folder: URL, state: TrainerState) {
        self.folder = folder
        self.state = state
    }

    /// Elements `range` of moment `name` ("exp_avg" or "exp_avg_sq") into `destination`.
    func copy(_ name: String, range: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws {
        var covered = 0
        for (index, shard) in state.optimizerShards.enumerated() {
            let source = shard.start..<(shard.start + shard.count)
            let overlap = source.clamped(to: range)
            if overlap.isEmpty { continue }
            try file(index).copyFloats(name, elements: (overlap.lowerBound - shard.start)..<(overlap.upperBound - shard.start),
                                       into: UnsafeMutableBufferPointer(rebasing: destination[(overlap.lowerBound - range.lowerBound)..<(overlap.upperBound - range.lowerBound)]))
            covered += overlap.count
        }
        guard covered == range.count else {
            throw CheckpointError.damaged(file: folder.path, reason: "the optimizer files cover \(covered) of the \(range.count) values asked for")
        }
    }

    private func file(_ index: Int) throws -> SafeTensorsFile {
        if let file = opened[index] { return file }
        let shard = state.optimizerShards[index]
        let name = state.shardOptimizer
            ? CheckpointFolder.optimizerShardFile(rank: shard.rank, worldSize: state.worldSize)
            : CheckpointFolder.replicatedOptimizerFile
        let url = folder.appendingPathComponent(name)
        let file = try SafeTensorsFile(url: url)
        guard file.metadata["start"] == String(shard.start), file.metadata["count"] == String(shard.count) else {
            throw CheckpointError.damaged(file: url.path, reason: "holds a different range than \(TrainerState.fileName) records")
        }
        opened[index] = file
        return file
    }
}
