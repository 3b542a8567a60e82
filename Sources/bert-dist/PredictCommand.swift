import ArgumentParser
import Data
import Foundation
import Model
import Options
import Startup
import Training

struct PredictCommand: ParsableCommand, LaunchFacts {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Predict the lines of text read from stdin, or every row of a data file (--data).",
        discussion: """
            Plain output: LABEL<TAB>probability per line (multi-label: the labels above --threshold and their \
            probabilities; regression: the score). --json: one object per line. With --pairs each line is \
            TEXT<TAB>TEXT_PAIR (split at the first tab), tokenised as training tokenises a pair: \
            [CLS] TEXT [SEP] TEXT_PAIR [SEP], token types 0 then 1 (RoBERTa, XLM-R, CamemBERT: \
            <s> TEXT </s></s> TEXT_PAIR </s>, all type 0).
            With --data FILE: one result per row of FILE, in its order, as JSON Lines (stdout, or --output FILE; \
            CSV when FILE ends in .csv); under mpirun the ranks split the rows and rank 0 writes.
            """)

    @OptionGroup var options: PredictionOptions
    @OptionGroup var output: OutputOptions
    @Flag(help: "With --json (or --data's JSON Lines), also the raw logits.")
    var logits = false
    @Flag(help: "Each line is a text pair: TEXT<TAB>TEXT_PAIR.")
    var pairs = false
    @OptionGroup var process: ProcessOptions

    var launchFacts: [(key: String, value: String)] { process.launchFacts }

    func validate() throws {
        if logits && !output.json && options.dataFile == nil { throw ValidationError("--logits needs --json") }
        if logits && options.outputFile?.pathExtension.lowercased() == "csv" { throw ValidationError("--logits needs JSON Lines, not a .csv --output") }
        if pairs && options.dataFile != nil { throw ValidationError("--pairs is for stdin's lines; with --data name the pair's column with --text-pair-column") }
        if pairs { try options.sequence.validate(pairs: "--pairs") }
    }

    func run() throws {
        if let dataFile = options.dataFile {
            try predictFile(dataFile)
        } else {
            try process.precision.checkCPU()
            try RankRunner.onRankZeroOnly(predictStandardInput)
        }
    }

    /// Every row of `dataFile`, on every rank; rank 0 writes.
    private func predictFile(_ dataFile: URL) throws {
        let runtime = try process.runtime()
        let (options, format) = (self.options, PredictionFormat(outputFile: options.outputFile, logits: logits,
                                                                 labelSeparator: options.labels.labelSeparator))
        let showsBar = isatty(STDERR_FILENO) == 1
        let status = RankRunner.run(simulatedRanks: nil, collectiveTimeout: process.faults.collectiveTimeout, runtime: runtime) { communicator, _ in
            let setup = try RunSetup.forPrediction(options, dataFile: dataFile, compute: runtime.makeCompute(), communicator: communicator,
                                                   log: { printError($0) })
            let started = Date()
            try runPrediction(setup, batchSize: options.batchSize, format: format, output: options.outputFile, communicator: communicator) { done, total in
                guard showsBar else { return }
                let seconds = Date().timeIntervalSince(started)
                let eta = done > 0 ? formatDuration(seconds * Double(total - done) / Double(done)) : "--:--"
                FileHandle.standardError.write(Data(String(format: "\r\u{1B}[2K%d/%d rows (%.0f%%) %.0f rows/s eta %@", done, total,
                                                           100 * Double(done) / Double(max(total, 1)), Double(done) / max(seconds, 1e-9), eta).utf8))
                if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
            }
            if communicator.rank == 0 {
                let rows = setup.eval?.count ?? 0, seconds = Date().timeIntervalSince(started)
                printError(String(format: "predicted %d rows in %.2f s (%.1f rows/s) on %d rank(s)%@", rows, seconds, Double(rows) / max(seconds, 1e-9),
                                  communicator.worldSize, options.outputFile.map { ": \($0.path)" } ?? ""))
            }
        }
        if status != 0 { throw ExitCode(status) }
    }

    private func predictStandardInput() throws {
        let runtime = ProcessEnvironment.current.runtime(threads: process.threads.threads, precision: process.precision.precision)
        let setup = try RunSetup.forPrediction(checkpoint: options.checkpoint.folder, sequence: options.sequence,
                                               threshold: options.labels.threshold, compute: runtime.makeCompute())
        let pairs = self.pairs
        let format: PredictionFormat = output.json ? .jsonLines(logits: logits) : .plain
        let maxSequenceLength = setup.description.maxSequenceLength
        try setup.root?.tokenizer?.checkMaxLength(maxSequenceLength, pairs: pairs)
        // Interactive use answers each line at once; piped input is predicted in batches.
        let batchLines = isatty(STDIN_FILENO) == 1 ? 1 : 64
        setup.model.reserve(sequences: batchLines, longestSequence: maxSequenceLength)
        var batch = PackedBatch()
        var pending: [String] = [], pendingPairs: [String] = []
        func flush() throws {
            guard !pending.isEmpty else { return }
            for prediction in try setup.predict(pending, pairs: pairs ? pendingPairs : nil, batch: &batch) { print(format.line(prediction)) }
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
