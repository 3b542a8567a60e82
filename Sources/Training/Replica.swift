import Distributed
import Foundation
import Model
import Options

/// One rank's copy of the model and its part of the optimizer, and the algorithm of one
/// data-parallel step:
///
///   zero gradients; for each micro-batch: forward, backward (gradients accumulate; on the
///   last micro-batch each finished layer starts its bucket's communication);
///   wait until this rank's shard of the sum is complete (the gathers of the other shards may
///   still travel); global norm (each rank measures its own shard, one small collective adds
///   them in rank order); skip the step everywhere if it is not finite (nothing has been
///   updated yet); else AdamW with the clip factor on this rank's range (all of it, or its
///   ZeRO-1 shard), each part as soon as its sum is here, while the later ones still travel,
///   and with sharding the gather of the updated parameters, piece by piece as they are made.
///
/// Every rank ends a step with bit-identical parameters (sums are done in rank order by the
/// shard owner), so `-n N` under mpirun and `--simulate-ranks N` in one process agree exactly.
final class Replica {
    let model: BertForSequenceClassification
    let optimizer: AdamOptimizer
    let communicator: any Communicator
    let synchronizer: GradientSynchronizer
    let shards: ShardLayout
    let shardOptimizer: Bool
    private var batch = PackedBatch()
    /// The ZeRO-1 parameter gather's requests, kept across steps (no allocation per step).
    private var gatherRequests: [TransferRequest] = []
    /// Evaluation's batch, kept across evaluations of the run.
    var evaluationBatch = PackedBatch()
    /// When set, `step` enters its update window (`beginUpdate`) just before the parameters and
    /// the Adam state change, and returns with it open: the caller ends it once the step's
    /// progress is published (TrainingRun; an emergency checkpoint then sees a consistent state).
    var completedStep: CompletedStep?
    /// The per-step collective's values: 6 metrics, then per rank its partial sum of squares,
    /// its compute seconds (data, forward, backward) and its seconds waiting for the gradient sum.
    private var reduction: [Double]

    /// `parallel`: the sharding, bucket size and compression choices. The gradients are summed
    /// over `communicator` (the bench's --no-gradient-sync gives each rank a world of its own).
    init(model: BertForSequenceClassification, hyperparameters: AdamHyperparameters, communicator: any Communicator,
         parallel: ParallelOptions, sparseEmbeddingGradients: Bool = true) throws {
        self.model = model
        self.communicator = communicator
        self.shardOptimizer = parallel.shardOptimizer
        shards = ShardLayout(totalCount: model.layout.totalCount, worldSize: communicator.worldSize)
        let optimizerRange = shardOptimizer ? shards.range(of: communicator.rank) : 0..<model.layout.totalCount
        optimizer = AdamOptimizer(hyperparameters: hyperparameters, layout: model.layout, range: optimizerRange, compute: model.compute)
        synchronizer = try GradientSynchronizer(communicator: communicator, gradients: model.gradients.buffer,
                                                options: Replica.syncOptions(model.layout, parallel,
                                                                             sparseEmbeddingGradients: sparseEmbeddingGradients))
        reduction = [Double](repeating: 0, count: 6 + 3 * communicator.worldSize)
    }

    /// Buckets end where backward reports readiness (each layer's and its feed-forward's start), so
    /// each starts as soon as its part is done; the word and position tables travel as touched rows (see `markRows`).
    static func syncOptions(_ layout: ParameterLayout, _ parallel: ParallelOptions,
                            sparseEmbeddingGradients: Bool) -> GradientSyncOptions {
        var sync = GradientSyncOptions()
        sync.bucketFloats = max(1, Int(parallel.bucketMegabytes * 1_000_000 / 4))
        sync.shardOptimizer = parallel.shardOptimizer
        sync.compression = parallel.gradientCompression
        sync.bucketBoundaries = layout.backwardReadyOffsets
        if sparseEmbeddingGradients {
            // Rows of E floats (ELECTRA's embedding_size may differ from the hidden size).
            sync.sparseTables = [layout.wordTable, layout.positionTable].map {
                SparseRowTable(range: $0.range, rowLength: layout.embeddingRowLength)
            }
        }
        return sync
    }

    /// The embedding rows backward will write for `batch`: its token ids, and the position rows
    /// of its longest sequence (from 0, or from RoBERTa's pad_token_id + 1) (sparse tables 0 and
    /// 1 of `syncOptions`).
    private func markRows(_ batch: PackedBatch) {
        for id in batch.tokenIds { synchronizer.markRow(table: 0, row: Int(id)) }
        var longest = 0
        for s in 0..<batch.sequenceCount { longest = max(longest, batch.length(of: s)) }
        for position in model.architecture.positions.usedRows(longestSequence: longest) { synchronizer.markRow(table: 1, row: position) }
    }

    /// Room for the plan's largest micro-batch: at most `plan.microBatchSize` sequences of the
    /// longest length, or `plan.microBatchExamples` shorter ones (a token-balanced share).
    func reserve(_ plan: TrainingPlan, maxSequenceLength: Int) {
        model.reserve(sequences: plan.microBatchSize, longestSequence: maxSequenceLength)
        model.reserve(sequences: plan.microBatchExamples, longestSequence: 1)
        batch.reserve(tokens: plan.microBatchSize * maxSequenceLength, sequences: plan.microBatchExamples,
                      targetsPerSequence: model.labelCount)
    }

    struct Outcome {
        /// Σ over the global batch (all ranks).
        var lossSum = 0.0, correct = 0.0, tokens = 0.0, examples = 0.0
        /// What the loss sum is divided by for the global batch's mean loss (TaskLoss.lossDenominator).
        var lossDenominator = 0.0
        var gradientNorm = 0.0
        var learningRate = 0.0
        var skipped = false
        /// Where a non-finite gradient was seen, when `skipped`.
        var nonFiniteWhere = ""
        /// Some rank asked to stop (SIGTERM/SIGINT): every rank gets the same answer.
        var stopRequested = false
        var phaseSeconds = PhaseSeconds()
    }

    /// Seconds of one step by phase: zeroing gradients and packing batches (data), forward,
    /// backward, what is left of the gradient sum after backward (sync), the gradient norm with
    /// the step's metrics collective (norm), and the update (optimizer).
    struct PhaseSeconds {
        var data = 0.0, forward = 0.0, backward = 0.0, sync = 0.0, norm = 0.0, optimizer = 0.0
        static let names = ["data", "forward", "backward", "sync", "norm", "optimizer"]
        /// In the order of `names`.
        var values: [Double] { [data, forward, backward, sync, norm, optimizer] }
        /// The rank's own work before the gradient sum can finish: what the other ranks wait for.
        var compute: Double { data + forward + backward }
        mutating func add(_ other: PhaseSeconds) {
            data += other.data; forward += other.forward; backward += other.backward
            sync += other.sync; norm += other.norm; optimizer += other.optimizer
        }
        /// "data 0.012s forward 0.100s ..." (the debug mode's per-step and total lines).
        func line(decimals: Int) -> String {
            zip(Self.names, values).map { String(format: "%@ %.\(decimals)fs", $0.0, $0.1) }.joined(separator: " ")
        }
    }

    /// What every rank holds an identical copy of: the parameters, and the Adam moments unless
    /// they are sharded.
    var replicatedBuffers: [UnsafeMutableBufferPointer<Float>] {
        shardOptimizer ? [model.parameters.buffer] : [model.parameters.buffer, optimizer.m.buffer, optimizer.v.buffer]
    }

    /// One optimizer step. `fill(i, &batch)` packs micro-batch i of this rank's shard.
    /// `lossDenominator` is the global batch's (TaskLoss.lossDenominator over all its examples,
    /// the same on every rank): the summed gradients are those of the mean loss over the whole
    /// global batch, however it is split over ranks and micro-batches.
    func step(microBatchCount: Int, lossDenominator: Double, stepIndex: Int, learningRate: Double, maxGradNorm: Double,
              dropout: DropoutContext, stopRequested: Bool, fill: (Int, inout PackedBatch) throws -> Void) throws -> Outcome {
        var outcome = Outcome()
        outcome.lossDenominator = lossDenominator
        var clock = Clock()
        model.gradients.zero()
        // Before forward, so that no peer's gradient message arrives before its receive (Open MPI
        // would buffer it, growing a pool: GradientSynchronizer's "Receives first").
        try synchronizer.postReceives()
        var lossSum = 0.0, correct = 0, tokens = 0, examples = 0
        let lossScale = TaskLoss.lossScale(denominator: lossDenominator)
        clock.lap(into: &outcome.phaseSeconds.data)
        for micro in 0..<microBatchCount {
            batch.removeAll()
            try fill(micro, &batch)
            markRows(batch)
            clock.lap(into: &outcome.phaseSeconds.data)
            let result = try model.forward(batch, dropout: dropout)
            lossSum += result.lossSum
            correct += result.correctCount
            tokens += batch.tokenCount
            examples += batch.sequenceCount
            clock.lap(into: &outcome.phaseSeconds.forward)
            let isLast = micro == microBatchCount - 1
            try model.backward(batch, dropout: dropout, lossScale: lossScale) { offset in
                // Communication starts only once every micro-batch has added its gradient; MPI
                // moves large transfers only inside MPI calls, hence progress() between layers.
                guard isLast else { return }
                try self.synchronizer.gradientsReady(downTo: offset)
                try self.synchronizer.progress()
            }
            clock.lap(into: &outcome.phaseSeconds.backward)
        }
        // A rank whose share of a small last batch is empty still takes part in every collective.
        if microBatchCount == 0 { try synchronizer.gradientsReady(downTo: 0) }
        // This rank's shard holds the sum now; the other ranks' sums may still be on their way.
        try synchronizer.finishReduces()
        clock.lap(into: &outcome.phaseSeconds.sync)

        // Norm of the summed gradient: each rank measures its own shard; one collective adds the
        // metrics and puts every shard's partial sum of squares in its slot (adding zeros is
        // exact), so every rank sums the same partials in the same order.
        let rank = communicator.rank, worldSize = communicator.worldSize
        for i in reduction.indices { reduction[i] = 0 }
        reduction[0] = lossSum
        reduction[1] = Double(correct)
        reduction[2] = Double(tokens)
        reduction[3] = Double(examples)
        reduction[4] = lossSum.isFinite ? 0 : 1
        reduction[5] = stopRequested ? 1 : 0
        reduction[6 + rank] = sumOfSquares(model.gradients, range: shards.range(of: rank), compute: model.compute)
        let phases = outcome.phaseSeconds
        reduction[6 + worldSize + rank] = phases.compute
        reduction[6 + 2 * worldSize + rank] = phases.sync
        try reduction.withUnsafeMutableBufferPointer { try communicator.allReduce(inPlace: $0, .sum) }
        let reduced = reduction
        outcome.lossSum = reduced[0]
        outcome.correct = reduced[1]
        outcome.tokens = reduced[2]
        outcome.examples = reduced[3]
        outcome.stopRequested = reduced[5] > 0
        var squares = 0.0
        for r in 0..<worldSize { squares += reduced[6 + r] }
        outcome.gradientNorm = squares.squareRoot()
        outcome.learningRate = learningRate
        clock.lap(into: &outcome.phaseSeconds.norm)

        if !outcome.gradientNorm.isFinite {
            // Nothing is updated: the sums still arrive, and the parameters and Adam state stay as they were.
            try synchronizer.finishGathers { _ in }
            outcome.skipped = true
            outcome.nonFiniteWhere = try locateNonFinite(lossNonFiniteRanks: reduced[4])
            completedStep?.beginUpdate()
        } else {
            // The clip factor is known before any parameter changes, so each part is updated once,
            // exactly; the update window (an emergency checkpoint waits for it) opens first. At the
            // end (the default) every sum is here before it opens: the window holds no
            // communication, so a peer lost at any moment leaves a consistent last completed step.
            if updateSchedule == .atTheEnd { try synchronizer.finishGathers { _ in } }
            completedStep?.beginUpdate()
            let factor = gradientClipFactor(totalNorm: outcome.gradientNorm, maxNorm: maxGradNorm)
            let update = optimizer.beginStep(learningRate: learningRate, gradientScale: factor)
            try applyUpdate(update)
            // The parameters are final on this rank: the --bf16 copies are rebuilt here, once per update.
            model.parametersChanged()
            model.refreshBF16WeightsIfNeeded()
        }
        clock.lap(into: &outcome.phaseSeconds.optimizer)
        // The time finishGathers waited for gathers is communication, not optimizer work.
        outcome.phaseSeconds.sync += synchronizer.lastGatherWaitSeconds
        outcome.phaseSeconds.optimizer -= synchronizer.lastGatherWaitSeconds
        return outcome
    }

    /// Where the optimizer's update runs in a step (the results are the same bits either way).
    /// Measured on 2 hosts (benchmarks/communication.md, MiniLM batch 32) the overlap gained
    /// nothing (10 Gbit/s: 0.598 s overlapped, 0.587 s at the end; 1 Gbit/s bf16: 0.621, 0.627),
    /// while its update window holds the later buckets' travel (a peer lost then leaves no
    /// consistent state for the emergency checkpoint): at the end is the default.
    enum UpdateSchedule {
        /// Each part as soon as its sum is on this rank: the sparse tables, then each bucket as its
        /// gather arrives, while later ones still travel; with ZeRO-1, the shard piece by piece,
        /// each piece's parameter gather starting as soon as it is updated.
        case overlapped
        /// All of it once every sum has arrived, then (ZeRO-1) the parameter gather.
        case atTheEnd
    }

    /// Set before the first step; bert-dist-dev bench compares the two.
    var updateSchedule = UpdateSchedule.atTheEnd

    /// The AdamW update of this rank's range (all of it, or its ZeRO-1 shard) once the gradient
    /// sum's reduces are done, and with ZeRO-1 the gather of the updated parameters.
    private func applyUpdate(_ update: AdamOptimizer.Update) throws {
        let parameters = model.parameters, gradients = model.gradients
        switch (updateSchedule, shardOptimizer) {
        case (.overlapped, false):
            try synchronizer.finishGathers { part in optimizer.apply(update, to: part, parameters: parameters, gradients: gradients) }
        case (.overlapped, true):
            try synchronizer.finishGathers { _ in }
            try communicator.gatherParameters(parameters.buffer, layout: shards, pieceFloats: Replica.gatherPieceFloats, requests: &gatherRequests) { piece in
                optimizer.apply(update, to: piece, parameters: parameters, gradients: gradients)
            }
        case (.atTheEnd, _):  // the gathers were finished before the update window
            optimizer.apply(update, to: optimizer.range, parameters: parameters, gradients: gradients)
            if shardOptimizer { try communicator.gatherParameters(parameters.buffer, layout: shards, requests: &gatherRequests) }
        }
    }

    /// ZeRO-1's update and parameter gather go in pieces of 4 MB (4 messages).
    static let gatherPieceFloats = 4 * GradientSynchronizer.defaultMessageFloats

    /// Rank `rank`'s compute seconds (data, forward, backward) and seconds waiting for the
    /// gradient sum in the last step, as every rank learnt them from that step's collective.
    func lastStepSeconds(ofRank rank: Int) -> (compute: Double, wait: Double) {
        let worldSize = communicator.worldSize
        return (reduction[6 + worldSize + rank], reduction[6 + 2 * worldSize + rank])
    }

    /// Names the first parameter (in backward order) whose summed gradient is not finite, from
    /// the rank that owns it. A collective: called by every rank when the norm is not finite.
    private func locateNonFinite(lossNonFiniteRanks: Double) throws -> String {
        var found = ""
        let own = shards.range(of: communicator.rank)
        for tensor in model.layout.tensors.reversed() {
            let overlap = tensor.range.clamped(to: own)
            if overlap.isEmpty { continue }
            if model.gradients[overlap].contains(where: { !$0.isFinite }) {
                found = tensor.name
                break
            }
        }
        let names = try communicator.allGather(bytes: Array(found.utf8)).map { String(decoding: $0, as: UTF8.self) }
        // Shards are in layout order, backward runs from the end: the last rank's hit came first.
        let first = names.last(where: { !$0.isEmpty }) ?? "an unknown tensor"
        let lossNote = lossNonFiniteRanks > 0 ? "; the loss itself was not finite on \(Int(lossNonFiniteRanks)) rank(s)" : ""
        return "the gradient of \(first)\(lossNote)"
    }
}

/// Lap timer for the per-phase times.
struct Clock {
    private var last = DispatchTime.now().uptimeNanoseconds
    mutating func lap(into total: inout Double) {
        let now = DispatchTime.now().uptimeNanoseconds
        total += Double(now - last) / 1e9
        last = now
    }
}
