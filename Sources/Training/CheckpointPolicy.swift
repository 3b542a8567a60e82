import Data
import Distributed
import Foundation
import Model
import Options
import Storage

/// When the training loop checkpoints, what a checkpoint records about the run, and how a run
/// resumes from one. Every method is a collective: all ranks call it at the same point.
struct CheckpointPolicy {
    let options: TrainingOptions
    /// --output: where checkpoints go.
    let output: URL
    let communicator: any Communicator
    /// The labels, the sequence length and the training data's fingerprint checkpoints record,
    /// and (rank 0) the model files they carry.
    let setup: RunSetup
    /// Told the newest complete checkpoint (nil: none) when a run starts and after each one.
    let announce: (URL?) -> Void
    /// Every rank's host name, by rank (the mirror's host, where a copy was found at a resume).
    let hosts: [String]
    /// --checkpoint-mirror: the lowest rank on another host than rank 0's, which keeps a copy of
    /// every checkpoint on its disk (nil: no mirror, or no second host).
    let mirrorRank: Int?
    /// The last completed step, for an emergency checkpoint (EmergencyCheckpoint).
    let completedStep = CompletedStep()
    /// training_args.json of every checkpoint: the run's resolved options.
    let trainingArguments: [String: JSONValue]

    init(options: TrainingOptions, communicator: any Communicator, setup: RunSetup, hosts: [String] = [],
         trainingArguments: [String: JSONValue] = [:],
         announce: @escaping (URL?) -> Void) {
        self.options = options
        output = options.checkpoints.folder
        self.communicator = communicator
        self.setup = setup
        self.hosts = hosts
        self.trainingArguments = trainingArguments
        mirrorRank = options.checkpoints.checkpointMirror ? hosts.indices.first { hosts[$0] != hosts[0] } : nil
        let completedStep = completedStep
        self.announce = { folder in
            if let folder, let step = Int(folder.lastPathComponent.dropFirst(CheckpointFolder.prefix.count)) {
                completedStep.noteCheckpoint(step: step)
            }
            announce(folder)
        }
    }

    /// Identifies the training data: a checkpoint of other data is not resumed from.
    var trainFingerprint: String { setup.description.trainFingerprint }

    var writer: CheckpointWriter {
        CheckpointWriter(output: output, communicator: communicator, keep: options.checkpoints.keepCheckpoints, completedStep: completedStep)
    }

    /// Before any work: --output must be a folder this process can write (created if needed),
    /// not a file — else the first checkpoint would fail after the training work.
    func prepareOutputFolder() throws { try Self.prepareOutputFolder(output, communicator: communicator) }

    /// Before the data is read: --output is a folder this process may write, or can be created
    /// (the nearest existing parent is a folder it may write); nothing is created yet.
    static func checkOutputFolder(_ output: URL, communicator: any Communicator) throws {
        try collectively(communicator) {
            guard communicator.rank == 0 else { return }
            var isFolder: ObjCBool = false
            var existing = output.standardizedFileURL
            while !FileManager.default.fileExists(atPath: existing.path, isDirectory: &isFolder) && existing.path != "/" {
                existing = existing.deletingLastPathComponent()
            }
            guard isFolder.boolValue else {
                let what = existing.path == output.standardizedFileURL.path ? "is a file" : "is inside \(existing.path), which is a file"
                throw TrainingError.invalidInput("--output \(output.path) \(what), not a folder; name a folder for the checkpoints")
            }
            guard access(existing.path, W_OK | X_OK) == 0 else {
                throw TrainingError.invalidInput("--output \(output.path) cannot be written (\(existing.path): \(String(cString: strerror(errno)))); name a folder you may write")
            }
        }
    }

    static func prepareOutputFolder(_ output: URL, communicator: any Communicator) throws {
        try collectively(communicator) {
            guard communicator.rank == 0 else { return }
            var isFolder: ObjCBool = false
            if FileManager.default.fileExists(atPath: output.path, isDirectory: &isFolder), !isFolder.boolValue {
                throw TrainingError.invalidInput("--output \(output.path) is a file, not a folder; name a folder for the checkpoints")
            }
            do {
                try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
                let probe = output.appendingPathComponent(".write-test-\(getpid())")
                try Data().write(to: probe)
                try FileManager.default.removeItem(at: probe)
            } catch {
                throw TrainingError.invalidInput("--output \(output.path) cannot be written (\(error.localizedDescription)); name a folder you may write")
            }
        }
    }

    /// A checkpoint every --checkpoint-every steps; the last step is checkpointed by the loop's end.
    func isDue(afterStep step: Int, totalSteps: Int) -> Bool {
        let every = options.checkpoints.checkpointEvery
        return step < totalSteps && every > 0 && step % every == 0
    }

    /// Writes OUTPUT/checkpoint-STEP for the step just taken (rank 0 writes the replicated files),
    /// then, with --checkpoint-mirror, its copy on the mirror's disk. OUTPUT/best names it when
    /// this step's evaluation was the best (`CheckpointFolder.commitPointers`).
    func write(_ replica: Replica, plan: TrainingPlan, progress: TrainingRun.Progress, reporter: Reporter) throws -> URL {
        let state = trainerState(replica, plan: plan, snapshot: snapshot(progress, replica: replica))
        if communicator.worldSize > 1 {
            // Rank 0 alone writes the weights (and the replicated Adam state): make sure they are everyone's.
            let repaired = try ensureReplicasMatch(buffers: replica.replicatedBuffers, communicator: communicator)
            if !repaired.isEmpty {
                replica.model.parametersChanged()
                reporter.say("warning: ranks \(repaired) had drifted from rank 0 and were repaired before checkpointing")
            }
        }
        let files = setup.root?.modelFiles ?? ModelFiles(config: [:], tokenizerFiles: [:])  // rank 0 writes them
        let content = CheckpointWriter.Content(state: state, labels: setup.labels, problemType: setup.description.task.problemType, files: files,
                                               trainingArguments: JSONValue(object: trainingArguments).serialized())
        let folder = try writer.write(step: progress.step, replica: replica, content: content)
        announce(folder)
        try mirror(folder, say: reporter.say)
        return folder
    }

    /// After every step: publishes it as the last completed one, and ends the replica's update
    /// window (a sharded optimizer has none: its step is only reported).
    func completed(_ progress: TrainingRun.Progress, replica: Replica) {
        let snapshot = snapshot(progress, replica: replica)
        if let window = replica.completedStep { window.endUpdate(snapshot) } else { completedStep.publish(snapshot) }
    }

    /// What a checkpoint of the step `progress` has just completed records besides the arenas.
    func snapshot(_ progress: TrainingRun.Progress, replica: Replica) -> CompletedStep.Snapshot {
        CompletedStep.Snapshot(step: progress.step, position: progress.batches.position, learningRate: progress.learningRate,
                               recentMetrics: progress.recentMetrics, optimizerStep: replica.optimizer.stepCount,
                               bestMetric: progress.bestModel?.best,
                               evaluationsWithoutImprovement: progress.bestModel?.evaluationsWithoutImprovement ?? 0,
                               completedAt: Date().timeIntervalSince1970)
    }

    /// The manifest of a checkpoint of the completed step `snapshot` (its file list is filled by the writer).
    func trainerState(_ replica: Replica, plan: TrainingPlan, snapshot: CompletedStep.Snapshot) -> TrainerState {
        let model = replica.model, worldSize = communicator.worldSize
        let hyperparameters = replica.optimizer.hyperparameters
        let position = snapshot.position
        return TrainerState(
            step: snapshot.step, epoch: position.epoch, samplesConsumedInEpoch: position.samplesConsumed,
            totalSteps: plan.totalSteps, warmupSteps: plan.schedule.warmupSteps, seed: options.seed,
            worldSize: worldSize, shardOptimizer: replica.shardOptimizer, parameterCount: model.layout.totalCount,
            optimizerShards: replica.shardOptimizer
                ? replica.shards.ranges.enumerated().map { .init(rank: $0.offset, start: $0.element.lowerBound, count: $0.element.count) }
                : [.init(rank: 0, start: 0, count: model.layout.totalCount)],
            optimizer: .init(kind: options.optimizer.optimizer.rawValue, learningRate: options.optimizer.learningRate,
                             beta1: Double(hyperparameters.beta1), beta2: Double(hyperparameters.beta2),
                             epsilon: Double(hyperparameters.epsilon), weightDecay: options.optimizer.weightDecay,
                             maxGradNorm: options.optimizer.maxGradNorm, schedule: options.optimizer.schedule.rawValue),
            currentLearningRate: snapshot.learningRate, globalBatchSize: plan.globalBatchSize,
            microBatchSize: plan.microBatchSize, maxSequenceLength: setup.description.maxSequenceLength,
            trainDataFingerprint: trainFingerprint, recentMetrics: snapshot.recentMetrics,
            createdUnixSeconds: Date().timeIntervalSince1970, bertDistVersion: bertDistVersion,
            optimizerStep: snapshot.optimizerStep, parameterLayout: model.layout.fingerprint,
            bestMetric: snapshot.bestMetric, evaluationsWithoutImprovement: snapshot.evaluationsWithoutImprovement)
    }

    /// --checkpoint-mirror: rank 0 streams the committed `folder` to the mirror rank, which writes
    /// it at the same path on its disk (CheckpointCopy; nothing when it has it already, e.g. on a
    /// shared disk). Only those two ranks take part; the others go on to the next step. A failed
    /// copy is a warning: the original is complete.
    func mirror(_ folder: URL, say: (String) -> Void) throws {
        guard let mirrorRank else { return }
        let keep = options.checkpoints.keepCheckpoints
        if communicator.rank == 0 {
            if let failure = try CheckpointCopy.send(folder, to: mirrorRank, communicator: communicator) {
                say("warning: the mirror of \(folder.lastPathComponent) on \(hosts[mirrorRank]) (rank \(mirrorRank)) failed: \(failure); the original is complete")
            }
        } else if communicator.rank == mirrorRank {
            _ = try CheckpointCopy.receive(into: output, folderName: folder.lastPathComponent, from: 0, keep: keep, communicator: communicator)
        }
    }

    /// Before a resume: every rank names the newest checkpoint of this run on its own disk (at the
    /// --output path); when another host holds a newer one than rank 0 (the mirror after the head's
    /// disk was lost, an emergency checkpoint of a rank on another host), its lowest holder streams
    /// it to rank 0, which then resumes as usual. Ranks on a shared disk all name the same one.
    func fetchNewestCopy(_ replica: Replica, log: (String) -> Void) throws {
        let layout = replica.model.layout.fingerprint, fingerprint = trainFingerprint
        let local = CheckpointFolder.newestCommitted(in: output) { state in
            state.parameterLayout == layout && (fingerprint.isEmpty || state.trainDataFingerprint.isEmpty || state.trainDataFingerprint == fingerprint)
        }
        let steps = try communicator.allGather(UInt64(bitPattern: Int64(local?.step ?? -1))).map { Int(Int64(bitPattern: $0)) }
        guard let newest = steps.max(), newest > steps[0], let holder = steps.firstIndex(of: newest) else { return }
        let name = CheckpointFolder.name(step: newest)
        let keep = options.checkpoints.keepCheckpoints
        if communicator.rank == holder {
            _ = try CheckpointCopy.send(output.appendingPathComponent(name), to: 0, communicator: communicator)
        } else if communicator.rank == 0 {
            let host = holder < hosts.count ? hosts[holder] : "?"
            let here = steps[0] >= 0 ? "checkpoint-\(steps[0])" : "none"
            if let failure = try CheckpointCopy.receive(into: output, folderName: name, from: holder, keep: keep, communicator: communicator) {
                log("warning: \(name) on \(host) (rank \(holder)) is newer than this host's (\(here)) but could not be copied: \(failure)")
            } else {
                log("\(name) is on \(host) (rank \(holder)), newer than this host's (\(here)): copied into \(output.path)")
            }
        }
    }

    /// The options of this run that differ from the training_args.json of `folder`, as
    /// "--lr 3e-05 (was 2e-05), ..."; nil when none do (or the checkpoint has no such file).
    /// --resume itself is not compared.
    func changedOptions(since folder: URL) -> String? {
        guard let recorded = (try? JSONValue.readFieldsIfPresent(folder.appendingPathComponent(CheckpointFolder.trainingArgumentsFile))) ?? nil else { return nil }
        let changed = Set(recorded.keys).union(trainingArguments.keys).sorted().filter {
            $0 != "resume" && recorded[$0] != trainingArguments[$0]
        }
        guard !changed.isEmpty else { return nil }
        return changed.map { "--\($0) \((trainingArguments[$0] ?? .null).compact) (was \((recorded[$0] ?? .null).compact))" }.joined(separator: ", ")
    }

    /// Loads the newest complete checkpoint of --output into `replica`; nil when there is none.
    /// Rank 0 alone reads: it verifies (checksums) and falls back past damaged checkpoints,
    /// saying so, then sends every rank the state, the weights and the part of the Adam state its
    /// (new) range needs — so a resume works on any rank count and without a shared disk.
    func resume(into replica: Replica, log: (String) -> Void) throws -> TrainerState? {
        let isRoot = communicator.rank == 0
        if communicator.worldSize > 1 { try fetchNewestCopy(replica, log: log) }
        let chosen = try collectively(communicator) { () throws -> (state: TrainerState, folder: URL)? in
            guard isRoot else { return nil }
            var found: (state: TrainerState, folder: URL)?
            for candidate in CheckpointFolder.candidates(in: output) {
                do {
                    let state = try CheckpointFolder.verify(candidate.url)
                    guard state.parameterLayout == replica.model.layout.fingerprint else {
                        throw CheckpointError.incompatible(folder: candidate.url.path, reason: "written for a different model layout (another model or label count)")
                    }
                    found = (state, candidate.url)
                    break
                } catch {
                    log("warning: not resuming from \(candidate.url.lastPathComponent): \(error); trying the previous checkpoint")
                }
            }
            guard let found else {
                log("no complete checkpoint in \(output.path): starting from the beginning")
                return nil
            }
            let recorded = found.state.trainDataFingerprint
            if !trainFingerprint.isEmpty && !recorded.isEmpty && recorded != trainFingerprint {
                throw CheckpointError.incompatible(folder: found.folder.path, reason: "was trained on other data or labels (fingerprint \(recorded), this run's is \(trainFingerprint)); use another --output, or the same --train file, columns and --labels")
            }
            let weights = try SafeTensorsFile(url: found.folder.appendingPathComponent(CheckpointFolder.modelFile))
            _ = try replica.model.loadWeights(from: weights, seed: 0)
            if let changed = changedOptions(since: found.folder) { log("resuming with options other than \(found.folder.lastPathComponent)'s \(CheckpointFolder.trainingArgumentsFile): \(changed)") }
            return found
        }
        let encoded = try communicator.broadcast(bytes: chosen?.state.encoded() ?? [], root: 0)
        guard !encoded.isEmpty else {
            announce(nil)
            return nil
        }
        let state = try chosen?.state ?? TrainerState(decoding: encoded, file: "rank 0's \(TrainerState.fileName)")
        // Each rank's range of the Adam state, read by rank 0 and streamed to it.
        let files = chosen.map { OptimizerFiles(folder: $0.folder, state: $0.state) }
        let shards = replica.shards, total = replica.model.layout.totalCount, sharded = replica.shardOptimizer
        try collectively(communicator) {
            for (moment, name) in [(replica.optimizer.m, "exp_avg"), (replica.optimizer.v, "exp_avg_sq")] {
                try communicator.streamFromRoot(into: moment.buffer, root: 0, chunkFloats: CheckpointWriter.chunkFloats) { rank, offset, chunk in
                    let start = (sharded ? shards.range(of: rank).lowerBound : 0) + offset
                    precondition(start + chunk.count <= total)
                    try files?.copy(name, range: start..<(start + chunk.count), into: chunk)
                }
            }
        }
        replica.optimizer.stepCount = state.optimizerStep
        try communicator.broadcast(replica.model.parameters.buffer, root: 0)
        replica.model.parametersChanged()
        let folder = output.appendingPathComponent(CheckpointFolder.name(step: state.step))
        announce(folder)
        // The mirror may be a host that does not hold it yet (another host after a restart).
        try mirror(folder, say: log)
        return state
    }
}

/// What the rank that reports a lost peer does before the job ends (PeerWatchdog's
/// `setBeforeEnding`, on a thread of its own while the main thread may be blocked in MPI for ever):
/// a complete checkpoint of the last completed step from its own replica, so that at most the step
/// in flight is computed again. Written without any collective (`writeReplicaCheckpoint`) by the
/// reporter of each side of a partition (rank 0 if it is alive), on its own disk: a resume finds
/// the newest copy on any host (`CheckpointPolicy.fetchNewestCopy`), so a survivor on another host
/// covers a rank 0 that Open MPI took down with the lost peer.
///
/// With --shard-optimizer there is none: the lost ranks' Adam shards are gone (keeping each also
/// on a partner rank would double the Adam memory per rank and send up to 8 bytes per parameter / N
/// more per rank and step; docs/cluster.md), so the run continues from the newest complete
/// checkpoint, as the note says.
final class EmergencyCheckpoint: @unchecked Sendable {
    let policy: CheckpointPolicy
    let replica: Replica
    let plan: TrainingPlan
    /// config.json and the tokenizer's files, as rank 0 writes them (`share` sent them to every rank).
    let files: [CheckpointFile]
    /// How long to wait for a regular checkpoint write in progress (finite work); an update still
    /// running after a few seconds is waiting for sums a lost peer will not send (see `ending`).
    let waitSeconds: Double

    private init(policy: CheckpointPolicy, replica: Replica, plan: TrainingPlan, files: [CheckpointFile], waitSeconds: Double) {
        self.policy = policy
        self.replica = replica
        self.plan = plan
        self.files = files
        self.waitSeconds = waitSeconds
    }

    /// Every rank's, at the start of a run of several ranks with a watchdog (a collective: rank 0
    /// sends the checkpoint's small files, ~0.3 MB for BERT's vocabulary, up to ~17 MB for
    /// XLM-R's tokenizer.json, so that a rank of its host can write a complete checkpoint should
    /// rank 0 itself be lost). With a sharded optimizer nothing is sent.
    static func share(_ policy: CheckpointPolicy, replica: Replica, plan: TrainingPlan, waitSeconds: Double = 120) throws -> EmergencyCheckpoint {
        var files: [CheckpointFile] = []
        if !replica.shardOptimizer {
            let communicator = policy.communicator
            var encoded: [UInt8] = []
            if communicator.rank == 0, let modelFiles = policy.setup.root?.modelFiles {
                files = try modelFiles.checkpointFiles(labels: policy.setup.labels, problemType: policy.setup.description.task.problemType,
                                                       modelConfig: replica.model.config,
                                                       trainingArguments: JSONValue(object: policy.trainingArguments).serialized())
                for file in files {
                    withUnsafeBytes(of: UInt32(file.name.utf8.count).littleEndian) { encoded += $0 }
                    encoded += Array(file.name.utf8)
                    withUnsafeBytes(of: UInt64(file.bytes.count).littleEndian) { encoded += $0 }
                    encoded += file.bytes
                }
            }
            let received = try communicator.broadcast(bytes: encoded, root: 0)
            if communicator.rank != 0 { files = decodeFiles(received) }
        }
        return EmergencyCheckpoint(policy: policy, replica: replica, plan: plan, files: files, waitSeconds: waitSeconds)
    }

    private static func decodeFiles(_ bytes: [UInt8]) -> [CheckpointFile] {
        var files: [CheckpointFile] = [], offset = 0
        func integer<Value: FixedWidthInteger>(_ type: Value.Type) -> Int? {
            guard offset + MemoryLayout<Value>.size <= bytes.count else { return nil }
            let value = bytes.withUnsafeBytes { Value(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: Value.self)) }
            offset += MemoryLayout<Value>.size
            return Int(value)
        }
        while offset < bytes.count {
            guard let nameCount = integer(UInt32.self), offset + nameCount <= bytes.count else { break }
            let name = String(decoding: bytes[offset..<(offset + nameCount)], as: UTF8.self)
            offset += nameCount
            guard let count = integer(UInt64.self), offset + count <= bytes.count else { break }
            files.append(CheckpointFile(name: name, bytes: Array(bytes[offset..<(offset + count)])))
            offset += count
        }
        return files
    }

    /// The reporter's part for `trip` (see the type): the note for the line, and facts for
    /// launch/train (`step`, `time`: the last completed step and when; `checkpoint`: the folder to
    /// continue from; `emergency`: whether it was written now).
    func ending(for trip: PeerWatchdog.Trip) -> PeerWatchdog.Ending {
        // The update's own work takes well under a second; still held after `updateGrace`, the
        // update is waiting for sums that will not come: no consistent state will ever be there,
        // so the newest complete checkpoint is named at once (without waiting `waitSeconds`).
        let updateGrace = min(3.0, waitSeconds)
        var result = policy.completedStep.withConsistentState(within: updateGrace, consistent)
        if result == nil {
            if policy.completedStep.isUpdating {
                return PeerWatchdog.Ending(note: "the step in flight was being applied while its last sums travelled: no emergency checkpoint; "
                                             + "continue with --resume from the newest complete checkpoint",
                                           facts: [("emergency", "no")])
            }
            result = policy.completedStep.withConsistentState(within: waitSeconds - updateGrace, consistent)
        }
        return result ?? PeerWatchdog.Ending(note: "", facts: [("emergency", "no")])
    }

    /// The ending written while the main thread cannot change the arenas: the emergency checkpoint
    /// of the last completed step when it is newer than the newest complete one.
    private func consistent(_ snapshot: CompletedStep.Snapshot?, _ checkpointed: Int?) -> PeerWatchdog.Ending {
        let output = policy.output
        var facts: [(key: String, value: String)] = []
        if let snapshot {
            facts += [("step", "\(snapshot.step)"), ("time", String(format: "%.3f", snapshot.completedAt))]
        }
        let newest = checkpointed.map { output.appendingPathComponent(CheckpointFolder.name(step: $0)) }
        let newestNote = newest.map { "newest complete checkpoint: \($0.path) (continue with --resume)" } ?? "no complete checkpoint yet"
        func keepNewest(_ why: String) -> PeerWatchdog.Ending {
            PeerWatchdog.Ending(note: newestNote + why, facts: facts + [("checkpoint", newest?.path ?? "-"), ("emergency", "no")])
        }
        guard let snapshot, snapshot.step > (checkpointed ?? -1) else { return keepNewest("") }
        guard !replica.shardOptimizer else {
            let from = (checkpointed ?? 0) + 1
            return keepNewest("; no emergency checkpoint with --shard-optimizer (the lost ranks' Adam shards are gone): "
                + (from == snapshot.step ? "step \(from) is" : "steps \(from)-\(snapshot.step) are") + " computed again")
        }
        let state = policy.trainerState(replica, plan: plan, snapshot: snapshot)
        do {
            let folder = try writeReplicaCheckpoint(replica, state: state, files: files, output: output,
                                                    keep: policy.options.checkpoints.keepCheckpoints)
            return PeerWatchdog.Ending(note: "emergency checkpoint of the last completed step: \(folder.path) (continue with --resume)",
                                       facts: facts + [("checkpoint", folder.path), ("emergency", "yes")])
        } catch {
            return keepNewest("; the emergency checkpoint of step \(snapshot.step) failed: \(error)")
        }
    }
}
