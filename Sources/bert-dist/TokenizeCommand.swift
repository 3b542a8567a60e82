import ArgumentParser
import Data
import Foundation
import Options
import Startup
import Training

#if canImport(Glibc)
import Glibc
#endif

/// `bert-dist tokenize`: the token ids of each stdin line, as Hugging Face's
/// `AutoTokenizer.encode(line, truncation=True, max_length=N)` gives them for the model folder
/// (WordPiece, byte-level BPE or Unigram, by its family); with `--pairs` of each `A<TAB>B` line,
/// as `encode(A, B, truncation=True, max_length=N)` does.
struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Print the token ids of each stdin line ([CLS] ... [SEP] or <s> ... </s>, space separated).",
        discussion: """
            One output line per input line (a line ends with \\n; a \\r before it is dropped). The ids are \
            those of Hugging Face AutoTokenizer's encode(line, truncation=True, max_length=MAX_SEQ_LEN) for the \
            model folder: the tokenizer of its family (config.json's model_type: WordPiece for bert, distilbert \
            and electra; byte-level BPE for roberta; Unigram for xlm-roberta and camembert), read from \
            tokenizer.json or the family's vocabulary files, with tokenizer_config.json.

            With --pairs each line is A<TAB>B (split at the first tab) and the ids are those of \
            encode(A, B, truncation=True, max_length=MAX_SEQ_LEN): [CLS] A [SEP] B [SEP] (RoBERTa's \
            <s> A </s></s> B </s>), the longer text cut first (longest_first). As in HF, an empty B gives \
            encode(A): no second [SEP]. (Training, eval and predict --pairs keep the pair: [CLS] A [SEP] [SEP], \
            as HF's batch call and Trainer do.)

            Examples:
              echo "Hello, world!" | bert-dist tokenize --model models/minilm
              printf 'A question?\\tAn answer.\\n' | bert-dist tokenize --model models/minilm --pairs
            """)

    @OptionGroup var model: ModelOptions
    @OptionGroup var sequence: SequenceOptions
    var maxSeqLen: Int { sequence.maxSequenceLength ?? SequenceOptions.defaultMaxSequenceLength }

    @Flag(help: "Each line is a text pair A<TAB>B: print the ids of encode(A, B).")
    var pairs = false

    func validate() throws {
        if pairs { try sequence.validate(pairs: "--pairs") }
    }

    func run() throws {
        try RankRunner.onRankZeroOnly {
            let tokenizer = try loadTextTokenizer(modelDirectory: model.directory)
            try tokenizer.checkMaxLength(maxSeqLen, pairs: pairs)
            try tokenizeStandardInput(tokenizer)
        }
    }

    private func tokenizeStandardInput(_ tokenizer: any TextTokenizer) throws {
        var ids: [Int32] = []
        ids.reserveCapacity(maxSeqLen)
        var output: [UInt8] = []
        output.reserveCapacity(1 << 16)
        var lineNumber = 0
        try forEachStandardInputLine { line in
            lineNumber += 1
            guard isValidUTF8(line) else {
                throw DataError("stdin:\(lineNumber): invalid UTF-8")
            }
            ids.removeAll(keepingCapacity: true)
            if pairs {
                guard let tab = line.firstIndex(of: 0x09) else {
                    throw DataError("stdin:\(lineNumber): no tab; with --pairs each line is A<TAB>B")
                }
                let first = UnsafeBufferPointer(rebasing: line[..<tab]), second = UnsafeBufferPointer(rebasing: line[(tab + 1)...])
                // HF's single call encode(A, "") drops an empty pair (a Python truthiness test).
                if second.isEmpty {
                    tokenizer.encode(utf8: first, maxLength: maxSeqLen, appendingTo: &ids)
                } else {
                    tokenizer.encodePair(utf8: first, utf8: second, maxLength: maxSeqLen, appendingTo: &ids)
                }
            } else {
                tokenizer.encode(utf8: line, maxLength: maxSeqLen, appendingTo: &ids)
            }
            for (index, id) in ids.enumerated() {
                if index > 0 { output.append(0x20) }
                appendDecimal(id, to: &output)
            }
            output.append(0x0A)
            if output.count >= 1 << 15 {
                try writeStandardOutput(output)
                output.removeAll(keepingCapacity: true)
            }
        } chunkDone: {
            // Flush at the end of each read so that interactive use answers line by line.
            try writeStandardOutput(output)
            output.removeAll(keepingCapacity: true)
        }
        try writeStandardOutput(output)
    }
}

/// Calls `body` with each line of stdin (without "\n" and a "\r" before it), reading in 64 KiB
/// chunks; `chunkDone` after the lines of each chunk.
private func forEachStandardInputLine(_ body: (UnsafeBufferPointer<UInt8>) throws -> Void, chunkDone: () throws -> Void) throws {
    var pending: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    func emit(_ line: ArraySlice<UInt8>) throws {
        var line = line
        if line.last == 0x0D { line = line.dropLast() }
        try line.withUnsafeBufferPointer { try body($0) }
    }
    while true {
        let count = chunk.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress, $0.count) }
        if count < 0 {
            if errno == EINTR { continue }
            throw DataError("stdin: read failed (\(String(cString: strerror(errno))))")
        }
        if count == 0 { break }
        pending += chunk[0..<count]
        var start = 0
        while let newline = pending[start...].firstIndex(of: 0x0A) {
            try emit(pending[start..<newline])
            start = newline + 1
        }
        pending.removeFirst(start)
        try chunkDone()
    }
    if !pending.isEmpty {
        try emit(pending[...])
    }
}

private func isValidUTF8(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
    String(validating: bytes, as: UTF8.self) != nil
}

/// Appends the decimal digits of `value` (no allocation).
private func appendDecimal(_ value: Int32, to output: inout [UInt8]) {
    var magnitude = value.magnitude
    if value < 0 { output.append(0x2D) }
    if magnitude == 0 {
        output.append(0x30)
        return
    }
    var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    var count = 0
    withUnsafeMutableBytes(of: &digits) { buffer in
        while magnitude > 0 {
            buffer[count] = UInt8(0x30 + magnitude % 10)
            magnitude /= 10
            count += 1
        }
        for index in stride(from: count - 1, through: 0, by: -1) {
            output.append(buffer[index])
        }
    }
}

private func writeStandardOutput(_ bytes: [UInt8]) throws {
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
        if written < 0 {
            if errno == EINTR { continue }
            if errno == EPIPE { throw ExitCode.success }  // reader went away (e.g. `| head`)
            throw DataError("stdout: write failed (\(String(cString: strerror(errno))))")
        }
        offset += written
    }
}
