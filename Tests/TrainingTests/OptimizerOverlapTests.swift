import Data
@testable import Distributed
import Foundation
import Model
import Options
import Testing
@testable import Training

/// AdamW applied to each part of the arena as its sum arrives (and ZeRO-1's shard piece by piece,
/// each piece's parameter gather leaving as soon as it is updated) gives exactly the model and
/// Adam state of the update at the end of the step: the clip factor is known before any update,
/// a skipped step updates nothing, each element's arithmetic is the same.
@Suite(.serialized) struct OptimizerOverlapTests {
    /// Every checkpointed tensor file of the last step (the model and the Adam moments, one file
    /// or one per shard), by name: the bits of both.
    func checkpointFiles(_ output: URL, step: Int) throws -> [String: Data] {
        let folder = output.appendingPathComponent("checkpoint-\(step)")
        var files: [String: Data] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: folder.path) where name.hasSuffix(".safetensors") {
            files[name] = try Data(contentsOf: folder.appendingPathComponent(name))
        }
        return files
    }

    /// Trains with `schedule`; with `lateDelivery` every received message lands only a few
    /// tests after it arrived (as over a network), so that a part used before its sum is
    /// complete would be used with stale values.
    func trained(_ options: TrainingOptions, ranks: Int, data: TrainingData, runtime: Runtime,
                 schedule: Replica.UpdateSchedule, lateDelivery: Bool = true) throws -> (files: [String: Data], skipped: Int) {
        var options = options
        options.checkpoints.folder = temporaryDirectory()
        let summaries = try InProcessGroup.run(worldSize: ranks) { [options] communicator in
            let communicator: any Communicator = lateDelivery ? LateDeliveryCommunicator(communicator, polls: 3) : communicator
            let run = try trainingRun(options, runtime: runtime, communicator: communicator, data: data)
            run.settings.updateSchedule = schedule
            return try run.run()
        }
        return (try checkpointFiles(options.checkpoints.folder, step: summaries[0].stepsDone), summaries[0].skippedSteps)
    }

    @Test func overlappedUpdatesEqualTheUpdateAtTheEndBitForBit() throws {
        let data = try syntheticData()
        let bf16 = { var runtime = Runtime(); runtime.precision = .bf16; runtime.bf16Engine = .software; return runtime }()
        // Clipping on in every step (the gradient norm of this task is far above 0.05).
        let clipped = ["--max-grad-norm", "0.05"]
        for (ranks, micro, sharded, compression, precision) in [
            (1, nil, false, GradientCompression.none, "fp32"), (2, nil, false, .none, "fp32"), (3, 2, false, .none, "fp32"),
            (2, nil, true, .none, "fp32"), (4, 1, true, .none, "fp32"), (3, nil, false, .bf16, "fp32"), (2, nil, true, .bf16, "fp32"),
            (2, nil, false, .none, "bf16"), (3, 1, true, .none, "bf16"),
        ] as [(Int, Int?, Bool, GradientCompression, String)] {
            var options = tinyOptions(output: temporaryDirectory(), clipped)
            options.parallel.microBatchSize = micro
            options.parallel.shardOptimizer = sharded
            options.parallel.gradientCompression = compression
            let runtime = precision == "bf16" ? bf16 : Runtime()
            let overlapped = try trained(options, ranks: ranks, data: data, runtime: runtime, schedule: .overlapped)
            let atTheEnd = try trained(options, ranks: ranks, data: data, runtime: runtime, schedule: .atTheEnd, lateDelivery: false)
            let what = "ranks \(ranks), micro-batch \(micro.map(String.init) ?? "-"), sharded \(sharded), \(compression), \(precision)"
            #expect(overlapped.files.count == (sharded && ranks > 1 ? ranks + 1 : 2), "\(what): \(overlapped.files.keys)")
            #expect(overlapped.files == atTheEnd.files, "\(what)")
        }
    }

    @Test func aSkippedStepUpdatesNothingInEitherSchedule() throws {
        // Word 50's embedding is NaN: the steps whose batch holds the one example with it are skipped.
        let nonFinite = NonFiniteTests()
        let data = try nonFinite.data(poisonEvery: 64)
        for (ranks, sharded) in [(1, false), (2, false), (3, true)] {
            var options = tinyOptions(output: temporaryDirectory(), ["--max-steps", "8", "--max-grad-norm", "0.05"])
            options.model.directory = try nonFinite.poisonedModel()
            options.parallel.shardOptimizer = sharded
            let overlapped = try trained(options, ranks: ranks, data: data, runtime: Runtime(), schedule: .overlapped)
            let atTheEnd = try trained(options, ranks: ranks, data: data, runtime: Runtime(), schedule: .atTheEnd)
            #expect(overlapped.skipped == 1 && atTheEnd.skipped == 1, "ranks \(ranks)")
            #expect(overlapped.files == atTheEnd.files, "ranks \(ranks), sharded \(sharded)")
        }
    }
}

/// The emergency checkpoint's lock (CompletedStep) covers the whole overlapped update: Adam's step
/// count and every part change only inside the window, which stays open while later buckets'
/// sums still travel. Two ranks step a Replica with that lock; whenever a rank tests its
/// transfers (before, during and after the update, messages delivered late), another thread
/// tries the lock: when it gets in, the parameters, the Adam moments and the step count are
/// exactly those of the last completed step, never a step half applied.
@Suite(.serialized) struct UpdateWindowTests {
    /// Overlapped, the window holds the later sums' travel and tests of transfers find it closed;
    /// at the end (training's default) it holds no communication at all.
    @Test(arguments: [Replica.UpdateSchedule.overlapped, .atTheEnd])
    func anotherThreadNeverSeesAStepHalfApplied(schedule: Replica.UpdateSchedule) throws {
        let data = try syntheticData()
        let options = tinyOptions(output: temporaryDirectory())
        let probes = try InProcessGroup.run(worldSize: 2) { communicator in
            let setup = try trainingSetup(options, communicator: communicator, data: data)
            let train = try #require(setup.train)
            let probe = UpdateWindowProbe(LateDeliveryCommunicator(communicator, polls: 3))
            let replica = try Replica(model: setup.model, hyperparameters: options.optimizer.adamHyperparameters,
                                      communicator: probe, parallel: options.parallel)
            replica.completedStep = probe.window
            replica.updateSchedule = schedule
            probe.replica = replica
            let plan = try TrainingPlan(options: options, lengths: (0..<train.count).map { Int32(train.tokens(at: $0).count) },
                                        worldSize: 2, hiddenSize: setup.model.config.hiddenSize)
            replica.reserve(plan, maxSequenceLength: setup.description.maxSequenceLength)
            var cursor = BatchCursor(plan: plan, position: SamplePosition(epoch: 0, samplesConsumed: 0))
            for step in 0..<plan.totalSteps {
                probe.rememberCompletedStep()
                let (share, order) = cursor.current(rank: communicator.rank)
                let outcome = try replica.step(microBatchCount: share.microBatchCount,
                                               lossDenominator: replica.model.task.lossDenominator(globalBatch: share, order: order, examples: train),
                                               stepIndex: step, learningRate: 1e-3, maxGradNorm: 1, dropout: DropoutContext(seed: 1, step: step),
                                               stopRequested: false) { micro, batch in batch.append(micro: micro, of: share, order: order, from: train) }
                #expect(!outcome.skipped)
                probe.window.endUpdate(nil)
                cursor.advance()
            }
            return (probe.admitted, probe.refused, probe.torn)
        }
        for (rank, (admitted, refused, torn)) in probes.enumerated() {
            print("rank \(rank): \(admitted) probes got in, \(refused) were kept out by an update in progress, \(torn) saw a half-applied step")
            #expect(torn == 0, "rank \(rank): another thread saw a step half applied \(torn) times")
            if schedule == .overlapped {
                // Both sides of the window were probed: some tests ran while the update was open.
                #expect(admitted > 0 && refused > 0, "rank \(rank): admitted \(admitted), refused \(refused)")
            } else {
                #expect(admitted > 0 && refused == 0, "rank \(rank): a transfer inside the update window (refused \(refused))")
            }
        }
    }
}

/// Passes everything to `inner`; each test of transfers first has another thread try `window`'s
/// lock and, when it gets in, compare the replica's arenas with the last completed step's.
final class UpdateWindowProbe: ForwardingCommunicator, @unchecked Sendable {
    let window = CompletedStep()
    var replica: Replica?
    private var completed: (parameters: [Float], m: [Float], v: [Float], optimizerStep: Int) = ([], [], [], 0)
    private(set) var admitted = 0, refused = 0, torn = 0

    /// The main thread, between steps: the state an emergency checkpoint may write.
    func rememberCompletedStep() {
        guard let replica else { return }
        completed = (Array(replica.model.parameters.buffer), Array(replica.optimizer.m.buffer), Array(replica.optimizer.v.buffer),
                     replica.optimizer.stepCount)
    }

    /// Whether the arenas hold the last completed step (the caller holds the window's lock).
    private func holdsCompletedStep() -> Bool {
        guard let replica else { return true }
        func same(_ arena: UnsafeMutableBufferPointer<Float>, _ copy: [Float]) -> Bool {
            arena.elementsEqual(copy) { $0.bitPattern == $1.bitPattern }
        }
        return same(replica.model.parameters.buffer, completed.parameters) && same(replica.optimizer.m.buffer, completed.m)
            && same(replica.optimizer.v.buffer, completed.v) && replica.optimizer.stepCount == completed.optimizerStep
    }

    private func probe() {
        guard replica != nil else { return }
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var seen: Bool?
        Thread.detachNewThread { [self] in
            seen = window.withConsistentState(within: 0) { _, _ in holdsCompletedStep() }
            done.signal()
        }
        done.wait()
        switch seen {
        case nil: refused += 1
        case true?: admitted += 1
        case false?: torn += 1
        }
    }

    override func testAll(_ requests: UnsafeMutableBufferPointer<TransferRequest>) throws -> Bool {
        probe()
        return try inner.testAll(requests)
    }
    override func waitAll(_ requests: UnsafeMutableBufferPointer<TransferRequest>) throws {
        while try !testAll(requests) { sched_yield() }
    }
}

/// Passes everything to `inner`, but a message this rank receives lands in its buffer only once
/// its request has been tested `polls` times after the transfer completed underneath (the
/// in-process group copies a message the moment a send meets its receive; a network delivers
/// later): whoever reads a receive buffer before the receive completed reads what was there before.
final class LateDeliveryCommunicator: ForwardingCommunicator, @unchecked Sendable {
    let polls: Int
    private struct Delivery {
        let staging: UnsafeMutableRawBufferPointer
        let destination: UnsafeMutableRawBufferPointer
        /// The transfer underneath, into `staging`.
        var request: TransferRequest
        var pollsLeft: Int
    }
    /// Pending receives, by the request this communicator handed out for each (a transfer object
    /// of its own that the group never sees).
    private var deliveries: [ObjectIdentifier: Delivery] = [:]

    init(_ inner: any Communicator, polls: Int) {
        self.polls = polls
        super.init(inner)
    }

    override func startReceive(bytes: UnsafeMutableRawBufferPointer, from source: Int, tag: Int) throws -> TransferRequest {
        let staging = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, bytes.count), alignment: 16)
        let request = try inner.startReceive(bytes: UnsafeMutableRawBufferPointer(rebasing: staging[0 ..< bytes.count]), from: source, tag: tag)
        let marker = InProcessTransfer(peer: source)
        deliveries[ObjectIdentifier(marker)] = Delivery(staging: staging, destination: bytes, request: request, pollsLeft: polls)
        return TransferRequest(handle: .inProcess(marker))
    }
    override func testAll(_ requests: UnsafeMutableBufferPointer<TransferRequest>) throws -> Bool {
        var allDone = true
        for index in requests.indices where !requests[index].isCompleted {
            guard case .inProcess(let marker) = requests[index].handle, var delivery = deliveries[ObjectIdentifier(marker)] else {
                // A send: complete when the group says so.
                var one = [requests[index]]
                if try inner.testAll(&one) { requests[index] = .completed } else { allDone = false }
                continue
            }
            var one = [delivery.request]
            if try inner.testAll(&one) {
                delivery.request = .completed
                delivery.pollsLeft -= 1
            }
            if delivery.request.isCompleted && delivery.pollsLeft <= 0 {
                if delivery.destination.count > 0 {
                    delivery.destination.baseAddress!.copyMemory(from: delivery.staging.baseAddress!, byteCount: delivery.destination.count)
                }
                delivery.staging.deallocate()
                deliveries[ObjectIdentifier(marker)] = nil
                requests[index] = .completed
            } else {
                deliveries[ObjectIdentifier(marker)] = delivery
                allDone = false
            }
        }
        return allDone
    }
    override func waitAll(_ requests: UnsafeMutableBufferPointer<TransferRequest>) throws {
        while try !testAll(requests) { sched_yield() }
    }
}
