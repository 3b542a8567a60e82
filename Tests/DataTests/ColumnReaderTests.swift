import Foundation
import Testing

@testable import Data

/// Header CSV, TSV and JSON Lines with named columns, text pairs and label sets.
@Suite struct ColumnReaderTests {
    @Test func headerCSVWithPairsAndStringLabels() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let url = try folder.file("train.csv", """
            id,sentence1,sentence2,label
            1,"The cat sat.","A cat, sitting.",entailment

            2,"Multi
            line",,not_entailment
            3,x, y,entailment

            """)
        let format = try DataFormat(of: url, columns: DataColumns(text: "sentence1", textPair: "sentence2"))
        #expect(format == .csv(DataColumns(text: "sentence1", textPair: "sentence2", label: "label")))
        let texts = try LabeledTexts.read(url, format: format)
        #expect(texts.count == 3 && texts.hasPairs)
        #expect((0..<3).map { texts.text(at: $0) } == ["The cat sat.", "Multi\nline", "x"])
        #expect((0..<3).map { texts.pair(at: $0) } == ["A cat, sitting.", "", " y"])  // kept as written (pandas)
        #expect(texts.labelSet.names == ["entailment", "not_entailment"])
        #expect(texts.labels == [0, 1, 0])
        #expect(texts.lineNumbers == [2, 4, 6])
        #expect(texts.labelCounts == [2, 1])
        texts.withPairBytes(at: 0) { first, second in
            #expect(String(decoding: first, as: UTF8.self) == "The cat sat." && String(decoding: second, as: UTF8.self) == "A cat, sitting.")
        }
    }

    @Test func tsvHasNoQuotingAndIntegerLabelsAreIds() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let url = try folder.file("data.tsv", "label\ttext\tother\r\n2\tgood \"quoted\" movie\t1\r\n0\tbad, really\t2\r\n5\t\t3\r\n")
        let texts = try LabeledTexts.read(url)
        #expect(texts.format == .tsv(DataColumns()))
        #expect(!texts.hasPairs && texts.pair(at: 0) == nil)
        #expect((0..<3).map { texts.text(at: $0) } == ["good \"quoted\" movie", "bad, really", ""])
        // Integer labels are the ids 0...max, named "0", "1", ...: label 5 makes six classes.
        #expect(texts.labelSet.names == ["0", "1", "2", "3", "4", "5"])
        #expect(texts.labels == [2, 0, 5])
    }

    @Test func jsonLinesWithPairKeysAndSevenLabels() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let rows = (0..<14).map { #"{"premise": "p\#($0)", "hypothesis": "h\#($0)", "id": \#($0), "class": \#(($0 * 3) % 7)}"# }
        let url = try folder.file("train.jsonl", rows.joined(separator: "\n"))
        let texts = try LabeledTexts.read(url, format: .jsonLines(DataColumns(text: "premise", textPair: "hypothesis", label: "class")))
        #expect(texts.count == 14 && texts.hasPairs)
        #expect(texts.labelSet.names == (0..<7).map(String.init))
        #expect(texts.labels == (0..<14).map { Int32(($0 * 3) % 7) })
        #expect(texts.text(at: 13) == "p13" && texts.pair(at: 13) == "h13")
        let missing = try folder.file("missing.jsonl", #"{"premise": "p", "class": 1}"#)
        #expect(dataErrorMessage {
            _ = try LabeledTexts.read(missing, format: .jsonLines(DataColumns(text: "premise", textPair: "hypothesis", label: "class")))
        } == "\(missing.path):1: missing \"hypothesis\"")
    }

    static let labelOrders: [(labels: [String], names: [String], ids: [Int32])] = [
        // Strings sort by code point, as Python sorts them (run_classification's label_list.sort()).
        (["b", "B", "a", "é", "Z", "a"], ["B", "Z", "a", "b", "é"], [3, 0, 2, 4, 1, 2]),
        // Not all integers: all are names, sorted as strings ("10" before "2").
        (["10", "2", "pos"], ["10", "2", "pos"], [0, 1, 2]),
        // A negative integer: names too (HF keeps "-1" as a label of its own).
        (["1", "-1", "1"], ["-1", "1"], [1, 0, 1]),
        // Integers: the ids themselves, whatever their order.
        (["3", "1", "3"], ["0", "1", "2", "3"], [3, 1, 3]),
    ]

    @Test(arguments: 0..<labelOrders.count)
    func labelsFromTheDataFollowRunClassification(case index: Int) throws {
        let (labels, names, ids) = Self.labelOrders[index]
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let csv = try folder.file("data.csv", "text,label\n" + labels.enumerated().map { "t\($0.offset),\($0.element)" }.joined(separator: "\n"))
        let texts = try LabeledTexts.read(csv, format: .csv(DataColumns()))
        #expect(texts.labelSet.names == names)
        #expect(texts.labels == ids)
    }

    @Test func jsonIntegerAndStringLabels() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let strings = try folder.file("s.jsonl", #"{"text": "a", "label": "pos"}"# + "\n" + #"{"text": "b", "label": "neg"}"#)
        let texts = try LabeledTexts.read(strings)
        #expect(texts.labelSet.names == ["neg", "pos"] && texts.labels == [1, 0])
        // JSON strings that look like numbers are names.
        let numeric = try folder.file("n.jsonl", #"{"text": "a", "label": "2"}"# + "\n" + #"{"text": "b", "label": "10"}"#)
        #expect(try LabeledTexts.read(numeric).labelSet.names == ["10", "2"])
    }

    @Test func fixedLabelsGiveNamesAndOrder() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let url = try folder.file("data.jsonl", [#"{"text": "a", "label": "neg"}"#, #"{"text": "b", "label": "pos"}"#,
                                                 #"{"text": "c", "label": "neutral"}"#, #"{"text": "d", "label": "pos"}"#].joined(separator: "\n"))
        let labels = try LabelSet(list: "pos, neg")
        #expect(labels.names == ["pos", "neg"] && labels.id(of: "neg") == 1 && labels.id(of: "x") == nil)
        #expect(dataErrorMessage { _ = try LabeledTexts.read(url, labels: .fixed(labels)) }
                == "\(url.path):3: label \"neutral\" is not one of the 2 labels of --labels (pos, neg)")
        let skipped = try LabeledTexts.read(url, labels: .fixed(labels), skipBadRows: true)
        #expect(skipped.labels == [1, 0, 0] && skipped.skippedRowCount == 1 && skipped.labelSet == labels)
        // Only one label in the data is fine when the set is given (an evaluation file).
        let one = try folder.file("one.jsonl", #"{"text": "a", "label": "neg"}"#)
        #expect(try LabeledTexts.read(one, labels: .fixed(labels)).labels == [1])
    }

    @Test func integerLabelsMatchHuggingFacesDefaultNames() throws {
        // A checkpoint whose config has HF's default names LABEL_0.. reads integer labels as ids.
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let url = try folder.file("eval.jsonl", #"{"text": "a", "label": 2}"# + "\n" + #"{"text": "b", "label": 0}"#)
        let defaults = try LabelSet(names: LabelSet.defaultNames(count: 3), origin: "config.json")
        #expect(try LabeledTexts.read(url, labels: .fixed(defaults)).labels == [2, 0])
        let strings = try folder.file("eval2.jsonl", #"{"text": "a", "label": "2"}"#)
        #expect(dataErrorMessage { _ = try LabeledTexts.read(strings, labels: .fixed(defaults)) }.contains("label \"2\" is not one of the 3 labels of config.json"))
    }

    @Test func agNewsPresetMapsToAnotherLabelOrder() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let url = try folder.file("test.csv", "\"1\",\"a\",\"b\"\n\"2\",\"c\",\"d\"\n\"4\",\"e\",\"f\"\n")
        let own = try LabeledTexts.read(url)
        #expect(own.format == .preset(.agNews) && own.labels == [0, 1, 3] && own.labelSet == DataPreset.agNews.labelSet)
        let checkpoint = try LabelSet(names: ["Sports", "World", "Business", "Sci/Tech"], origin: "ckpt/config.json")
        #expect(try LabeledTexts.read(url, labels: .fixed(checkpoint)).labels == [1, 0, 3])
        let partial = try LabelSet(names: ["World", "Sports"], origin: "ckpt/config.json")
        #expect(dataErrorMessage { _ = try LabeledTexts.read(url, labels: .fixed(partial)) }
                == "\(url.path):3: label \"Sci/Tech\" (class index 4) is not one of the 2 labels of ckpt/config.json (World, Sports)")
    }

    static let headerErrors: [(file: String, contents: String, columns: DataColumns, message: String)] = [
        ("a.csv", "label,sentence\n1,x\n", DataColumns(),
         ":1: no column \"text\" (the text column) in the header; its columns are \"label\", \"sentence\""),
        ("b.tsv", "text\tsentiment\nx\t1\n", DataColumns(),
         ":1: no column \"label\" (the label column) in the header; its columns are \"text\", \"sentiment\""),
        ("c.csv", "text,label\nx,1\n", DataColumns(textPair: "second"),
         ":1: no column \"second\" (the text pair column) in the header; its columns are \"text\", \"label\""),
        ("d.csv", "text,label,text\nx,1,y\n", DataColumns(),
         ":1: the header has 2 columns named \"text\" (the text column); name each column once"),
        ("e.csv", "\n\"text,label\nx,1\n", DataColumns(),
         ":2: unterminated quoted field in column 1 (a quote opened here is never closed) (in the header row)"),
    ]

    @Test(arguments: 0..<headerErrors.count)
    func headerErrorsNameTheFileLineAndColumns(case index: Int) throws {
        let (name, contents, columns, message) = Self.headerErrors[index]
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let url = try folder.file(name, contents)
        let format = try DataFormat(of: url, columns: columns)
        #expect(dataErrorMessage { _ = try LabeledTexts.read(url, format: format) } == url.path + message)
        // A bad header is never skipped.
        #expect(dataErrorMessage { _ = try LabeledTexts.read(url, format: format, skipBadRows: true) } == url.path + message)
    }

    static let rowErrors: [(row: String, reason: String)] = [
        ("x,", "empty label"),
        ("x", "expected 2 columns as in the header (line 1), found 1"),
        ("x,1,extra", "expected 2 columns as in the header (line 1), found 3"),
        ("\"x\" y,1", "unexpected text after the closing quote of column 1"),
    ]

    @Test(arguments: 0..<rowErrors.count)
    func rowErrorsNameTheFileAndLine(case index: Int) throws {
        let (row, reason) = Self.rowErrors[index]
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let url = try folder.file("data.csv", "text,label\ngood,pos\nfine,neg\n\(row)\nlast,pos\n")
        let format = DataFormat.csv(DataColumns())
        let message = dataErrorMessage { _ = try LabeledTexts.read(url, format: format) }
        #expect(message.hasPrefix("\(url.path):4: \(reason)"), "\(message)")
        let skipped = try LabeledTexts.read(url, format: format, skipBadRows: true)
        #expect(skipped.count == 3 && skipped.skippedRowCount == 1 && skipped.lineNumbers == [2, 3, 5])
    }

    @Test func fileLevelLabelErrors() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let one = try folder.file("one.jsonl", #"{"text": "a", "label": "pos"}"# + "\n" + #"{"text": "b", "label": "pos"}"#)
        #expect(dataErrorMessage { _ = try LabeledTexts.read(one) }
                == "\(one.path): every row has the same label (\"pos\"); a classifier needs at least 2 labels")
        let zeros = try folder.file("zeros.tsv", "text\tlabel\na\t0\nb\t00\n")
        #expect(dataErrorMessage { _ = try LabeledTexts.read(zeros) }.contains("every row has the same label"))
        let huge = try folder.file("huge.csv", "text,label\na,0\nb,123456789\n")
        #expect(dataErrorMessage { _ = try LabeledTexts.read(huge, format: .csv(DataColumns())) }
                .hasPrefix("\(huge.path):3: label 123456789 is too large for a class id"))
        let headerOnly = try folder.file("header.csv", "text,label\n\n")
        #expect(dataErrorMessage { _ = try LabeledTexts.read(headerOnly, format: .csv(DataColumns())) }
                == "\(headerOnly.path): the file has no rows (it is empty or blank after its header)")
    }

    @Test func labelSetChecksItsNames() throws {
        #expect(dataErrorMessage { _ = try LabelSet(list: "only") } == "--labels: a classifier needs at least 2 labels, found 1 (only)")
        #expect(dataErrorMessage { _ = try LabelSet(list: "a,b,a") } == "--labels: the label \"a\" is given twice")
        #expect(dataErrorMessage { _ = try LabelSet(list: "a,,b") } == "--labels: label 2 of 3 is empty")
        #expect(dataErrorMessage { _ = try LabelSet(names: [], origin: "x/config.json") } == "x/config.json: a classifier needs at least 2 labels, found 0")
        // Names are compared as UTF-8 bytes; a precomposed and a decomposed "é" are refused
        // (config.json's label2id keys could not keep them apart), naming both encodings.
        let accents = dataErrorMessage { _ = try LabelSet(names: ["\u{E9}", "x", "e\u{301}"], origin: "test") }
        #expect(accents.hasPrefix("test: the labels \"\u{E9}\" and \"e\u{301}\" differ only in how their characters are encoded")
                && accents.contains("U+00E9 against U+0065 U+0301"), "\(accents)")
        let fromData = dataErrorMessage {
            _ = try LabeledTexts.parse(Array("{\"text\": \"a\", \"label\": \"\u{E9}\"}\n{\"text\": \"b\", \"label\": \"e\u{301}\"}\n".utf8),
                                       format: .jsonLines(DataColumns()), source: URL(fileURLWithPath: "/d/x.jsonl"))
        }
        #expect(fromData.hasPrefix("/d/x.jsonl: the labels"), "\(fromData)")
        let bytes = try LabelSet(names: ["e", "E"], origin: "test")  // case differs: two labels
        #expect(bytes.id(of: "E") == 1)
        #expect(LabelSet.defaultNames(count: 2) == ["LABEL_0", "LABEL_1"])
    }

    @Test func formatByExtension() throws {
        let base = URL(fileURLWithPath: "/data")
        #expect(try DataFormat(of: base.appendingPathComponent("a.csv")) == .preset(.agNews))
        #expect(try DataFormat(of: base.appendingPathComponent("a.CSV"), columns: DataColumns(label: "y")) == .csv(DataColumns(label: "y")))
        #expect(try DataFormat(of: base.appendingPathComponent("a.tsv")) == .tsv(DataColumns()))
        #expect(try DataFormat(of: base.appendingPathComponent("a.jsonl")) == .jsonLines(DataColumns()))
        #expect(try DataFormat(of: base.appendingPathComponent("a.ndjson"), columns: DataColumns(textPair: "b")).hasPairs)
        #expect(dataErrorMessage { _ = try DataFormat(of: base.appendingPathComponent("a.txt")) }.contains("unknown data format \"txt\""))
    }
}
