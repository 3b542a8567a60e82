/// Sums the gradient arena over all ranks in buckets whose communication overlaps backward.
///
/// The arena is one contiguous Float buffer; backward writes it from the high offsets down to 0.
/// It is cut into buckets of `bucketFloats` floats from offset 0 up (the last bucket may be shorter).
/// Each step:
///
///     synchronizer.gradientsReady(downTo: offset)   // after each layer's backward; floats >= offset are final
///     synchronizer.progress()                       // optional, between layers (see below)
///     synchronizer.finish()                         // before clipping / the optimizer step
///
/// After `finish()`: without sharding every rank holds the sum over ranks of the whole arena; with
/// `shardOptimizer` (ZeRO-1) each rank holds the sum only in its own shard `layout.range(of: rank)`
/// and the rest of its arena is unspecified. Nothing is divided here: the trainer scales.
///
/// Algorithm, per bucket (bandwidth of a ring allreduce, owner computes):
/// 1. reduce: each rank sends every other rank r the part of the bucket inside r's shard and
///    receives the other ranks' copies of the part inside its own shard;
/// 2. the owner sums the N copies of its part in rank order, (((g0 + g1) + g2) + ...), into the arena;
/// 3. gather (unsharded only): each owner sends its summed part to every other rank.
/// Every float is therefore summed once, by its owner, in rank order: the result is bit-identical
/// on all ranks, between sharded and unsharded runs, and between MPI and the in-process group.
/// Transfers are point-to-point with a tag per (bucket, phase), so buckets may finish in any order
/// without breaking MPI's rule that collectives start in the same order everywhere.
///
/// Progress: Open MPI 4.1 has no progress thread by default (shared memory "vader", TCP): a
/// transfer above the eager limit (4 KiB on shared memory) moves only while some MPI call runs on
/// the rank, and on shared memory the copy itself (CMA, process_vm_readv) is done by the receiving
/// rank's thread inside that call. `progress()` is such a call: one MPI_Testall per bucket in
/// flight, then the sum and the start of the gather of each bucket whose reduce has arrived. It
/// costs about 0.1 us when nothing is pending and otherwise as long as the work it does.
/// Measured (benchmarks/allreduce.md, 2 ranks on this 2-core machine): on shared memory, calling
/// it between layers moves the work out of `finish()` but does not shorten the step, since the
/// same core does it either way; over TCP, one call per layer is not enough (each call advances a
/// few fragments) and calls about every millisecond hid about 60% of the communication. Call it
/// between layers, and more often (e.g. between GEMMs) when ranks talk over a network.
///
/// Buckets start from the top of the arena, so the first one sent is the short last bucket; the
/// bucket holding offset 0 (the embeddings) is ready only when backward ends and is never hidden.
///
/// Memory: a scratch buffer of (worldSize - 1) / worldSize of the arena receives the other ranks'
/// copies of this rank's parts. No heap allocation per step on the MPI path.
///
/// The arena must not be written at offsets >= the last `gradientsReady` offset until `finish()`
/// returns. Not thread-safe: call from the thread that owns the communicator.
public final class GradientSynchronizer {
    /// About 25 MB of Float32, as PyTorch DDP's default bucket.
    public static let defaultBucketFloats = 25 * 1_000_000 / 4
    /// 1 MB of Float32: the largest point-to-point message (see "Messages" above).
    public static let defaultMessageFloats = 1 << 18

    public let communicator: any Communicator
    public let gradients: UnsafeMutableBufferPointer<Float>
    public let layout: ShardLayout
    public let bucketFloats: Int
    /// Transfers are cut into messages of at most this many floats.
    public let messageFloats: Int
    public let shardOptimizer: Bool

    /// Seconds the last `finish()` blocked: communication not hidden behind backward.
    public private(set) var lastWaitSeconds: Double = 0
    /// Seconds spent inside `gradientsReady` and `progress` during the last step (starting
    /// transfers, summing arrived parts): work done on the critical path between layers.
    public private(set) var lastOverlappedSeconds: Double = 0
    /// Sum of `lastWaitSeconds` over all steps.
    public private(set) var totalWaitSeconds: Double = 0
    private var stepOverlappedSeconds: Double = 0

    private enum Phase { case waiting, reducing, gathering, done }

    private struct Bucket {
        let range: Range<Int>
        /// The part of this bucket inside each rank's shard (possibly empty), indexed by rank.
        let parts: [Range<Int>]
        /// Where the other ranks' copies of this rank's part arrive: scratch offset of the first copy.
        let scratchOffset: Int
        var phase: Phase = .waiting
        var requests: [TransferRequest] = []
    }

    private var buckets: [Bucket]
    /// Buckets with index > nextBucketToStart have started this step (they start from the top down).
    private var nextBucketToStart: Int
    /// Copies of this rank's parts from the other ranks: (worldSize - 1) floats per float of its shard.
    private let scratch: UnsafeMutableBufferPointer<Float>
    /// Block buffer of the rank-order sum, so that the result may overwrite one of its inputs.
    private let sumBlock: UnsafeMutableBufferPointer<Float>
    private var partPointers: [UnsafePointer<Float>]

    public init(communicator: any Communicator, gradients: UnsafeMutableBufferPointer<Float>,
                bucketFloats: Int = GradientSynchronizer.defaultBucketFloats,
                messageFloats: Int = GradientSynchronizer.defaultMessageFloats, shardOptimizer: Bool) throws {
        guard bucketFloats >= 1 && messageFloats >= 1 else {
            throw CommunicationError(rank: communicator.rank, operation: "GradientSynchronizer",
                                     reason: "bucket and message sizes must be at least 1 float, got \(bucketFloats) and \(messageFloats)")
        }
        self.communicator = communicator
        self.gradients = gradients
        self.bucketFloats = bucketFloats
        self.messageFloats = messageFloats
        self.shardOptimizer = shardOptimizer
        let worldSize = communicator.worldSize, rank = communicator.rank
        layout = ShardLayout(totalCount: gradients.count, worldSize: worldSize)
        var buckets: [Bucket] = []
        var scratchFloats = 0
        var start = 0
        while start < gradients.count {
            let range = start ..< min(start + bucketFloats, gradients.count)
            let parts = layout.ranges.map { shard in range.clamped(to: shard) }
            buckets.append(Bucket(range: range, parts: parts, scratchOffset: scratchFloats))
            // Reduce: this rank's part from every peer and every peer's part to it; gather the same.
            let ownMessages = (worldSize - 1) * messageCount(parts[rank].count, messageFloats)
            let peerMessages = (0 ..< worldSize).filter { $0 != rank }.reduce(0) { $0 + messageCount(parts[$1].count, messageFloats) }
            buckets[buckets.count - 1].requests.reserveCapacity(ownMessages + peerMessages)
            scratchFloats += (worldSize - 1) * parts[rank].count
            start = range.upperBound
        }
        self.buckets = buckets
        nextBucketToStart = buckets.count - 1
        scratch = .allocate(capacity: scratchFloats)
        sumBlock = .allocate(capacity: 4096)
        partPointers = Array(repeating: UnsafePointer(sumBlock.baseAddress!), count: worldSize)
    }

    deinit {
        scratch.deallocate()
        sumBlock.deallocate()
    }

    public var bucketCount: Int { buckets.count }

    /// Every float at index >= `offset` is final: starts the reduce of every bucket lying entirely
    /// at >= offset that has not started yet (highest first, the order backward produces them).
    public func gradientsReady(downTo offset: Int) throws {
        guard offset >= 0 && offset <= gradients.count else {
            throw CommunicationError(rank: communicator.rank, operation: "GradientSynchronizer.gradientsReady",
                                     reason: "offset \(offset) is outside 0...\(gradients.count)")
        }
        let started = monotonicSeconds()
        while nextBucketToStart >= 0 && buckets[nextBucketToStart].range.lowerBound >= offset {
            try startReduce(nextBucketToStart)
            nextBucketToStart -= 1
        }
        stepOverlappedSeconds += monotonicSeconds() - started
    }

    /// Advances the buckets in flight without blocking: tests their transfers (which is what moves
    /// them in Open MPI), sums the parts that have arrived and starts their gather.
    public func progress() throws {
        let started = monotonicSeconds()
        var index = buckets.count - 1
        while index > nextBucketToStart {
            switch buckets[index].phase {
            case .reducing:
                if try communicator.testAll(&buckets[index].requests) { try finishReduce(index) }
            case .gathering:
                if try communicator.testAll(&buckets[index].requests) { buckets[index].phase = .done }
            case .waiting, .done:
                break
            }
            index -= 1
        }
        stepOverlappedSeconds += monotonicSeconds() - started
    }

    /// Starts whatever has not started, waits for every bucket and leaves the summed gradients
    /// (see the type's documentation). Resets for the next step.
    public func finish() throws {
        let started = monotonicSeconds()
        while nextBucketToStart >= 0 {
            try startReduce(nextBucketToStart)
            nextBucketToStart -= 1
        }
        // Reduce phases in start order (they complete roughly in that order); each completed reduce
        // starts its gather at once, then all gathers are waited for.
        for index in buckets.indices.reversed() where buckets[index].phase == .reducing {
            try communicator.waitAll(&buckets[index].requests)
            try finishReduce(index)
        }
        for index in buckets.indices.reversed() {
            if buckets[index].phase == .gathering {
                try communicator.waitAll(&buckets[index].requests)
            }
            buckets[index].phase = .waiting
        }
        nextBucketToStart = buckets.count - 1
        lastWaitSeconds = monotonicSeconds() - started
        lastOverlappedSeconds = stepOverlappedSeconds
        stepOverlappedSeconds = 0
        totalWaitSeconds += lastWaitSeconds
    }

    // MARK: - phases

    private func startReduce(_ index: Int) throws {
        let rank = communicator.rank, worldSize = communicator.worldSize
        let base = gradients.baseAddress!
        buckets[index].requests.removeAll(keepingCapacity: true)
        let ownPart = buckets[index].parts[rank]
        if !ownPart.isEmpty {
            for peer in 0 ..< worldSize where peer != rank {
                let slot = scratch.baseAddress! + scratchSlotOffset(index, peer: peer)
                try startReceives(index, into: slot, count: ownPart.count, from: peer, tag: TransferTag.bucketReduce(index))
            }
        }
        for peer in 0 ..< worldSize where peer != rank {
            let part = buckets[index].parts[peer]
            if part.isEmpty { continue }
            try startSends(index, from: base + part.lowerBound, count: part.count, to: peer, tag: TransferTag.bucketReduce(index))
        }
        buckets[index].phase = .reducing
    }

    /// The reduce of bucket `index` has completed: sum this rank's part in rank order, then start
    /// the gather (unsharded) or finish the bucket (sharded).
    private func finishReduce(_ index: Int) throws {
        let rank = communicator.rank, worldSize = communicator.worldSize
        let base = gradients.baseAddress!
        let ownPart = buckets[index].parts[rank]
        if !ownPart.isEmpty && worldSize > 1 {
            for sourceRank in 0 ..< worldSize {
                partPointers[sourceRank] = sourceRank == rank
                    ? UnsafePointer(base + ownPart.lowerBound)
                    : UnsafePointer(scratch.baseAddress! + scratchSlotOffset(index, peer: sourceRank))
            }
            sumInRankOrder(partPointers, count: ownPart.count, into: base + ownPart.lowerBound, block: sumBlock)
        }
        if shardOptimizer || worldSize == 1 {
            buckets[index].phase = .done
            return
        }
        buckets[index].requests.removeAll(keepingCapacity: true)
        for peer in 0 ..< worldSize where peer != rank {
            let part = buckets[index].parts[peer]
            if part.isEmpty { continue }
            try startReceives(index, into: base + part.lowerBound, count: part.count, from: peer, tag: TransferTag.bucketGather(index))
        }
        if !ownPart.isEmpty {
            for peer in 0 ..< worldSize where peer != rank {
                try startSends(index, from: base + ownPart.lowerBound, count: ownPart.count, to: peer, tag: TransferTag.bucketGather(index))
            }
        }
        buckets[index].phase = .gathering
    }

    /// `count` floats from `start` to `peer` in messages of at most `messageFloats` (the receiver
    /// cuts the same messages; messages of one tag between two ranks match in posting order).
    private func startSends(_ index: Int, from start: UnsafeMutablePointer<Float>, count: Int, to peer: Int, tag: Int) throws {
        var offset = 0
        while offset < count {
            let length = min(messageFloats, count - offset)
            buckets[index].requests.append(try communicator.startSend(UnsafeBufferPointer(start: start + offset, count: length), to: peer, tag: tag))
            offset += length
        }
    }

    private func startReceives(_ index: Int, into start: UnsafeMutablePointer<Float>, count: Int, from peer: Int, tag: Int) throws {
        var offset = 0
        while offset < count {
            let length = min(messageFloats, count - offset)
            buckets[index].requests.append(try communicator.startReceive(UnsafeMutableBufferPointer(start: start + offset, count: length), from: peer, tag: tag))
            offset += length
        }
    }

    /// Scratch offset of the copy of this rank's part of bucket `index` sent by `peer`.
    private func scratchSlotOffset(_ index: Int, peer: Int) -> Int {
        let rank = communicator.rank
        let slot = peer < rank ? peer : peer - 1
        return buckets[index].scratchOffset + slot * buckets[index].parts[rank].count
    }
}

/// Messages needed for `count` floats in messages of at most `messageFloats`.
func messageCount(_ count: Int, _ messageFloats: Int) -> Int { (count + messageFloats - 1) / messageFloats }

/// output[i] = ((parts[0][i] + parts[1][i]) + parts[2][i]) + ... for i in 0 ..< count, in Float32,
/// in exactly this order. `output` may be one of the parts: the sum is formed in `block` first.
func sumInRankOrder(_ parts: [UnsafePointer<Float>], count: Int, into output: UnsafeMutablePointer<Float>,
                    block: UnsafeMutableBufferPointer<Float>) {
    let blockBase = block.baseAddress!
    var start = 0
    while start < count {
        let length = min(block.count, count - start)
        blockBase.update(from: parts[0] + start, count: length)
        for partIndex in 1 ..< parts.count {
            let part = parts[partIndex] + start
            for index in 0 ..< length { blockBase[index] += part[index] }
        }
        (output + start).update(from: blockBase, count: length)
        start += length
    }
}
