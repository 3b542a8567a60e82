import ArgumentParser
import Data
import Foundation
import Options
import Training

/// `bert-dist-dev bench-tokenizer`: the tokenizer's speed on the stdin lines (single thread;
/// tools/bench_tokenizer.py compares it with Hugging Face's), or with --data the whole data path
/// of a file: read, tokenize, and its token cache (locate, build, open) in a temporary folder.
/// Prints one JSON object.
struct TokenizerBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-tokenizer",
        abstract: "Time the tokenizer on the stdin lines, or the data path of a file (--data); one JSON object.")

    @OptionGroup var model: ModelOptions
    @OptionGroup var sequence: SequenceOptions
    @Option(help: "Encode the stdin lines again and again for this long.")
    var seconds = 3.0
    @Option(name: .customLong("data"), help: ArgumentHelp("Time reading, tokenizing and caching this data file instead.", valueName: "file"))
    var dataFile: String?

    var maxSequenceLength: Int { sequence.maxSequenceLength ?? SequenceOptions.defaultMaxSequenceLength }

    func run() throws {
        let tokenizer = try loadTextTokenizer(modelDirectory: model.directory)
        if let dataFile {
            try timeDataPath(tokenizer, URL(fileURLWithPath: dataFile))
        } else {
            try timeStandardInput(tokenizer)
        }
    }

    private func timeStandardInput(_ tokenizer: any TextTokenizer) throws {
        var input = [UInt8](FileHandle.standardInput.readDataToEndOfFile())
        if input.last == 0x0A { input.removeLast() }
        let lines = input.split(separator: 0x0A, omittingEmptySubsequences: false).map { line in Array(line.last == 0x0D ? line.dropLast() : line) }
        guard !input.isEmpty, !lines.isEmpty else { throw DataError("stdin: no lines to time") }
        var ids: [Int32] = []
        ids.reserveCapacity(maxSequenceLength)
        var tokenCount = 0, rows = 0, passes = 0
        let start = DispatchTime.now().uptimeNanoseconds
        var elapsed = 0.0
        repeat {
            for line in lines {
                ids.removeAll(keepingCapacity: true)
                line.withUnsafeBufferPointer { tokenizer.encode(utf8: $0, maxLength: maxSequenceLength, appendingTo: &ids) }
                tokenCount += ids.count
            }
            rows += lines.count
            passes += 1
            elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        } while elapsed < seconds
        let bytes = lines.reduce(0) { $0 + $1.count } * passes
        print("{\"rows\": \(rows), \"passes\": \(passes), \"seconds\": \(elapsed), \"rows_per_s\": \(Double(rows) / elapsed), \"tokens_per_s\": \(Double(tokenCount) / elapsed), \"mb_per_s\": \(Double(bytes) / elapsed / 1e6)}")
    }

    private func timeDataPath(_ tokenizer: any TextTokenizer, _ dataFile: URL) throws {
        func seconds(since start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
        var start = DispatchTime.now().uptimeNanoseconds
        let texts = try LabeledTexts.read(dataFile)
        let readSeconds = seconds(since: start)
        start = DispatchTime.now().uptimeNanoseconds
        let dataset = TokenizedDataset.tokenize(texts, tokenizer: tokenizer, maxLength: maxSequenceLength)
        let tokenizeSeconds = seconds(since: start)
        // The full cache path on a copy of the file in a temporary folder: locate (hashes the
        // file), build (reads, tokenizes, writes atomically), open (maps and checks).
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("bert-dist-bench-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let copy = folder.appendingPathComponent(dataFile.lastPathComponent)
        try FileManager.default.copyItem(at: dataFile, to: copy)
        start = DispatchTime.now().uptimeNanoseconds
        let cache = try TokenCache.locate(dataFile: copy, tokenizer: tokenizer, maxLength: maxSequenceLength, directory: folder)
        let locateSeconds = seconds(since: start)
        start = DispatchTime.now().uptimeNanoseconds
        _ = try cache.build(tokenizer: tokenizer)
        let buildSeconds = seconds(since: start)
        start = DispatchTime.now().uptimeNanoseconds
        let opened = try cache.open(vocabularySize: tokenizer.vocabularySize)
        let openSeconds = seconds(since: start)
        guard opened.tokenCount == dataset.tokenCount else {
            throw DataError("\(dataFile.path): the token cache holds \(opened.tokenCount) tokens, tokenizing gave \(dataset.tokenCount)")
        }
        print("{\"rows\": \(texts.count), \"tokens\": \(dataset.tokenCount), \"read_s\": \(readSeconds), \"tokenize_s\": \(tokenizeSeconds), \"locate_s\": \(locateSeconds), \"build_s\": \(buildSeconds), \"open_s\": \(openSeconds)}")
    }
}
