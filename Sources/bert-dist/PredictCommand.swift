import ArgumentParser
import Foundation
import Model
import Training

struct PredictCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Classify lines of text read from stdin.",
        discussion: "Plain output: LABEL<TAB>probability per line. --json: one object per line.")

    @Option(help: "A checkpoint folder, a merged model folder, or a training output folder.")
    var checkpoint: String
    @Flag(help: "One JSON object per line: {\"label\", \"label_id\", \"probs\"}.")
    var json = false
    @Flag(help: "With --json, also the raw logits.")
    var logits = false
    @Option(help: "Longest tokenised text; longer ones are truncated.")
    var maxSeqLen = 128
    @Option(help: "Threads.")
    var threads: Int?

    func validate() throws {
        if logits && !json { throw ValidationError("--logits needs --json") }
        if maxSeqLen < 2 { throw ValidationError("--max-seq-len must be at least 2") }
    }

    func run() throws {
        // Not a distributed command: under mpirun, rank 0 alone does it (once, not N times).
        if RankRunner.isNonZeroMPIRank { return }
        let compute = Compute(threads: configureThreads(requested: threads), instructionSet: kernelInstructionSet())
        let inference: InferenceModel
        do { inference = try InferenceModel.load(URL(fileURLWithPath: checkpoint), compute: compute) } catch {
            printError("error: \(error)")
            throw ExitCode.failure
        }
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
        do {
            while let line = readLine(strippingNewline: true) {
                pending.append(line)
                if pending.count >= batchLines { try flush() }
            }
            try flush()
        } catch {
            printError("error: \(error)")
            throw ExitCode.failure
        }
    }
}
