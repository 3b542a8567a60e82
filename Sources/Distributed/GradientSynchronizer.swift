/// How GradientSynchronizer cuts and sends the arena (defaults: fp32, dense, 25 MB buckets).
public struct GradientSyncOptions: Sendable {
    /// The largest bucket: a bucket's reduce starts once all of it is final.
    public var bucketFloats = GradientSynchronizer.defaultBucketFloats
    /// The largest point-to-point message (see "Messages" in GradientSynchronizer).
    public var messageFloats = GradientSynchronizer.defaultMessageFloats
    /// ZeRO-1: each rank needs the sum only in its own shard (no gather phase).
    public var shardOptimizer = false
    public var compression: GradientCompression = .none
    /// Offsets where buckets must end, e.g. where backward reports readiness (layer starts), so
    /// that a bucket starts as soon as its layer is done instead of waiting for the next one.
    public var bucketBoundaries: [Int] = []
    /// Tables whose untouched rows are zero (word and position embeddings): only the touched rows
    /// and their ids travel (SparseRowExchange); the result equals the dense sum bit for bit.
    public var sparseTables: [SparseRowTable] = []

    public init() {}
}

/// Sums the gradient arena over all ranks in buckets whose communication overlaps backward.
///
/// The arena is one contiguous Float buffer; backward writes it from the high offsets down to 0.
/// Outside the sparse tables it is cut into buckets of at most `bucketFloats` floats, also cut at
/// `bucketBoundaries`. Each step:
///
///     synchronizer.postReceives()                   // optional, before forward (see "Receives first")
///     synchronizer.markRow(table: t, row: r)        // sparse tables only: rows backward will write
///     synchronizer.gradientsReady(downTo: offset)   // after each layer's backward; floats >= offset are final
///     synchronizer.progress()                       // optional, between layers
///     synchronizer.finish()                         // before clipping / the optimizer step
///
/// After `finish()`: without sharding every rank holds the sum over ranks of the whole arena; with
/// `shardOptimizer` (ZeRO-1) each rank holds the sum only in its own shard `layout.range(of: rank)`
/// (and in every row of the sparse tables) and the rest of its arena is unspecified. Nothing is
/// divided here: the trainer scales.
///
/// Algorithm, per bucket (bandwidth of a ring allreduce, owner computes):
/// 1. reduce: each rank sends every other rank r the part of the bucket inside r's shard and
///    receives the other ranks' copies of the part inside its own shard;
/// 2. the owner sums the N copies of its part in rank order, (((g0 + g1) + g2) + ...), into the arena;
/// 3. gather (unsharded only): each owner sends its summed part to every other rank.
/// Every float is therefore summed once, by its owner, in rank order: the result is bit-identical
/// on all ranks, between sharded and unsharded runs, and between MPI and the in-process group.
/// Sparse tables: every rank sends its touched rows to every other and adds all of them itself,
/// with the same formula (SparseRowExchange). Transfers are point-to-point with a tag per (bucket,
/// phase), so buckets may finish in any order without breaking MPI's rule that collectives start
/// in the same order everywhere. With `.bf16` compression the same bytes travel as bf16 words
/// (see GradientCompression for what the sum then is).
///
/// Messages: every transfer is cut into messages of at most `messageFloats` floats (1 MB). Open
/// MPI's TCP transport sends large messages by rendezvous (the receiver answers "go ahead") and
/// queues everything for one peer on one connection in order: with bucket-sized messages in both
/// directions, the answer to the peer's message often waits behind this rank's whole message, and
/// the two directions then take turns instead of sharing the link, at random; small messages
/// interleave and keep both directions moving (benchmarks/tcp_messages.sh measures one against
/// the other, results in benchmarks/communication.md).
///
/// Progress: Open MPI 4.1 has no progress thread by default: a transfer moves only while some MPI
/// call runs on the rank. `progress()` is such a call (one MPI_Testall per bucket in flight, then
/// the sum and the start of the gather of each bucket whose reduce has arrived), but once per
/// layer is far too rare over a network. From the first transfer of a step to the end of
/// `finish()` the synchroniser therefore turns on the communicator's background progress (MPI:
/// a thread that probes every few milliseconds, MPIProgressThread), which keeps the bytes moving while
/// backward computes; the state changes (sums, gathers) still happen in `progress()`/`finish()`.
///
/// Receives first: a message that arrives before its receive is posted is "unexpected": Open MPI
/// copies it into a buffer of its own, and grows that pool (a heap allocation) whenever more
/// unexpected data is held at once than ever before. A faster peer sends its first buckets while
/// a slower rank is still in forward; `postReceives()` at the start of the step posts the
/// reduce receives of every bucket at once (into the scratch buffer, which nothing else uses),
/// so that the peers' reduce messages always find their receive. (Gather messages cannot come
/// early: the owner sends them only after it has this rank's part.)
///
/// Buckets start from the top of the arena; the sparse rows go once the tables are final (offset
/// 0: the end of backward), their ids earlier (at the step's first `gradientsReady`).
///
/// Memory: a scratch buffer of (worldSize - 1) / worldSize of the dense floats receives the other
/// ranks' copies of this rank's parts (bf16: half of that, plus a bf16 copy of the dense floats);
/// the sparse exchange reserves room for every row of every rank (committed only as rows are
/// used). No heap allocation per step on the MPI path.
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
    public let options: GradientSyncOptions
    public var bucketFloats: Int { options.bucketFloats }
    public var shardOptimizer: Bool { options.shardOptimizer }

    /// Seconds the last `finish()` blocked: communication not hidden behind backward.
    public private(set) var lastWaitSeconds: Double = 0
    /// The part of it `finishGathers` waited for a gather with nothing to hand over.
    public private(set) var lastGatherWaitSeconds: Double = 0
    /// Payload bytes this rank sent in the last step (dense parts and sparse ids and rows).
    public private(set) var lastSentBytes = 0
    private var stepSentBytes = 0

    /// A bucket's state in a step: `done` holds the sum on this rank (its shard part, with
    /// sharding); `delivered`: handed to `finishGathers`'s caller.
    private enum Phase { case waiting, reducing, gathering, done, delivered }

    private struct Bucket {
        let range: Range<Int>
        /// The part of this bucket inside each rank's shard (possibly empty), indexed by rank.
        let parts: [Range<Int>]
        /// Where the other ranks' copies of this rank's part arrive: scratch element of the first copy.
        let scratchOffset: Int
        var phase: Phase = .waiting
        var requests: [TransferRequest] = []
        /// The reduce's receives are posted (by `postReceives()` or `startReduce`) this step.
        var receivesPosted = false
    }

    private var buckets: [Bucket]
    /// Buckets with index > nextBucketToStart have started this step (they start from the top down).
    private var nextBucketToStart: Int
    private let sparse: SparseRowExchange?
    /// The lowest offset of the sparse tables: their rows go once gradients are final down to here.
    private let sparseFloor: Int
    private var stepStarted = false
    /// Bytes per element sent: 4 (fp32) or 2 (bf16).
    private let elementSize: Int
    private var messageBytes: Int { options.messageFloats * 4 }
    /// Copies of this rank's parts from the other ranks: (worldSize - 1) elements per float of its shard.
    private let scratch: UnsafeMutableRawPointer
    /// bf16 only: the dense floats as sent, indexed like the arena from `mirrorBase` on.
    private let mirror: UnsafeMutablePointer<UInt16>?
    private let mirrorBase: Int
    /// Block buffer of the rank-order sum, so that the result may overwrite one of its inputs.
    private let sumBlock: UnsafeMutableBufferPointer<Float>
    private var partPointers: [UnsafePointer<Float>]
    private var wordPointers: [UnsafePointer<UInt16>]

    public convenience init(communicator: any Communicator, gradients: UnsafeMutableBufferPointer<Float>,
                            bucketFloats: Int = GradientSynchronizer.defaultBucketFloats,
                            messageFloats: Int = GradientSynchronizer.defaultMessageFloats, shardOptimizer: Bool) throws {
        var options = GradientSyncOptions()
        options.bucketFloats = bucketFloats
        options.messageFloats = messageFloats
        options.shardOptimizer = shardOptimizer
        try self.init(communicator: communicator, gradients: gradients, options: options)
    }

    public init(communicator: any Communicator, gradients: UnsafeMutableBufferPointer<Float>, options: GradientSyncOptions) throws {
        let worldSize = communicator.worldSize, rank = communicator.rank
        guard options.bucketFloats >= 1 && options.messageFloats >= 1 else {
            throw CommunicationError(rank: rank, operation: "GradientSynchronizer",
                                     reason: "bucket and message sizes must be at least 1 float, got \(options.bucketFloats) and \(options.messageFloats)")
        }
        self.communicator = communicator
        self.gradients = gradients
        self.options = options
        let elementSize = options.compression == .bf16 ? 2 : 4
        self.elementSize = elementSize
        layout = ShardLayout(totalCount: gradients.count, worldSize: worldSize)
        // The sparse exchange pays only when something travels or is rounded.
        let useSparse = !options.sparseTables.isEmpty && (worldSize > 1 || options.compression != .none)
        sparse = useSparse ? try SparseRowExchange(tables: options.sparseTables, communicator: communicator, gradients: gradients,
                                                    compression: options.compression, messageBytes: options.messageFloats * 4) : nil
        let sparseRanges = useSparse ? options.sparseTables.map(\.range).sorted { $0.lowerBound < $1.lowerBound } : []
        for (a, b) in zip(sparseRanges, sparseRanges.dropFirst()) where a.overlaps(b) {
            throw CommunicationError(rank: rank, operation: "GradientSynchronizer", reason: "sparse tables \(a) and \(b) overlap")
        }
        sparseFloor = sparseRanges.first?.lowerBound ?? 0

        // Dense segments: the arena minus the sparse tables; buckets cut at boundaries and at bucketFloats.
        var segments: [Range<Int>] = []
        var position = 0
        for table in sparseRanges {
            if table.lowerBound > position { segments.append(position ..< table.lowerBound) }
            position = max(position, table.upperBound)
        }
        if position < gradients.count { segments.append(position ..< gradients.count) }
        let boundaries = options.bucketBoundaries.sorted()
        // Owners split the whole arena, sparse tables included: where a table comes first (MiniLM's
        // word table at 2 ranks) the first ranks own few dense floats and the last ones sum most of
        // them. Owners balanced over the dense floats measured slower (benchmarks/communication.md):
        // the norm's ranges must stay these, and would then wait for other ranks' sums.
        let shards = layout.ranges
        var buckets: [Bucket] = []
        var scratchElements = 0
        for segment in segments {
            var start = segment.lowerBound
            while start < segment.upperBound {
                var end = min(start + options.bucketFloats, segment.upperBound)
                if let cut = boundaries.first(where: { $0 > start && $0 < end }) { end = cut }
                let range = start ..< end
                let parts = shards.map { shard in range.clamped(to: shard) }
                buckets.append(Bucket(range: range, parts: parts, scratchOffset: scratchElements))
                // Reduce: this rank's part from every peer and every peer's part to it; gather the same.
                let ownMessages = (worldSize - 1) * messageCount(parts[rank].count * elementSize, options.messageFloats * 4)
                let peerMessages = (0 ..< worldSize).filter { $0 != rank }
                    .reduce(0) { $0 + messageCount(parts[$1].count * elementSize, options.messageFloats * 4) }
                buckets[buckets.count - 1].requests.reserveCapacity(ownMessages + peerMessages)
                scratchElements += (worldSize - 1) * parts[rank].count
                start = end
            }
        }
        self.buckets = buckets
        nextBucketToStart = buckets.count - 1
        scratch = .allocate(byteCount: max(1, scratchElements * elementSize), alignment: 64)
        if options.compression == .bf16, let first = segments.first, let last = segments.last {
            mirrorBase = first.lowerBound
            mirror = .allocate(capacity: last.upperBound - first.lowerBound)
        } else {
            mirrorBase = 0
            mirror = nil
        }
        // 4 kB: the block and the two streams read through it stay in L1 (32 kB here). With 16 kB
        // blocks the owner's sum of MiniLM's 22 MB took 2.9 ms instead of 1.8 (AMD EPYC Zen 4).
        sumBlock = .allocate(capacity: 1024)
        partPointers = Array(repeating: UnsafePointer(sumBlock.baseAddress!), count: worldSize)
        wordPointers = Array(repeating: UnsafePointer(UnsafeMutablePointer<UInt16>(OpaquePointer(sumBlock.baseAddress!))), count: worldSize)
    }

    deinit {
        scratch.deallocate()
        mirror?.deallocate()
        sumBlock.deallocate()
    }

    public var bucketCount: Int { buckets.count }
    /// The dense buckets' ranges, lowest first.
    public var bucketRanges: [Range<Int>] { buckets.map(\.range) }

    /// Row `row` of sparse table `table` (index into `options.sparseTables`) is written by this
    /// step's backward. Mark every such row before the step's first `gradientsReady`.
    @inline(__always)
    public func markRow(table: Int, row: Int) {
        sparse?.mark(table: table, row: row)
    }

    /// Posts the reduce receives of every bucket not yet posted this step (see "Receives first"
    /// above); optional, any time before the step's first `gradientsReady`. Pending receives
    /// hold no data of this rank's, so the arena may still be written.
    public func postReceives() throws {
        for index in buckets.indices where !buckets[index].receivesPosted {
            try startReduceReceives(index)
        }
    }

    /// Every float at index >= `offset` is final: starts the reduce of every bucket lying entirely
    /// at >= offset that has not started yet (highest first, the order backward produces them),
    /// and the sparse rows once the tables are final.
    public func gradientsReady(downTo offset: Int) throws {
        guard offset >= 0 && offset <= gradients.count else {
            throw CommunicationError(rank: communicator.rank, operation: "GradientSynchronizer.gradientsReady",
                                     reason: "offset \(offset) is outside 0...\(gradients.count)")
        }
        beginStepIfNeeded()
        if let sparse, !sparse.hasStarted { try sparse.startIds() }
        while nextBucketToStart >= 0 && buckets[nextBucketToStart].range.lowerBound >= offset {
            try startReduce(nextBucketToStart)
            nextBucketToStart -= 1
        }
        if let sparse, offset <= sparseFloor, !sparseRowsStarted {
            try sparse.startRows()
            sparseRowsStarted = true
        }
    }
    private var sparseRowsStarted = false

    /// Advances the buckets in flight without blocking: tests their transfers (which is what moves
    /// them in Open MPI), sums the parts that have arrived and starts their gather.
    public func progress() throws {
        try advance()
    }

    /// One pass over the buckets in flight: true when every started bucket has been summed by
    /// its owner (`reduced`: its gather may still travel) or is done.
    @discardableResult
    private func advance() throws -> (reduced: Bool, done: Bool) {
        var allReduced = true, allDone = true
        var index = buckets.count - 1
        while index > nextBucketToStart {
            switch buckets[index].phase {
            case .reducing:
                if try communicator.testAll(&buckets[index].requests) { try finishReduce(index) }
                allReduced = allReduced && buckets[index].phase != .reducing
                allDone = allDone && buckets[index].phase == .done
            case .gathering:
                if try communicator.testAll(&buckets[index].requests) { finishGather(index) } else { allDone = false }
            case .waiting, .done, .delivered:
                break
            }
            index -= 1
        }
        try sparse?.progress()
        return (allReduced, allDone)
    }

    /// Starts whatever has not started, waits for every bucket and leaves the summed gradients
    /// (see the type's documentation). Resets for the next step. The same as `finishReduces()`
    /// then `finishGathers` with nothing to do.
    public func finish() throws {
        try finishReduces()
        try finishGathers { _ in }
    }

    /// The first half of `finish()`: starts whatever has not started and waits until every
    /// bucket's reduce has been summed and the sparse rows have been added. Then this rank's
    /// shard of the arena, `layout.range(of: rank)`, and every sparse table hold the sum (what
    /// the gradient norm needs), while the other ranks' summed parts may still be on their way
    /// (unsharded). Call `finishGathers` next.
    public func finishReduces() throws {
        let started = monotonicSeconds()
        beginStepIfNeeded()
        if let sparse, !sparse.hasStarted { try sparse.startIds() }
        while nextBucketToStart >= 0 {
            try startReduce(nextBucketToStart)
            nextBucketToStart -= 1
        }
        if let sparse, !sparseRowsStarted { try sparse.startRows() }
        // This thread now calls MPI without pause: the background thread would only compete for the core.
        communicator.setBackgroundProgress(false)
        // Test everything in turn (each test also moves the transfers), so that each reduce that
        // arrives is summed and its gather started at once, whatever the order of arrival.
        while try !advance().reduced {}
        try sparse?.finish()
        lastWaitSeconds = monotonicSeconds() - started
    }

    /// The second half of `finish()`, after `finishReduces()`: calls `ready(range)` once for
    /// every part of the arena as soon as it holds the sum on this rank — each sparse table,
    /// then the buckets already gathered, then each other bucket as its gather arrives — so that
    /// the caller can use one part (e.g. update its parameters) while later parts still travel.
    /// With `shardOptimizer` every part is ready at once, and only its piece inside this rank's
    /// shard holds the sum. Every float of the arena is in exactly one part. Resets for the next step.
    public func finishGathers(_ ready: (Range<Int>) throws -> Void) throws {
        var waited = 0.0, undelivered = buckets.count, inFlight = 0
        for index in buckets.indices where buckets[index].phase == .gathering { inFlight += 1 }
        // While `ready` computes, the background thread moves the gathers still in flight; while
        // this thread tests them, it would only compete for the core.
        func handOver(_ range: Range<Int>) throws {
            communicator.setBackgroundProgress(inFlight > 0)
            try ready(range)
            communicator.setBackgroundProgress(false)
        }
        for table in options.sparseTables where sparse != nil { try handOver(table.range) }
        while undelivered > 0 {
            // One pass from the top (the order backward starts them in): every bucket whose
            // gather has arrived is handed over; a pass that hands over nothing was waiting.
            let passStarted = monotonicSeconds()
            var handedOver = false
            for index in buckets.indices.reversed() where buckets[index].phase != .delivered {
                if buckets[index].phase == .gathering, try communicator.testAll(&buckets[index].requests) {
                    finishGather(index)
                    inFlight -= 1
                }
                guard buckets[index].phase == .done else { continue }
                buckets[index].phase = .delivered
                undelivered -= 1
                try handOver(buckets[index].range)
                handedOver = true
            }
            if !handedOver { waited += monotonicSeconds() - passStarted }
        }
        for index in buckets.indices {
            buckets[index].phase = .waiting
            buckets[index].receivesPosted = false
        }
        nextBucketToStart = buckets.count - 1
        sparseRowsStarted = false
        stepStarted = false
        lastSentBytes = stepSentBytes + (sparse?.sentBytes ?? 0)
        lastGatherWaitSeconds = waited
        lastWaitSeconds += waited
    }

    private func beginStepIfNeeded() {
        guard !stepStarted else { return }
        stepStarted = true
        stepSentBytes = 0
        if communicator.worldSize > 1 { communicator.setBackgroundProgress(true) }
    }

    // MARK: - phases

    /// The reduce's receives: the other ranks' copies of this rank's part, into the scratch buffer.
    private func startReduceReceives(_ index: Int) throws {
        let rank = communicator.rank, worldSize = communicator.worldSize
        // Not a copy of the Bucket: that would share its request array, and emptying a shared
        // array allocates a new one.
        buckets[index].requests.removeAll(keepingCapacity: true)
        let ownPart = buckets[index].parts[rank]
        if !ownPart.isEmpty {
            for peer in 0 ..< worldSize where peer != rank {
                try startChunkedReceives(communicator, into: scratch + scratchSlotOffset(index, peer: peer) * elementSize,
                                         byteCount: ownPart.count * elementSize, from: peer, tag: TransferTag.bucketReduce(index),
                                         messageBytes: messageBytes, into: &buckets[index].requests)
            }
        }
        buckets[index].receivesPosted = true
    }

    private func startReduce(_ index: Int) throws {
        let rank = communicator.rank, worldSize = communicator.worldSize
        let range = buckets[index].range, parts = buckets[index].parts
        if !buckets[index].receivesPosted { try startReduceReceives(index) }
        if let mirror {
            roundToBFloat16(gradients.baseAddress! + range.lowerBound, into: mirror + (range.lowerBound - mirrorBase), count: range.count)
        }
        for peer in 0 ..< worldSize where peer != rank {
            let part = parts[peer]
            if part.isEmpty { continue }
            try startChunkedSends(communicator, from: sent(part.lowerBound), byteCount: part.count * elementSize, to: peer,
                                  tag: TransferTag.bucketReduce(index), messageBytes: messageBytes, into: &buckets[index].requests)
            stepSentBytes += part.count * elementSize
        }
        buckets[index].phase = .reducing
    }

    /// Where float `offset` is sent from: the arena (fp32) or its bf16 copy.
    private func sent(_ offset: Int) -> UnsafeRawPointer {
        if let mirror { return UnsafeRawPointer(mirror + (offset - mirrorBase)) }
        return UnsafeRawPointer(gradients.baseAddress! + offset)
    }

    /// The reduce of bucket `index` has completed: sum this rank's part in rank order, then start
    /// the gather (unsharded) or finish the bucket (sharded).
    private func finishReduce(_ index: Int) throws {
        let rank = communicator.rank, worldSize = communicator.worldSize
        let base = gradients.baseAddress!
        let ownPart = buckets[index].parts[rank]
        if !ownPart.isEmpty {
            if let mirror {
                for sourceRank in 0 ..< worldSize {
                    wordPointers[sourceRank] = sourceRank == rank
                        ? UnsafePointer(mirror + (ownPart.lowerBound - mirrorBase))
                        : UnsafePointer((scratch + scratchSlotOffset(index, peer: sourceRank) * 2).assumingMemoryBound(to: UInt16.self))
                }
                sumBFloat16InRankOrder(wordPointers, count: ownPart.count, rounded: mirror + (ownPart.lowerBound - mirrorBase),
                                       widened: base + ownPart.lowerBound, block: sumBlock)
            } else if worldSize > 1 {
                for sourceRank in 0 ..< worldSize {
                    partPointers[sourceRank] = sourceRank == rank
                        ? UnsafePointer(base + ownPart.lowerBound)
                        : UnsafePointer((scratch + scratchSlotOffset(index, peer: sourceRank) * 4).assumingMemoryBound(to: Float.self))
                }
                sumInRankOrder(partPointers, count: ownPart.count, into: base + ownPart.lowerBound, block: sumBlock)
            }
        }
        if shardOptimizer || worldSize == 1 {
            buckets[index].phase = .done
            return
        }
        buckets[index].requests.removeAll(keepingCapacity: true)
        for peer in 0 ..< worldSize where peer != rank {
            let part = buckets[index].parts[peer]
            if part.isEmpty { continue }
            try startChunkedReceives(communicator, into: UnsafeMutableRawPointer(mutating: sent(part.lowerBound)), byteCount: part.count * elementSize,
                                     from: peer, tag: TransferTag.bucketGather(index), messageBytes: messageBytes,
                                     into: &buckets[index].requests)
        }
        if !ownPart.isEmpty {
            for peer in 0 ..< worldSize where peer != rank {
                try startChunkedSends(communicator, from: sent(ownPart.lowerBound), byteCount: ownPart.count * elementSize, to: peer,
                                      tag: TransferTag.bucketGather(index), messageBytes: messageBytes, into: &buckets[index].requests)
                stepSentBytes += ownPart.count * elementSize
            }
        }
        buckets[index].phase = .gathering
    }

    /// The gather of bucket `index` has arrived; bf16: widen the other ranks' parts into the arena.
    private func finishGather(_ index: Int) {
        if let mirror {
            for peer in 0 ..< communicator.worldSize where peer != communicator.rank {
                let part = buckets[index].parts[peer]
                widenBFloat16(mirror + (part.lowerBound - mirrorBase), into: gradients.baseAddress! + part.lowerBound, count: part.count)
            }
        }
        buckets[index].phase = .done
    }

    /// Scratch element offset of the copy of this rank's part of bucket `index` sent by `peer`.
    private func scratchSlotOffset(_ index: Int, peer: Int) -> Int {
        let rank = communicator.rank
        let slot = peer < rank ? peer : peer - 1
        return buckets[index].scratchOffset + slot * buckets[index].parts[rank].count
    }
}

/// Messages needed for `count` units in messages of at most `messageSize`.
func messageCount(_ count: Int, _ messageSize: Int) -> Int { (count + messageSize - 1) / messageSize }

/// Sends `byteCount` bytes from `start` to `peer` in messages of at most `messageBytes` (the receiver
/// cuts the same messages; messages of one tag between two ranks match in posting order).
func startChunkedSends(_ communicator: any Communicator, from start: UnsafeRawPointer, byteCount: Int, to peer: Int, tag: Int,
                       messageBytes: Int, into requests: inout [TransferRequest]) throws {
    var offset = 0
    while offset < byteCount {
        let length = min(messageBytes, byteCount - offset)
        requests.append(try communicator.startSend(bytes: UnsafeRawBufferPointer(start: start + offset, count: length), to: peer, tag: tag))
        offset += length
    }
}

func startChunkedReceives(_ communicator: any Communicator, into start: UnsafeMutableRawPointer, byteCount: Int, from peer: Int, tag: Int,
                          messageBytes: Int, into requests: inout [TransferRequest]) throws {
    var offset = 0
    while offset < byteCount {
        let length = min(messageBytes, byteCount - offset)
        requests.append(try communicator.startReceive(bytes: UnsafeMutableRawBufferPointer(start: start + offset, count: length),
                                                      from: peer, tag: tag))
        offset += length
    }
}

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

/// The same sum of bf16 parts, widened to fp32 and added in rank order in fp32; the sum is rounded
/// to bf16 into `rounded` (which may be one of the parts) and its widened value stored in `widened`.
func sumBFloat16InRankOrder(_ parts: [UnsafePointer<UInt16>], count: Int, rounded: UnsafeMutablePointer<UInt16>,
                            widened: UnsafeMutablePointer<Float>, block: UnsafeMutableBufferPointer<Float>) {
    let blockBase = block.baseAddress!
    var start = 0
    while start < count {
        let length = min(block.count, count - start)
        widenBFloat16(parts[0] + start, into: blockBase, count: length)
        for partIndex in 1 ..< parts.count {
            let part = parts[partIndex] + start
            for index in 0 ..< length { blockBase[index] += widenBFloat16(part[index]) }
        }
        for index in 0 ..< length {
            let word = bfloat16Bits(blockBase[index])
            rounded[start + index] = word
            widened[start + index] = widenBFloat16(word)
        }
        start += length
    }
}
