import Foundation

/// The classes of a classifier: their names in id order (HF's `id2label`) and the id of each
/// name (`label2id`). Names are compared as UTF-8 bytes (as Python compares strings). Two names
/// that differ only in how an accent is encoded ("é" and "e" + U+0301) are refused: config.json's
/// `label2id` could not keep them apart for every JSON reader, and in data they are a mistake.
public struct LabelSet: Sendable, Hashable, CustomStringConvertible {
    public let names: [String]
    /// Where the names come from, for messages: "--labels", a config.json path, a data file.
    public let origin: String
    private let idOfName: [[UInt8]: Int32]

    /// More would make a classifier no one means to train (an integer label that is an id, not a class).
    public static let maximumCount = 100_000

    /// Checks the names: at least 2, none empty, no duplicates (as bytes, or canonically equivalent).
    public init(names: [String], origin: String) throws {
        guard names.count >= 2 else {
            throw DataError("\(origin): a classifier needs at least 2 labels, found \(names.count)\(names.isEmpty ? "" : " (\(names[0]))")")
        }
        guard names.count <= LabelSet.maximumCount else {
            throw DataError("\(origin): \(names.count) labels, more than the \(LabelSet.maximumCount) a classifier may have")
        }
        var seen: [[UInt8]: Int32] = [:]
        var canonical: [String: String] = [:]  // Swift compares Strings by canonical equivalence
        for (id, name) in names.enumerated() {
            guard !name.isEmpty else { throw DataError("\(origin): label \(id + 1) of \(names.count) is empty") }
            guard seen.updateValue(Int32(id), forKey: Array(name.utf8)) == nil else {
                throw DataError("\(origin): the label \"\(name)\" is given twice")
            }
            if let other = canonical.updateValue(name, forKey: name) {
                throw DataError("\(origin): the labels \"\(other)\" and \"\(name)\" differ only in how their characters are encoded (Unicode normalization: \(other.unicodeScalars.map { String(format: "U+%04X", $0.value) }.joined(separator: " ")) against \(name.unicodeScalars.map { String(format: "U+%04X", $0.value) }.joined(separator: " "))); write them the same way")
            }
        }
        self.names = names
        self.origin = origin
        idOfName = seen
    }

    /// Names known to be valid (a preset's, or from the data).
    init(checkedNames names: [String], origin: String) {
        self.names = names
        self.origin = origin
        var ids: [[UInt8]: Int32] = [:]
        for (id, name) in names.enumerated() { ids[Array(name.utf8)] = Int32(id) }
        idOfName = ids
    }

    /// `--labels A,B,...`: names separated by commas, spaces around each name removed.
    public init(list: String, origin: String = "--labels") throws {
        let names = list.split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
        try self.init(names: names, origin: origin)
    }

    /// The names HF gives a config without `id2label`: LABEL_0, LABEL_1, ...
    public static func defaultNames(count: Int) -> [String] {
        (0..<count).map { "LABEL_\($0)" }
    }

    public var count: Int { names.count }

    /// The id of a label name (exact UTF-8 match), or nil.
    public func id(of name: String) -> Int32? {
        idOfName[Array(name.utf8)]
    }

    /// The id of a label as a data file writes it: its exact name, or, for an integer label `i`
    /// where this set has HF's default name "LABEL_i" at id i, that id.
    func id(ofLabel bytes: [UInt8], integer: Int?) -> Int32? {
        if let id = idOfName[bytes] { return id }
        if let integer, integer >= 0, integer < names.count, names[integer] == "LABEL_\(integer)" { return Int32(integer) }
        return nil
    }

    /// "A, B, C" (the first 20).
    public var description: String {
        names.count <= 20 ? names.joined(separator: ", ") : names.prefix(20).joined(separator: ", ") + ", ... (\(names.count) in all)"
    }

    public static func == (left: LabelSet, right: LabelSet) -> Bool {
        left.names.count == right.names.count && zip(left.names, right.names).allSatisfy { $0.utf8.elementsEqual($1.utf8) }
    }

    public func hash(into hasher: inout Hasher) {
        for name in names { hasher.combine(Array(name.utf8)) }
    }

    /// Length-prefixed names, for cache keys.
    var fingerprintText: String {
        names.map { "\($0.utf8.count):\($0)" }.joined(separator: ",")
    }
}

/// Where the label set of a data file comes from.
public enum LabelRule: Sendable, Hashable {
    /// From the data, as HF's run_classification makes it: when every label is an integer >= 0,
    /// the integers are the ids 0...max (named "0", "1", ...); otherwise the distinct labels,
    /// sorted (by code point, as Python sorts strings), are the names in id order. At least 2
    /// distinct labels. A preset's data has the preset's labels.
    case fromData
    /// This set (`--labels`, or a checkpoint's labels for evaluation): a label of the data that
    /// is not one of its names is a bad row.
    case fixed(LabelSet)

    var fingerprintText: String {
        switch self {
        case .fromData: return "from data"
        case .fixed(let set): return "fixed " + set.fingerprintText
        }
    }
}

/// Turns the labels of a file's rows into ids while the file is read (see `LabelRule`).
struct LabelCollector {
    let rule: LabelRule
    // .fromData: the distinct labels seen so far, their integer values and first lines.
    private var indexOfLabel: [[UInt8]: Int32] = [:]
    private var labels: [[UInt8]] = []
    private var integers: [Int?] = []
    private var firstLines: [Int] = []
    /// JSON Lines: whether the first label was a string or a number, and its line.
    private var jsonKind: (isString: Bool, line: Int)? = nil

    init(rule: LabelRule) {
        self.rule = rule
    }

    /// The id of a row's label: final with a fixed set; with labels from the data, the index of
    /// the distinct label (`finish` gives the final ids). `integer`: the label's value when it is
    /// written as an integer.
    mutating func id(of label: [UInt8], integer: Int?, line: Int) throws(RowProblem) -> Int32 {
        guard !label.isEmpty else { throw RowProblem("empty label") }
        switch rule {
        case .fixed(let set):
            if let id = set.id(ofLabel: label, integer: integer) { return id }
            throw RowProblem("label \"\(shown(label))\" is not one of the \(set.count) labels of \(set.origin) (\(set))")
        case .fromData:
            if let index = indexOfLabel[label] { return index }
            let index = Int32(labels.count)
            indexOfLabel[label] = index
            labels.append(label)
            integers.append(integer)
            firstLines.append(line)
            return index
        }
    }

    /// JSON Lines only: a label written as a string after labels written as numbers (or the
    /// other way round) is a bad row.
    mutating func checkJSONKind(isString: Bool, label: [UInt8], line: Int) throws(RowProblem) {
        guard !label.isEmpty else { throw RowProblem("empty label") }
        guard let kind = jsonKind else {
            jsonKind = (isString, line)
            return
        }
        guard kind.isString != isString else { return }
        let this = isString ? "the string \"\(shown(label))\"" : "the number \(shown(label))"
        throw RowProblem("label \(this) is written as a \(isString ? "string" : "number"), but the label on line \(kind.line) as a \(kind.isString ? "string" : "number"); write every label the same way")
    }

    /// The label set and the final id of each distinct label (nil: the ids are final already).
    func finish(path: String) throws -> (LabelSet, [Int32]?) {
        switch rule {
        case .fixed(let set):
            return (set, nil)
        case .fromData:
            if integers.allSatisfy({ ($0 ?? -1) >= 0 }) {
                let values = integers.map { $0! }
                let largest = values.indices.max { values[$0] < values[$1] } ?? 0
                guard values.isEmpty || values[largest] < LabelSet.maximumCount else {
                    throw DataError("\(path):\(firstLines[largest]): label \(values[largest]) is too large for a class id (integer labels are the ids 0 to the largest); give the classes by name, e.g. --labels with the labels used")
                }
                try requireTwo(distinct: Set(values).count, path: path)
                let count = (values.max() ?? 0) + 1
                return (LabelSet(checkedNames: (0..<count).map(String.init), origin: path), values.map { Int32($0) })
            }
            try requireTwo(distinct: labels.count, path: path)
            let order = labels.indices.sorted { labels[$0].lexicographicallyPrecedes(labels[$1]) }
            var ids = [Int32](repeating: 0, count: labels.count)
            for (id, index) in order.enumerated() { ids[index] = Int32(id) }
            guard labels.count <= LabelSet.maximumCount else {
                throw DataError("\(path): \(labels.count) distinct labels, more than the \(LabelSet.maximumCount) a classifier may have")
            }
            return (try LabelSet(names: order.map { String(decoding: labels[$0], as: UTF8.self) }, origin: path), ids)
        }
    }

    private func requireTwo(distinct: Int, path: String) throws {
        guard distinct >= 2 else {
            let only = labels.first.map { " (\"\(shown($0))\")" } ?? ""
            throw DataError("\(path): every row has the same label\(only); a classifier needs at least 2 labels")
        }
    }
}

/// What is wrong with one row (the reader adds the file and line).
struct RowProblem: Error {
    let reason: String
    init(_ reason: String) { self.reason = reason }
}

/// A label or value for a message: at most 60 characters, then "...".
func shown(_ bytes: [UInt8]) -> String {
    let text = String(decoding: bytes, as: UTF8.self)
    return text.count <= 60 ? text : String(text.prefix(57)) + "..."
}
