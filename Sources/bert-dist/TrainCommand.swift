import ArgumentParser
import Foundation
import Model
import Training

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Fine-tune a BERT for sequence classification, data-parallel over MPI ranks.",
        discussion: """
            The global batch is split over all ranks and micro-batches; the loss is its mean. \
            Checkpoints go to OUTPUT/checkpoint-STEP; the last step is always checkpointed.
            Example: mpirun -n 4 bert-dist train --model models/minilm --train train.csv --eval test.csv --output runs/ag
            """)

    @Option(help: "Hugging Face BERT folder (config.json, vocab.txt or tokenizer.json, model.safetensors).")
    var model: String
    @Option(help: "Training data: AG News .csv or .jsonl ({\"text\", \"label\"}).")
    var train: String
    @Option(help: "Evaluation data, evaluated every --eval-every steps and at the end.")
    var eval: String?
    @Option(help: "Folder for checkpoints (created if needed).")
    var output: String

    @Option(help: "Global batch size, split over all ranks (and micro-batches).")
    var batchSize = 32
    @Option(help: "Per-rank forward/backward size; gradient accumulation fills the rest of the rank's share.")
    var microBatchSize: Int?
    @Option(help: "Optimizer steps to take (default: --epochs 1).")
    var maxSteps: Int?
    @Option(help: "Passes over the training data (may be fractional).")
    var epochs: Double?
    @Option(help: "Peak learning rate.")
    var lr = 2e-5
    @Option(help: "Fraction of the steps with linear warmup.")
    var warmupRatio = 0.0
    @Option(help: "Weight decay (not on biases and LayerNorm weights).")
    var weightDecay = 0.0
    @Option(help: "Clip the global gradient norm to this (0: no clipping).")
    var maxGradNorm = 1.0
    @Option(help: "adamw (decoupled weight decay) or adam (L2, torch.optim.Adam).")
    var optimizer = "adamw"
    @Option(help: "linear (warmup then linear decay, HF's default) or constant (after warmup).")
    var lrSchedule = "linear"
    @Option(help: "Longest tokenised text; longer ones are truncated.")
    var maxSeqLen = 128
    @Option(help: "Seed of the shuffling, dropout masks and a new classifier head.")
    var seed = 42
    @Option(help: "Dropout of hidden states and attention (default: as in config.json).")
    var dropout: Float?
    @Flag(help: "Group examples of similar length in each global batch (like HF's group_by_length).")
    var groupByLength = false
    @Flag(help: "Skip malformed data rows (and report how many) instead of stopping.")
    var skipBadRows = false

    @Flag(help: "ZeRO-1: each rank keeps and updates 1/N of the Adam state.")
    var shardOptimizer = false
    @Option(help: "Gradient bucket size in MB for the overlapped all-reduce.")
    var bucketMb = 25.0
    @Option(help: "Compare parameter/Adam checksums across ranks every N steps (and repair from rank 0).")
    var consistencyEvery = 100
    @Option(help: "Write a checkpoint every N steps (and at the end).")
    var checkpointEvery = 500
    @Option(help: "Keep the K newest complete checkpoints.")
    var keepCheckpoints = 3
    @Flag(help: "Continue from the newest complete checkpoint in --output.")
    var resume = false
    @Option(help: "Evaluate every N steps (and at the end).")
    var evalEvery: Int?
    @Option(help: "Print a line every N steps when stdout is not a terminal.")
    var logEvery = 10
    @Option(help: "Write TensorBoard scalars into this folder.")
    var tensorboard: String?
    @Option(help: "BLAS and kernel threads per rank (default: cores per node / ranks per node).")
    var threads: Int?

    @Flag(help: "Single-node debug mode: in-process ranks, NaN/Inf checks of every activation and gradient, per-phase times.")
    var debug = false
    @Option(help: "With --debug: run the N-rank algorithm in this process (default 1).")
    var simulateRanks: Int?

    func validate() throws {
        for (name, value) in [("--batch-size", batchSize), ("--max-seq-len", maxSeqLen), ("--keep-checkpoints", keepCheckpoints),
                              ("--log-every", logEvery)] where value < 1 {
            throw ValidationError("\(name) must be at least 1")
        }
        if maxSeqLen < 2 { throw ValidationError("--max-seq-len must leave room for [CLS] and [SEP] (at least 2)") }
        if let microBatchSize, microBatchSize < 1 { throw ValidationError("--micro-batch-size must be at least 1") }
        if let maxSteps, maxSteps < 1 { throw ValidationError("--max-steps must be at least 1") }
        if let epochs, !(epochs > 0) { throw ValidationError("--epochs must be positive") }
        if maxSteps != nil && epochs != nil { throw ValidationError("give --max-steps or --epochs, not both") }
        if !(lr > 0) { throw ValidationError("--lr must be positive") }
        if !(0...1).contains(warmupRatio) { throw ValidationError("--warmup-ratio must be in [0, 1]") }
        if weightDecay < 0 || maxGradNorm < 0 { throw ValidationError("--weight-decay and --max-grad-norm must not be negative") }
        if OptimizerKind(rawValue: optimizer) == nil { throw ValidationError("--optimizer must be adamw or adam") }
        if LearningRateSchedule.Shape(rawValue: lrSchedule) == nil { throw ValidationError("--lr-schedule must be linear or constant") }
        if let dropout, !(0..<1).contains(dropout) { throw ValidationError("--dropout must be in [0, 1)") }
        if let simulateRanks {
            if !debug { throw ValidationError("--simulate-ranks needs --debug") }
            if simulateRanks < 1 { throw ValidationError("--simulate-ranks must be at least 1") }
        }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if let evalEvery, evalEvery < 1 { throw ValidationError("--eval-every must be at least 1") }
        if checkpointEvery < 0 || consistencyEvery < 0 { throw ValidationError("--checkpoint-every and --consistency-every must not be negative") }
        if bucketMb <= 0 { throw ValidationError("--bucket-mb must be positive") }
    }

    var options: TrainingOptions {
        var o = TrainingOptions(modelDirectory: URL(fileURLWithPath: model), trainFile: URL(fileURLWithPath: train),
                                evalFile: eval.map { URL(fileURLWithPath: $0) }, outputDirectory: URL(fileURLWithPath: output))
        o.globalBatchSize = batchSize
        o.microBatchSize = microBatchSize
        o.maxSteps = maxSteps
        o.epochs = epochs
        o.learningRate = lr
        o.warmupRatio = warmupRatio
        o.weightDecay = weightDecay
        o.maxGradNorm = maxGradNorm
        o.optimizer = OptimizerKind(rawValue: optimizer)!
        o.schedule = LearningRateSchedule.Shape(rawValue: lrSchedule)!
        o.maxSequenceLength = maxSeqLen
        o.seed = seed
        o.dropout = dropout
        o.groupByLength = groupByLength
        o.skipBadRows = skipBadRows
        o.shardOptimizer = shardOptimizer
        o.bucketMegabytes = bucketMb
        o.consistencyEvery = consistencyEvery
        o.checkpointEvery = checkpointEvery
        o.keepCheckpoints = keepCheckpoints
        o.resume = resume
        o.evalEvery = evalEvery
        o.logEvery = logEvery
        o.tensorboardDirectory = tensorboard.map { URL(fileURLWithPath: $0) }
        o.threads = threads
        o.debug = debug
        o.simulatedRanks = simulateRanks ?? 1
        return o
    }

    func run() throws {
        let options = self.options
        StopSignal.install()
        let status = RankRunner.run(simulatedRanks: debug ? options.simulatedRanks : nil, threads: threads) { communicator, compute in
            let log = rootLog(communicator)
            let summary = try runTraining(options, communicator: communicator, compute: compute, log: log)
            guard communicator.rank == 0 else { return }
            if summary.stoppedBySignal {
                log("stopped by a signal after step \(summary.stepsDone) of \(summary.totalSteps); checkpoint written: \(summary.finalCheckpoint?.path ?? "-")")
                log("resume with the same command plus --resume")
            } else {
                var line = String(format: "done: %d steps in %@", summary.stepsDone, formatDuration(summary.trainSeconds))
                if summary.skippedSteps > 0 { line += ", \(summary.skippedSteps) skipped (non-finite)" }
                if let metrics = summary.finalEvaluation {
                    line += String(format: "; eval accuracy %.4f loss %.4f on %d examples", metrics.accuracy, metrics.loss, metrics.count)
                }
                log(line)
                log("trained model: \(summary.finalCheckpoint?.path ?? "-")")
            }
        }
        if status != 0 { throw ExitCode(status) }
    }
}

func formatDuration(_ seconds: Double) -> String {
    let total = Int(seconds.rounded())
    return total >= 3600 ? String(format: "%d:%02d:%02d", total / 3600, total % 3600 / 60, total % 60)
                         : String(format: "%d:%02d", total / 60, total % 60)
}
