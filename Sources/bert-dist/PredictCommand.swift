import ArgumentParser
import Foundation
import Model
import Training

struct PredictCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Classify lines of text read from stdin.",
        discussion: "Plain output: LABEL<TAB>probability per line. --json: one object per line.")

    @OptionGroup var checkpoint: CheckpointInputOptions
    @OptionGroup var output: OutputOptions
    @Flag(help: "With --json, also the raw logits.")
    var logits = false
    @OptionGroup var sequence: SequenceOptions
    @OptionGroup var threads: ThreadOptions

    func validate() throws {
        if logits && !output.json { throw ValidationError("--logits needs --json") }
    }

    func run() throws {
        try RankRunner.onRankZeroOnly(classifyStandardInput)
    }

    private func classifyStandardInput() throws {
        let runtime = ProcessEnvironment.current.runtime(threads: threads.threads)
        let inference = try InferenceModel.load(checkpoint.folder, runtime: runtime)
        let json = output.json
        let maxSeqLen = try resolvedSequenceLength(sequence.maxSeqLen, config: inference.model.config, modelDirectory: inference.folder)
        // Interactive use answers each line at once; piped input is classified in batches.
        let batchLines = isatty(STDIN_FILENO) == 1 ? 1 : 64
        inference.model.reserve(sequences: batchLines, longestSequence: maxSeqLen)
        var batch = PackedBatch()
        var pending: [String] = []
        func flush() throws {
            guard !pending.isEmpty else { return }
            for p in try inference.predict(pending, maxSequenceLength: maxSeqLen, batch: &batch) {
                if json {
                    // SPEC: {"label", "label_id", "probs"} (+ "logits"), in this order, one per line.
                    var fields = "\"label\":\(JSONValue.quote(p.label)),\"label_id\":\(p.labelId),\"probs\":[\(p.probabilities.map { "\($0)" }.joined(separator: ","))]"
                    if logits { fields += ",\"logits\":[\(p.logits.map { "\($0)" }.joined(separator: ","))]" }
                    print("{\(fields)}")
                } else {
                    print("\(p.label)\t\(String(format: "%.4f", p.probabilities[p.labelId]))")
                }
            }
            fflush(nil)
            pending.removeAll(keepingCapacity: true)
        }
        while let line = readLine(strippingNewline: true) {
            pending.append(line)
            if pending.count >= batchLines { try flush() }
        }
        try flush()
    }
}
