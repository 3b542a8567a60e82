/// JSON Lines rows: one object per line with the text, the optional second text and the label
/// under the keys of the format's `DataColumns`; other keys are skipped whatever their values.
/// The label is a string or an integer (single-label), a list of them (multi-label), or a
/// number (regression).
extension RowReader {
    mutating func readJSONLines(_ input: UnsafeBufferPointer<UInt8>, into result: inout LabeledTexts) throws {
        guard case .jsonLines(let columns) = format else { preconditionFailure("not JSON Lines") }
        let keys = JSONLineKeys(columns)
        let count = input.count
        var index = 0
        var line = 0
        if count >= 3 && input[0] == 0xEF && input[1] == 0xBB && input[2] == 0xBF { index = 3 }
        var parser = JSONLineParser(keys: keys)  // one for all lines: its buffers are reused
        parser.readsLabels = readsLabels
        while index < count {
            line += 1
            var end = index
            while end < count && input[end] != 0x0A { end += 1 }
            let next = end + 1
            if end > index && input[end - 1] == 0x0D { end -= 1 }
            defer { index = next }
            parser.start(UnsafeBufferPointer(rebasing: input[index..<end]))
            parser.skipWhitespace()
            if parser.atEnd { continue }  // blank line
            if line == 1 && parser.peek == 0x5B {
                throw DataError("\(path):1: expected one JSON object per line (JSON Lines), found a JSON array; write one {\"\(columns.text)\": ..., \"\(columns.label)\": ...} per line")
            }
            do {
                let value = try parser.parseRow()
                let target = readsLabels ? try self.target(of: value, parser, line: line) : .label(0)
                parser.text.withUnsafeBufferPointer { text in
                    if keys.pair != nil {
                        parser.pair.withUnsafeBufferPointer { result.append(text: text, pair: $0, target: target, line: line) }
                    } else {
                        result.append(text: text, pair: nil, target: target, line: line)
                    }
                }
            } catch let error as JSONLineError {
                try fail(line: line, error.reason, &result)
            } catch let error as RowProblem {
                try fail(line: line, error.reason, &result)
            }
        }
    }
}

extension RowReader {
    /// The target of a row whose label `parser` has just parsed (`value`), read for the file's task.
    mutating func target(of value: JSONLabel, _ parser: JSONLineParser, line: Int) throws(RowProblem) -> RowTarget {
        let key = "\"\(parser.keys.names.label)\""
        let isList: Bool
        if case .list = value { isList = true } else { isList = false }
        try labels.checkJSONShape(isList: isList, line: line)
        switch labels.problemType ?? .singleLabelClassification {
        case .singleLabelClassification:
            switch value {
            case .string, .integer:
                var integer: Int? = nil
                if case .integer(let number) = value { integer = number }
                try labels.checkJSONKind(isString: integer == nil, label: parser.label, line: line)
                return .label(try labels.id(of: parser.label, integer: integer, line: line))
            case .number:
                throw RowProblem("\(key) must be a string or an integer, found \(shown(parser.labelText)) (for regression targets give --problem-type regression)")
            case .other:
                throw RowProblem("\(key) must be a string or an integer, found \(shown(parser.labelText))")
            case .list:
                throw RowProblem("\(key) is a list of labels (multi-label classification), found \(shown(parser.labelText)), but the labels are read as single-label; give --problem-type multi_label_classification, or leave it out")
            }
        case .multiLabelClassification:
            switch value {
            case .list:
                for item in 0..<parser.listCount {
                    try labels.checkJSONKind(isString: parser.listIntegers[item] == nil, label: parser.listItems[item], line: line)
                }
                try labels.positiveLabels((0..<parser.listCount).lazy.map { (parser.listItems[$0], parser.listIntegers[$0]) }, line: line)
            case .string where labels.separator != nil:
                let names = try labels.splitNames(parser.label)
                for name in names { try labels.checkJSONKind(isString: true, label: name.bytes, line: line) }
                try labels.positiveLabels(names.lazy.map { ($0.bytes, nil) }, line: line)
            default:
                throw RowProblem("\(key) must be a list of labels for multi-label classification ([\"a\", \"b\"], or [] for none), found \(shown(parser.labelText))")
            }
            return .positives(labels.rowLabels)
        case .regression:
            switch value {
            case .integer(let number): return .value(try labels.finiteTarget(Double(number), written: parser.label))
            case .number(let number): return .value(try labels.finiteTarget(number, written: parser.label))
            case .string, .list, .other:
                throw RowProblem("\(key) must be a number for regression, found \(shown(parser.labelText))")
            }
        }
    }
}

/// What a row's label value is: a string or an integer (in `JSONLineParser.label`), another
/// number, a list (items in `JSONLineParser.listItems`), or another JSON value.
enum JSONLabel {
    case string
    case integer(Int)
    case number(Double)
    case list
    case other
}

struct JSONLineError: Error {
    let reason: String
    init(_ reason: String) { self.reason = reason }
}

/// The keys of a JSON Lines row, as UTF-8.
struct JSONLineKeys {
    let text: [UInt8]
    let pair: [UInt8]?
    let label: [UInt8]
    let names: DataColumns

    init(_ columns: DataColumns) {
        text = Array(columns.text.utf8)
        pair = columns.textPair.map { Array($0.utf8) }
        label = Array(columns.label.utf8)
        names = columns
    }
}

/// A small JSON parser for one line `{"text": string, "label": string or integer, ...}` (keys
/// as configured). Strict like Python's json module (no raw control characters in strings,
/// valid escapes, valid UTF-8); a key given twice keeps its last value, as in Python.
struct JSONLineParser {
    private(set) var input = UnsafeBufferPointer<UInt8>(start: nil, count: 0)
    let keys: JSONLineKeys
    var index = 0
    var text: [UInt8] = []   // the text value
    var pair: [UInt8] = []   // the text pair value
    var label: [UInt8] = []  // the label: a string's UTF-8, an integer in decimal, a number as written
    var string: [UInt8] = [] // the last string parsed
    /// A list label: its items (a string's UTF-8 or an integer in decimal; the first `listCount`
    /// count, the buffers are reused), and each item's value when it is an integer.
    var listItems: [[UInt8]] = []
    var listIntegers: [Int?] = []
    var listCount = 0
    /// Where the label value is in the line (for messages).
    var labelRange = 0..<0

    /// false: the label key is skipped like any other key, and may be absent.
    var readsLabels = true

    init(keys: JSONLineKeys) {
        self.keys = keys
    }

    /// Starts parsing one line (the buffers keep their capacity).
    mutating func start(_ line: UnsafeBufferPointer<UInt8>) {
        input = line
        index = 0
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

    /// The label value as written in the line.
    var labelText: [UInt8] { Array(input[labelRange]) }

    /// Parses the object; the text, pair and label are left in `text`, `pair`, `label` (a list
    /// label in `listItems`). Returns what the label is.
    mutating func parseRow() throws -> JSONLabel {
        try expect(0x7B, "'{'")
        var labelValue: JSONLabel? = nil
        var sawText = false, sawPair = false
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
                let isText = string.elementsEqual(keys.text)
                let isPair = keys.pair.map { string.elementsEqual($0) } ?? false
                let isLabel = readsLabels && string.elementsEqual(keys.label)
                try expect(0x3A, "':'")
                skipWhitespace()
                guard index < input.count else { throw JSONLineError("bad JSON: missing value") }
                if isLabel {
                    let start = index
                    labelValue = try parseLabel()
                    labelRange = start..<index
                } else if isText || isPair {
                    let name = isText ? keys.names.text : keys.names.textPair!
                    try parseStringValue(name)
                    if isText {
                        swap(&string, &text)
                        sawText = true
                    } else {
                        swap(&string, &pair)
                        sawPair = true
                    }
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
        guard sawText else { throw JSONLineError("missing \"\(keys.names.text)\"") }
        if let pairName = keys.names.textPair, !sawPair { throw JSONLineError("missing \"\(pairName)\"") }
        guard readsLabels else { return .other }
        guard let labelValue else { throw JSONLineError("missing \"\(keys.names.label)\"") }
        return labelValue
    }

    /// A string value (of key `name`) into `string`.
    mutating func parseStringValue(_ name: String) throws {
        guard input[index] == 0x22 else {
            let start = index
            try skipValue(depth: 0)
            throw JSONLineError("\"\(name)\" must be a string, found \(shown(Array(input[start..<index])))")
        }
        index += 1
        try parseString()
    }

    /// The label value: a string, an integer (written back in decimal into `label`), another
    /// number (as written, into `label`), a list of strings and integers (into `listItems`), or
    /// another value (skipped).
    mutating func parseLabel() throws -> JSONLabel {
        if input[index] == 0x22 {
            index += 1
            try parseString()
            swap(&string, &label)
            return .string
        }
        if input[index] == 0x5B {
            try parseLabelList()
            return .list
        }
        let start = index
        if let integer = parseInteger() {
            label.removeAll(keepingCapacity: true)
            label.append(contentsOf: String(integer).utf8)
            return .integer(integer)
        }
        let end = scanNumber()
        if end > start, let number = Double(String(decoding: UnsafeBufferPointer(rebasing: input[start..<end]), as: UTF8.self)) {
            index = end
            label.removeAll(keepingCapacity: true)
            label.append(contentsOf: input[start..<end])
            return .number(number)
        }
        try skipValue(depth: 0)  // true, false, null, an object: the task says what it needed
        return .other
    }

    /// An integer (at most 18 digits, as JSON writes one) at `index`, which is then after it; nil
    /// (and `index` unchanged) for anything else.
    mutating func parseInteger() -> Int? {
        let start = index
        let end = scanNumber()
        guard end > start else { return nil }
        let digits = input[start..<end]
        guard digits.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }), end - start <= 18,
              let value = Int(String(decoding: UnsafeBufferPointer(rebasing: digits), as: UTF8.self)) else { return nil }
        index = end
        return value
    }

    /// A list label `[item, ...]` of strings and integers into `listItems`/`listIntegers`.
    mutating func parseLabelList() throws {
        index += 1  // "["
        listCount = 0
        skipWhitespace()
        if index < input.count && input[index] == 0x5D { index += 1; return }
        while true {
            skipWhitespace()
            guard index < input.count else { throw JSONLineError("bad JSON: unterminated array") }
            if listItems.count == listCount {
                listItems.append([])
                listIntegers.append(nil)
            }
            let start = index
            if input[index] == 0x22 {
                index += 1
                try parseString()
                swap(&string, &listItems[listCount])
                listIntegers[listCount] = nil
            } else if let integer = parseInteger() {
                listItems[listCount].removeAll(keepingCapacity: true)
                listItems[listCount].append(contentsOf: String(integer).utf8)
                listIntegers[listCount] = integer
            } else {
                try skipValue(depth: 1)
                throw JSONLineError("\"\(keys.names.label)\" lists strings or integers (names or ids), found \(shown(Array(input[start..<index]))) in the list")
            }
            listCount += 1
            skipWhitespace()
            guard index < input.count else { throw JSONLineError("bad JSON: unterminated array") }
            if input[index] == 0x2C { index += 1; continue }
            if input[index] == 0x5D { index += 1; return }
            throw JSONLineError("bad JSON: expected ',' or ']' at column \(index + 1)")
        }
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
            guard let digit = hexDigitValue(input[index]) else { throw JSONLineError("bad JSON: invalid \\u escape") }
            value = value * 16 + digit
            index += 1
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
