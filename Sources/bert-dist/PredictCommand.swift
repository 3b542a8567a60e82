import ArgumentParser
import Data
import Foundation
import Model
import Options
import Startup
import Training

struct PredictCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Classify lines of text read from stdin.",
        discussion: """
            Plain output: LABEL<TAB>probability per line. --json: one object per line. With --pairs each line is \
            TEXT<TAB>TEXT_PAIR (split at the first tab), tokenised as training tokenises a pair: \
            [CLS] TEXT [SEP] TEXT_PAIR [SEP], token types 0 then 1 (RoBERTa, XLM-R, CamemBERT: \
            <s> TEXT </s></s> TEXT_PAIR </s>, all type 0).
            """)

    @OptionGroup var checkpoint: CheckpointInputOptions
    @OptionGroup var output: OutputOptions
    @Flag(help: "With --json, also the raw logits.")
    var logits = false
    @Flag(help: "Each line is a text pair: TEXT<TAB>TEXT_PAIR.")
    var pairs = false
    @OptionGroup var sequence: SequenceOptions
    @OptionGroup var threads: ThreadOptions
    @OptionGroup var precision: PrecisionOptions

    func validate() throws {
        if logits && !output.json { throw ValidationError("--logits needs --json") }
        if pairs { try sequence.validate(pairs: "--pairs") }
    }

    func run() throws {
        try precision.checkCPU()
        try RankRunner.onRankZeroOnly(classifyStandardInput)
    }

    private func classifyStandardInput() throws {
        let runtime = ProcessEnvironment.current.runtime(threads: threads.threads, precision: precision.precision)
        let setup = try RunSetup.forPrediction(checkpoint: checkpoint.folder, sequence: sequence, compute: runtime.makeCompute())
        let (json, pairs) = (output.json, self.pairs)
        let maxSequenceLength = setup.description.maxSequenceLength
        try setup.root?.tokenizer?.checkMaxLength(maxSequenceLength, pairs: pairs)
        // Interactive use answers each line at once; piped input is classified in batches.
        let batchLines = isatty(STDIN_FILENO) == 1 ? 1 : 64
        setup.model.reserve(sequences: batchLines, longestSequence: maxSequenceLength)
        var batch = PackedBatch()
        var pending: [String] = [], pendingPairs: [String] = []
        func flush() throws {
            guard !pending.isEmpty else { return }
            for p in try setup.predict(pending, pairs: pairs ? pendingPairs : nil, batch: &batch) {
                if json {
                    // docs/commands.md: {"label", "label_id", "probs"} (+ "logits"), in this order, one per line.
                    var fields = "\"label\":\(JSONValue.quote(p.label)),\"label_id\":\(p.labelId),\"probs\":[\(p.probabilities.map { "\($0)" }.joined(separator: ","))]"
                    if logits { fields += ",\"logits\":[\(p.logits.map { "\($0)" }.joined(separator: ","))]" }
                    print("{\(fields)}")
                } else {
                    print("\(p.label)\t\(String(format: "%.4f", p.probabilities[p.labelId]))")
                }
            }
            fflush(nil)
            pending.removeAll(keepingCapacity: true)
            pendingPairs.removeAll(keepingCapacity: true)
        }
        var lineNumber = 0
        while let line = readLine(strippingNewline: true) {
            lineNumber += 1
            if pairs {
                guard let tab = line.firstIndex(of: "\t") else {
                    throw DataError("stdin:\(lineNumber): no tab; with --pairs each line is TEXT<TAB>TEXT_PAIR")
                }
                pending.append(String(line[..<tab]))
                pendingPairs.append(String(line[line.index(after: tab)...]))
            } else {
                pending.append(line)
            }
            if pending.count >= batchLines { try flush() }
        }
        try flush()
    }
}
