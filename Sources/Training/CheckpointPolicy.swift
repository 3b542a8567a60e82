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
    /// training_args.json of every checkpoint: the run's resolved options.
    let trainingArguments: [String: JSONValue]

    init(options: TrainingOptions, communicator: any Communicator, setup: RunSetup, trainingArguments: [String: JSONValue] = [:],
         announce: @escaping (URL?) -> Void) {
        self.options = options
        output = options.checkpoints.folder
        self.communicator = communicator
        self.setup = setup
        self.trainingArguments = trainingArguments
        self.announce = announce
    }

    /// Identifies the training data: a checkpoint of other data is not resumed from.
    var trainFingerprint: String { setup.description.trainFingerprint }

    var writer: CheckpointWriter { CheckpointWriter(output: output, communicator: communicator, keep: options.checkpoints.keepCheckpoints) }

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

    /// Writes OUTPUT/checkpoint-STEP for the step just taken (rank 0 writes the replicated files);
    /// `isBest`: OUTPUT/best names it.
    func write(_ replica: Replica, plan: TrainingPlan, progress: TrainingRun.Progress, reporter: Reporter, isBest: Bool = false) throws -> URL {
        let model = replica.model, worldSize = communicator.worldSize
        let hyperparameters = replica.optimizer.hyperparameters
        let position = progress.batches.position
        let state = TrainerState(
            step: progress.step, epoch: position.epoch, samplesConsumedInEpoch: position.samplesConsumed,
            totalSteps: plan.totalSteps, warmupSteps: plan.schedule.warmupSteps, seed: options.seed,
            worldSize: worldSize, shardOptimizer: replica.shardOptimizer, parameterCount: model.layout.totalCount,
            optimizerShards: replica.shardOptimizer
                ? replica.shards.ranges.enumerated().map { .init(rank: $0.offset, start: $0.element.lowerBound, count: $0.element.count) }
                : [.init(rank: 0, start: 0, count: model.layout.totalCount)],
            optimizer: .init(kind: options.optimizer.optimizer.rawValue, learningRate: options.optimizer.learningRate,
                             beta1: Double(hyperparameters.beta1), beta2: Double(hyperparameters.beta2),
                             epsilon: Double(hyperparameters.epsilon), weightDecay: options.optimizer.weightDecay,
                             maxGradNorm: options.optimizer.maxGradNorm, schedule: options.optimizer.schedule.rawValue),
            currentLearningRate: progress.learningRate, globalBatchSize: plan.globalBatchSize,
            microBatchSize: plan.microBatchSize, maxSequenceLength: setup.description.maxSequenceLength,
            trainDataFingerprint: trainFingerprint, recentMetrics: progress.recentMetrics,
            createdUnixSeconds: Date().timeIntervalSince1970, bertDistVersion: bertDistVersion,
            optimizerStep: replica.optimizer.stepCount, parameterLayout: model.layout.fingerprint,
            bestMetric: progress.bestModel?.best, evaluationsWithoutImprovement: progress.bestModel?.evaluationsWithoutImprovement ?? 0)
        if worldSize > 1 {
            // Rank 0 alone writes the weights (and the replicated Adam state): make sure they are everyone's.
            let repaired = try ensureReplicasMatch(buffers: replica.replicatedBuffers, communicator: communicator)
            if !repaired.isEmpty {
                replica.model.parametersChanged()
                reporter.say("warning: ranks \(repaired) had drifted from rank 0 and were repaired before checkpointing")
            }
        }
        let files = setup.root?.modelFiles ?? ModelFiles(config: [:], vocabulary: [], tokenizerConfig: [:])  // rank 0 writes them
        let content = CheckpointWriter.Content(state: state, labels: setup.labels, problemType: setup.description.task.problemType, files: files,
                                               trainingArguments: JSONValue.object(trainingArguments).serialized(), isBest: isBest)
        let folder = try writer.write(step: progress.step, replica: replica, content: content)
        announce(folder)
        return folder
    }

    /// The options of this run that differ from the training_args.json of `folder`, as
    /// "--lr 3e-05 (was 2e-05), ..."; nil when none do (or the checkpoint has no such file).
    /// --resume itself is not compared.
    func changedOptions(since folder: URL) -> String? {
        guard let recorded = try? JSONValue.readObject(folder.appendingPathComponent(CheckpointFolder.trainingArgumentsFile)) else { return nil }
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
        announce(output.appendingPathComponent(CheckpointFolder.name(step: state.step)))
        return state
    }
}
