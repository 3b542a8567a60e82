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

    /// The one output of a regression model, named as HF names it (config.json `id2label`
    /// {"0": "LABEL_0"}, `num_labels` 1).
    public static let regression = LabelSet(checkedNames: ["LABEL_0"], origin: "regression")

    /// What the rows of a file read without their labels hold (predict, the bench): class 0 of
    /// two placeholder names.
    public static let unread = LabelSet(checkedNames: ["unread label 0", "unread label 1"], origin: "rows read without labels")

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

/// What a data file's labels are: Hugging Face's `problem_type`.
public enum ProblemType: String, Sendable, Hashable, CaseIterable, Codable {
    /// One class per example (a class name or id).
    case singleLabelClassification = "single_label_classification"
    /// Any number of classes per example, none included (a list of names or ids).
    case multiLabelClassification = "multi_label_classification"
    /// One number per example (the model has one output).
    case regression
}

/// How the label column (key) of a data file is read.
///
/// - `problemType` nil: inferred from the data, as HF's run_classification infers it from list
///   labels: multi-label when `separator` is given or the JSON Lines labels are lists, else
///   single-label. Regression is never inferred (a file of numbers may as well hold class ids):
///   it is asked for.
/// - `separator` (`--label-separator`): multi-label names joined in one field (CSV, TSV, or a
///   JSON string), e.g. "sports;politics". Spaces around each name are dropped; an empty field
///   is an example without labels.
public struct LabelFormat: Sendable, Hashable {
    public var problemType: ProblemType?
    public var separator: String?

    public init(problemType: ProblemType? = nil, separator: String? = nil) {
        self.problemType = problemType
        self.separator = separator
    }

    /// Single-label classification (what every reader did before there were other tasks).
    public static let singleLabel = LabelFormat(problemType: .singleLabelClassification)

    /// Why this format cannot be read (nil: it can): a separator with a task other than
    /// multi-label, or an empty separator.
    public var problem: String? {
        guard let separator else { return nil }
        if separator.isEmpty { return "--label-separator is empty; give the text between two labels, e.g. \";\"" }
        if let problemType, problemType != .multiLabelClassification {
            return "--label-separator splits multi-label labels; it does not go with \(problemType.rawValue)"
        }
        return nil
    }

    var fingerprintText: String {
        "problem=\(problemType?.rawValue ?? "inferred") separator=\(separator.map { "\($0.utf8.count):\($0)" } ?? "-")"
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
    // Regression data has no label names: its set is always `LabelSet.regression`.

    var fingerprintText: String {
        switch self {
        case .fromData: return "from data"
        case .fixed(let set): return "fixed " + set.fingerprintText
        }
    }
}

/// Turns the labels of a file's rows into targets while the file is read (see `LabelRule` and
/// `LabelFormat`): class ids (single-label), lists of class ids (multi-label), numbers (regression).
struct LabelCollector {
    let rule: LabelRule
    /// Multi-label names joined in one field, as UTF-8 (nil: none).
    let separator: [UInt8]?
    /// The task: the requested one, else decided at the start (CSV/TSV, or a separator), else
    /// by the first JSON Lines row.
    private(set) var problemType: ProblemType?
    /// Whether the first JSON Lines row decides the task (none was asked for, no separator).
    private let infersFromFirstRow: Bool
    // .fromData: the distinct labels seen so far, their integer values and first lines.
    private var indexOfLabel: [[UInt8]: Int32] = [:]
    private var labels: [[UInt8]] = []
    private var integers: [Int?] = []
    private var firstLines: [Int] = []
    /// JSON Lines: whether the first label (list item) was a string or a number, and its line;
    /// whether the first label was a list, and its line.
    private var jsonKind: (isString: Bool, line: Int)? = nil
    private var jsonShape: (isList: Bool, line: Int)? = nil
    /// Multi-label: the ids of the current row's labels (reused), sorted, without repeats.
    private(set) var rowLabels: [Int32] = []

    init(rule: LabelRule, format: LabelFormat, inferFromFirstRow: Bool) {
        self.rule = rule
        separator = format.separator.map { Array($0.utf8) }
        infersFromFirstRow = inferFromFirstRow && format.problemType == nil && format.separator == nil
        if let requested = format.problemType {
            problemType = requested
        } else if format.separator != nil {
            problemType = .multiLabelClassification
        } else if !inferFromFirstRow {
            problemType = .singleLabelClassification
        }
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

    /// Multi-label: sets `rowLabels` to the ids of `names` (each with its integer value when it
    /// is written as one), sorted, a name given twice counted once. No names: no label.
    mutating func positiveLabels<Names: Sequence>(_ names: Names, line: Int) throws(RowProblem)
    where Names.Element == (bytes: [UInt8], integer: Int?) {
        rowLabels.removeAll(keepingCapacity: true)
        for name in names {
            guard !name.bytes.isEmpty else { throw RowProblem("empty label in a list of labels") }
            rowLabels.append(try id(of: name.bytes, integer: name.integer, line: line))
        }
        rowLabels.sort()
        var kept = 0
        for index in rowLabels.indices where index == 0 || rowLabels[index] != rowLabels[index - 1] {
            rowLabels[kept] = rowLabels[index]
            kept += 1
        }
        rowLabels.removeSubrange(kept...)
    }

    /// Multi-label in one field: the names between separators (spaces around each dropped;
    /// without a separator the field is one name), each with its integer value if it is one.
    /// An empty field has no names; an empty name between separators is a bad row.
    func splitNames(_ field: [UInt8]) throws(RowProblem) -> [(bytes: [UInt8], integer: Int?)] {
        func trimmed(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
            var slice = bytes
            while let first = slice.first, first == 0x20 || first == 0x09 { slice = slice.dropFirst() }
            while let last = slice.last, last == 0x20 || last == 0x09 { slice = slice.dropLast() }
            return Array(slice)
        }
        let whole = trimmed(field[...])
        if whole.isEmpty { return [] }
        var pieces: [[UInt8]] = []
        if let separator, !separator.isEmpty {
            var start = 0, index = 0
            while index + separator.count <= whole.count {
                if whole[index..<index + separator.count].elementsEqual(separator) {
                    pieces.append(trimmed(whole[start..<index]))
                    index += separator.count
                    start = index
                } else {
                    index += 1
                }
            }
            pieces.append(trimmed(whole[start...]))
        } else {
            pieces = [whole]
        }
        if pieces.contains(where: \.isEmpty) {
            throw RowProblem("empty label in \"\(shown(field))\" (labels separated by \"\(shown(separator ?? []))\")")
        }
        return pieces.map { ($0, parseLabelInteger($0)) }
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

    /// JSON Lines only: decides the task from the first row's label when it is inferred (a list:
    /// multi-label), and refuses a list after labels that are not (or the other way round).
    mutating func checkJSONShape(isList: Bool, line: Int) throws(RowProblem) {
        guard infersFromFirstRow else { return }  // the task's own checks say what is wrong
        if problemType == nil { problemType = isList ? .multiLabelClassification : .singleLabelClassification }
        if let shape = jsonShape, shape.isList != isList {
            throw RowProblem("label is \(isList ? "a list" : "not a list"), but the label on line \(shape.line) is \(shape.isList ? "a list" : "not a list"); write every label the same way")
        }
        if jsonShape == nil { jsonShape = (isList, line) }
    }

    /// Regression: the number a field holds (as Python's float() reads it, spaces around it
    /// allowed), as a float32 target.
    func value(of field: [UInt8]) throws(RowProblem) -> Float {
        if field.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { throw RowProblem("empty label") }
        guard let value = parseDecimal(field) else {
            throw RowProblem("label \"\(shown(field))\" is not a number (regression needs a number per row)")
        }
        return try finiteTarget(value, written: field)
    }

    /// A regression target that float32 holds (finite).
    func finiteTarget(_ value: Double, written: [UInt8]) throws(RowProblem) -> Float {
        let target = Float(value)
        guard target.isFinite else { throw RowProblem("label \(shown(written)) is too large for a regression target (float32)") }
        return target
    }

    /// The label set and the final id of each distinct label (nil: the ids are final already).
    func finish(path: String) throws -> (LabelSet, [Int32]?) {
        if problemType == .regression { return (.regression, nil) }
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
            try refuseNumbersWithFractions(path: path)
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
        if distinct == 0 {  // multi-label lists, every one empty
            throw DataError("\(path): no row has a label; a classifier needs at least 2 labels")
        }
        guard distinct >= 2 else {
            let only = labels.first.map { " (\"\(shown($0))\")" } ?? ""
            throw DataError("\(path): every row has the same label\(only); a classifier needs at least 2 labels")
        }
    }

    /// Labels from the data that are all numbers, some with a fraction ("3.8"), are regression
    /// targets read as class names far more often than classes: refused, naming the way out.
    private func refuseNumbersWithFractions(path: String) throws {
        guard labels.allSatisfy({ parseDecimal($0) != nil }),
              let first = labels.indices.filter({ labels[$0].contains { $0 == 0x2E || $0 == 0x65 || $0 == 0x45 } })
                  .min(by: { firstLines[$0] < firstLines[$1] }) else { return }
        throw DataError("\(path):\(firstLines[first]): label \"\(shown(labels[first]))\" is a number with a fraction, and every label of the file is a number: for regression give --problem-type regression; to train a classifier on these labels, name them with --labels")
    }
}

/// A decimal number as Python's float() reads one: spaces around it, a sign, digits with an
/// optional point, an optional exponent ("3", "-0.5", ".5", "1e-3"); nil for anything else,
/// including nan and inf (no regression target) and Swift's hexadecimal floats.
func parseDecimal<Bytes: Collection>(_ bytes: Bytes) -> Double? where Bytes.Element == UInt8 {
    var slice = Array(bytes)[...]
    while let first = slice.first, first == 0x20 || first == 0x09 { slice = slice.dropFirst() }
    while let last = slice.last, last == 0x20 || last == 0x09 { slice = slice.dropLast() }
    var index = slice.startIndex
    func digits() -> Int {
        let start = index
        while index < slice.endIndex && slice[index] >= 0x30 && slice[index] <= 0x39 { index += 1 }
        return index - start
    }
    if index < slice.endIndex && (slice[index] == 0x2B || slice[index] == 0x2D) { index += 1 }
    var mantissaDigits = digits()
    if index < slice.endIndex && slice[index] == 0x2E {
        index += 1
        mantissaDigits += digits()
    }
    guard mantissaDigits > 0 else { return nil }
    if index < slice.endIndex && (slice[index] == 0x65 || slice[index] == 0x45) {
        index += 1
        if index < slice.endIndex && (slice[index] == 0x2B || slice[index] == 0x2D) { index += 1 }
        guard digits() > 0 else { return nil }
    }
    guard index == slice.endIndex, let value = Double(String(decoding: slice, as: UTF8.self)), value.isFinite else { return nil }
    return value
}

/// What is wrong with one row (the reader adds the file and line).
struct RowProblem: Error {
    let reason: String
    init(_ reason: String) { self.reason = reason }
}

/// A label or value for a message: at most 60 characters, then "...".
func shown(_ bytes: [UInt8]) -> String {
    // Control characters escaped, so that a message quoting a label stays one line.
    let text = String(decoding: bytes, as: UTF8.self).unicodeScalars
        .map { $0.value < 0x20 || $0.value == 0x7f ? $0.escaped(asASCII: true) : String($0) }.joined()
    return text.count <= 60 ? text : String(text.prefix(57)) + "..."
}
