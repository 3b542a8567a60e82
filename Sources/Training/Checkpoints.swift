import Data
import Distributed
import Foundation
import Synchronization
import Model
import Storage

// Checkpoint folders (docs/checkpoints.md): OUTPUT/checkpoint-STEP/ with model.safetensors (HF names),
// config.json, the tokenizer's files (the model folder's; WordPiece's always with vocab.txt
// and tokenizer_config.json), the Adam state (optimizer.safetensors, or one
// optimizer-RRRRR-of-NNNNN.safetensors per rank with --shard-optimizer) and trainer_state.pb,
// written last: it lists the size and SHA-256 of every other file and is the commit. Every file
// is written under a temporary name, fsynced and renamed; OUTPUT/latest is updated after it.

public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case incomplete(folder: String, reason: String)
    case damaged(file: String, reason: String)
    case incompatible(folder: String, reason: String)
    case writeFailed(folder: String, reason: String)

    /// Reasons may quote damaged files: one line (`errorLine`).
    public var description: String { errorLine(fullDescription) }

    private var fullDescription: String {
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
/// the family's keys and the labels of the run written over it) and the tokenizer's files.
public struct ModelFiles: Sendable {
    /// config.json as a JSON object, keys we do not model kept as they were.
    public var config: [String: JSONValue]
    /// The tokenizer's files by name (tokenizer.json, tokenizer_config.json, vocab.txt,
    /// vocab.json, merges.txt, sentencepiece.bpe.model, ...), so that `AutoTokenizer` loads
    /// the checkpoint's tokenizer as the model folder's.
    public var tokenizerFiles: [String: [UInt8]]

    public init(config: [String: JSONValue], tokenizerFiles: [String: [UInt8]]) {
        self.config = config
        self.tokenizerFiles = tokenizerFiles
    }

    /// A WordPiece tokenizer's files made from its vocabulary: vocab.txt and tokenizer_config.json.
    public init(config: [String: JSONValue], vocabulary: [String], tokenizerConfig: [String: JSONValue]) {
        self.init(config: config, tokenizerFiles: ["vocab.txt": Array((vocabulary.joined(separator: "\n") + "\n").utf8),
                                                   "tokenizer_config.json": JSONValue(object: tokenizerConfig).serialized()])
    }

    /// config.json for the family's `<Family>ForSequenceClassification` with these labels: the
    /// folder's file with the family's keys (model_type, architectures, the dropout actually
    /// used, ...), `id2label`, `label2id`, `num_labels` and the task (HF's `problem_type`, which
    /// picks its loss) written over it (HF reads `id2label` for num_labels; LabelSet guarantees
    /// names distinct as JSON keys).
    func configJSON(labels: LabelSet, problemType: ProblemType, modelConfig: BertConfig) throws -> [UInt8] {
        var object = config
        let family = try JSONValue.parse([UInt8](try modelConfig.huggingFaceConfigJSON(labelNames: labels.names)), source: "config.json")
        guard let keys = family.entries else { preconditionFailure("a config encodes as a JSON object") }
        for (key, value) in keys { object[key] = value }
        object["problem_type"] = .string(problemType.rawValue)
        return JSONValue(object: object).serialized()
    }

    /// The small files every checkpoint folder holds, by name: config.json, training_args.json
    /// (the run's resolved options), then the tokenizer's files in name order.
    func checkpointFiles(labels: LabelSet, problemType: ProblemType, modelConfig: BertConfig,
                         trainingArguments: [UInt8]) throws -> [CheckpointFile] {
        [CheckpointFile(name: "config.json", bytes: try configJSON(labels: labels, problemType: problemType, modelConfig: modelConfig)),
         CheckpointFile(name: CheckpointFolder.trainingArgumentsFile, bytes: trainingArguments)]
            + tokenizerFiles.sorted { $0.key < $1.key }.map { CheckpointFile(name: $0.key, bytes: $0.value) }
    }
}

/// A small file of a checkpoint folder, by name (config.json, the tokenizer's files).
struct CheckpointFile: Sendable {
    var name: String
    var bytes: [UInt8]
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
        if folder.lastPathComponent.hasPrefix(prefix) { return true }
        // Whatever its name: a copied checkpoint without its trainer_state.pb is incomplete, not a
        // model folder. Only checkpoints hold these files (a merged model does not).
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.contains { $0 == TrainerState.fileName || $0 == trainingArgumentsFile || ($0.hasPrefix("optimizer") && $0.hasSuffix(".safetensors")) }
    }

    /// The newest checkpoint of `output` whose trainer_state.pb reads (it checks its own SHA-256;
    /// the other files are verified when it is used) and that `accept`s, or nil: what this rank's
    /// disk offers at a resume.
    static func newestCommitted(in output: URL, accept: (TrainerState) -> Bool) -> (step: Int, url: URL)? {
        for candidate in candidates(in: output) {
            if let state = try? TrainerState(contentsOf: candidate.url.appendingPathComponent(TrainerState.fileName)),
               state.step == candidate.step, accept(state) {
                return candidate
            }
        }
        return nil
    }

    /// After the trainer_state.pb of checkpoint `state.step` is written: OUTPUT/latest names it, and
    /// OUTPUT/best too when it holds the best model so far (its manifest's best step is its own:
    /// the evaluation of this step was the best; the regular, emergency and mirrored copies alike);
    /// then the old ones are pruned.
    static func commitPointers(_ state: TrainerState, in output: URL, keep: Int) throws {
        let name = Array("\(CheckpointFolder.name(step: state.step))\n".utf8)
        try writeFileAtomically(output.appendingPathComponent("latest"), bytes: name)
        if state.bestMetric?.step == state.step { try writeFileAtomically(output.appendingPathComponent(bestFile), bytes: name) }
        prune(output, keep: keep)
    }

    /// Keeps the `keep` newest complete checkpoints (a folder with trainer_state.pb) of `output`,
    /// and the one OUTPUT/best names.
    static func prune(_ output: URL, keep: Int) {
        guard keep > 0 else { return }
        let complete = candidates(in: output).filter {
            FileManager.default.fileExists(atPath: $0.url.appendingPathComponent(TrainerState.fileName).path)
        }
        let best = named(by: bestFile, in: output)
        for old in complete.dropFirst(keep) where old.url.lastPathComponent != best { try? FileManager.default.removeItem(at: old.url) }
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
            var status = stat()
            guard stat(url.path, &status) == 0 else {
                throw CheckpointError.damaged(file: url.path, reason: "missing (listed in \(TrainerState.fileName))")
            }
            // Hashing a pipe or a device (a planted /dev/zero) would never end.
            guard status.st_mode & S_IFMT == S_IFREG else {
                throw CheckpointError.damaged(file: url.path, reason: "not a regular file (listed in \(TrainerState.fileName))")
            }
            let size = Int(status.st_size)
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

/// One checkpoint folder as this rank writes it: the old commit record removed (re-writing a step
/// after a resume), every file written atomically and recorded with its size and SHA-256, then
/// trainer_state.pb listing them (the commit), then OUTPUT/latest (and best), then pruning.
struct CheckpointFolderWrite {
    let output: URL
    let folder: URL
    private var written: [TrainerState.FileChecksum] = []

    init(output: URL, step: Int) throws {
        self.output = output
        folder = output.appendingPathComponent(CheckpointFolder.name(step: step))
        try? FileManager.default.removeItem(at: folder.appendingPathComponent(TrainerState.fileName))
        do { try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true) } catch {
            throw CheckpointError.writeFailed(folder: folder.path, reason: "cannot create it: \(error.localizedDescription)")
        }
    }

    /// File `name` of the folder is written; `digest` is its SHA-256.
    mutating func record(_ name: String, _ digest: SHA256Digest) throws {
        let attributes = try FileManager.default.attributesOfItem(atPath: folder.appendingPathComponent(name).path)
        written.append(.init(name: name, sizeBytes: (attributes[.size] as? Int) ?? 0, sha256: digest))
    }

    /// model.safetensors, the small files, and the Adam state when it is whole on this rank.
    mutating func writeReplica(_ replica: Replica, files: [CheckpointFile]) throws {
        let model = replica.model
        try record(CheckpointFolder.modelFile, try writeModelWeights(model, to: folder.appendingPathComponent(CheckpointFolder.modelFile)))
        for file in files { try record(file.name, try writeFileAtomically(folder.appendingPathComponent(file.name), bytes: file.bytes)) }
        if !replica.shardOptimizer {
            try record(CheckpointFolder.replicatedOptimizerFile,
                       try writeOptimizer(replica.optimizer, to: folder.appendingPathComponent(CheckpointFolder.replicatedOptimizerFile),
                                          layout: model.layout))
        }
    }

    /// trainer_state.pb with the recorded files, then the pointers and pruning.
    func commit(_ state: TrainerState, keep: Int) throws {
        var state = state
        state.files = written.sorted { $0.name < $1.name }
        try state.write(to: folder.appendingPathComponent(TrainerState.fileName))
        try CheckpointFolder.commitPointers(state, in: output, keep: keep)
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
    /// Rank 0's files are written while it holds this (an emergency checkpoint writes the same
    /// folders; see CompletedStep); nil: no emergency checkpoints in this run.
    var completedStep: CompletedStep? = nil
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
    }

    func write(step: Int, replica: Replica, content: Content) throws -> URL {
        let folder = output.appendingPathComponent(CheckpointFolder.name(step: step))
        let isRoot = communicator.rank == 0
        // Rank 0's first failure; after one, it writes nothing more but still takes part in the transfers.
        var failure: String?
        var checkpoint: CheckpointFolderWrite?
        func attempt(_ body: () throws -> Void) {
            guard isRoot && failure == nil else { return }
            do { try body() } catch { failure = "\(error)" }
        }
        // Rank 0's own writing, which an emergency checkpoint of the same step waits for (with a
        // sharded optimizer the shards' streams sit in between: no emergency checkpoints then).
        let exclusive = isRoot && !replica.shardOptimizer ? completedStep : nil
        exclusive?.beginCheckpointWrite()
        attempt { checkpoint = try CheckpointFolderWrite(output: output, step: step) }
        attempt {
            try checkpoint?.writeReplica(replica, files: content.files.checkpointFiles(labels: content.labels, problemType: content.problemType,
                                                                                       modelConfig: replica.model.config,
                                                                                       trainingArguments: content.trainingArguments))
        }
        if replica.shardOptimizer {
            try writeOptimizerShards(of: replica, into: folder, failure: &failure) { try checkpoint?.record($0, $1) }
        }
        attempt { try checkpoint?.commit(content.state, keep: keep) }
        exclusive?.endCheckpointWrite(committedStep: failure == nil ? step : nil)
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

// MARK: - the last completed step, and the emergency checkpoint

/// The last step the training loop completed, and a lock that makes it consistent with the
/// replica's arenas, for a checkpoint written by another thread while the main thread may be
/// blocked in MPI for ever (a peer was lost: PeerWatchdog's `setBeforeEnding`).
///
/// Parameters and Adam state change only in the optimizer update of a step (gradients travel in
/// their own arena), so the main thread holds the lock from just before the update
/// (`Replica.step`: `beginUpdate`) until the step's progress is published (`TrainingRun`:
/// `endUpdate`). The update is applied part by part while the later buckets' sums still travel,
/// so the window also holds that wait: a peer lost then leaves the arenas half updated, and the
/// writer, seeing `isUpdating` past a short grace, gives up (no emergency checkpoint; the newest
/// complete one stays).
/// Rank 0 holds it too while it writes a regular checkpoint's files (the folder an emergency
/// checkpoint of the same step would write). Another thread that holds it sees the
/// arenas and the published step together. Uncontended, the lock costs the step nothing (no
/// allocation, one atomic operation each way).
/// @unchecked Sendable: `snapshot` and `checkpointedStep` are only touched under `lock`.
final class CompletedStep: @unchecked Sendable {
    /// What a checkpoint of the last completed step records besides the arenas.
    struct Snapshot: Sendable {
        var step: Int
        var position: SamplePosition
        var learningRate: Double
        var recentMetrics: [TrainerState.Metric]
        var optimizerStep: Int
        /// --metric-for-best-model's best so far and the evaluations since (early stopping).
        var bestMetric: TrainerState.BestMetric?
        var evaluationsWithoutImprovement: Int
        /// When the step completed (Unix seconds).
        var completedAt: Double
    }

    private let lock = NSLock()
    private var snapshot: Snapshot?
    private var checkpointedStep: Int?
    /// Whether the main thread holds `lock` for an update; read without `lock` (own small lock).
    private let updateFlag = Mutex(false)

    /// Main thread, just before the optimizer update: the arenas change from here to `endUpdate`.
    func beginUpdate() {
        lock.lock()
        updateFlag.withLock { $0 = true }
    }

    /// Main thread, once the step's progress is known: publishes it (nil: the step failed, the
    /// previous one stays the last completed) and lets another thread in.
    func endUpdate(_ completed: Snapshot?) {
        if let completed { snapshot = completed }
        updateFlag.withLock { $0 = false }
        lock.unlock()
    }

    /// Another thread: whether the main thread is inside an update. The overlapped update waits
    /// for the later buckets' sums, so a peer lost then leaves the arenas half updated for good
    /// (an optimizer step that fails keeps the window closed for the same reason).
    var isUpdating: Bool { updateFlag.withLock { $0 } }

    /// Main thread, without an update window (a sharded optimizer: no emergency checkpoint, but
    /// its note names the last completed step).
    func publish(_ completed: Snapshot) {
        lock.lock()
        snapshot = completed
        lock.unlock()
    }

    /// Rank 0, around its writing of a regular checkpoint's files.
    func beginCheckpointWrite() { lock.lock() }

    func endCheckpointWrite(committedStep: Int?) {
        if let committedStep { checkpointedStep = max(checkpointedStep ?? committedStep, committedStep) }
        lock.unlock()
    }

    /// The newest complete checkpoint of the run (on every rank, as its folder is announced).
    func noteCheckpoint(step: Int) {
        lock.lock()
        checkpointedStep = max(checkpointedStep ?? step, step)
        lock.unlock()
    }

    /// Another thread: waits at most `seconds` for an update or a checkpoint write in progress,
    /// then runs `body` with the last completed step (nil: none yet) and the newest checkpointed
    /// step while the main thread cannot change the arenas. nil if the wait timed out.
    func withConsistentState<Result>(within seconds: Double, _ body: (Snapshot?, Int?) -> Result) -> Result? {
        guard lock.lock(before: Date(timeIntervalSinceNow: seconds)) else { return nil }
        defer { lock.unlock() }
        return body(snapshot, checkpointedStep)
    }
}

/// Writes a complete checkpoint folder of this rank's replica, alone: no collective, so it works
/// while peers are gone (only an unsharded Adam state is whole on one rank). The same files as
/// `CheckpointWriter`, each written atomically, trainer_state.pb last, then `latest`, then the old
/// ones pruned. Returns the folder.
func writeReplicaCheckpoint(_ replica: Replica, state: TrainerState, files: [CheckpointFile], output: URL, keep: Int) throws -> URL {
    precondition(!replica.shardOptimizer, "a sharded Adam state is not whole on one rank")
    var checkpoint = try CheckpointFolderWrite(output: output, step: state.step)
    try checkpoint.writeReplica(replica, files: files)
    try checkpoint.commit(state, keep: keep)
    return checkpoint.folder
}

// MARK: - copying a checkpoint folder between two ranks' disks

/// Moves a complete checkpoint folder from one rank's disk to the same path on another rank's
/// (`--checkpoint-mirror` after each checkpoint; a resume from a copy on another host). Only the
/// two ranks call, `send` on one and `receive` on the other; memory is one 4 MB chunk on each.
///
/// Protocol: the sender's manifest (every file of the folder with its size and SHA-256, read from
/// its trainer_state.pb, which comes last; or the reason it has none), the receiver's answer (it
/// holds that trainer_state.pb already: nothing to do, e.g. a shared disk; or "send"), the files
/// in chunks (all of them, zeros after a read error, so the two never lose step), then both
/// outcomes. The receiver writes each file atomically, checks its size and SHA-256, commits
/// trainer_state.pb only after every other file, then `latest` (unless it names a newer step)
/// and prunes to `keep`. Errors of either disk are returned as text (the transfer itself still
/// completes); only a failing transfer throws.
enum CheckpointCopy {
    static let chunkBytes = 4 << 20

    struct Entry {
        var name: String
        var size: Int
        var sha256: String
    }

    /// The folder's files for the receiver: trainer_state.pb's list, then trainer_state.pb.
    static func manifest(of folder: URL) throws -> [Entry] {
        let stateURL = folder.appendingPathComponent(TrainerState.fileName)
        let stateBytes = try readFile(stateURL)
        let state = try TrainerState(decoding: stateBytes, file: stateURL.path)
        return state.files.map { Entry(name: $0.name, size: $0.sizeBytes, sha256: $0.sha256.hex) }
            + [Entry(name: TrainerState.fileName, size: stateBytes.count, sha256: SHA256.hash(stateBytes).hex)]
    }

    /// "ok" then one `name<TAB>size<TAB>sha256` line per file, or "error: reason".
    static func encode(_ entries: Result<[Entry], any Error>) -> [UInt8] {
        switch entries {
        case .success(let entries):
            return Array((["ok"] + entries.map { "\($0.name)\t\($0.size)\t\($0.sha256)" }).joined(separator: "\n").utf8)
        case .failure(let error):
            return Array("error: \(error)".utf8)
        }
    }

    static func decode(_ bytes: [UInt8]) -> Result<[Entry], CheckpointError> {
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard lines.first == "ok" else { return .failure(.incomplete(folder: "the sending rank's copy", reason: lines.joined())) }
        var entries: [Entry] = []
        for line in lines.dropFirst() {
            let fields = line.split(separator: "\t").map(String.init)
            guard fields.count == 3, let size = Int(fields[1]), size >= 0, !fields[0].contains("/"), fields[0] != ".", fields[0] != ".." else {
                return .failure(.damaged(file: "the sending rank's manifest", reason: "cannot read '\(line)'"))
            }
            entries.append(Entry(name: fields[0], size: size, sha256: fields[2]))
        }
        return .success(entries)
    }

    /// The sending side. Returns nil when the receiver holds a complete copy now, else why not.
    static func send(_ folder: URL, to destination: Int, communicator: any Communicator) throws -> String? {
        let entries = Result { try manifest(of: folder) }
        try communicator.sendBytes(encode(entries), to: destination)
        guard case .success(let files) = entries else { return "no complete checkpoint to send: \(encode(entries))" }
        let answer = String(decoding: try communicator.receiveBytes(from: destination), as: UTF8.self)
        if answer == "have" { return nil }
        guard answer == "send" else { return "the receiving rank refused the copy: \(answer)" }
        var failure: String?
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 64)
        defer { buffer.deallocate() }
        for file in files {
            let handle = FileHandle(forReadingAtPath: folder.appendingPathComponent(file.name).path)
            if handle == nil && failure == nil { failure = "cannot read \(folder.appendingPathComponent(file.name).path)" }
            var offset = 0
            while offset < file.size {
                let count = min(chunkBytes, file.size - offset)
                let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
                var filled = 0
                if failure == nil, let handle {
                    let data = handle.readData(ofLength: count)
                    filled = data.count
                    data.copyBytes(to: chunk.bindMemory(to: UInt8.self), count: filled)
                    if filled < count { failure = "\(folder.appendingPathComponent(file.name).path) is shorter than its manifest says" }
                }
                if filled < count { UnsafeMutableRawBufferPointer(rebasing: chunk[filled...]).initializeMemory(as: UInt8.self, repeating: 0) }
                try communicator.sendChunk(UnsafeRawBufferPointer(chunk), to: destination)
                offset += count
            }
            try? handle?.close()
        }
        try communicator.sendBytes(Array((failure ?? "").utf8), to: destination)
        let received = String(decoding: try communicator.receiveBytes(from: destination), as: UTF8.self)
        return failure ?? (received.isEmpty ? nil : received)
    }

    /// The receiving side: the folder of the same name under `output`. Returns nil when it holds a
    /// complete copy now, else why not.
    static func receive(into output: URL, folderName: String, from source: Int, keep: Int,
                        communicator: any Communicator) throws -> String? {
        let folder = output.appendingPathComponent(folderName)
        let manifest = try communicator.receiveBytes(from: source)
        let files: [Entry]
        switch decode(manifest) {
        case .failure(let error):
            // The sender waits for an answer once its manifest said "ok".
            if manifest.starts(with: Array("ok".utf8)) { try communicator.sendBytes(Array("\(error)".utf8), to: source) }
            return "\(error)"
        case .success(let entries): files = entries
        }
        // A shared disk (or an earlier copy): the same trainer_state.pb is here already.
        let stateHere = try? readFile(folder.appendingPathComponent(TrainerState.fileName))
        if let stateHere, SHA256.hash(stateHere).hex == files.last?.sha256 {
            try communicator.sendBytes(Array("have".utf8), to: source)
            return nil
        }
        try communicator.sendBytes(Array("send".utf8), to: source)
        var failure: String?
        func attempt(_ body: () throws -> Void) {
            guard failure == nil else { return }
            do { try body() } catch { failure = "\(error)" }
        }
        attempt {
            try? FileManager.default.removeItem(at: folder.appendingPathComponent(TrainerState.fileName))
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 64)
        defer { buffer.deallocate() }
        for file in files {
            var writer: AtomicFileWriter?
            attempt { writer = try AtomicFileWriter(destination: folder.appendingPathComponent(file.name)) }
            var offset = 0
            while offset < file.size {
                let count = min(chunkBytes, file.size - offset)
                let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
                try communicator.receiveChunk(into: chunk, from: source)
                attempt { try writer?.write(UnsafeRawBufferPointer(chunk)) }
                offset += count
            }
            attempt {
                guard let digest = try writer?.commit() else { return }
                guard digest.hex == file.sha256 else {
                    throw CheckpointError.damaged(file: folder.appendingPathComponent(file.name).path, reason: "SHA-256 differs from the sender's")
                }
            }
            writer?.abandon()
        }
        let sent = String(decoding: try communicator.receiveBytes(from: source), as: UTF8.self)
        if !sent.isEmpty && failure == nil { failure = "the sender failed: \(sent)" }
        if failure == nil {
            attempt {
                // `latest` (and `best`) move forward only (a copy of an older checkpoint leaves a newer one named).
                let state = try TrainerState(contentsOf: folder.appendingPathComponent(TrainerState.fileName))
                let newest = CheckpointFolder.candidates(in: output).first {
                    FileManager.default.fileExists(atPath: $0.url.appendingPathComponent(TrainerState.fileName).path)
                }
                if (newest?.step ?? state.step) <= state.step {
                    try CheckpointFolder.commitPointers(state, in: output, keep: keep)
                } else {
                    CheckpointFolder.prune(output, keep: keep)
                }
            }
        } else {
            // Never leave a commit record over files that did not all arrive.
            try? FileManager.default.removeItem(at: folder.appendingPathComponent(TrainerState.fileName))
        }
        try communicator.sendBytes(Array((failure ?? "").utf8), to: source)
        return failure
    }
}
