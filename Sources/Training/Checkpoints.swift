import Distributed
import Foundation
import Model
import Storage

// Checkpoint folders (SPEC.md): OUTPUT/checkpoint-STEP/ with model.safetensors (HF names),
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
    /// for num_labels) and the dropout actually used.
    func configJSON(labels: [String], modelConfig: BertConfig) -> [UInt8] {
        var object = config
        object["architectures"] = .array([.string("BertForSequenceClassification")])
        object["model_type"] = .string("bert")
        object["id2label"] = .object(Dictionary(uniqueKeysWithValues: labels.enumerated().map { (String($0.offset), .string($0.element)) }))
        object["label2id"] = .object(Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($0.element, .number(Double($0.offset))) }))
        object["problem_type"] = .string("single_label_classification")
        // Float -> shortest decimal -> Double, so 0.1 is written "0.1", not 0.10000000149011612.
        object["hidden_dropout_prob"] = .number(Double("\(modelConfig.hiddenDropoutProb)")!)
        object["attention_probs_dropout_prob"] = .number(Double("\(modelConfig.attentionDropoutProb)")!)
        object["num_labels"] = .number(Double(labels.count))  // SPEC; HF also derives it from id2label
        return JSONValue.object(object).serialized()
    }

    var vocabularyText: [UInt8] { Array((vocabulary.joined(separator: "\n") + "\n").utf8) }
    var tokenizerConfigJSON: [UInt8] { JSONValue.object(tokenizerConfig).serialized() }
}

enum CheckpointFolder {
    static let prefix = "checkpoint-"
    static let modelFile = "model.safetensors"
    static let replicatedOptimizerFile = "optimizer.safetensors"

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

/// Writes one checkpoint. A collective: every rank calls it with the same step.
struct CheckpointWriter {
    let output: URL
    let communicator: any Communicator
    let keep: Int

    /// What rank 0 needs besides the arenas to fill trainer_state.pb.
    struct Content {
        var state: TrainerState
        var labels: [String]
        var files: ModelFiles
    }

    func write(step: Int, replica: Replica, content: Content) throws -> URL {
        let folder = output.appendingPathComponent(CheckpointFolder.name(step: step))
        let rank = communicator.rank, worldSize = communicator.worldSize
        var localError: String? = nil
        if rank == 0 {
            do {
                // Re-writing a step (after a resume) first removes the old commit record.
                try? FileManager.default.removeItem(at: folder.appendingPathComponent(TrainerState.fileName))
                try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            } catch { localError = "cannot create \(folder.path): \(error.localizedDescription)" }
        }
        try communicator.barrier()

        var written: [TrainerState.FileChecksum] = []
        func record(_ name: String, _ digest: SHA256Digest) throws {
            let attributes = try FileManager.default.attributesOfItem(atPath: folder.appendingPathComponent(name).path)
            written.append(.init(name: name, sizeBytes: (attributes[.size] as? Int) ?? 0, sha256: digest))
        }
        if localError == nil {
            do {
                let optimizer = replica.optimizer
                if replica.shardOptimizer {
                    let name = CheckpointFolder.optimizerShardFile(rank: rank, worldSize: worldSize)
                    try record(name, try writeOptimizer(optimizer, to: folder.appendingPathComponent(name), layout: replica.model.layout))
                }
                if rank == 0 {
                    let model = replica.model
                    try record(CheckpointFolder.modelFile, try writeModelWeights(model, to: folder.appendingPathComponent(CheckpointFolder.modelFile)))
                    try record("config.json", try writeFileAtomically(folder.appendingPathComponent("config.json"),
                                                                     bytes: content.files.configJSON(labels: content.labels, modelConfig: model.config)))
                    try record("vocab.txt", try writeFileAtomically(folder.appendingPathComponent("vocab.txt"), bytes: content.files.vocabularyText))
                    try record("tokenizer_config.json", try writeFileAtomically(folder.appendingPathComponent("tokenizer_config.json"),
                                                                               bytes: content.files.tokenizerConfigJSON))
                    if !replica.shardOptimizer {
                        try record(CheckpointFolder.replicatedOptimizerFile,
                                   try writeOptimizer(optimizer, to: folder.appendingPathComponent(CheckpointFolder.replicatedOptimizerFile), layout: model.layout))
                    }
                }
            } catch { localError = "\(error)" }
        }

        // Rank 0 collects every rank's files (or errors) and commits with trainer_state.pb.
        let report = localError.map { "error\t\($0)" }
            ?? written.map { "\($0.name)\t\($0.sizeBytes)\t\($0.sha256.hex)" }.joined(separator: "\n")
        let reports = try communicator.allGather(bytes: Array(report.utf8)).map { String(decoding: $0, as: UTF8.self) }
        let errors = reports.enumerated().filter { $0.element.hasPrefix("error\t") }
            .map { "rank \($0.offset): \($0.element.dropFirst(6))" }
        if !errors.isEmpty {
            if rank == 0 { try? FileManager.default.removeItem(at: folder) }
            try communicator.barrier()
            throw CheckpointError.writeFailed(folder: folder.path, reason: errors.joined(separator: "; "))
        }
        if rank == 0 {
            var state = content.state
            state.files = reports.flatMap { report in
                report.split(separator: "\n").compactMap { line -> TrainerState.FileChecksum? in
                    let fields = line.split(separator: "\t").map(String.init)
                    guard fields.count == 3, let size = Int(fields[1]), let digest = SHA256Digest(hex: fields[2]) else { return nil }
                    return .init(name: fields[0], sizeBytes: size, sha256: digest)
                }
            }.sorted { $0.name < $1.name }
            do {
                try state.write(to: folder.appendingPathComponent(TrainerState.fileName))
                try writeFileAtomically(output.appendingPathComponent("latest"), bytes: Array("\(CheckpointFolder.name(step: step))\n".utf8))
                pruneOldCheckpoints()
            } catch { localError = "\(error)" }
        }
        let failed = try communicator.anyRank(localError != nil)
        if failed { throw CheckpointError.writeFailed(folder: folder.path, reason: localError ?? "rank 0 could not commit the checkpoint") }
        return folder
    }

    /// Keeps the `keep` newest complete checkpoints (a folder with trainer_state.pb).
    private func pruneOldCheckpoints() {
        guard keep > 0 else { return }
        let complete = CheckpointFolder.candidates(in: output).filter {
            FileManager.default.fileExists(atPath: $0.url.appendingPathComponent(TrainerState.fileName).path)
        }
        for old in complete.dropFirst(keep) { try? FileManager.default.removeItem(at: old.url) }
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

/// The Adam moments of the optimizer's range of the flat layout: tensors `exp_avg` and
/// `exp_avg_sq`, metadata start/count/step/layout so that any rank count can read them back.
func writeOptimizer(_ optimizer: AdamOptimizer, to url: URL, layout: ParameterLayout) throws -> SHA256Digest {
    let writer = try AtomicFileWriter(destination: url)
    let n = optimizer.range.count
    let entries = [SafeTensorsEntry(name: "exp_avg", shape: [n], values: UnsafeBufferPointer(optimizer.m.buffer)),
                   SafeTensorsEntry(name: "exp_avg_sq", shape: [n], values: UnsafeBufferPointer(optimizer.v.buffer))]
    let metadata = ["start": String(optimizer.range.lowerBound), "count": String(n),
                    "step": String(optimizer.stepCount), "layout": layout.fingerprint]
    do {
        try writeSafeTensors(entries, metadata: metadata) { try writer.write($0) }
        return try writer.commit()
    } catch {
        writer.abandon()
        throw error
    }
}

/// Fills the optimizer's range of m and v from a checkpoint's optimizer files, whatever rank
/// count or sharding wrote them: each file holds a range of the same flat layout.
func readOptimizer(into optimizer: AdamOptimizer, from folder: URL, state: TrainerState) throws {
    let wanted = optimizer.range
    var covered = 0
    for shard in state.optimizerShards {
        let source = shard.start..<(shard.start + shard.count)
        let overlap = source.clamped(to: wanted)
        if overlap.isEmpty { continue }
        let name = state.shardOptimizer
            ? CheckpointFolder.optimizerShardFile(rank: shard.rank, worldSize: state.worldSize)
            : CheckpointFolder.replicatedOptimizerFile
        let url = folder.appendingPathComponent(name)
        let file = try SafeTensorsFile(url: url)
        guard file.metadata["start"] == String(shard.start), file.metadata["count"] == String(shard.count) else {
            throw CheckpointError.damaged(file: url.path, reason: "holds a different range than \(TrainerState.fileName) records")
        }
        let m = try file.floats("exp_avg"), v = try file.floats("exp_avg_sq")
        for (source, destination) in [(m, optimizer.m), (v, optimizer.v)] {
            source.withUnsafeBufferPointer { values in
                (destination.base + (overlap.lowerBound - wanted.lowerBound))
                    .update(from: values.baseAddress! + (overlap.lowerBound - shard.start), count: overlap.count)
            }
        }
        covered += overlap.count
    }
    guard covered == wanted.count else {
        throw CheckpointError.damaged(file: folder.path, reason: "the optimizer files cover \(covered) of the \(wanted.count) values this rank needs")
    }
    optimizer.stepCount = state.optimizerStep
}
