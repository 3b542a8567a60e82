import Foundation

// The mutations, from blind to format-aware: bytes (any file), JSON values (config.json,
// tokenizer files, a safetensors header), safetensors structure (length field, shapes, offsets,
// dtypes, names), and rows of data files (fields, quoting, columns, labels, encodings).

/// Values a hostile or corrupt file may hold where a number is expected, as JSON text.
let hostileJSONValues: [String] = [
    "0", "-1", "1", "2", "3", "31", "33", "64", "99", "100",
    "2147483647", "2147483648", "-2147483649", "4294967296", "16777217", "1000000000000",
    "9007199254740993", "9223372036854775807", "9223372036854775808", "-9223372036854775809",
    "18446744073709551616", "123456789012345678901234567890",
    "1e308", "1e400", "-1e400", "1e-400", "1.5", "32.0", "1e3", "-0", "0.0", "-0.5",
    "null", "true", "false", "\"\"", "\"32\"", "\"x\"", "\"\\u0000\"", "\"\\ud800\"", "\"\\n\"",
    "[]", "{}", "[32]", "[[[[1]]]]", "{\"a\":{\"b\":[null]}}",
    String(repeating: "[", count: 600) + String(repeating: "]", count: 600),
    "\"" + String(repeating: "a", count: 70_000) + "\"",
    "[" + Array(repeating: "0", count: 5000).joined(separator: ",") + "]",
]

/// The 8-byte values a corrupt safetensors length field (or any size field) may hold.
let hostileSizes: [UInt64] = [0, 1, 2, 7, 8, 9, 255, 1 << 16, 1 << 31, 1 << 32, (1 << 32) - 1, 1 << 62,
                              (1 << 63) - 1, 1 << 63, (1 << 63) + 1, UInt64.max, UInt64.max - 7]

/// Byte sequences that are not UTF-8 (lone continuation, overlong, surrogate, beyond U+10FFFF, truncated).
let invalidUTF8: [[UInt8]] = [[0x80], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82], [0xFF, 0xFE], [0xC3]]

enum ByteMutations {
    static let all: [Mutation] = [flipBits, setBytes, truncate, insert, duplicateChunk, deleteChunk, empty, appendJunk]

    static let flipBits = Mutation(name: "flip bits") { random, bytes in
        guard !bytes.isEmpty else { return nil }
        var out = bytes
        let flips = 1 + random.below(8)
        for _ in 0..<flips { out[random.below(out.count)] ^= UInt8(1 << random.below(8)) }
        return (out, "\(flips) bit(s)")
    }

    static let setBytes = Mutation(name: "set bytes") { random, bytes in
        guard !bytes.isEmpty else { return nil }
        var out = bytes
        let values: [UInt8] = [0, 0xff, 0x7f, 0x80, 0x22, 0x2c, 0x0a, 0x0d, 0x09, 0x7b, 0x5b, 0x5c, 0xc0, 0x30, 0x39, 0x2d]
        let at = random.below(out.count), count = 1 + random.below(4)
        for offset in 0..<count where at + offset < out.count { out[at + offset] = random.pick(values) }
        return (out, "at \(at)")
    }

    static let truncate = Mutation(name: "truncate") { random, bytes in
        let length = bytes.isEmpty ? 0 : random.below(bytes.count)
        return (Array(bytes.prefix(length)), "to \(length) of \(bytes.count) bytes")
    }

    static let insert = Mutation(name: "insert") { random, bytes in
        let junk: [[UInt8]] = invalidUTF8 + [[0], [0, 0, 0, 0], Array("\"".utf8), Array("\r".utf8), Array("\u{FEFF}".utf8),
                                              Array("\\".utf8), Array("\\u".utf8), Array(",,,".utf8), Array("\t\t".utf8)]
        let piece = random.pick(junk)
        let at = random.below(bytes.count + 1)
        return (Array(bytes[..<at]) + piece + Array(bytes[at...]), "\(piece) at \(at)")
    }

    static let duplicateChunk = Mutation(name: "duplicate chunk") { random, bytes in
        guard bytes.count > 1 else { return nil }
        let start = random.below(bytes.count), length = 1 + random.below(min(256, bytes.count - start))
        let at = random.below(bytes.count + 1)
        return (Array(bytes[..<at]) + Array(bytes[start..<(start + length)]) + Array(bytes[at...]), "\(length) bytes from \(start) at \(at)")
    }

    static let deleteChunk = Mutation(name: "delete chunk") { random, bytes in
        guard bytes.count > 1 else { return nil }
        let start = random.below(bytes.count), length = 1 + random.below(min(256, bytes.count - start))
        return (Array(bytes[..<start]) + Array(bytes[(start + length)...]), "\(length) bytes at \(start)")
    }

    static let empty = Mutation(name: "empty file") { _, _ in ([], "") }

    static let appendJunk = Mutation(name: "append") { random, bytes in
        let tails: [[UInt8]] = [[0], Array(repeating: 0x41, count: 100_000), Array("\n\n\n".utf8), Array("{".utf8), invalidUTF8[random.below(invalidUTF8.count)]]
        let tail = random.pick(tails)
        return (bytes + tail, "\(tail.count) bytes")
    }
}

// MARK: - JSON

/// A step into a JSON value: an object key or an array index.
enum JSONStep: CustomStringConvertible {
    case key(String)
    case index(Int)
    var description: String {
        switch self {
        case .key(let key): return key
        case .index(let index): return "[\(index)]"
        }
    }
}

enum JSONMutations {
    /// Stands for a raw JSON text in a tree before serialization (JSONSerialization cannot hold 1e400).
    static let rawMarker = "@@fuzz-raw@@"

    static func parse(_ bytes: [UInt8]) -> Any? {
        try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
    }

    /// `value` as JSON bytes, `raw` written where the marker string is.
    static func serialize(_ value: Any, raw: String) -> [UInt8]? {
        guard let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed]) else { return nil }
        let text = String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\"\(rawMarker)\"", with: raw)
        return Array(text.utf8)
    }

    /// Every path to a value inside `value` (the root excluded).
    static func paths(_ value: Any, prefix: [JSONStep] = []) -> [[JSONStep]] {
        var result: [[JSONStep]] = []
        if let object = value as? [String: Any] {
            for key in object.keys.sorted() {
                result.append(prefix + [.key(key)])
                result += paths(object[key]!, prefix: prefix + [.key(key)])
            }
        } else if let array = value as? [Any] {
            for index in array.indices {
                result.append(prefix + [.index(index)])
                result += paths(array[index], prefix: prefix + [.index(index)])
            }
        }
        return result
    }

    /// `value` with the value at `path` replaced (nil: removed).
    static func replacing(_ value: Any, at path: ArraySlice<JSONStep>, with new: Any?) -> Any {
        guard let step = path.first else { return new ?? NSNull() }
        switch step {
        case .key(let key):
            guard var object = value as? [String: Any], let inner = object[key] else { return value }
            if path.count == 1 && new == nil { object.removeValue(forKey: key) } else {
                object[key] = replacing(inner, at: path.dropFirst(), with: new)
            }
            return object
        case .index(let index):
            guard var array = value as? [Any], array.indices.contains(index) else { return value }
            if path.count == 1 && new == nil { array.remove(at: index) } else {
                array[index] = replacing(array[index], at: path.dropFirst(), with: new)
            }
            return array
        }
    }

    static func value(_ value: Any, at path: [JSONStep]) -> Any? {
        var current: Any = value
        for step in path {
            switch step {
            case .key(let key): guard let next = (current as? [String: Any])?[key] else { return nil }; current = next
            case .index(let index): guard let array = current as? [Any], array.indices.contains(index) else { return nil }; current = array[index]
            }
        }
        return current
    }

    /// Replaces (or removes, or renames) a value somewhere in `tree`; `preferredKeys` are picked
    /// more often (e.g. the size keys of config.json).
    static func mutateTree(_ tree: Any, random: inout FuzzRandom, preferredKeys: [String] = []) -> (bytes: [UInt8], detail: String)? {
        var path: [JSONStep]
        if !preferredKeys.isEmpty && random.chance(0.6) {
            path = [.key(random.pick(preferredKeys))]
        } else {
            let all = paths(tree)
            guard !all.isEmpty else { return nil }
            path = random.pick(all)
        }
        let where_ = path.map(\.description).joined(separator: ".")
        switch random.below(10) {
        case 0:
            return serialize(replacing(tree, at: path[...], with: nil), raw: "").map { ($0, "remove \(where_)") }
        case 1:
            // The same name twice in the enclosing object (JSON readers keep one silently).
            guard case .key(let key)? = path.last, let original = value(tree, at: path),
                  let bytes = serialize(tree, raw: ""), let valueBytes = serialize(original, raw: ""), path.count == 1,
                  let brace = bytes.firstIndex(of: UInt8(ascii: "{")) else { return nil }
            let raw = random.chance(0.5) ? String(decoding: valueBytes, as: UTF8.self) : random.pick(hostileJSONValues)
            let keyText = String(decoding: (try? JSONSerialization.data(withJSONObject: key, options: .fragmentsAllowed)) ?? Data(), as: UTF8.self)
            let inserted = Array("\(keyText):\(raw),".utf8)
            return (Array(bytes[...brace]) + inserted + Array(bytes[(brace + 1)...]), "\(where_) twice")
        default:
            let raw = random.pick(hostileJSONValues)
            let rawShown = raw.count > 40 ? "\(raw.prefix(20))...(\(raw.count) chars)" : raw
            return serialize(replacing(tree, at: path[...], with: rawMarker), raw: raw).map { ($0, "\(where_) = \(rawShown)") }
        }
    }

    /// A JSON file: a value replaced, removed or given twice (`preferredKeys` first).
    static func value(preferring preferredKeys: [String] = []) -> Mutation {
        Mutation(name: "json value") { random, bytes in
            guard let tree = parse(bytes) else { return nil }
            return mutateTree(tree, random: &random, preferredKeys: preferredKeys)
        }
    }

    /// A JSON file replaced by a value of another kind.
    static let wrongTopLevel = Mutation(name: "json top level") { random, _ in
        let raw = random.pick(["[]", "null", "5", "\"config\"", "[{}]", "{", "", "{}", String(repeating: "{\"a\":", count: 700) + "1" + String(repeating: "}", count: 700)])
        return (Array(raw.utf8), raw.count > 40 ? "deep nesting" : raw)
    }

    static func all(preferring keys: [String] = []) -> [Mutation] { [value(preferring: keys), value(preferring: keys), wrongTopLevel] }

    /// A value at one of `paths` (keys separated by dots, `*` for any child) set to a hostile
    /// value, `extra` values included: the fields a reader sizes or indexes with.
    static func at(_ paths: [String], extra: [String] = []) -> Mutation {
        Mutation(name: "json field") { random, bytes in
            guard let tree = parse(bytes) else { return nil }
            var path: [JSONStep] = []
            var node: Any? = tree
            for key in random.pick(paths).split(separator: ".").map(String.init) {
                if key == "*" {
                    if let object = node as? [String: Any], !object.isEmpty {
                        let child = random.pick(object.keys.sorted())
                        path.append(.key(child)); node = object[child]
                    } else if let array = node as? [Any], !array.isEmpty {
                        let index = random.below(array.count)
                        path.append(.index(index)); node = array[index]
                    } else { return nil }
                } else {
                    path.append(.key(key)); node = (node as? [String: Any])?[key]
                }
            }
            let raw = random.pick(hostileJSONValues + extra)
            let shown = raw.count > 40 ? "\(raw.prefix(20))...(\(raw.count) chars)" : raw
            return serialize(replacing(tree, at: path[...], with: rawMarker), raw: raw).map { ($0, "\(path.map(\.description).joined(separator: ".")) = \(shown)") }
        }
    }
}

// MARK: - safetensors

/// A safetensors file taken apart: header object and data section.
struct SafeTensorsParts {
    var header: [String: Any]
    var data: [UInt8]

    init?(_ bytes: [UInt8]) {
        guard bytes.count >= 8 else { return nil }
        let length = bytes[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard length <= UInt64(bytes.count - 8),
              let header = JSONMutations.parse(Array(bytes[8..<(8 + Int(length))])) as? [String: Any] else { return nil }
        self.header = header
        data = Array(bytes[(8 + Int(length))...])
    }

    var tensorNames: [String] { header.keys.filter { $0 != "__metadata__" }.sorted() }

    /// The file with `header` (padded to 8 bytes, `raw` where the marker is) and the data.
    func bytes(raw: String = "") -> [UInt8]? {
        guard var json = JSONMutations.serialize(header, raw: raw) else { return nil }
        while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }
        return withUnsafeBytes(of: UInt64(json.count).littleEndian) { Array($0) } + json + data
    }
}

enum SafeTensorsMutations {
    static let all: [Mutation] = [lengthField, tensorField, tensorField, tensorField, headerValue, renameOrRemove, addTensor, data, headerBytes]

    /// The 8-byte header length.
    static let lengthField = Mutation(name: "safetensors length field") { random, bytes in
        guard bytes.count >= 8 else { return nil }
        let actual = bytes[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        let fileSize = UInt64(bytes.count)
        let value = random.chance(0.5) ? random.pick(hostileSizes)
            : random.pick([actual &+ 1, actual &- 1, actual &+ 8, fileSize, fileSize - 8, fileSize - 7, actual / 2])
        return (withUnsafeBytes(of: value.littleEndian) { Array($0) } + bytes[8...], "= \(value)")
    }

    /// A tensor's shape, offsets or dtype.
    static let tensorField = Mutation(name: "safetensors tensor") { random, bytes in
        guard var parts = SafeTensorsParts(bytes), !parts.tensorNames.isEmpty else { return nil }
        let name = random.pick(parts.tensorNames)
        guard var entry = parts.header[name] as? [String: Any] else { return nil }
        let offsets = (entry["data_offsets"] as? [Int]) ?? [0, 0]
        let dataSize = parts.data.count
        let other = (parts.header[random.pick(parts.tensorNames)] as? [String: Any])?["data_offsets"] as? [Int] ?? [0, 4]
        let detail: String
        switch random.below(3) {
        case 0:
            let shapes: [String] = ["[]", "[0]", "[-1,32]", "[2147483648,32]", "[1000000000000,1000000000000]", "[4611686018427387904,4]",
                                    "[3037000500,3037000500]", "[99,32,1]", "[32,99]", "[1]", "[0,32]", "[1000000000000,0]", "[1.5]",
                                    "[\"32\"]", "null", "32", "[18446744073709551616]", "[9223372036854775807,2]"]
            let shape = random.pick(shapes)
            entry["shape"] = JSONMutations.rawMarker
            parts.header[name] = entry
            return parts.bytes(raw: shape).map { ($0, "\(name).shape = \(shape)") }
        case 1:
            let begin = offsets.first ?? 0, end = offsets.last ?? 0
            let choices: [String] = ["[\(end),\(begin)]", "[\(begin),\(begin)]", "[0,\(dataSize + 1)]", "[-4,0]", "[\(begin),9223372036854775807]",
                                     "[\(begin + 4),\(end + 4)]", "[\(begin),\(end),\(end)]", "[\(begin)]", "\(other)",
                                     "[\(other.first ?? 0),\((other.first ?? 0) + end - begin)]", "[0,18446744073709551615]",
                                     "[9223372036854775800,9223372036854775807]", "[\(begin).5,\(end)]"]
            let raw = random.pick(choices)
            entry["data_offsets"] = JSONMutations.rawMarker
            parts.header[name] = entry
            detail = "\(name).data_offsets = \(raw)"
            return parts.bytes(raw: raw).map { ($0, detail) }
        default:
            let raw = random.pick(["\"F32\"", "\"F16\"", "\"BF16\"", "\"I64\"", "\"I8\"", "\"BOOL\"", "\"F64\"", "\"U8\"", "\"F8_E4M3\"",
                                   "\"\"", "\"f32\"", "5", "null"])
            entry["dtype"] = JSONMutations.rawMarker
            parts.header[name] = entry
            return parts.bytes(raw: raw).map { ($0, "\(name).dtype = \(raw)") }
        }
    }

    /// Any value of the header (metadata included).
    static let headerValue = Mutation(name: "safetensors header value") { random, bytes in
        guard let parts = SafeTensorsParts(bytes),
              let (json, detail) = JSONMutations.mutateTree(parts.header, random: &random) else { return nil }
        var header = json
        while header.count % 8 != 0 { header.append(UInt8(ascii: " ")) }
        return (withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header + parts.data, detail)
    }

    /// A tensor renamed (another layer, no `bert.` prefix, a stray name) or removed.
    static let renameOrRemove = Mutation(name: "safetensors name") { random, bytes in
        guard var parts = SafeTensorsParts(bytes), !parts.tensorNames.isEmpty else { return nil }
        let name = random.pick(parts.tensorNames)
        let entry = parts.header.removeValue(forKey: name)!
        let renamed = random.pick([nil, name.replacingOccurrences(of: "bert.", with: ""), name.replacingOccurrences(of: "layer.0", with: "layer.7"),
                                   name + ".extra", "", "__metadata__", name.replacingOccurrences(of: "weight", with: "bias")])
        if let renamed { parts.header[renamed] = entry }
        return parts.bytes().map { ($0, renamed.map { "\(name) -> \($0)" } ?? "remove \(name)") }
    }

    /// An extra tensor: a classifier of another label count, an empty giant, one over others' bytes.
    static let addTensor = Mutation(name: "safetensors extra tensor") { random, bytes in
        guard var parts = SafeTensorsParts(bytes) else { return nil }
        let choices: [(String, String)] = [
            ("classifier.weight", "{\"dtype\":\"F32\",\"shape\":[1000000000000,0],\"data_offsets\":[0,0]}"),
            ("classifier.weight", "{\"dtype\":\"F32\",\"shape\":[0,32],\"data_offsets\":[0,0]}"),
            ("classifier.bias", "{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}"),
            ("classifier.weight", "{\"dtype\":\"F32\",\"shape\":[2,32],\"data_offsets\":[0,256]}"),
            ("bert.pooler.dense.weight", "{\"dtype\":\"F32\",\"shape\":[32,32],\"data_offsets\":[0,4096]}"),
            ("zzz.giant", "{\"dtype\":\"F32\",\"shape\":[4611686018427387904,0,4],\"data_offsets\":[0,0]}"),
            ("zzz.overlap", "{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[8,24]}"),
        ]
        let (name, raw) = random.pick(choices)
        parts.header[name] = JSONMutations.rawMarker
        return parts.bytes(raw: raw).map { ($0, "\(name) = \(raw)") }
    }

    /// The data section cut, extended or its floats set to NaN/Inf/huge.
    static let data = Mutation(name: "safetensors data") { random, bytes in
        guard var parts = SafeTensorsParts(bytes), !parts.data.isEmpty else { return nil }
        switch random.below(3) {
        case 0:
            let cut = random.below(parts.data.count)
            parts.data = Array(parts.data.prefix(cut))
            return parts.bytes().map { ($0, "data cut to \(cut) bytes") }
        case 1:
            parts.data += [UInt8](repeating: 0xAB, count: 1 + random.below(64))
            return parts.bytes().map { ($0, "data extended") }
        default:
            let special: [UInt32] = [0x7fc0_0000, 0x7f80_0000, 0xff80_0000, 0x7f7f_ffff, 0x0000_0001]
            let value = random.pick(special)
            let count = 1 + random.below(parts.data.count / 4)
            let start = random.below(parts.data.count / 4 - count + 1)
            for index in start..<(start + count) {
                for byte in 0..<4 { parts.data[4 * index + byte] = UInt8((value >> (8 * UInt32(byte))) & 0xff) }
            }
            return parts.bytes().map { ($0, "\(count) floats from \(start) = 0x\(String(value, radix: 16))") }
        }
    }

    /// Bytes of the JSON header damaged in place (the length kept).
    static let headerBytes = Mutation(name: "safetensors header bytes") { random, bytes in
        guard bytes.count > 16 else { return nil }
        let length = Int(min(bytes[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }, UInt64(bytes.count - 8)))
        guard length > 0 else { return nil }
        var out = bytes
        let values: [UInt8] = [0, 0x22, 0x7d, 0x5d, 0x2c, 0x3a, 0x30, 0x39, 0x2d, 0x5c, 0xff, 0x80]
        let hits = 1 + random.below(3)
        for _ in 0..<hits { out[8 + random.below(length)] = random.pick(values) }
        return (out, "\(hits) byte(s)")
    }
}

// MARK: - data files

/// Fields a corrupt or hostile data file may hold.
func hostileFields(_ random: inout FuzzRandom) -> [UInt8] {
    let texts = ["", "\"", "\"\"", "\"unterminated", "a\"b", "\"a\"b\"", "\"\"\"", "0", "1", "4", "5", "-1", "1.5", "2147483648",
                 "99999999999999999999", "1000000", "NaN", "inf", " 1", "1 ", "+1", "0x10", "１", "\u{0}", "\r", "\u{FEFF}x", "\\",
                 "\\n", "\t", ",", "pos", "neg", "World", "[\"pos\"]", "w5 w6", "\u{10FFFF}", "\u{202E}rtl"]
    switch random.below(6) {
    case 0: return random.pick(invalidUTF8) + Array("x".utf8)
    case 1: return Array(String(repeating: random.pick(["w5 ", "a", "\u{00e9}", "\u{4e2d}", "\u{0}"]), count: 1 + random.below(30_000)).utf8)
    default: return Array(random.pick(texts).utf8)
    }
}

enum DelimitedMutations {
    /// Mutations of a CSV or TSV file separated by `delimiter`.
    static func all(delimiter: UInt8) -> [Mutation] {
        [field(delimiter), field(delimiter), field(delimiter), lines(delimiter), lines(delimiter), manyLabels(delimiter), lineEndings]
    }

    static func splitLines(_ bytes: [UInt8]) -> [[UInt8]] { bytes.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init) }
    static func joinLines(_ lines: [[UInt8]]) -> [UInt8] { Array(lines.joined(separator: [0x0A])) }

    /// One field of one line replaced by a hostile one (fields split naively at the delimiter).
    static func field(_ delimiter: UInt8) -> Mutation {
        Mutation(name: "field") { random, bytes in
            var lines = splitLines(bytes)
            guard !lines.isEmpty else { return nil }
            let line = random.below(lines.count)
            var fields = lines[line].split(separator: delimiter, omittingEmptySubsequences: false).map(Array.init)
            let column = random.below(fields.count)
            let value = hostileFields(&random)
            fields[column] = random.chance(0.5) ? [0x22] + value + [0x22] : value
            lines[line] = Array(fields.joined(separator: [delimiter]))
            return (joinLines(lines), "line \(line + 1) field \(column + 1) = \(value.count > 40 ? "\(value.count) bytes" : String(decoding: value, as: UTF8.self).debugDescription)")
        }
    }

    /// Lines removed, repeated, swapped, or added with another number of fields.
    static func lines(_ delimiter: UInt8) -> Mutation {
        Mutation(name: "lines") { random, bytes in
            var lines = splitLines(bytes)
            guard !lines.isEmpty else { return nil }
            let line = random.below(lines.count)
            switch random.below(5) {
            case 0:
                lines.remove(at: line)
                return (joinLines(lines), "remove line \(line + 1)")
            case 1:
                let times = random.pick([2, 10, 1000])
                lines.insert(contentsOf: Array(repeating: lines[line], count: times), at: line)
                return (joinLines(lines), "line \(line + 1) x\(times)")
            case 2:
                let other = random.below(lines.count)
                lines.swapAt(line, other)
                return (joinLines(lines), "swap lines \(line + 1) and \(other + 1)")
            case 3:
                let count = random.below(7)
                var fields: [[UInt8]] = []
                for _ in 0..<count { fields.append(hostileFields(&random)) }
                lines.insert(Array(fields.joined(separator: [delimiter])), at: line)
                return (joinLines(lines), "insert a line of \(count) field(s) at \(line + 1)")
            default:
                lines = Array(lines.prefix(1))
                return (joinLines(lines), "only the first line")
            }
        }
    }

    /// Many distinct labels (beyond what a label set may hold) or integer labels far apart.
    static func manyLabels(_ delimiter: UInt8) -> Mutation {
        Mutation(name: "labels") { random, bytes in
            var lines = splitLines(bytes)
            guard let template = lines.last(where: { !$0.isEmpty }) else { return nil }
            var fields = template.split(separator: delimiter, omittingEmptySubsequences: false).map(Array.init)
            guard fields.count > 1 else { return nil }
            // The label is the first field of AG News and the last of the header fixtures.
            let labelColumn = bytes.first == 0x22 && fields.count == 3 ? 0 : fields.count - 1
            switch random.below(3) {
            case 0:
                for label in ["2000000000", "-5", "100000"] {
                    fields[labelColumn] = Array(label.utf8)
                    lines.append(Array(fields.joined(separator: [delimiter])))
                }
                return (joinLines(lines), "labels 2000000000, -5, 100000")
            default:
                let count = random.pick([100_001, 3000])
                for index in 0..<count {
                    fields[labelColumn] = Array("L\(index)".utf8)
                    lines.append(Array(fields.joined(separator: [delimiter])))
                }
                return (joinLines(lines), "\(count) distinct labels")
            }
        }
    }

    /// CRLF, lone CR, a byte order mark, no final newline.
    static let lineEndings = Mutation(name: "line endings") { random, bytes in
        switch random.below(4) {
        case 0: return (Array(String(decoding: bytes, as: UTF8.self).replacingOccurrences(of: "\n", with: "\r\n").utf8), "CRLF")
        case 1: return (bytes.map { $0 == 0x0A ? 0x0D : $0 }, "lone CR")
        case 2: return ([0xEF, 0xBB, 0xBF] + bytes, "BOM")
        default: return (bytes.last == 0x0A ? Array(bytes.dropLast()) : bytes + [0x0A, 0x0A], "final newline")
        }
    }
}

enum JSONLinesMutations {
    static let all: [Mutation] = [lineValue, lineValue, lineValue, replaceLine, DelimitedMutations.lines(0x7F), DelimitedMutations.lineEndings]

    /// A value inside one line's object replaced, removed or given twice.
    static let lineValue = Mutation(name: "jsonl value") { random, bytes in
        var lines = DelimitedMutations.splitLines(bytes)
        let candidates = lines.indices.filter { JSONMutations.parse(lines[$0]) is [String: Any] }
        guard !candidates.isEmpty else { return nil }
        let line = random.pick(candidates)
        guard let (json, detail) = JSONMutations.mutateTree(JSONMutations.parse(lines[line])!, random: &random,
                                                          preferredKeys: ["text", "label", "text_pair"]) else { return nil }
        lines[line] = json
        return (DelimitedMutations.joinLines(lines), "line \(line + 1): \(detail)")
    }

    /// A line replaced by another JSON kind or by broken JSON.
    static let replaceLine = Mutation(name: "jsonl line") { random, bytes in
        var lines = DelimitedMutations.splitLines(bytes)
        let raws = ["[1]", "5", "null", "{", "", "{\"text\": 5, \"label\": \"pos\"}", "{\"text\":\"x\",\"label\":[\"pos\"]}",
                    "{\"text\":\"x\",\"label\":{\"a\":1}}", "{\"text\":\"\\ud800\",\"label\":\"pos\"}", "{\"text\":\"x\",\"label\":1e400}",
                    "{\"text\":\"x\",\"label\":\"pos\",\"text\":\"y\"}", "{\"text\":\"x\",\"label\":-1}", "{\"text\":\"x\",\"label\":2147483648}",
                    "{\"text\":\"x\"}", "{\"label\":\"pos\"}", "{\"text\":\"\\u0000\",\"label\":\"pos\"}", "\u{FEFF}{\"text\":\"x\",\"label\":\"pos\"}"]
        let raw = random.pick(raws)
        let line = random.below(lines.count + 1)
        if line < lines.count && random.chance(0.5) { lines[line] = Array(raw.utf8) } else { lines.insert(Array(raw.utf8), at: line) }
        return (DelimitedMutations.joinLines(lines), "line \(line + 1) = \(raw)")
    }
}

/// vocab.txt: lines removed, repeated, emptied, made long or not UTF-8.
let vocabularyLines = Mutation(name: "vocab lines") { random, bytes in
    var lines = DelimitedMutations.splitLines(bytes)
    guard !lines.isEmpty else { return nil }
    let line = random.below(lines.count)
    switch random.below(5) {
    case 0: lines.remove(at: line); return (DelimitedMutations.joinLines(lines), "remove line \(line + 1)")
    case 1: lines[line] = []; return (DelimitedMutations.joinLines(lines), "empty line \(line + 1)")
    case 2: lines.insert(lines[random.below(lines.count)], at: line); return (DelimitedMutations.joinLines(lines), "duplicate at \(line + 1)")
    case 3: lines[line] = random.pick(invalidUTF8); return (DelimitedMutations.joinLines(lines), "not UTF-8 at \(line + 1)")
    default: lines[line] = Array(String(repeating: "w", count: 100_000).utf8); return (DelimitedMutations.joinLines(lines), "long line \(line + 1)")
    }
}
