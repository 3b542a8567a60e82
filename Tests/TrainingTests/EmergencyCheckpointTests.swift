import Data
@testable import Distributed
import Foundation
import Storage
import Synchronization
import Testing
@testable import Training

/// The emergency checkpoint of the last completed step (a lost peer's reporter writes it from its
/// replica while the main thread may be blocked in MPI for ever), the copy of a checkpoint folder
/// between two ranks' disks (--checkpoint-mirror, a resume from another host) and launch/train's
/// restart record. In one process: ranks are threads, each with a real PeerWatchdog; a rank "is
/// lost" by ending its watchdog's thread without a goodbye. The namespace cluster runs the real
/// faults (SelfHealingClusterTests).
@Suite(.serialized) struct EmergencyCheckpointTests {
    /// Another thread waits for an update in progress and then sees the step it published; a lock
    /// held past the limit gives nil, not a torn state.
    @Test func aConsistentStateWaitsForTheUpdateInProgress() throws {
        let completed = CompletedStep()
        let position = SamplePosition(epoch: 0, samplesConsumed: 40)
        let started = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            completed.beginUpdate()
            started.signal()
            release.wait()
            completed.endUpdate(.init(step: 5, position: position, learningRate: 1e-3, recentMetrics: [], optimizerStep: 5,
                                      bestMetric: nil, evaluationsWithoutImprovement: 0, completedAt: 0))
        }
        started.wait()
        #expect(completed.isUpdating, "the update window is not seen as an update")
        #expect(completed.withConsistentState(within: 0.2) { snapshot, _ in snapshot?.step } == nil, "got in while the update ran")
        Thread.detachNewThread {
            Thread.sleep(forTimeInterval: 0.3)
            release.signal()
        }
        let seen = completed.withConsistentState(within: 5) { snapshot, checkpointed in (snapshot?.step, checkpointed) }
        #expect(seen?.0 == 5 && seen?.1 == nil)
        #expect(!completed.isUpdating)
        // A regular checkpoint write holds the same lock but is no update (finite work: worth waiting for).
        completed.beginCheckpointWrite()
        #expect(!completed.isUpdating)
        completed.endCheckpointWrite(committedStep: nil)
        completed.noteCheckpoint(step: 5)
        #expect(completed.withConsistentState(within: 1) { _, checkpointed in checkpointed } == 5)
    }

    /// Two ranks train (slowed to ~20 steps per second); rank 1's watchdog falls silent at its 5th
    /// step. Rank 0's watchdog reports it and, before the job would end, writes a checkpoint of its
    /// last completed step while its main thread goes on training: every file equals the regular
    /// checkpoint of that step of an undisturbed run, byte for byte, and the manifest records the
    /// same progress. With --shard-optimizer nothing is written and the note says why.
    @Test(arguments: [false, true])
    func theReportersCheckpointOfTheLastStepEqualsTheRegularOne(sharded: Bool) throws {
        let data = try syntheticData()
        var options = tinyOptions(output: temporaryDirectory())
        options.maxSteps = 30
        options.checkpoints.checkpointEvery = 0
        options.parallel.shardOptimizer = sharded
        let trainOptions = options
        let trips = Mutex<[PeerWatchdog.Trip]>([])
        _ = try InProcessGroup.run(worldSize: 2) { communicator in
            let rank = communicator.rank
            let watchdog = try PeerWatchdog.start(communicator: communicator, timeoutSeconds: 0.5, hostName: "host\(rank)",
                                                  heartbeatSeconds: 0.05, followerGraceSeconds: 0.5,
                                                  response: .call { trip in trips.withLock { $0.append(trip) } })
            let steps = Atomic<Int>(0)
            let run = try trainingRun(trainOptions, communicator: communicator, data: data, stopRequested: {
                if steps.add(1, ordering: .relaxed).newValue == 5 && rank == 1 { watchdog.monitor?.stop(sayGoodbye: false) }
                Thread.sleep(forTimeInterval: 0.05)
                return false
            })
            run.watchdog = watchdog
            _ = try run.run()
            watchdog.stop()
        }
        let trip = try #require(trips.withLock { $0 }.first, "rank 0's watchdog did not trip")
        #expect(trip.isReporter && trip.observerRank == 0 && trip.silentRanks == [1])
        let step = try #require(trip.facts.first { $0.key == "step" }.flatMap { Int($0.value) }, "\(trip.facts)")
        #expect(step >= 5 && step < 30, "the trip came after the run (step \(step))")
        let output = options.checkpoints.folder
        let folder = output.appendingPathComponent("checkpoint-\(step)")
        if sharded {
            #expect(!FileManager.default.fileExists(atPath: folder.path))
            #expect(trip.line.contains("no emergency checkpoint with --shard-optimizer (the lost ranks' Adam shards are gone): "
                + (step == 1 ? "step 1 is" : "steps 1-\(step) are") + " computed again"), "\(trip.line)")
            #expect(trip.facts.contains { $0 == ("emergency", "no") })
            return
        }
        #expect(trip.line.hasSuffix("; emergency checkpoint of the last completed step: \(folder.path) (continue with --resume)"), "\(trip.line)")
        #expect(trip.facts.contains { $0 == ("checkpoint", folder.path) } && trip.facts.contains { $0 == ("emergency", "yes") })
        let state = try CheckpointFolder.verify(folder)

        var reference = options
        reference.checkpoints.folder = temporaryDirectory()
        reference.checkpoints.checkpointEvery = 1
        reference.checkpoints.keepCheckpoints = 100
        try train(reference, ranks: 2, data: data)
        let expectedFolder = reference.checkpoints.folder.appendingPathComponent("checkpoint-\(step)")
        let expected = try CheckpointFolder.verify(expectedFolder)
        for file in ["model.safetensors", "optimizer.safetensors", "config.json", "vocab.txt", "tokenizer_config.json"] {
            #expect(FileManager.default.contents(atPath: folder.appendingPathComponent(file).path)
                == FileManager.default.contents(atPath: expectedFolder.appendingPathComponent(file).path), "\(file) differs")
        }
        #expect(state.step == expected.step && state.epoch == expected.epoch && state.samplesConsumedInEpoch == expected.samplesConsumedInEpoch
                && state.currentLearningRate == expected.currentLearningRate && state.optimizerStep == expected.optimizerStep
                && state.worldSize == 2 && !state.shardOptimizer, "\(state) vs \(expected)")
        // The run's resolved options, as its own regular (last) checkpoint records them.
        let arguments = try #require(FileManager.default.contents(atPath: folder.appendingPathComponent("training_args.json").path))
        #expect(arguments == FileManager.default.contents(atPath: output.appendingPathComponent("checkpoint-30/training_args.json").path))
        #expect(try JSONValue.readFieldsIfPresent(folder.appendingPathComponent("training_args.json"))?["max-steps"] == .number(30))
    }

    /// OUTPUT/best follows the manifests of the emergency checkpoint and of a mirrored copy as it
    /// follows the regular one's: it names a checkpoint whose best step is its own, and
    /// --keep-checkpoints never deletes it.
    @Test func theEmergencyCheckpointAndTheMirrorKeepTheBestModel() throws {
        let options = tinyOptions(output: temporaryDirectory())
        let data = try syntheticData()
        let output = temporaryDirectory(), mirror = temporaryDirectory()
        @Sendable func best(_ output: URL) -> String? { CheckpointFolder.named(by: CheckpointFolder.bestFile, in: output) }
        @Sendable func folders(_ output: URL) -> [String] { CheckpointFolder.candidates(in: output).map { $0.url.lastPathComponent } }
        _ = try InProcessGroup.run(worldSize: 1) { communicator in
            let setup = try trainingSetup(options, communicator: communicator, data: data)
            let replica = try Replica(model: setup.model, hyperparameters: options.optimizer.adamHyperparameters, communicator: communicator,
                                      parallel: options.parallel)
            func write(step: Int, bestStep: Int) throws {
                let state = TrainerState(step: step, bestMetric: .init(name: "loss", value: 1.0 / Double(bestStep), step: bestStep, greaterIsBetter: false))
                _ = try writeReplicaCheckpoint(replica, state: state, files: [], output: output, keep: 1)
            }
            try write(step: 2, bestStep: 2)
            #expect(best(output) == "checkpoint-2")
            try write(step: 3, bestStep: 2)
            #expect(best(output) == "checkpoint-2" && folders(output) == ["checkpoint-3", "checkpoint-2"])
            try write(step: 4, bestStep: 4)
            #expect(best(output) == "checkpoint-4" && folders(output) == ["checkpoint-4"])
            try write(step: 5, bestStep: 4)
            return 0
        }
        #expect(CheckpointFolder.named(by: "latest", in: output) == "checkpoint-5" && folders(output) == ["checkpoint-5", "checkpoint-4"])
        // The mirror receives them in order, with --keep-checkpoints 1: the best stays there too.
        for step in [4, 5] {
            let outcomes = try InProcessGroup.run(worldSize: 2) { communicator in
                communicator.rank == 0
                    ? try CheckpointCopy.send(output.appendingPathComponent("checkpoint-\(step)"), to: 1, communicator: communicator)
                    : try CheckpointCopy.receive(into: mirror, folderName: "checkpoint-\(step)", from: 0, keep: 1, communicator: communicator)
            }
            #expect(outcomes == [nil, nil])
        }
        #expect(best(mirror) == "checkpoint-4" && folders(mirror) == ["checkpoint-5", "checkpoint-4"])
    }

    /// A complete folder streams from one rank's disk to another's (in 4 MB chunks), where it
    /// verifies; a second copy finds it there and sends nothing; a damaged source is refused and
    /// leaves no commit record behind.
    @Test func aCheckpointFolderCopiesBetweenTwoRanksDisks() throws {
        let source = temporaryDirectory()
        try train(tinyOptions(output: source), ranks: 1, data: try syntheticData())
        let folder = source.appendingPathComponent("checkpoint-6")
        func copy(into output: URL) throws -> [String?] {
            try InProcessGroup.run(worldSize: 2) { communicator in
                communicator.rank == 0
                    ? try CheckpointCopy.send(folder, to: 1, communicator: communicator)
                    : try CheckpointCopy.receive(into: output, folderName: "checkpoint-6", from: 0, keep: 3, communicator: communicator)
            }
        }
        let mirror = temporaryDirectory()
        #expect(try copy(into: mirror) == [nil, nil])
        _ = try CheckpointFolder.verify(mirror.appendingPathComponent("checkpoint-6"))
        for name in try FileManager.default.contentsOfDirectory(atPath: folder.path) {
            #expect(FileManager.default.contents(atPath: mirror.appendingPathComponent("checkpoint-6/\(name)").path)
                == FileManager.default.contents(atPath: folder.appendingPathComponent(name).path), "\(name)")
        }
        #expect(try String(contentsOf: mirror.appendingPathComponent("latest"), encoding: .utf8) == "checkpoint-6\n")
        let before = try FileManager.default.attributesOfItem(atPath: mirror.appendingPathComponent("checkpoint-6/model.safetensors").path)[.modificationDate] as? Date
        #expect(try copy(into: mirror) == [nil, nil])
        let after = try FileManager.default.attributesOfItem(atPath: mirror.appendingPathComponent("checkpoint-6/model.safetensors").path)[.modificationDate] as? Date
        #expect(before == after, "copied again over an identical copy")

        let weights = folder.appendingPathComponent("model.safetensors")
        var bytes = try Data(contentsOf: weights)
        bytes[bytes.count / 2] ^= 0x40
        try bytes.write(to: weights)
        let damaged = temporaryDirectory()
        let outcomes = try copy(into: damaged)
        #expect(outcomes.allSatisfy { $0?.contains("SHA-256 differs from the sender's") == true }, "\(outcomes)")
        #expect(!FileManager.default.fileExists(atPath: damaged.appendingPathComponent("checkpoint-6/trainer_state.pb").path))
        #expect(!FileManager.default.fileExists(atPath: damaged.appendingPathComponent("latest").path))
    }

    /// What launch/train tells a restarted attempt, and what rank 0 makes of it.
    @Test func theRestartRecordReadsAsLaunchTrainWritesIt() throws {
        let record = try #require(RestartRecord(parsing: "attempt=3 restarts=4 failed_at=1700000100.5 lost_hosts=h3,h4 last_step=57 "
                                                + "last_time=1700000090.25 earlier_recomputed=2 earlier_seconds=11.5 earlier_hosts_lost=1"))
        #expect(record == RestartRecord(attempt: 3, restarts: 4, lostHosts: ["h3", "h4"], lastStep: 57, lastStepTime: 1700000090.25,
                                        failedAt: 1700000100.5, earlierRecomputed: 2, earlierSeconds: 11.5, earlierHostsLost: 1))
        #expect(record.catchUpStep(resumedAt: 40) == 57 && record.catchUpStep(resumedAt: 57) == 57 && record.lostSince == 1700000090.25)
        #expect(RestartReport(record: record, resumedStep: 40).resumeLine
            == "restart 2 of 4 (attempt 3): resumed at step 40 (lost: h3, h4); steps 41-57 are computed again")
        let killed = try #require(RestartRecord(parsing: "attempt=2 restarts=1 failed_at=1700000000"))
        #expect(killed.lostHosts.isEmpty && killed.lastStep == nil && killed.lostSince == 1700000000)
        #expect(RestartReport(record: killed, resumedStep: 12).resumeLine
            == "restart 1 of 1 (attempt 2): resumed at step 12 (no host lost); no completed step is computed again")
        #expect(RestartRecord(parsing: "attempt=1 restarts=2 failed_at=5") == nil && RestartRecord(parsing: "garbage") == nil)
        #expect(launchEvent("lost", [("ranks", "2,3"), ("checkpoint", "/runs/my run/checkpoint-57")])
            == "@bert-dist\tlost\tranks=2,3\tcheckpoint=/runs/my run/checkpoint-57")
    }
}
