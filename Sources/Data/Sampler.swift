/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fast generator whose whole state is one
/// 64-bit counter. Used for the epoch order so that it is reproducible anywhere (it is ~10 lines
/// in any language) and does not depend on Swift's standard library generator.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return SplitMix64.mix(state)
    }

    /// The SplitMix64 output function (a bijective 64-bit mixer).
    public static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in 0..<bound without modulo bias (Lemire's multiply-and-reject).
    public mutating func next(below bound: UInt64) -> UInt64 {
        precondition(bound > 0)
        var product = next().multipliedFullWidth(by: bound)
        if product.low < bound {
            let threshold = (0 &- bound) % bound
            while product.low < threshold {
                product = next().multipliedFullWidth(by: bound)
            }
        }
        return product.high
    }
}

/// Where a run stands in the data: the epoch and how many entries of that epoch's order have
/// been consumed (0 ..< exampleCount). A resumed run continues from exactly here.
public struct SamplePosition: Hashable, Sendable, CustomStringConvertible {
    public var epoch: Int
    public var samplesConsumed: Int

    public init(epoch: Int, samplesConsumed: Int) {
        self.epoch = epoch
        self.samplesConsumed = samplesConsumed
    }

    public var description: String { "epoch \(epoch), sample \(samplesConsumed)" }
}

/// The training order, independent of the number of ranks.
///
/// Each epoch has one order of the whole data set, a permutation of 0..<exampleCount seeded by
/// (seed, epoch): a Fisher–Yates shuffle (for i from count-1 down to 1, swap i with
/// `next(below: i+1)`) driven by `SplitMix64(seed: mix(seed ^ mix(epoch ^ 0xA0761D6478BD642F)))`.
/// Global batch k of an epoch is the `globalBatchSize` consecutive entries starting at
/// k * globalBatchSize; the last batch of an epoch holds what is left (like PyTorch's
/// DataLoader with drop_last=False). Each global batch is cut into contiguous per-rank shards
/// (`shardRange`) and each shard into micro-batches (`microBatchRanges`), so the concatenation
/// of all ranks' micro-batches is the global batch, in order, for every world size.
///
/// With length grouping (HF's LengthGroupedSampler / `get_length_grouped_indices`, applied to the
/// global batch size): the shuffled order is cut into megabatches of
/// `min(count / (4 * globalBatchSize), 50)` (at least 1) global batches, each sorted by length,
/// longest first (ties keep the shuffled order), and the longest example of the epoch is swapped
/// to the very front. It changes the order, never which examples form an epoch, and is still the
/// same for every world size.
public struct Sampler: Sendable {
    public let exampleCount: Int
    public let globalBatchSize: Int
    public let seed: UInt64
    /// Token counts of the examples when grouping by length, else nil.
    public let groupingLengths: [Int32]?
    /// false: every epoch takes the examples in file order (the bench's consecutive rows).
    public let shuffles: Bool

    public init(exampleCount: Int, globalBatchSize: Int, seed: UInt64, groupByLength lengths: [Int32]? = nil, shuffle: Bool = true) {
        precondition(exampleCount > 0, "the data set is empty")
        precondition(globalBatchSize > 0, "the global batch size must be positive")
        precondition(lengths == nil || lengths!.count == exampleCount, "one length per example")
        self.exampleCount = exampleCount
        self.globalBatchSize = globalBatchSize
        self.seed = seed
        self.groupingLengths = lengths
        self.shuffles = shuffle
    }

    /// Global batches per epoch, the last one possibly smaller.
    public var batchesPerEpoch: Int { (exampleCount + globalBatchSize - 1) / globalBatchSize }

    /// The order of epoch `epoch`: a permutation of 0..<exampleCount.                 (exampleCount)
    public func order(epoch: Int) -> [Int32] {
        precondition(exampleCount <= Int(Int32.max))
        var generator = SplitMix64(seed: SplitMix64.mix(seed ^ SplitMix64.mix(UInt64(epoch) ^ 0xA076_1D64_78BD_642F)))
        var order = (0..<Int32(exampleCount)).map { $0 }
        var index = shuffles ? exampleCount - 1 : 0
        while index > 0 {
            let other = Int(generator.next(below: UInt64(index + 1)))
            order.swapAt(index, other)
            index -= 1
        }
        if let lengths = groupingLengths {
            groupByLength(&order, lengths: lengths)
        }
        return order
    }

    private func groupByLength(_ order: inout [Int32], lengths: [Int32]) {
        let multiplier = max(1, min(exampleCount / (globalBatchSize * 4), 50))
        let megabatchSize = multiplier * globalBatchSize
        var start = 0
        var longestMegabatchStart = 0
        var longest: Int32 = -1
        while start < exampleCount {
            let end = min(start + megabatchSize, exampleCount)
            // Stable sort by length, descending: ties keep their shuffled order.
            let sorted = order[start..<end].enumerated().sorted { a, b in
                let lengthA = lengths[Int(a.element)], lengthB = lengths[Int(b.element)]
                return lengthA != lengthB ? lengthA > lengthB : a.offset < b.offset
            }.map(\.element)
            order.replaceSubrange(start..<end, with: sorted)
            if lengths[Int(order[start])] > longest {
                longest = lengths[Int(order[start])]
                longestMegabatchStart = start
            }
            start = end
        }
        order.swapAt(0, longestMegabatchStart)
    }

    /// The position at the start of training step `step` (0-based), for a run that started at
    /// (epoch 0, sample 0) with this global batch size.
    public func position(ofStep step: Int) -> SamplePosition {
        precondition(step >= 0)
        return SamplePosition(epoch: step / batchesPerEpoch, samplesConsumed: (step % batchesPerEpoch) * globalBatchSize)
    }

    /// The global batch that starts at `position`: a range of positions in `order(epoch:)`.
    public func globalBatchRange(at position: SamplePosition) -> Range<Int> {
        precondition(position.samplesConsumed >= 0 && position.samplesConsumed < exampleCount,
                     "samplesConsumed must lie in 0..<exampleCount")
        return position.samplesConsumed..<min(position.samplesConsumed + globalBatchSize, exampleCount)
    }

    /// The position after the global batch that starts at `position`.
    public func position(after position: SamplePosition) -> SamplePosition {
        let end = globalBatchRange(at: position).upperBound
        return end == exampleCount ? SamplePosition(epoch: position.epoch + 1, samplesConsumed: 0)
            : SamplePosition(epoch: position.epoch, samplesConsumed: end)
    }
}

/// The contiguous part of `count` items that rank `rank` of `worldSize` takes: balanced, the
/// first `count % worldSize` ranks take one more. Ranks beyond `count` get an empty range
/// (a tiny last batch may leave a rank with zero examples: it must still join the collectives,
/// contributing nothing). Used for training shards of a global batch and for evaluation, where
/// every example belongs to exactly one rank (no padding duplicates as in PyTorch's
/// DistributedSampler).
public func shardRange(count: Int, rank: Int, worldSize: Int) -> Range<Int> {
    precondition(count >= 0 && worldSize > 0 && rank >= 0 && rank < worldSize)
    let base = count / worldSize
    let extra = count % worldSize
    let start = rank * base + min(rank, extra)
    return start..<(start + base + (rank < extra ? 1 : 0))
}

/// `range` cut into consecutive pieces of at most `microBatchSize` (the last may be smaller;
/// none when `range` is empty).
public func microBatchRanges(_ range: Range<Int>, microBatchSize: Int) -> [Range<Int>] {
    precondition(microBatchSize > 0)
    return stride(from: range.lowerBound, to: range.upperBound, by: microBatchSize).map {
        $0..<min($0 + microBatchSize, range.upperBound)
    }
}

/// One rank's share of one global batch.
public struct RankBatch: Sendable {
    public let position: SamplePosition
    /// The whole global batch: positions in the epoch order. Divide the summed loss and gradients
    /// by `globalRange.count` (the last batch of an epoch may be smaller than the batch size).
    public let globalRange: Range<Int>
    /// This rank's contiguous part of `globalRange` (possibly empty).
    public let shard: Range<Int>
    /// `shard` is cut into micro-batches of at most this many examples.
    public let microBatchSize: Int

    /// How many micro-batches `shard` makes (0 when it is empty).
    public var microBatchCount: Int { (shard.count + microBatchSize - 1) / microBatchSize }

    /// Micro-batch `index` of `shard` (computed, so that a step allocates nothing).
    public func microBatch(_ index: Int) -> Range<Int> {
        let start = shard.lowerBound + index * microBatchSize
        return start..<min(start + microBatchSize, shard.upperBound)
    }

    /// Every micro-batch of `shard`, in order (= microBatchRanges(shard, microBatchSize)).
    public var microBatches: [Range<Int>] { (0..<microBatchCount).map(microBatch) }
}

extension Sampler {
    /// Rank `rank`'s part of the global batch starting at `position`.
    public func rankBatch(at position: SamplePosition, rank: Int, worldSize: Int, microBatchSize: Int) -> RankBatch {
        let global = globalBatchRange(at: position)
        let local = shardRange(count: global.count, rank: rank, worldSize: worldSize)
        let shard = (global.lowerBound + local.lowerBound)..<(global.lowerBound + local.upperBound)
        return RankBatch(position: position, globalRange: global, shard: shard, microBatchSize: microBatchSize)
    }
}

/// What one sequence of `length` tokens costs a training step, in integer units (so that every
/// rank computes the same split): its tokens, which every linear layer processes, plus the
/// square of its length over `attentionDivisor` x hidden size, for attention (scores and their
/// product with the values grow with the square of the length; the linear layers cost ~12 x
/// hidden² per token, attention ~2 x hidden per pair of tokens, so by FLOPs alone the divisor
/// would be 6; attention runs further from the machine's peak than the big products, which makes
/// it weigh more: `measuredAttentionDivisor`). cost(l) = l x (divisor x hidden + l).
public struct SequenceCost: Sendable, Equatable {
    public var hiddenSize: Int
    public var attentionDivisor: Int

    /// Fitted to steps of MiniLM (4.5) and BERT-base (3.1) on batches of equal tokens in
    /// sequences of 16-512 (benchmarks/sequence_cost.sh; benchmarks/communication.md, "The cost
    /// of a sequence"). The split hardly depends on it: for sequences of at most 128 tokens the
    /// squared term is a tenth of the cost at most.
    public static let measuredAttentionDivisor = 4

    public init(hiddenSize: Int, attentionDivisor: Int = SequenceCost.measuredAttentionDivisor) {
        precondition(hiddenSize >= 1 && attentionDivisor >= 1)
        self.hiddenSize = hiddenSize
        self.attentionDivisor = attentionDivisor
    }

    @inline(__always)
    public func callAsFunction(_ length: Int) -> Int { length * (attentionDivisor * hiddenSize + length) }
}

/// Divides the examples of one global batch among the ranks so that their costs (`SequenceCost`)
/// are about equal, instead of in equal counts: each rank's step waits for the slowest, and a
/// rank with more or longer sequences is slower.
///
/// The loss is the mean over the global batch and dropout is keyed by the example, so any
/// assignment of a batch's examples to ranks (and to micro-batches) gives the same gradient sum,
/// up to the order of float additions. The assignment is a pure function of the batch's lengths
/// (integer arithmetic, ties broken by position): every rank computes the same one, without
/// communication. Algorithm:
///   1. longest processing time first: the examples by length, longest first (ties: in batch
///      order), each to the rank with the smallest cost so far (ties: fewer examples, then the
///      lower rank);
///   2. then, at most `count` times: between the most and the least loaded rank (ties: the lower
///      rank), the one move of an example or swap of two that lowers the larger of their two
///      costs most (ties: the first found, in batch order); stop when none does;
///   3. the example split (`shardRange`) instead if its largest cost is lower (2. can end in a
///      local optimum): never worse than it.
/// Constraints: a rank never holds more tokens than ceil(count / ranks) sequences of the batch's
/// longest length (what the example split could give it: the activation memory reserved), and
/// no rank is left without an example when the batch has at least as many as there are ranks
/// (both hold after step 1 and every move keeps them). Within a rank the examples keep their
/// order in the batch, so one rank takes the batch exactly as the example split does.
///
/// Reuses its storage from batch to batch: no heap allocation once it has seen the largest batch.
public struct BalancedSplit: Sendable {
    public let worldSize: Int
    public let cost: SequenceCost
    /// After `split`: rank r's positions in the epoch order are slots[rankStarts[r] ..< rankStarts[r + 1]], ascending.
    public private(set) var slots: [Int] = []
    public private(set) var rankStarts: [Int]
    /// Each rank's cost and tokens in the last split.
    public private(set) var rankCosts: [Int]
    public private(set) var rankTokens: [Int]
    private var lengths: [Int] = []
    private var owners: [Int] = []
    private var longestFirst: [Int] = []
    private var lengthCounts: [Int] = []
    private var counts: [Int]

    public init(worldSize: Int, cost: SequenceCost) {
        precondition(worldSize >= 1)
        self.worldSize = worldSize
        self.cost = cost
        rankStarts = Array(repeating: 0, count: worldSize + 1)
        rankCosts = Array(repeating: 0, count: worldSize)
        rankTokens = Array(repeating: 0, count: worldSize)
        counts = Array(repeating: 0, count: worldSize)
    }

    /// Rank `rank`'s positions of the last split.
    public func slots(ofRank rank: Int) -> ArraySlice<Int> { slots[rankStarts[rank] ..< rankStarts[rank + 1]] }

    /// Splits the global batch `global` (positions in the epoch order); `length(slot)` is the
    /// token count of the example at that position.
    public mutating func split(_ global: Range<Int>, length: (Int) -> Int) {
        let count = global.count
        lengths.removeAll(keepingCapacity: true)
        owners.removeAll(keepingCapacity: true)
        var longest = 0
        for slot in global {
            let l = length(slot)
            precondition(l >= 0, "a sequence length is not negative")
            lengths.append(l)
            owners.append(0)
            longest = max(longest, l)
        }
        sortLongestFirst(longest: longest)
        for r in 0 ..< worldSize { rankCosts[r] = 0; rankTokens[r] = 0; counts[r] = 0 }
        let tokenBudget = (count + worldSize - 1) / worldSize * longest
        // 1. Longest first, each to the least loaded rank that has room.
        for example in longestFirst {
            let l = lengths[example]
            var chosen = -1
            for r in 0 ..< worldSize where rankTokens[r] + l <= tokenBudget {
                if chosen < 0 || (rankCosts[r], counts[r]) < (rankCosts[chosen], counts[chosen]) { chosen = r }
            }
            // A rank with fewer than ceil(count / ranks) examples always has room: `chosen` exists.
            assign(example, to: chosen)
        }
        // 2. Moves and swaps between the most and the least loaded rank.
        if worldSize > 1 {
            for _ in 0 ..< count {
                if !improveMostAndLeastLoaded(tokenBudget: tokenBudget, keepEveryRankBusy: count >= worldSize) { break }
            }
        }
        // 3. The search can end in a local optimum: never worse than the example split.
        var largest = 0
        for r in 0 ..< worldSize { largest = max(largest, rankCosts[r]) }
        if exampleSplitLargestCost(count: count) < largest {
            for r in 0 ..< worldSize { rankCosts[r] = 0; rankTokens[r] = 0; counts[r] = 0 }
            for r in 0 ..< worldSize {
                for example in shardRange(count: count, rank: r, worldSize: worldSize) { assign(example, to: r) }
            }
        }
        // Slots rank by rank, in batch order within each.
        rankStarts[0] = 0
        for r in 0 ..< worldSize { rankStarts[r + 1] = rankStarts[r] + counts[r] }
        slots.removeAll(keepingCapacity: true)
        for _ in 0 ..< count { slots.append(0) }
        var next = rankStarts
        for example in 0 ..< count {
            slots[next[owners[example]]] = global.lowerBound + example
            next[owners[example]] += 1
        }
    }

    private mutating func assign(_ example: Int, to rank: Int) {
        owners[example] = rank
        rankCosts[rank] += cost(lengths[example])
        rankTokens[rank] += lengths[example]
        counts[rank] += 1
    }

    private mutating func unassign(_ example: Int) {
        let rank = owners[example]
        rankCosts[rank] -= cost(lengths[example])
        rankTokens[rank] -= lengths[example]
        counts[rank] -= 1
    }

    /// The largest rank cost of the example split (`shardRange`) of the current batch.
    private func exampleSplitLargestCost(count: Int) -> Int {
        var largest = 0
        for r in 0 ..< worldSize {
            var total = 0
            for example in shardRange(count: count, rank: r, worldSize: worldSize) { total += cost(lengths[example]) }
            largest = max(largest, total)
        }
        return largest
    }

    /// `longestFirst` = 0 ..< count by length, longest first, ties in batch order (a counting sort).
    private mutating func sortLongestFirst(longest: Int) {
        lengthCounts.removeAll(keepingCapacity: true)
        for _ in 0 ... longest { lengthCounts.append(0) }
        for l in lengths { lengthCounts[l] += 1 }
        // Start of each length in the output: the longest first.
        var start = 0
        for l in stride(from: longest, through: 0, by: -1) {
            let c = lengthCounts[l]
            lengthCounts[l] = start
            start += c
        }
        longestFirst.removeAll(keepingCapacity: true)
        for _ in lengths.indices { longestFirst.append(0) }
        for (example, l) in lengths.enumerated() {
            longestFirst[lengthCounts[l]] = example
            lengthCounts[l] += 1
        }
    }

    /// One move or swap between the most and the least loaded rank that lowers the larger of
    /// their costs; false when there is none.
    private mutating func improveMostAndLeastLoaded(tokenBudget: Int, keepEveryRankBusy: Bool) -> Bool {
        var most = 0, least = 0
        for r in 1 ..< worldSize {
            if rankCosts[r] > rankCosts[most] { most = r }
            if rankCosts[r] < rankCosts[least] { least = r }
        }
        if most == least { return false }
        var best = rankCosts[most], bestFrom = -1, bestTo = -1
        for from in owners.indices where owners[from] == most {
            let c = cost(lengths[from]), l = lengths[from]
            // Move `from` to the least loaded rank.
            if (!keepEveryRankBusy || counts[most] > 1) && rankTokens[least] + l <= tokenBudget {
                let larger = max(rankCosts[most] - c, rankCosts[least] + c)
                if larger < best { best = larger; bestFrom = from; bestTo = -1 }
            }
            // Swap it with one of the least loaded rank's.
            for to in owners.indices where owners[to] == least {
                let d = c - cost(lengths[to]), t = l - lengths[to]
                if d <= 0 || rankTokens[least] + t > tokenBudget || rankTokens[most] - t > tokenBudget { continue }
                let larger = max(rankCosts[most] - d, rankCosts[least] + d)
                if larger < best { best = larger; bestFrom = from; bestTo = to }
            }
        }
        if bestFrom < 0 { return false }
        unassign(bestFrom)
        assign(bestFrom, to: least)
        if bestTo >= 0 {
            unassign(bestTo)
            assign(bestTo, to: most)
        }
        return true
    }
}

/// One rank's share of one global batch, as a split gave it: positions in the epoch order.
public struct RankShare: Sendable {
    /// The whole global batch: divide the summed loss and gradients by `globalRange.count`.
    public let globalRange: Range<Int>
    /// This rank's positions (possibly none), ascending.
    public let slots: ArraySlice<Int>
    /// `slots` is cut into micro-batches of at most this many examples.
    public let microBatchSize: Int

    public init(globalRange: Range<Int>, slots: ArraySlice<Int>, microBatchSize: Int) {
        precondition(microBatchSize > 0)
        self.globalRange = globalRange
        self.slots = slots
        self.microBatchSize = microBatchSize
    }

    /// How many micro-batches `slots` makes (0 when it is empty).
    public var microBatchCount: Int { (slots.count + microBatchSize - 1) / microBatchSize }

    /// Micro-batch `index`: consecutive slots.
    public func microBatch(_ index: Int) -> ArraySlice<Int> {
        let start = slots.startIndex + index * microBatchSize
        return slots[start ..< min(start + microBatchSize, slots.endIndex)]
    }
}
