import Foundation

/// A JSON document, the one JSON value of the project: the tokenizer files, config.json,
/// training_args.json, `--config` files and every `--json` output.
///
/// Parsed by hand because Foundation's JSONSerialization (on Linux) is not exact enough for
/// tokenizer files: it rounds some numbers to a neighbouring double (Unigram scores must be
/// bit-exact, ties decide pieces), drops a U+FEFF that starts a string, and merges object keys
/// that are canonically equivalent ("K" and the Kelvin sign). Here numbers are read with Swift's
/// correctly rounded `Double(String)`, strings keep every scalar, and objects keep their entries
/// in order (lookups compare key bytes; a key given twice keeps the later value, as serde_json
/// does). Nesting is limited to 128 levels (serde_json's limit), so a hostile file cannot exhaust
/// the stack.
///
/// Written deterministically, like HF's `to_json_string`: keys sorted, two-space indent, whole
/// numbers without a fraction.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([(key: String, value: JSONValue)])

    /// An object with `fields` in key order (as it is written).
    public init(object fields: [String: JSONValue]) {
        self = .object(fields.keys.sorted().map { ($0, fields[$0]!) })
    }

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.number(x), .number(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)): return x.elementsEqual(y) { $0.key == $1.key && $0.value == $1.value }
        default: return false
        }
    }

    /// The value of `key` (the last entry with exactly these bytes), nil when absent.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let entries) = self else { return nil }
        let bytes = Array(key.utf8)
        return entries.last(where: { $0.key.utf8.elementsEqual(bytes) })?.value
    }

    public var isNull: Bool { if case .null = self { return true } else { return false } }
    public var string: String? { if case .string(let value) = self { return value } else { return nil } }
    public var bool: Bool? { if case .bool(let value) = self { return value } else { return nil } }
    public var double: Double? { if case .number(let value) = self { return value } else { return nil } }
    public var array: [JSONValue]? { if case .array(let value) = self { return value } else { return nil } }
    public var entries: [(key: String, value: JSONValue)]? { if case .object(let value) = self { return value } else { return nil } }
    public var isObject: Bool { entries != nil }
    /// An object's fields by key (for files we rewrite: config.json, tokenizer_config.json,
    /// training_args.json; a key given twice keeps the later value).
    public var fields: [String: JSONValue]? {
        entries.map { Dictionary($0.map { ($0.key, $0.value) }, uniquingKeysWith: { _, later in later }) }
    }

    /// A whole number in Int32's range.
    var int32: Int32? {
        guard let value = double, value == value.rounded(), value >= -2_147_483_648, value <= 2_147_483_647 else { return nil }
        return Int32(value)
    }

    /// Parses a whole document; throws a DataError naming `source` and the byte offset.
    public static func parse(_ bytes: [UInt8], source: String) throws -> JSONValue {
        try bytes.withUnsafeBufferPointer { buffer in
            var parser = JSONParser(bytes: buffer, source: source)
            // A UTF-8 byte order mark may start the file.
            if buffer.count >= 3 && buffer[0] == 0xEF && buffer[1] == 0xBB && buffer[2] == 0xBF { parser.position = 3 }
            let value = try parser.value(depth: 0)
            parser.skipWhitespace()
            guard parser.position == buffer.count else { throw parser.failure("unexpected text after the JSON value") }
            return value
        }
    }

    /// Reads and parses a file.
    public static func read(_ url: URL) throws -> JSONValue {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw DataError("\(url.path): cannot read (\(describeFileError(error)))")
        }
        return try parse([UInt8](data), source: url.path)
    }

    /// Reads a file that must hold a JSON object.
    public static func readObject(_ url: URL) throws -> JSONValue {
        let value = try read(url)
        guard value.isObject else { throw DataError("\(url.path): expected a JSON object") }
        return value
    }

    /// The fields of a file that must hold a JSON object; nil when there is no such file.
    public static func readFieldsIfPresent(_ url: URL) throws -> [String: JSONValue]? {
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        return try readObject(url).fields
    }

    /// Pretty, with a final newline (files), or on one line (`--json` output).
    public func serialized(pretty: Bool = true) -> [UInt8] { Array((render(indent: pretty ? "" : nil) + "\n").utf8) }

    /// One line of JSON, no whitespace.
    public var compact: String { render(indent: nil) }

    /// `indent` nil: no whitespace at all.
    private func render(indent: String?) -> String {
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let n): return n.rounded() == n && abs(n) < 1e15 ? String(Int64(n)) : "\(n)"
        case .string(let s): return JSONValue.quote(s)
        case .array(let items):
            guard let indent else { return "[" + items.map { $0.render(indent: nil) }.joined(separator: ",") + "]" }
            if items.isEmpty { return "[]" }
            let inner = indent + "  "
            return "[\n" + items.map { inner + $0.render(indent: inner) }.joined(separator: ",\n") + "\n\(indent)]"
        case .object(let unsorted):
            let entries = unsorted.sorted { $0.key < $1.key }
            guard let indent else {
                return "{" + entries.map { JSONValue.quote($0.key) + ":" + $0.value.render(indent: nil) }.joined(separator: ",") + "}"
            }
            if entries.isEmpty { return "{}" }
            let inner = indent + "  "
            return "{\n" + entries.map { inner + JSONValue.quote($0.key) + ": " + $0.value.render(indent: inner) }
                .joined(separator: ",\n") + "\n\(indent)}"
        }
    }

    /// `s` as a JSON string literal.
    public static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

/// The value of one hexadecimal digit (of a \u escape), nil for any other byte.
func hexDigitValue(_ byte: UInt8) -> UInt32? {
    switch byte {
    case 0x30...0x39: return UInt32(byte - 0x30)
    case 0x41...0x46: return UInt32(byte - 0x41 + 10)
    case 0x61...0x66: return UInt32(byte - 0x61 + 10)
    default: return nil
    }
}

private struct JSONParser {
    let bytes: UnsafeBufferPointer<UInt8>
    let source: String
    var position = 0

    init(bytes: UnsafeBufferPointer<UInt8>, source: String) {
        self.bytes = bytes
        self.source = source
    }

    func failure(_ what: String) -> DataError {
        DataError("\(source): not valid JSON (\(what) at byte \(position))")
    }

    mutating func skipWhitespace() {
        while position < bytes.count {
            let byte = bytes[position]
            guard byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 else { return }
            position += 1
        }
    }

    mutating func value(depth: Int) throws -> JSONValue {
        guard depth < 128 else { throw failure("nested more than 128 levels deep") }
        skipWhitespace()
        guard position < bytes.count else { throw failure("the text ends where a value should be") }
        switch bytes[position] {
        case UInt8(ascii: "{"):
            position += 1
            var entries: [(key: String, value: JSONValue)] = []
            skipWhitespace()
            if position < bytes.count && bytes[position] == UInt8(ascii: "}") {
                position += 1
                return .object(entries)
            }
            while true {
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else { throw failure("expected a key") }
                let key = try string()
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { throw failure("expected ':'") }
                position += 1
                entries.append((key, try value(depth: depth + 1)))
                skipWhitespace()
                guard position < bytes.count else { throw failure("the text ends inside an object") }
                if bytes[position] == UInt8(ascii: ",") {
                    position += 1
                } else if bytes[position] == UInt8(ascii: "}") {
                    position += 1
                    return .object(entries)
                } else {
                    throw failure("expected ',' or '}'")
                }
            }
        case UInt8(ascii: "["):
            position += 1
            var items: [JSONValue] = []
            skipWhitespace()
            if position < bytes.count && bytes[position] == UInt8(ascii: "]") {
                position += 1
                return .array(items)
            }
            while true {
                items.append(try value(depth: depth + 1))
                skipWhitespace()
                guard position < bytes.count else { throw failure("the text ends inside an array") }
                if bytes[position] == UInt8(ascii: ",") {
                    position += 1
                } else if bytes[position] == UInt8(ascii: "]") {
                    position += 1
                    return .array(items)
                } else {
                    throw failure("expected ',' or ']'")
                }
            }
        case UInt8(ascii: "\""):
            return .string(try string())
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        default:
            return .number(try number())
        }
    }

    mutating func literal(_ word: StaticString) throws {
        let count = word.utf8CodeUnitCount
        guard bytes.count - position >= count,
              memcmp(bytes.baseAddress! + position, word.utf8Start, count) == 0 else { throw failure("unknown word") }
        position += count
    }

    /// RFC 8259 number, converted by Swift's correctly rounded parser.
    mutating func number() throws -> Double {
        let start = position
        func digits() -> Int {
            let first = position
            while position < bytes.count && bytes[position] >= 0x30 && bytes[position] <= 0x39 { position += 1 }
            return position - first
        }
        if position < bytes.count && bytes[position] == UInt8(ascii: "-") { position += 1 }
        let integerDigits = digits()
        guard integerDigits > 0 else { throw failure("expected a value") }
        if integerDigits > 1 && bytes[position - integerDigits] == 0x30 { throw failure("a number with a leading zero") }
        if position < bytes.count && bytes[position] == UInt8(ascii: ".") {
            position += 1
            guard digits() > 0 else { throw failure("a number without digits after '.'") }
        }
        if position < bytes.count && (bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E")) {
            position += 1
            if position < bytes.count && (bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-")) { position += 1 }
            guard digits() > 0 else { throw failure("a number without exponent digits") }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
        guard let value = Double(text), value.isFinite else { throw failure("a number out of range") }
        return value
    }

    mutating func hexQuad() throws -> UInt32 {
        guard bytes.count - position >= 4 else { throw failure("a \\u escape is cut short") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let digit = hexDigitValue(bytes[position]) else { throw failure("a \\u escape with a non-hex digit") }
            value = value << 4 | digit
            position += 1
        }
        return value
    }

    /// A string starting at the opening quote; raw bytes must be UTF-8, escapes are decoded
    /// (a surrogate pair becomes one scalar; a lone surrogate is an error, as in serde_json).
    mutating func string() throws -> String {
        position += 1  // the opening quote
        var result: [UInt8] = []
        var runStart = position
        while true {
            guard position < bytes.count else { throw failure("the text ends inside a string") }
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                result.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<position]))
                position += 1
                break
            }
            if byte < 0x20 { throw failure("a control character inside a string") }
            if byte != UInt8(ascii: "\\") {
                position += 1
                continue
            }
            result.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<position]))
            position += 1
            guard position < bytes.count else { throw failure("the text ends inside an escape") }
            let escaped = bytes[position]
            position += 1
            switch escaped {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): result.append(escaped)
            case UInt8(ascii: "b"): result.append(0x08)
            case UInt8(ascii: "f"): result.append(0x0C)
            case UInt8(ascii: "n"): result.append(0x0A)
            case UInt8(ascii: "r"): result.append(0x0D)
            case UInt8(ascii: "t"): result.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hexQuad()
                if scalar >= 0xD800 && scalar < 0xDC00 {
                    guard bytes.count - position >= 6, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") else {
                        throw failure("a lone surrogate in a \\u escape")
                    }
                    position += 2
                    let low = try hexQuad()
                    guard low >= 0xDC00 && low < 0xE000 else { throw failure("a lone surrogate in a \\u escape") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if scalar >= 0xDC00 && scalar < 0xE000 {
                    throw failure("a lone surrogate in a \\u escape")
                }
                withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 4) { buffer in
                    let length = writeUTF8(scalar, to: buffer.baseAddress!)
                    result.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[0..<length]))
                }
            default:
                throw failure("an unknown escape")
            }
            runStart = position
        }
        guard let string = String(validating: result, as: UTF8.self) else { throw failure("a string that is not valid UTF-8") }
        return string
    }
}
