import Foundation

/// The labelled texts (or text pairs) of one data file, in file order, stored flat: all texts'
/// UTF-8 back to back plus offsets, so that 120,000 rows are a few arrays, not 120,000 strings.
///
/// The file's `DataFormat` says how its rows are written, its `LabelRule` where the label set
/// comes from, its `LabelFormat` what the labels are (the task). A malformed row stops reading
/// with `FILE:LINE: reason`, or with `skipBadRows` is left out and counted. Blank lines are skipped.
///
/// The targets, by task: `labels` (single-label), `positiveLabels` with `positiveLabelEnds`
/// (multi-label), `values` (regression); the arrays of the other tasks are empty.
public struct LabeledTexts: Sendable {
    public let source: URL
    public let format: DataFormat
    /// UTF-8 of every text, back to back.
    public private(set) var textBytes: [UInt8] = []
    /// Text i is `textBytes[textOffsets[i] ..< textOffsets[i + 1]]`.                  (count + 1)
    public private(set) var textOffsets: [Int] = [0]
    /// The second texts of pairs, likewise (empty when the format has no pair column).
    public private(set) var pairBytes: [UInt8] = []
    public private(set) var pairOffsets: [Int] = [0]                                 // (count + 1) with pairs
    /// What the labels are.
    public private(set) var problemType: ProblemType = .singleLabelClassification
    /// Single-label: label ids, indices into `labelSet.names`.                         (count)
    public private(set) var labels: [Int32] = []
    /// Multi-label: the label ids of example i are `positiveLabels[positiveLabelEnds[i - 1] ..<
    /// positiveLabelEnds[i]]` (from 0 for i = 0), increasing.                            (count)
    public private(set) var positiveLabelEnds: [Int] = []
    public private(set) var positiveLabels: [Int32] = []
    /// Regression: the target of each example.                                         (count)
    public private(set) var values: [Float] = []
    /// The labels' names (regression: `LabelSet.regression`, its one output).
    public private(set) var labelSet: LabelSet
    /// Line of the file where each example starts (1-based).                           (count)
    public private(set) var lineNumbers: [Int32] = []
    /// Rows left out because of `skipBadRows`, and the errors of the first few of them.
    public private(set) var skippedRowCount = 0
    public private(set) var skippedRowErrors: [String] = []

    public var count: Int { lineNumbers.count }
    public var hasPairs: Bool { format.hasPairs }

    init(source: URL, format: DataFormat) {
        self.source = source
        self.format = format
        labelSet = LabelSet(checkedNames: [], origin: source.path)  // set by parse
    }

    public func text(at index: Int) -> String {
        String(decoding: textBytes[textOffsets[index]..<textOffsets[index + 1]], as: UTF8.self)
    }

    /// The second text of pair `index` (nil without pairs).
    public func pair(at index: Int) -> String? {
        hasPairs ? String(decoding: pairBytes[pairOffsets[index]..<pairOffsets[index + 1]], as: UTF8.self) : nil
    }

    public func withTextBytes<Result>(at index: Int, _ body: (UnsafeBufferPointer<UInt8>) throws -> Result) rethrows -> Result {
        try textBytes.withUnsafeBufferPointer { all in
            try body(UnsafeBufferPointer(rebasing: all[textOffsets[index]..<textOffsets[index + 1]]))
        }
    }

    /// Calls `body` with the UTF-8 of the text and of the second text (empty without pairs).
    public func withPairBytes<Result>(at index: Int, _ body: (UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt8>) throws -> Result) rethrows -> Result {
        try textBytes.withUnsafeBufferPointer { texts in
            try pairBytes.withUnsafeBufferPointer { pairs in
                let second = hasPairs ? UnsafeBufferPointer(rebasing: pairs[pairOffsets[index]..<pairOffsets[index + 1]])
                                      : UnsafeBufferPointer(rebasing: pairs[0..<0])
                return try body(UnsafeBufferPointer(rebasing: texts[textOffsets[index]..<textOffsets[index + 1]]), second)
            }
        }
    }

    /// Multi-label: the label ids of example `index`.
    public func positiveLabels(at index: Int) -> ArraySlice<Int32> {
        positiveLabels[(index == 0 ? 0 : positiveLabelEnds[index - 1])..<positiveLabelEnds[index]]
    }

    /// How many examples have each label (multi-label: are positive for it); regression: empty.   (labelSet.count)
    public var labelCounts: [Int] {
        if problemType == .regression { return [] }
        var counts = [Int](repeating: 0, count: labelSet.count)
        for label in problemType == .multiLabelClassification ? positiveLabels : labels { counts[Int(label)] += 1 }
        return counts
    }

    /// Reads a data file: its format from its extension unless given (see `DataFormat(of:columns:)`).
    /// `readsLabels` false: the texts alone (predict, the bench); the label column or key may be
    /// absent and is not read, every row has class 0 of `LabelSet.unread`.
    public static func read(_ url: URL, format: DataFormat? = nil, labels: LabelRule = .fromData,
                            labelFormat: LabelFormat = .singleLabel, skipBadRows: Bool = false,
                            readsLabels: Bool = true) throws -> LabeledTexts {
        let format = try format ?? DataFormat(of: url)
        return try parse(readDataFile(url), format: format, labels: labels, labelFormat: labelFormat, source: url,
                         skipBadRows: skipBadRows, readsLabels: readsLabels)
    }

    /// Parses the bytes of a data file (see `read`); `source` names the file in errors.
    public static func parse(_ bytes: [UInt8], format: DataFormat, labels rule: LabelRule = .fromData,
                             labelFormat: LabelFormat = .singleLabel, source url: URL,
                             skipBadRows: Bool = false, readsLabels: Bool = true) throws -> LabeledTexts {
        if let problem = labelFormat.problem { throw DataError("\(url.path): \(problem)") }
        var result = LabeledTexts(source: url, format: format)
        result.textBytes.reserveCapacity(bytes.count)
        var reader = try RowReader(path: url.path, format: format, labels: rule,
                                   labelFormat: readsLabels ? labelFormat : .singleLabel, skipBadRows: skipBadRows)
        reader.readsLabels = readsLabels
        try bytes.withUnsafeBufferPointer { input in
            switch format {
            case .preset, .csv, .tsv: try reader.readDelimited(input, into: &result)
            case .jsonLines: try reader.readJSONLines(input, into: &result)
            }
        }
        if result.count == 0 {
            if result.skippedRowCount > 0 {
                throw DataError("\(url.path): all \(result.skippedRowCount) rows are malformed; the first: \(result.skippedRowErrors.first ?? "")")
            }
            throw DataError("\(url.path): the file has no rows (it is empty or blank\(reader.headerLine != nil ? " after its header" : ""))")
        }
        guard result.positiveLabels.count < Int(Int32.max) else {
            throw DataError("\(url.path): \(result.positiveLabels.count) labels in all, more than a token cache holds (2^31 - 1)")
        }
        let (labelSet, finalIds) = readsLabels ? try reader.finishLabels() : (LabelSet.unread, nil)
        result.labelSet = labelSet
        result.problemType = reader.labels.problemType ?? .singleLabelClassification
        if let finalIds {
            for index in result.labels.indices { result.labels[index] = finalIds[Int(result.labels[index])] }
            for index in result.positiveLabels.indices { result.positiveLabels[index] = finalIds[Int(result.positiveLabels[index])] }
            // The final ids are in another order than the provisional ones: each example's increasing again.
            var start = 0
            for end in result.positiveLabelEnds {
                result.positiveLabels[start..<end].sort()
                start = end
            }
        }
        return result
    }

    /// A single-label example.
    mutating func append(text: UnsafeBufferPointer<UInt8>, pair: UnsafeBufferPointer<UInt8>?, label: Int32, line: Int) {
        append(text: text, pair: pair, target: .label(label), line: line)
    }

    /// An example of any task.
    mutating func append(text: UnsafeBufferPointer<UInt8>, pair: UnsafeBufferPointer<UInt8>?, target: RowTarget, line: Int) {
        switch target {
        case .label(let label): labels.append(label)
        case .positives(let positives):
            positiveLabels.append(contentsOf: positives)
            positiveLabelEnds.append(positiveLabels.count)
        case .value(let value): values.append(value)
        }
        textBytes.append(contentsOf: text)
        textOffsets.append(textBytes.count)
        if let pair {
            pairBytes.append(contentsOf: pair)
            pairOffsets.append(pairBytes.count)
        }
        lineNumbers.append(Int32(clamping: line))
    }

    mutating func recordSkipped(_ message: String) {
        skippedRowCount += 1
        if skippedRowErrors.count < 5 { skippedRowErrors.append(message) }
    }
}

/// What one row's label is, by task.
enum RowTarget {
    /// Single-label: the class id.
    case label(Int32)
    /// Multi-label: the class ids, increasing, no repeats (possibly none).
    case positives([Int32])
    /// Regression: the number.
    case value(Float)
}

func readDataFile(_ url: URL) throws -> [UInt8] {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
        throw DataError("\(url.path): no such file")
    }
    if isDirectory.boolValue {
        throw DataError("\(url.path): is a folder, expected a data file (.csv, .tsv or .jsonl)")
    }
    do {
        return [UInt8](try Data(contentsOf: url))
    } catch {
        throw DataError("\(url.path): cannot read (\(describeFileError(error)))")
    }
}

/// Reads the rows of one file into `LabeledTexts` (CSV/TSV in DelimitedRows.swift, JSON Lines in
/// JSONLines.swift): what is common to the formats.
struct RowReader {
    let path: String
    let format: DataFormat
    let skipBadRows: Bool
    var labels: LabelCollector
    /// false: the label column (key) is neither required nor read; every row gets class 0.
    var readsLabels = true
    var fields: [[UInt8]] = []   // fields of the current CSV/TSV record (reused)
    var text: [UInt8] = []       // text of the current row (reused)
    /// CSV and TSV with a header: its line, and the columns of text, pair and label.
    var headerLine: Int? = nil
    var columnCount = 0
    var textColumn = 0
    var pairColumn: Int? = nil
    var labelColumn = 0
    /// A preset's class indices (0-based) to label ids; nil where the rule's fixed set lacks the name.
    let presetLabelIds: [Int32?]
    // How fields are separated: comma or tab; whether quotes are special; whether spaces after a
    // separator are skipped (the ag_news loader's skipinitialspace).
    let delimiter: UInt8
    let quoting: Bool
    let skipInitialSpace: Bool

    init(path: String, format: DataFormat, labels rule: LabelRule, labelFormat: LabelFormat, skipBadRows: Bool) throws {
        self.path = path
        self.format = format
        self.skipBadRows = skipBadRows
        if case .preset(let preset) = format, labelFormat.separator != nil || (labelFormat.problemType ?? .singleLabelClassification) != .singleLabelClassification {
            throw DataError("\(path): the \(preset.name) layout has one class per row (single-label); for another task give a header row and name the columns (--text-column, --label-column)")
        }
        var isJSONLines = false
        if case .jsonLines = format { isJSONLines = true }
        labels = LabelCollector(rule: rule, format: labelFormat, inferFromFirstRow: isJSONLines)
        delimiter = { if case .tsv = format { return 0x09 } else { return 0x2C } }()
        quoting = { if case .tsv = format { return false } else { return true } }()
        skipInitialSpace = { if case .preset = format { return true } else { return false } }()
        if case .preset(let preset) = format {
            switch rule {
            case .fromData: presetLabelIds = preset.labelNames.indices.map { Int32($0) }
            case .fixed(let set):
                presetLabelIds = preset.labelNames.enumerated().map { set.id(ofLabel: Array($0.element.utf8), integer: $0.offset) }
            }
        } else {
            presetLabelIds = []
        }
    }

    mutating func fail(line: Int, _ reason: String, _ result: inout LabeledTexts) throws {
        let message = "\(path):\(line): \(reason)"
        if !skipBadRows { throw DataError(message) }
        result.recordSkipped(message)
    }

    func finishLabels() throws -> (LabelSet, [Int32]?) {
        if case .preset(let preset) = format, case .fromData = labels.rule {
            return (preset.labelSet, nil)
        }
        return try labels.finish(path: path)
    }

    /// The target of a row whose label field (CSV, TSV) is `field`, read for the file's task.
    mutating func target(ofField field: [UInt8], line: Int) throws(RowProblem) -> RowTarget {
        switch labels.problemType ?? .singleLabelClassification {
        case .singleLabelClassification:
            return .label(try labels.id(of: field, integer: parseLabelInteger(field), line: line))
        case .multiLabelClassification:
            try labels.positiveLabels(try labels.splitNames(field), line: line)
            return .positives(labels.rowLabels)
        case .regression:
            return .value(try labels.value(of: field))
        }
    }
}
