import Data
import Distributed
import Foundation
import Model
import Storage

/// When the training loop checkpoints, what a checkpoint records about the run, and how a run
/// resumes from one. Every method is a collective: all ranks call it at the same point.
struct CheckpointPolicy {
    let options: TrainingOptions
    /// --output: where checkpoints go.
    let output: URL
    let communicator: any Communicator
    let labels: [String]
    let files: ModelFiles
    /// Identifies the training data: a checkpoint of other data is not resumed from.
    let trainFingerprint: String

    var writer: CheckpointWriter { CheckpointWriter(output: output, communicator: communicator, keep: options.keepCheckpoints) }

    /// Before any work: --output must be a folder this process can write (created if needed),
    /// not a file — else the first checkpoint would fail after the training work.
    func prepareOutputFolder() throws { try Self.prepareOutputFolder(output, communicator: communicator) }

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
        step < totalSteps && options.checkpointEvery > 0 && step % options.checkpointEvery == 0
    }

    /// Writes OUTPUT/checkpoint-STEP for the step just taken (rank 0 writes the replicated files).
    func write(_ replica: Replica, plan: TrainingPlan, progress: TrainingRun.Progress, reporter: Reporter) throws -> URL {
        let model = replica.model, worldSize = communicator.worldSize
        let hyperparameters = replica.optimizer.hyperparameters
        let position = progress.batches.position
        let state = TrainerState(
            step: progress.step, epoch: position.epoch, samplesConsumedInEpoch: position.samplesConsumed,
            totalSteps: plan.totalSteps, warmupSteps: plan.schedule.warmupSteps, seed: options.seed,
            worldSize: worldSize, shardOptimizer: options.shardOptimizer, parameterCount: model.layout.totalCount,
            optimizerShards: options.shardOptimizer
                ? replica.shards.ranges.enumerated().map { .init(rank: $0.offset, start: $0.element.lowerBound, count: $0.element.count) }
                : [.init(rank: 0, start: 0, count: model.layout.totalCount)],
            optimizer: .init(kind: options.optimizer.rawValue, learningRate: options.learningRate,
                             beta1: Double(hyperparameters.beta1), beta2: Double(hyperparameters.beta2),
                             epsilon: Double(hyperparameters.epsilon), weightDecay: options.weightDecay,
                             maxGradNorm: options.maxGradNorm, schedule: options.schedule.rawValue),
            currentLearningRate: progress.learningRate, globalBatchSize: plan.globalBatchSize,
            microBatchSize: plan.microBatchSize, maxSequenceLength: options.maxSequenceLength ?? 0,
            trainDataFingerprint: trainFingerprint, recentMetrics: progress.recentMetrics,
            createdUnixSeconds: Date().timeIntervalSince1970, bertDistVersion: bertDistVersion,
            optimizerStep: replica.optimizer.stepCount, parameterLayout: model.layout.fingerprint)
        if worldSize > 1 {
            // Rank 0 alone writes the weights (and the replicated Adam state): make sure they are everyone's.
            let repaired = try ensureReplicasMatch(buffers: replica.replicatedBuffers, communicator: communicator)
            if !repaired.isEmpty { reporter.say("warning: ranks \(repaired) had drifted from rank 0 and were repaired before checkpointing") }
        }
        return try writer.write(step: progress.step, replica: replica, content: .init(state: state, labels: labels, files: files))
    }

    /// Loads the newest complete checkpoint of --output into `replica`; nil (after giving every
    /// rank rank 0's weights) when there is none. Rank 0 verifies (checksums) and falls back past
    /// damaged ones, saying so; every rank then reads the weights and the part of the Adam state
    /// its (new) range needs, and rank 0's copy is broadcast anyway, so that replicas start
    /// identical whatever the file system showed each rank.
    func resume(into replica: Replica, log: (String) -> Void) throws -> TrainerState? {
        var chosen: Int64 = -1
        if communicator.rank == 0 {
            for candidate in CheckpointFolder.candidates(in: output) {
                do {
                    let state = try CheckpointFolder.verify(candidate.url)
                    guard state.parameterLayout == replica.model.layout.fingerprint else {
                        throw CheckpointError.incompatible(folder: candidate.url.path, reason: "written for a different model layout (another model or label count)")
                    }
                    chosen = Int64(candidate.step)
                    break
                } catch {
                    log("warning: not resuming from \(candidate.url.lastPathComponent): \(error); trying the previous checkpoint")
                }
            }
            if chosen < 0 { log("no complete checkpoint in \(output.path): starting from the beginning") }
        }
        try withUnsafeMutableBytes(of: &chosen) { try communicator.broadcast($0, root: 0) }
        guard chosen >= 0 else { return nil }
        let folder = output.appendingPathComponent(CheckpointFolder.name(step: Int(chosen)))
        let state = try collectively(communicator) {
            let state = try TrainerState(contentsOf: folder.appendingPathComponent(TrainerState.fileName))
            if !trainFingerprint.isEmpty && !state.trainDataFingerprint.isEmpty && state.trainDataFingerprint != trainFingerprint {
                throw CheckpointError.incompatible(folder: folder.path, reason: "was trained on other data (fingerprint \(state.trainDataFingerprint), this run's is \(trainFingerprint)); use another --output or the same --train file")
            }
            let weights = try SafeTensorsFile(url: folder.appendingPathComponent(CheckpointFolder.modelFile))
            _ = try replica.model.loadWeights(from: weights, seed: 0)
            try readOptimizer(into: replica.optimizer, from: folder, state: state)
            return state
        }
        for buffer in replica.replicatedBuffers { try communicator.broadcast(buffer, root: 0) }
        return state
    }
}
