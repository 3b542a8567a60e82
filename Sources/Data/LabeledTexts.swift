import Foundation

/// AG News classes in label order: label 0 is "World" (class index 1 in the CSV), and so on.
public let agNewsLabelNames = ["World", "Sports", "Business", "Sci/Tech"]

/// The labelled texts of one data file, in file order, stored flat: all texts' UTF-8 back to
/// back plus offsets, so that 120,000 rows are three arrays, not 120,000 strings.
///
/// Two formats, chosen by the file extension:
/// - `.csv`: AG News as distributed (and as the HF `datasets` ag_news loader reads it): no
///   header; three columns "class index 1-4","title","description"; RFC 4180 quoting (`""` is a
///   quote; commas and line breaks may appear inside quotes); spaces right after a comma are
///   skipped; text = title + " " + description, everything else (backslashes, `#39;`) kept as is;
///   line breaks inside a field become "\n" (Python's universal newlines).
/// - `.jsonl` / `.json`: JSON Lines, one `{"text": "...", "label": 0}` object per line, label 0-based.
/// Blank lines are skipped in both. A malformed row stops reading with `FILE:LINE: reason`, or
/// with `skipBadRows` is left out and counted.
public struct LabeledTexts: Sendable {
    public let source: URL
    /// UTF-8 of every text, back to back.
    public private(set) var textBytes: [UInt8] = []
    /// Text i is `textBytes[textOffsets[i] ..< textOffsets[i + 1]]`.                  (count + 1)
    public private(set) var textOffsets: [Int] = [0]
    /// 0-based labels.                                                                 (count)
    public private(set) var labels: [Int32] = []
    /// Line of the file where each example starts (1-based).                           (count)
    public private(set) var lineNumbers: [Int32] = []
    /// Rows left out because of `skipBadRows`, and the errors of the first few of them.
    public private(set) var skippedRowCount = 0
    public private(set) var skippedRowErrors: [String] = []

    public var count: Int { labels.count }

    public func text(at index: Int) -> String {
        String(decoding: textBytes[textOffsets[index]..<textOffsets[index + 1]], as: UTF8.self)
    }

    public func withTextBytes<Result>(at index: Int, _ body: (UnsafeBufferPointer<UInt8>) throws -> Result) rethrows -> Result {
        try textBytes.withUnsafeBufferPointer { all in
            try body(UnsafeBufferPointer(rebasing: all[textOffsets[index]..<textOffsets[index + 1]]))
        }
    }

    public enum Format: Sendable {
        case agNewsCSV
        case jsonLines
    }

    /// `.csv` -> AG News CSV; `.jsonl`, `.json` -> JSON Lines; anything else is an error.
    public static func format(of url: URL) throws -> Format {
        switch url.pathExtension.lowercased() {
        case "csv": return .agNewsCSV
        case "jsonl", "json", "ndjson": return .jsonLines
        default:
            throw DataError("\(url.path): unknown data format \"\(url.pathExtension)\"; use .csv (AG News: \"class\",\"title\",\"description\") or .jsonl (one {\"text\": ..., \"label\": 0-based} per line)")
        }
    }

    /// Reads a data file. `labelCount`: labels must lie in 0..<labelCount (CSV class indices in
    /// 1...labelCount).
    public static func read(_ url: URL, skipBadRows: Bool = false, labelCount: Int = agNewsLabelNames.count) throws -> LabeledTexts {
        let format = try format(of: url)
        return try parse(readDataFile(url), format: format, source: url, skipBadRows: skipBadRows, labelCount: labelCount)
    }

    /// Parses the bytes of a data file (see `read`); `source` names the file in errors.
    public static func parse(_ bytes: [UInt8], format: Format, source url: URL, skipBadRows: Bool = false,
                             labelCount: Int = agNewsLabelNames.count) throws -> LabeledTexts {
        var result = LabeledTexts(source: url)
        result.textBytes.reserveCapacity(bytes.count)
        var reader = RowReader(path: url.path, skipBadRows: skipBadRows, labelCount: labelCount)
        try bytes.withUnsafeBufferPointer { input in
            switch format {
            case .agNewsCSV: try reader.readCSV(input, into: &result)
            case .jsonLines: try reader.readJSONLines(input, into: &result)
            }
        }
        if result.count == 0 {
            if result.skippedRowCount > 0 {
                throw DataError("\(url.path): all \(result.skippedRowCount) rows are malformed; the first: \(result.skippedRowErrors.first ?? "")")
            }
            throw DataError("\(url.path): the file has no rows (it is empty or blank)")
        }
        return result
    }

    mutating func append(text: UnsafeBufferPointer<UInt8>, label: Int32, line: Int) {
        textBytes.append(contentsOf: text)
        textOffsets.append(textBytes.count)
        labels.append(label)
        lineNumbers.append(Int32(clamping: line))
    }

    mutating func recordSkipped(_ message: String) {
        skippedRowCount += 1
        if skippedRowErrors.count < 5 { skippedRowErrors.append(message) }
    }
}

func readDataFile(_ url: URL) throws -> [UInt8] {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
        throw DataError("\(url.path): no such file")
    }
    if isDirectory.boolValue {
        throw DataError("\(url.path): is a folder, expected a data file (.csv or .jsonl)")
    }
    do {
        return [UInt8](try Data(contentsOf: url))
    } catch {
        throw DataError("\(url.path): cannot read (\(describeFileError(error)))")
    }
}

/// A malformed row: where, and why.
private struct RowError: Error {
    let line: Int
    let reason: String
}

/// Parses the bytes of a data file into `LabeledTexts`.
private struct RowReader {
    let path: String
    let skipBadRows: Bool
    let labelCount: Int
    var fields: [[UInt8]] = []   // fields of the current CSV record (reused)
    var text: [UInt8] = []       // text of the current row (reused)

    init(path: String, skipBadRows: Bool, labelCount: Int) {
        self.path = path
        self.skipBadRows = skipBadRows
        self.labelCount = labelCount
    }

    mutating func fail(_ error: RowError, _ result: inout LabeledTexts) throws {
        let message = "\(path):\(error.line): \(error.reason)"
        if !skipBadRows { throw DataError(message) }
        result.recordSkipped(message)
    }

    // MARK: CSV

    mutating func readCSV(_ input: UnsafeBufferPointer<UInt8>, into result: inout LabeledTexts) throws {
        let count = input.count
        var index = 0
        var line = 1
        if count >= 3 && input[0] == 0xEF && input[1] == 0xBB && input[2] == 0xBF { index = 3 }  // UTF-8 BOM
        while index < count {
            // Blank line.
            if input[index] == 0x0A { index += 1; line += 1; continue }
            if input[index] == 0x0D {
                index += (index + 1 < count && input[index + 1] == 0x0A) ? 2 : 1
                line += 1
                continue
            }
            let recordLine = line
            let recordStart = index
            var problem: RowError? = nil
            do {
                try parseCSVRecord(input, &index, &line, &problem)
            } catch let error as RowError {
                try fail(error, &result)
                // Resynchronise: after an unterminated quote, at the line after the record's
                // first; otherwise at the next line break.
                if error.reason.hasPrefix("unterminated") {
                    index = recordStart
                    line = recordLine
                }
                while index < count && input[index] != 0x0A && input[index] != 0x0D { index += 1 }
                if index < count {
                    index += (input[index] == 0x0D && index + 1 < count && input[index + 1] == 0x0A) ? 2 : 1
                    line += 1
                }
                continue
            }
            if let problem {
                try fail(problem, &result)
                continue
            }
            if fields.count != 3 {
                try fail(RowError(line: recordLine, reason: "expected 3 columns (class index, title, description), found \(fields.count)"), &result)
                continue
            }
            guard let classIndex = parseInteger(fields[0]), classIndex >= 1, classIndex <= labelCount else {
                let shown = String(decoding: fields[0].prefix(40), as: UTF8.self)
                try fail(RowError(line: recordLine, reason: "class index \"\(shown)\" is not an integer from 1 to \(labelCount)"), &result)
                continue
            }
            text.removeAll(keepingCapacity: true)
            text.append(contentsOf: fields[1])
            text.append(0x20)
            text.append(contentsOf: fields[2])
            text.withUnsafeBufferPointer { result.append(text: $0, label: Int32(classIndex - 1), line: recordLine) }
        }
    }

    /// Appends the UTF-8 sequence starting at `index` (a byte >= 0x80) to field `field`, or notes
    /// the first invalid byte in `problem` and skips it.
    private mutating func appendMultibyteCharacter(_ input: UnsafeBufferPointer<UInt8>, _ index: inout Int, into field: Int,
                                                   line: Int, column: Int, _ problem: inout RowError?) {
        let length = validUTF8SequenceLength(input, at: index)
        guard length > 0 else {
            if problem == nil {
                problem = RowError(line: line, reason: "invalid UTF-8 (byte 0x\(String(input[index], radix: 16, uppercase: true)) in column \(column))")
            }
            index += 1
            return
        }
        fields[field].append(contentsOf: UnsafeBufferPointer(rebasing: input[index..<index + length]))
        index += length
    }

    /// Parses one record starting at `index` into `fields`, leaving `index` after its line break.
    /// Structural errors (an unterminated quote, text after a closing quote) throw; a bad byte
    /// sequence is noted in `problem` and the record is read to its end.
    mutating func parseCSVRecord(_ input: UnsafeBufferPointer<UInt8>, _ index: inout Int, _ line: inout Int,
                                 _ problem: inout RowError?) throws {
        let count = input.count
        var fieldCount = 0
        while true {
            if fields.count == fieldCount { fields.append([]) }
            fields[fieldCount].removeAll(keepingCapacity: true)
            fieldCount += 1
            let column = fieldCount
            // skipinitialspace: spaces right after a comma are not part of the field.
            while index < count && input[index] == 0x20 { index += 1 }
            if index < count && input[index] == 0x22 {
                let openingLine = line
                index += 1
                while true {
                    guard index < count else {
                        fields.removeSubrange(fieldCount...)
                        throw RowError(line: openingLine, reason: "unterminated quoted field in column \(column) (a quote opened here is never closed)")
                    }
                    let byte = input[index]
                    if byte == 0x22 {
                        if index + 1 < count && input[index + 1] == 0x22 {
                            fields[fieldCount - 1].append(0x22)
                            index += 2
                            continue
                        }
                        index += 1
                        break
                    }
                    if byte < 0x80 {
                        if byte == 0x0D {  // "\r\n" and "\r" become "\n", as Python reads text files
                            fields[fieldCount - 1].append(0x0A)
                            index += (index + 1 < count && input[index + 1] == 0x0A) ? 2 : 1
                            line += 1
                            continue
                        }
                        if byte == 0x0A { line += 1 }
                        fields[fieldCount - 1].append(byte)
                        index += 1
                    } else {
                        appendMultibyteCharacter(input, &index, into: fieldCount - 1, line: line, column: column, &problem)
                    }
                }
                // After the closing quote: a comma, the end of the line, or the end of the file.
                if index < count && input[index] != 0x2C && input[index] != 0x0A && input[index] != 0x0D {
                    fields.removeSubrange(fieldCount...)
                    if line > openingLine {
                        // Most likely a quote left open on the opening line and "closed" by the
                        // first quote of a later row.
                        throw RowError(line: openingLine, reason: "unterminated quoted field in column \(column) (the quote opened on this line is only closed on line \(line), followed by unexpected text)")
                    }
                    throw RowError(line: line, reason: "unexpected text after the closing quote of column \(column) (a quote inside a quoted field must be doubled: \"\")")
                }
            } else {
                while index < count {
                    let byte = input[index]
                    if byte == 0x2C || byte == 0x0A || byte == 0x0D { break }
                    if byte < 0x80 {
                        fields[fieldCount - 1].append(byte)
                        index += 1
                    } else {
                        appendMultibyteCharacter(input, &index, into: fieldCount - 1, line: line, column: column, &problem)
                    }
                }
            }
            // Field separator or end of record.
            if index < count && input[index] == 0x2C {
                index += 1
                continue
            }
            if index < count {  // line break
                index += (input[index] == 0x0D && index + 1 < count && input[index + 1] == 0x0A) ? 2 : 1
                line += 1
            }
            fields.removeSubrange(fieldCount...)
            return
        }
    }

    /// An integer written in ASCII digits, with optional spaces around it and an optional sign.
    func parseInteger(_ bytes: [UInt8]) -> Int? {
        var slice = bytes[...]
        while let first = slice.first, first == 0x20 || first == 0x09 { slice = slice.dropFirst() }
        while let last = slice.last, last == 0x20 || last == 0x09 { slice = slice.dropLast() }
        var negative = false
        if let first = slice.first, first == 0x2B || first == 0x2D {
            negative = first == 0x2D
            slice = slice.dropFirst()
        }
        guard !slice.isEmpty, slice.count <= 9 else { return nil }
        var value = 0
        for byte in slice {
            guard byte >= 0x30 && byte <= 0x39 else { return nil }
            value = value * 10 + Int(byte - 0x30)
        }
        return negative ? -value : value
    }

    // MARK: JSON Lines

    mutating func readJSONLines(_ input: UnsafeBufferPointer<UInt8>, into result: inout LabeledTexts) throws {
        let count = input.count
        var index = 0
        var line = 0
        if count >= 3 && input[0] == 0xEF && input[1] == 0xBB && input[2] == 0xBF { index = 3 }
        while index < count {
            line += 1
            var end = index
            while end < count && input[end] != 0x0A { end += 1 }
            let next = end + 1
            if end > index && input[end - 1] == 0x0D { end -= 1 }
            defer { index = next }
            var parser = JSONLineParser(input: UnsafeBufferPointer(rebasing: input[index..<end]))
            swap(&parser.text, &text)  // reuse the buffer (no copy)
            defer { swap(&parser.text, &text) }
            parser.skipWhitespace()
            if parser.atEnd { continue }  // blank line
            if line == 1 && parser.peek == 0x5B {
                throw DataError("\(path):1: expected one JSON object per line (JSON Lines), found a JSON array; write one {\"text\": ..., \"label\": 0-based} per line")
            }
            do {
                let label = try parser.parseRow()
                guard label >= 0 && label < labelCount else {
                    throw JSONLineError("label \(label) is out of range (expected 0 to \(labelCount - 1))")
                }
                parser.text.withUnsafeBufferPointer { result.append(text: $0, label: Int32(label), line: line) }
            } catch let error as JSONLineError {
                try fail(RowError(line: line, reason: error.reason), &result)
            }
        }
    }
}

struct JSONLineError: Error {
    let reason: String
    init(_ reason: String) { self.reason = reason }
}

/// A small JSON parser for one line `{"text": string, "label": integer, ...}`; other keys are
/// skipped whatever their values. Strict like Python's json module (no raw control characters
/// in strings, valid escapes, valid UTF-8).
struct JSONLineParser {
    let input: UnsafeBufferPointer<UInt8>
    var index = 0
    var text: [UInt8] = []   // the "text" value
    var string: [UInt8] = [] // the last string parsed

    init(input: UnsafeBufferPointer<UInt8>) {
        self.input = input
    }

    var atEnd: Bool { index >= input.count }
    var peek: UInt8 { input[index] }

    mutating func skipWhitespace() {
        while index < input.count {
            let byte = input[index]
            if byte == 0x20 || byte == 0x09 || byte == 0x0D || byte == 0x0A { index += 1 } else { break }
        }
    }

    mutating func expect(_ byte: UInt8, _ what: String) throws {
        skipWhitespace()
        guard index < input.count else { throw JSONLineError("bad JSON: expected \(what), found the end of the line") }
        guard input[index] == byte else { throw JSONLineError("bad JSON: expected \(what) at column \(index + 1)") }
        index += 1
    }

    /// Returns the label; the text is left in `text`.
    mutating func parseRow() throws -> Int {
        try expect(0x7B, "'{'")
        var label: Int? = nil
        var sawText = false
        skipWhitespace()
        if index < input.count && input[index] == 0x7D {
            index += 1
        } else {
            while true {
                skipWhitespace()
                guard index < input.count, input[index] == 0x22 else {
                    throw JSONLineError("bad JSON: expected a key string at column \(index + 1)")
                }
                index += 1
                try parseString()
                let key = string.elementsEqual("text".utf8) ? 1 : string.elementsEqual("label".utf8) ? 2 : 0
                try expect(0x3A, "':'")
                skipWhitespace()
                guard index < input.count else { throw JSONLineError("bad JSON: missing value") }
                if key == 1 {
                    guard input[index] == 0x22 else { throw JSONLineError("\"text\" must be a string") }
                    index += 1
                    try parseString()
                    swap(&string, &text)
                    sawText = true
                } else if key == 2 {
                    label = try parseIntegerValue()
                } else {
                    try skipValue(depth: 0)
                }
                skipWhitespace()
                guard index < input.count else { throw JSONLineError("bad JSON: unterminated object") }
                if input[index] == 0x2C { index += 1; continue }
                if input[index] == 0x7D { index += 1; break }
                throw JSONLineError("bad JSON: expected ',' or '}' at column \(index + 1)")
            }
        }
        skipWhitespace()
        guard atEnd else { throw JSONLineError("bad JSON: extra text after the object at column \(index + 1)") }
        guard sawText else { throw JSONLineError("missing \"text\"") }
        guard let label else { throw JSONLineError("missing \"label\"") }
        return label
    }

    /// After the opening quote; leaves `index` after the closing quote.
    mutating func parseString() throws {
        string.removeAll(keepingCapacity: true)
        while true {
            guard index < input.count else { throw JSONLineError("bad JSON: unterminated string") }
            let byte = input[index]
            if byte == 0x22 { index += 1; return }
            if byte == 0x5C {
                guard index + 1 < input.count else { throw JSONLineError("bad JSON: unterminated string") }
                let escape = input[index + 1]
                index += 2
                switch escape {
                case 0x22, 0x5C, 0x2F: string.append(escape)
                case 0x62: string.append(0x08)
                case 0x66: string.append(0x0C)
                case 0x6E: string.append(0x0A)
                case 0x72: string.append(0x0D)
                case 0x74: string.append(0x09)
                case 0x75:
                    var value = try parseHex4()
                    if value >= 0xD800 && value <= 0xDBFF {
                        guard index + 1 < input.count, input[index] == 0x5C, input[index + 1] == 0x75 else {
                            throw JSONLineError("bad JSON: lone surrogate \\u\(String(value, radix: 16)) in a string")
                        }
                        index += 2
                        let low = try parseHex4()
                        guard low >= 0xDC00 && low <= 0xDFFF else {
                            throw JSONLineError("bad JSON: lone surrogate \\u\(String(value, radix: 16)) in a string")
                        }
                        value = 0x10000 + ((value - 0xD800) << 10) + (low - 0xDC00)
                    } else if value >= 0xDC00 && value <= 0xDFFF {
                        throw JSONLineError("bad JSON: lone surrogate \\u\(String(value, radix: 16)) in a string")
                    }
                    var buffer: (UInt32, UInt32) = (0, 0)
                    withUnsafeMutableBytes(of: &buffer) { raw in
                        let base = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
                        let length = writeUTF8(value, to: base)
                        string.append(contentsOf: UnsafeBufferPointer(start: base, count: length))
                    }
                default:
                    throw JSONLineError("bad JSON: invalid escape \\\(Character(Unicode.Scalar(escape)))")
                }
                continue
            }
            if byte < 0x20 { throw JSONLineError("bad JSON: raw control character 0x\(String(byte, radix: 16)) in a string (write it as an escape)") }
            if byte < 0x80 {
                string.append(byte)
                index += 1
            } else {
                let length = validUTF8SequenceLength(input, at: index)
                if length == 0 { throw JSONLineError("invalid UTF-8 (byte 0x\(String(byte, radix: 16, uppercase: true)) at column \(index + 1))") }
                string.append(contentsOf: UnsafeBufferPointer(rebasing: input[index..<index + length]))
                index += length
            }
        }
    }

    mutating func parseHex4() throws -> UInt32 {
        guard index + 4 <= input.count else { throw JSONLineError("bad JSON: short \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = input[index]
            let digit: UInt32
            switch byte {
            case 0x30...0x39: digit = UInt32(byte - 0x30)
            case 0x41...0x46: digit = UInt32(byte - 0x41 + 10)
            case 0x61...0x66: digit = UInt32(byte - 0x61 + 10)
            default: throw JSONLineError("bad JSON: invalid \\u escape")
            }
            value = value * 16 + digit
            index += 1
        }
        return value
    }

    /// A JSON number that is an integer (no fraction, no exponent).
    mutating func parseIntegerValue() throws -> Int {
        let start = index
        let numberEnd = scanNumber()
        let token = String(decoding: UnsafeBufferPointer(rebasing: input[start..<max(numberEnd, min(start + 1, input.count))]), as: UTF8.self)
        guard numberEnd > start else {
            throw JSONLineError("\"label\" must be an integer, found \(token.isEmpty ? "nothing" : token)")
        }
        index = numberEnd
        guard let value = Int(token), token.count <= 18 else {
            throw JSONLineError("\"label\" must be an integer, found \(token)")
        }
        return value
    }

    /// End of the JSON number starting at `index` (== index when there is none).
    func scanNumber() -> Int {
        var position = index
        let count = input.count
        if position < count && input[position] == 0x2D { position += 1 }
        let digitsStart = position
        while position < count && input[position] >= 0x30 && input[position] <= 0x39 { position += 1 }
        if position == digitsStart { return index }
        if position < count && input[position] == 0x2E {
            position += 1
            while position < count && input[position] >= 0x30 && input[position] <= 0x39 { position += 1 }
        }
        if position < count && (input[position] == 0x65 || input[position] == 0x45) {
            position += 1
            if position < count && (input[position] == 0x2B || input[position] == 0x2D) { position += 1 }
            while position < count && input[position] >= 0x30 && input[position] <= 0x39 { position += 1 }
        }
        return position
    }

    mutating func skipValue(depth: Int) throws {
        guard depth < 64 else { throw JSONLineError("bad JSON: nested too deeply") }
        skipWhitespace()
        guard index < input.count else { throw JSONLineError("bad JSON: missing value") }
        let byte = input[index]
        switch byte {
        case 0x22:
            index += 1
            try parseString()
        case 0x7B, 0x5B:
            let close: UInt8 = byte == 0x7B ? 0x7D : 0x5D
            index += 1
            skipWhitespace()
            if index < input.count && input[index] == close { index += 1; return }
            while true {
                if byte == 0x7B {
                    skipWhitespace()
                    guard index < input.count, input[index] == 0x22 else { throw JSONLineError("bad JSON: expected a key string") }
                    index += 1
                    try parseString()
                    try expect(0x3A, "':'")
                }
                try skipValue(depth: depth + 1)
                skipWhitespace()
                guard index < input.count else { throw JSONLineError("bad JSON: unterminated \(byte == 0x7B ? "object" : "array")") }
                if input[index] == 0x2C { index += 1; continue }
                if input[index] == close { index += 1; return }
                throw JSONLineError("bad JSON: expected ',' at column \(index + 1)")
            }
        case 0x74, 0x66, 0x6E:
            for word in ["true", "false", "null"] {
                let bytes = Array(word.utf8)
                if index + bytes.count <= input.count && Array(input[index..<index + bytes.count]) == bytes {
                    index += bytes.count
                    return
                }
            }
            throw JSONLineError("bad JSON: unexpected text at column \(index + 1)")
        default:
            let end = scanNumber()
            guard end > index else { throw JSONLineError("bad JSON: unexpected character at column \(index + 1)") }
            index = end
        }
    }
}

/// Length (2-4) of the valid UTF-8 sequence starting with the non-ASCII byte at `index`, or 0.
@inline(__always)
func validUTF8SequenceLength(_ input: UnsafeBufferPointer<UInt8>, at index: Int) -> Int {
    let (value, length) = decodeUTF8(input, at: index)
    if value == 0xFFFD && length == 1 { return 0 }
    return length
}
