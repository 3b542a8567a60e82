import ArgumentParser
import Foundation
import Options
import Startup
import Training

struct TrainCommand: ConfigFileCommand, LaunchFacts {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Fine-tune a BERT-family encoder for sequence classification, data-parallel over MPI ranks.",
        discussion: """
            The global batch is split over all ranks and micro-batches; the loss is its mean. \
            Checkpoints go to OUTPUT/checkpoint-STEP; the last step is always checkpointed.
            Data: a .csv is AG News unless a column option is given (then a CSV with a header row), .tsv and \
            .jsonl name their columns/keys with the same options; labels come from the training data \
            (or --labels) and set the classifier's size (docs/data.md). Tasks: single-label; multi-label when the \
            labels are JSON lists or --label-separator splits them; regression with --problem-type regression.
            With --eval, OUTPUT/best names the checkpoint with the best --metric-for-best-model. Options may come \
            from --config FILE.json (the command line overrides them); each checkpoint's training_args.json holds \
            the options the run used.
            Example: mpirun -n 4 bert-dist train --model models/minilm --train train.csv --eval test.csv --output runs/ag
            """)

    /// What the run is (Training reads it as parsed); then what the process is.
    @OptionGroup var options: TrainingOptions
    @OptionGroup var process: ProcessOptions

    var launchFacts: [(key: String, value: String)] {
        process.launchFacts + [("output", options.checkpoints.folder.path), ("resume", options.checkpoints.resume ? "yes" : "no"),
                               ("shard_optimizer", options.parallel.shardOptimizer ? "yes" : "no")]
    }

    func run() throws {
        let runtime = try process.runtime(simulatedRanks: options.debug.inProcessRanks)
        let cacheDirectory = try ProcessEnvironment.current.tokenCacheDirectory(requested: options.data.cacheDir)
        let options = self.options
        // training_args.json: every option of the command as resolved (--config's included).
        let trainingArguments = try ResolvedOptions.record(self)
        StopSignal.install()
        let status = RankRunner.run(simulatedRanks: options.debug.inProcessRanks, collectiveTimeout: process.faults.collectiveTimeout,
                                    runtime: runtime, progressIntervalSeconds: options.parallel.progressIntervalSeconds) { communicator, watchdog in
            let log = rootLog(communicator)
            // What a failure report names: the checkpoint to continue from.
            let checkpointNote: (URL?) -> Void = { folder in
                watchdog?.setNote(folder.map { "newest complete checkpoint: \($0.path) (continue with --resume)" } ?? "no complete checkpoint yet")
            }
            let summary = try runTraining(options, cacheDirectory: cacheDirectory, runtime: runtime, communicator: communicator, log: log,
                                          checkpointNote: checkpointNote, watchdog: watchdog,
                                          restart: ProcessEnvironment.current.restartRecord, trainingArguments: trainingArguments)
            guard communicator.rank == 0 else { return }
            if summary.stoppedBySignal {
                log("stopped by a signal after step \(summary.stepsDone) of \(summary.totalSteps); checkpoint written: \(summary.finalCheckpoint?.path ?? "-")")
                log("resume with the same command plus --resume")
            } else {
                var line = "done: \(summary.stepsDone) steps in \(formatDuration(summary.trainSeconds))"
                if summary.skippedSteps > 0 { line += ", \(summary.skippedSteps) skipped (non-finite)" }
                if let metrics = summary.finalEvaluation { line += "; eval \(metricsLine(metrics)) on \(metrics.count) examples" }
                log(line)
                log("trained model: \(summary.finalCheckpoint?.path ?? "-")")
                if let best = summary.bestMetric, let folder = summary.bestCheckpoint {
                    log(String(format: "best model: %@ (eval %@ %.4f)", folder.path, best.name, best.value))
                }
            }
        }
        if status != 0 { throw ExitCode(status) }
    }
}
