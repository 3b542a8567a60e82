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

/// Passes everything to `inner`, but a message this rank receives lands in its buffer only once
/// its request has been tested `polls` times after the transfer completed underneath (the
/// in-process group copies a message the moment a send meets its receive; a network delivers
/// later): whoever reads a receive buffer before the receive completed reads what was there before.
final class LateDeliveryCommunicator: Communicator, @unchecked Sendable {
    let inner: any Communicator
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
        self.inner = inner
        self.polls = polls
    }

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
        let staging = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, bytes.count), alignment: 16)
        let request = try inner.startReceive(bytes: UnsafeMutableRawBufferPointer(rebasing: staging[0 ..< bytes.count]), from: source, tag: tag)
        let marker = InProcessTransfer(peer: source)
        deliveries[ObjectIdentifier(marker)] = Delivery(staging: staging, destination: bytes, request: request, pollsLeft: polls)
        return TransferRequest(handle: .inProcess(marker))
    }
    func testAll(_ requests: UnsafeMutableBufferPointer<TransferRequest>) throws -> Bool {
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
    func waitAll(_ requests: UnsafeMutableBufferPointer<TransferRequest>) throws {
        while try !testAll(requests) { sched_yield() }
    }
    func setBackgroundProgress(_ active: Bool) { inner.setBackgroundProgress(active) }
    func abort(message: String) -> Never { inner.abort(message: message) }
}
