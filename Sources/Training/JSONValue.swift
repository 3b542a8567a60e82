import Foundation

/// A JSON document kept as data, so that config files we rewrite keep the keys we do not
/// model; serialised deterministically (sorted keys, two-space indent) like HF's
/// `to_json_string`.
public enum JSONValue: Equatable, Sendable, Decodable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    /// Reads a JSON object file; `nil` when the file does not exist.
    public static func readObject(_ url: URL) throws -> [String: JSONValue]? {
        guard let data = FileManager.default.contents(atPath: url.path) else { return nil }
        guard case .object(let object)? = try? JSONDecoder().decode(JSONValue.self, from: data) else {
            throw TrainingError.invalidInput("\(url.path): not a JSON object")
        }
        return object
    }

    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }

    /// Pretty (files) or on one line (`--json` output of the commands).
    public func serialized(pretty: Bool = true) -> [UInt8] { Array((render(indent: pretty ? "" : nil) + "\n").utf8) }

    /// One line of JSON.
    public var compact: String { render(indent: nil) }

    /// `indent` nil: no whitespace at all.
    private func render(indent: String?) -> String {
        guard let indent else {
            switch self {
            case .array(let items): return "[" + items.map { $0.render(indent: nil) }.joined(separator: ",") + "]"
            case .object(let fields):
                return "{" + fields.keys.sorted().map { JSONValue.quote($0) + ":" + fields[$0]!.render(indent: nil) }.joined(separator: ",") + "}"
            default: return render(indent: "")
            }
        }
        let inner = indent + "  "
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let n):
            if n.rounded() == n && abs(n) < 1e15 { return String(Int64(n)) }
            return "\(n)"
        case .string(let s): return JSONValue.quote(s)
        case .array(let items):
            if items.isEmpty { return "[]" }
            return "[\n" + items.map { inner + $0.render(indent: inner) }.joined(separator: ",\n") + "\n\(indent)]"
        case .object(let fields):
            if fields.isEmpty { return "{}" }
            return "{\n" + fields.keys.sorted().map { inner + JSONValue.quote($0) + ": " + fields[$0]!.render(indent: inner) }
                .joined(separator: ",\n") + "\n\(indent)}"
        }
    }

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

/// Errors of a training run that are the user's to fix; `description` is the one line shown.
public enum TrainingError: Error, CustomStringConvertible, Equatable {
    case invalidInput(String)
    case diverged(String)

    public var description: String {
        switch self {
        case .invalidInput(let message), .diverged(let message): return message
        }
    }
}
