import ArgumentParser
import Data
import Foundation

/// --max-seq-len: how texts are cut (train, eval, predict, tokenize).
public struct SequenceOptions: ParsableArguments, Sendable {
    @Option(name: .customLong("max-seq-len"), help: "Longest tokenised text, [CLS] and [SEP] included; longer ones are truncated (default: \(SequenceOptions.defaultMaxSequenceLength), or the model's max_position_embeddings when smaller).")
    public var maxSequenceLength: Int?

    /// Without --max-seq-len (capped at the model's positions where there is a model: RunDescription).
    public static let defaultMaxSequenceLength = 128

    public init() {}

    public func validate() throws {
        if let maxSequenceLength, maxSequenceLength < 2 { throw ValidationError("--max-seq-len must leave room for [CLS] and [SEP] (at least 2)") }
    }

    /// Text pairs need room for [CLS], [SEP] and [SEP]; `pairs` names the option that asks for them.
    public func validate(pairs option: String) throws {
        if let maxSequenceLength, maxSequenceLength < 3 {
            throw ValidationError("--max-seq-len must leave room for [CLS] A [SEP] B [SEP] with \(option) (at least 3)")
        }
    }
}

/// Which columns (header CSV, TSV) or keys (JSON Lines) hold the text, a second text and the
/// label (train, eval, bench --data). Naming any of them makes a .csv a header CSV.
public struct ColumnOptions: ParsableArguments, Sendable {
    @Option(help: "Column (header CSV/TSV) or key (JSONL) of the text (default: text). Any column option makes a .csv a CSV with a header row instead of AG News.")
    public var textColumn: String?
    @Option(help: "Column or key of a second text: examples become text pairs, [CLS] text [SEP] pair [SEP] with token types 0 then 1 (RoBERTa, XLM-R, CamemBERT: <s> text </s></s> pair </s>).")
    public var textPairColumn: String?
    @Option(help: "Column or key of the label, an integer or a string (default: label).")
    public var labelColumn: String?

    public init() {}

    public func validate() throws {
        let given = [("--text-column", textColumn), ("--text-pair-column", textPairColumn), ("--label-column", labelColumn)]
            .compactMap { name, value in value.map { (name, $0) } }
        for (name, value) in given where value.isEmpty { throw ValidationError("\(name) must name a column") }
        for (index, first) in given.enumerated() {
            for second in given[(index + 1)...] where first.1 == second.1 {
                throw ValidationError("\(first.0) and \(second.0) name the same column \"\(first.1)\"")
            }
        }
    }

    /// nil when no column option is given (a .csv is then AG News).
    public var columns: DataColumns? {
        guard textColumn != nil || textPairColumn != nil || labelColumn != nil else { return nil }
        return DataColumns(text: textColumn ?? "text", textPair: textPairColumn, label: labelColumn ?? "label")
    }
}

/// How labelled data files are read and cached (train, eval).
public struct DataOptions: ParsableArguments, Sendable {
    @OptionGroup public var sequence: SequenceOptions
    @OptionGroup public var columns: ColumnOptions

    @Option(help: ArgumentHelp("Folder for the token caches of data files (default: $XDG_CACHE_HOME/bert-dist, else ~/.cache/bert-dist).", valueName: "dir"))
    public var cacheDir: String?

    @Flag(help: "Skip malformed data rows (and report how many) instead of stopping.")
    public var skipBadRows = false

    public init() {}

    public func validate() throws {
        if columns.textPairColumn != nil { try sequence.validate(pairs: "--text-pair-column") }
    }
}
