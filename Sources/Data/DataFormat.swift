import Foundation

/// Which columns (CSV and TSV with a header row) or keys (JSON Lines) hold an example's text, its
/// optional second text (sentence pairs: `[CLS] text [SEP] textPair [SEP]`) and its label.
/// Other columns are ignored.
public struct DataColumns: Sendable, Hashable {
    public var text: String
    public var textPair: String?
    public var label: String

    public init(text: String = "text", textPair: String? = nil, label: String = "label") {
        self.text = text
        self.textPair = textPair
        self.label = label
    }
}

/// The fixed layout of a known headerless CSV: which column holds the class index, which columns
/// are joined (with one space) into the text, and the names of the classes.
public struct DataPreset: Sendable, Hashable {
    /// For messages: "AG News".
    public let name: String
    /// What each column holds, in order (for messages).
    public let columnNames: [String]
    public let labelColumn: Int
    public let textColumns: [Int]
    /// The class index of the first label name (1: indices 1...count name labels 0..<count).
    public let firstClassIndex: Int
    public let labelNames: [String]

    public init(name: String, columnNames: [String], labelColumn: Int, textColumns: [Int], firstClassIndex: Int,
                labelNames: [String]) {
        precondition(labelColumn < columnNames.count && textColumns.allSatisfy { $0 < columnNames.count })
        self.name = name
        self.columnNames = columnNames
        self.labelColumn = labelColumn
        self.textColumns = textColumns
        self.firstClassIndex = firstClassIndex
        self.labelNames = labelNames
    }

    /// AG News as distributed (and as the HF `datasets` ag_news loader reads it): no header, three
    /// quoted columns "class index 1-4","title","description"; text = title + " " + description.
    public static let agNews = DataPreset(
        name: "AG News", columnNames: ["class index", "title", "description"], labelColumn: 0, textColumns: [1, 2],
        firstClassIndex: 1, labelNames: ["World", "Sports", "Business", "Sci/Tech"])

    /// The preset's labels, in class index order.
    public var labelSet: LabelSet { LabelSet(checkedNames: labelNames, origin: "the \(name) preset") }
}

/// How the rows of a data file are written.
///
/// - `.preset`: a headerless CSV with a preset's fixed columns (RFC 4180 quoting; spaces right
///   after a comma skipped, as the HF ag_news loader does).
/// - `.csv`: a header row naming the columns, then rows; RFC 4180 quoting (`""` is a quote; commas
///   and line breaks may appear inside quotes), fields kept exactly as written (as pandas, which
///   HF `datasets` uses, reads them).
/// - `.tsv`: a header row, then one row per line, fields split at tabs; quotes are ordinary
///   characters (as GLUE's .tsv files are written, and read by HF's glue loader).
/// - `.jsonLines`: one JSON object per line; text and text pair must be strings, the label a
///   string or an integer.
/// In every format a line break inside a field becomes "\n" and blank lines are skipped.
public enum DataFormat: Sendable, Hashable {
    case preset(DataPreset)
    case csv(DataColumns)
    case tsv(DataColumns)
    case jsonLines(DataColumns)

    /// The format of `url` by its extension: `.csv` is AG News when `columns` is nil (no column
    /// option given) and a header CSV otherwise; `.tsv` and `.jsonl` (`.json`, `.ndjson`) use
    /// `columns` or the default names (`text`, `label`).
    public init(of url: URL, columns: DataColumns? = nil) throws {
        switch url.pathExtension.lowercased() {
        case "csv": self = columns.map { .csv($0) } ?? .preset(.agNews)
        case "tsv": self = .tsv(columns ?? DataColumns())
        case "jsonl", "json", "ndjson": self = .jsonLines(columns ?? DataColumns())
        default:
            throw DataError("\(url.path): unknown data format \"\(url.pathExtension)\"; use .csv (AG News, or with a header row when a column is named), .tsv (header row) or .jsonl (one {\"text\": ..., \"label\": ...} per line)")
        }
    }

    public var columns: DataColumns? {
        switch self {
        case .preset: return nil
        case .csv(let columns), .tsv(let columns), .jsonLines(let columns): return columns
        }
    }

    /// Whether examples are text pairs.
    public var hasPairs: Bool { columns?.textPair != nil }

    /// Everything that decides how rows are read, for cache keys.
    var fingerprintText: String {
        func describe(_ columns: DataColumns) -> String {
            "text=\(columns.text.utf8.count):\(columns.text) pair=\(columns.textPair.map { "\($0.utf8.count):\($0)" } ?? "-") label=\(columns.label.utf8.count):\(columns.label)"
        }
        switch self {
        case .preset(let preset):
            return "preset \(preset.columnNames.count) label=\(preset.labelColumn) text=\(preset.textColumns) first=\(preset.firstClassIndex) names=\(preset.labelNames.map { "\($0.utf8.count):\($0)" })"
        case .csv(let columns): return "csv " + describe(columns)
        case .tsv(let columns): return "tsv " + describe(columns)
        case .jsonLines(let columns): return "jsonl " + describe(columns)
        }
    }
}
