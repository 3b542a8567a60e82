import Foundation
import Testing

@testable import Data

/// Multi-label and regression labels in every format, their errors, and their token cache.
@Suite struct TaskLabelTests {
    static let inferred = LabelFormat()
    static let multiLabel = LabelFormat(problemType: .multiLabelClassification)
    static let regression = LabelFormat(problemType: .regression)

    static func positives(_ texts: LabeledTexts) -> [[Int32]] { (0..<texts.count).map { Array(texts.positiveLabels(at: $0)) } }

    @Test func jsonListLabelsAreMultiLabelWithSortedNames() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let url = try folder.file("train.jsonl", """
            {"text": "markets rally", "label": ["business", "long"]}
            {"text": "cup final", "label": ["sports"]}
            {"text": "nothing in particular", "label": []}
            {"text": "a long match report", "label": ["sports", "long", "sports"]}
            {"text": "Business", "label": ["Business"]}
            """)
        let texts = try LabeledTexts.read(url, labelFormat: Self.inferred)
        #expect(texts.problemType == .multiLabelClassification && texts.count == 5)
        // Sorted as HF's run_classification sorts the names of all lists (by bytes: "B" < "b").
        #expect(texts.labelSet.names == ["Business", "business", "long", "sports"])
        #expect(Self.positives(texts) == [[1, 2], [3], [], [2, 3], [0]])  // increasing, a repeated name once
        #expect(texts.labels.isEmpty && texts.values.isEmpty)
        #expect(texts.labelCounts == [1, 1, 2, 2])
        // Read as single-label (the default of the readers until the task is asked for), lists are refused.
        #expect(dataErrorMessage { _ = try LabeledTexts.read(url) }
                == "\(url.path):1: \"label\" is a list of labels (multi-label classification), found [\"business\", \"long\"], but the labels are read as single-label; give --problem-type multi_label_classification, or leave it out")
    }

    @Test func jsonIntegerListsAreIdsAndFixedSetsGiveTheOrder() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let ids = try folder.file("ids.jsonl", #"{"text": "a", "label": [0, 3]}"# + "\n" + #"{"text": "b", "label": [2]}"#)
        let texts = try LabeledTexts.read(ids, labelFormat: Self.inferred)
        #expect(texts.labelSet.names == ["0", "1", "2", "3"] && Self.positives(texts) == [[0, 3], [2]])
        // A checkpoint's HF default names match integer ids; names give their own order.
        let defaults = try LabelSet(names: LabelSet.defaultNames(count: 4), origin: "config.json")
        #expect(Self.positives(try LabeledTexts.read(ids, labels: .fixed(defaults), labelFormat: Self.multiLabel)) == [[0, 3], [2]])
        let names = try folder.file("names.jsonl", #"{"text": "a", "label": ["x", "z"]}"# + "\n" + #"{"text": "b", "label": ["y"]}"#)
        let fixed = try LabelSet(list: "z, y, x, w")
        let read = try LabeledTexts.read(names, labels: .fixed(fixed), labelFormat: Self.inferred)
        #expect(read.labelSet == fixed && Self.positives(read) == [[0, 2], [1]])
        #expect(read.labelCounts == [1, 1, 1, 0])
    }

    @Test func separatedLabelsInCSVAndTSV() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let csv = try folder.file("train.csv", """
            text,topics
            "one, two",politics; sport
            three,
            four,sport
            five," economy ;politics;sport "

            """)
        let format = DataFormat.csv(DataColumns(label: "topics"))
        let texts = try LabeledTexts.read(csv, format: format, labelFormat: LabelFormat(separator: ";"))
        #expect(texts.problemType == .multiLabelClassification)
        #expect(texts.labelSet.names == ["economy", "politics", "sport"])
        #expect(Self.positives(texts) == [[1, 2], [], [2], [0, 1, 2]] && texts.lineNumbers == [2, 3, 4, 5])
        // A separator of several characters, integer ids, a TSV.
        let tsv = try folder.file("train.tsv", "label\ttext\n0||2\ta\n1\tb\n\tc\n")
        let ids = try LabeledTexts.read(tsv, labelFormat: LabelFormat(separator: "||"))
        #expect(ids.labelSet.names == ["0", "1", "2"] && Self.positives(ids) == [[0, 2], [1], []])
        // Multi-label asked for without a separator: each field is one name.
        let single = try LabeledTexts.read(tsv, labelFormat: Self.multiLabel)
        #expect(single.labelSet.names == ["0||2", "1"] && Self.positives(single) == [[0], [1], []])
    }

    @Test func regressionLabelsAreNumbers() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let jsonl = try folder.file("sts.jsonl", """
            {"text": "a", "text_b": "b", "label": 3.8}
            {"text": "c", "text_b": "d", "label": 0}
            {"text": "e", "text_b": "f", "label": -1.25e-1}
            {"text": "g", "text_b": "h", "label": 5}
            """)
        let texts = try LabeledTexts.read(jsonl, format: .jsonLines(DataColumns(textPair: "text_b")), labelFormat: Self.regression)
        #expect(texts.problemType == .regression && texts.values == [3.8, 0, -0.125, 5] && texts.hasPairs)
        #expect(texts.labelSet == LabelSet.regression && texts.labelSet.names == ["LABEL_0"] && texts.labelCounts == [])
        #expect(texts.labels.isEmpty && texts.positiveLabels.isEmpty)
        let csv = try folder.file("sts.csv", "text,label\na, 3.5 \nb,1e-3\nc,-2\nd,.5\n")
        #expect(try LabeledTexts.read(csv, format: .csv(DataColumns()), labelFormat: Self.regression).values == [3.5, 0.001, -2, 0.5])
        // Regression is asked for, never inferred; the label set of a rule does not apply to it.
        let fixed = try LabelSet(list: "a, b")
        #expect(try LabeledTexts.read(csv, format: .csv(DataColumns()), labels: .fixed(fixed), labelFormat: Self.regression).labelSet
                == LabelSet.regression)
    }

    /// (file name, contents, label format, line, reason): each a FILE:LINE error, and a skipped row with --skip-bad-rows.
    static let rowErrors: [(String, String, LabelFormat, Int, String)] = [
        ("a.jsonl", #"{"text": "x", "label": "pos"}"# + "\n" + #"{"text": "y", "label": ["pos"]}"#, inferred, 2,
         "label is a list, but the label on line 1 is not a list; write every label the same way"),
        ("b.jsonl", #"{"text": "x", "label": ["pos"]}"# + "\n" + #"{"text": "y", "label": "neg"}"#, inferred, 2,
         "label is not a list, but the label on line 1 is a list; write every label the same way"),
        ("c.jsonl", #"{"text": "x", "label": ["a", "b"]}"# + "\n" + #"{"text": "y", "label": [1.5]}"#, inferred, 2,
         "\"label\" lists strings or integers (names or ids), found 1.5 in the list"),
        ("d.jsonl", #"{"text": "x", "label": ["a", "b"]}"# + "\n" + #"{"text": "y", "label": ["a", 1]}"#, inferred, 2,
         "label the number 1 is written as a number, but the label on line 1 as a string; write every label the same way"),
        ("e.jsonl", #"{"text": "x", "label": ["a", "b"]}"# + "\n" + #"{"text": "y", "label": [""]}"#, inferred, 2, "empty label"),
        ("f.jsonl", #"{"text": "x", "label": ["a", "b"]}"# + "\n" + #"{"text": "y", "label": "a"}"#, multiLabel, 2,
         "\"label\" must be a list of labels for multi-label classification ([\"a\", \"b\"], or [] for none), found \"a\""),
        ("g.jsonl", #"{"text": "x", "label": ["a", "b"]}"# + "\n" + #"{"text": "y", "label": [["a"]]}"#, inferred, 2,
         "\"label\" lists strings or integers (names or ids), found [\"a\"] in the list"),
        ("h.jsonl", #"{"text": "x", "label": 1}"# + "\n" + #"{"text": "y", "label": 1.5}"#, .singleLabel, 2,
         "\"label\" must be a string or an integer, found 1.5 (for regression targets give --problem-type regression)"),
        ("i.jsonl", #"{"text": "x", "label": 1}"# + "\n" + #"{"text": "y", "label": "3.5"}"#, regression, 2,
         "\"label\" must be a number for regression, found \"3.5\""),
        ("j.jsonl", #"{"text": "x", "label": 1}"# + "\n" + #"{"text": "y", "label": [2]}"#, regression, 2,
         "\"label\" must be a number for regression, found [2]"),
        ("k.jsonl", #"{"text": "x", "label": 1}"# + "\n" + #"{"text": "y", "label": 1e39}"#, regression, 2,
         "label 1e39 is too large for a regression target (float32)"),
        ("l.jsonl", #"{"text": "x", "label": 1}"# + "\n" + #"{"text": "y", "label": null}"#, regression, 2,
         "\"label\" must be a number for regression, found null"),
        ("m.tsv", "text\tlabel\nx\t1.5\ny\tabc\n", regression, 3, "label \"abc\" is not a number (regression needs a number per row)"),
        ("n.tsv", "text\tlabel\nx\t1.5\ny\t \n", regression, 3, "empty label"),
        ("o.tsv", "text\tlabel\nx\t1.5\ny\tnan\n", regression, 3, "label \"nan\" is not a number (regression needs a number per row)"),
        ("p.tsv", "text\tlabel\nx\t1.5\ny\tinf\n", regression, 3, "label \"inf\" is not a number (regression needs a number per row)"),
        ("q.tsv", "text\tlabel\nx\t1.5\ny\t0x10\n", regression, 3, "label \"0x10\" is not a number (regression needs a number per row)"),
        ("r.tsv", "text\tlabel\nx\ta;b\ny\ta;;b\n", LabelFormat(separator: ";"), 3, "empty label in \"a;;b\" (labels separated by \";\")"),
        ("s.tsv", "text\tlabel\nx\ta;b\ny\ta;\n", LabelFormat(separator: ";"), 3, "empty label in \"a;\" (labels separated by \";\")"),
    ]

    @Test(arguments: 0..<rowErrors.count)
    func badLabelsNameTheFileAndLine(case index: Int) throws {
        let (name, contents, labelFormat, line, reason) = Self.rowErrors[index]
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        // Two good rows after the bad one, so that the file still has 2 labels when it is skipped.
        let good: String
        switch (name.hasSuffix(".tsv"), labelFormat.problemType ?? (labelFormat.separator == nil ? nil : .multiLabelClassification)) {
        case (true, .regression): good = "z\t2.5\nw\t0\n"
        case (true, _): good = "z\tb\nw\ta\n"
        case (false, .regression): good = #"{"text": "z", "label": 2.5}"# + "\n"
        case (false, .singleLabelClassification): good = #"{"text": "z", "label": 2}"# + "\n"
        case (false, _): good = contents.hasPrefix(#"{"text": "x", "label": "pos"}"#) ? #"{"text": "z", "label": "neg"}"# + "\n"
                                                                                      : #"{"text": "z", "label": ["b"]}"# + "\n"
        }
        let url = try folder.file(name, contents + (contents.hasSuffix("\n") ? "" : "\n") + good)
        #expect(dataErrorMessage { _ = try LabeledTexts.read(url, labelFormat: labelFormat) } == "\(url.path):\(line): \(reason)")
        let skipped = try LabeledTexts.read(url, labelFormat: labelFormat, skipBadRows: true)
        #expect(skipped.skippedRowCount == 1 && skipped.skippedRowErrors == ["\(url.path):\(line): \(reason)"])
        #expect(!skipped.lineNumbers.contains(Int32(line)))
    }

    @Test func fileLevelTaskErrors() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        // Numbers with a fraction as class names: most likely regression targets.
        let scores = try folder.file("scores.tsv", "text\tlabel\na\t3\nb\t2.5\nc\t3\nd\t4.0\n")
        #expect(dataErrorMessage { _ = try LabeledTexts.read(scores) }
                == "\(scores.path):3: label \"2.5\" is a number with a fraction, and every label of the file is a number: for regression give --problem-type regression; to train a classifier on these labels, name them with --labels")
        #expect(try LabeledTexts.read(scores, labels: .fixed(LabelSet(list: "2.5,3,4.0"))).labels == [1, 0, 1, 2])
        #expect(try LabeledTexts.read(scores, labelFormat: Self.regression).values == [3, 2.5, 3, 4])
        // Names that are not all numbers are names.
        let versions = try folder.file("versions.tsv", "text\tlabel\na\tv1.5\nb\t2.5\n")
        #expect(try LabeledTexts.read(versions).labelSet.names == ["2.5", "v1.5"])
        // One label in all the lists.
        let one = try folder.file("one.jsonl", #"{"text": "a", "label": ["x"]}"# + "\n" + #"{"text": "b", "label": []}"#)
        #expect(dataErrorMessage { _ = try LabeledTexts.read(one, labelFormat: Self.inferred) }
                == "\(one.path): every row has the same label (\"x\"); a classifier needs at least 2 labels")
        let none = try folder.file("none.jsonl", #"{"text": "a", "label": []}"# + "\n" + #"{"text": "b", "label": []}"#)
        #expect(dataErrorMessage { _ = try LabeledTexts.read(none, labelFormat: Self.inferred) }
                == "\(none.path): no row has a label; a classifier needs at least 2 labels")
        // The AG News layout is single-label.
        let agNews = try folder.file("train.csv", "\"1\",\"a\",\"b\"\n")
        #expect(dataErrorMessage { _ = try LabeledTexts.read(agNews, labelFormat: Self.regression) }
                == "\(agNews.path): the AG News layout has one class per row (single-label); for another task give a header row and name the columns (--text-column, --label-column)")
        // A separator goes with multi-label only, and is not empty.
        #expect(dataErrorMessage { _ = try LabeledTexts.read(scores, labelFormat: LabelFormat(problemType: .regression, separator: ";")) }
                == "\(scores.path): --label-separator splits multi-label labels; it does not go with regression")
        #expect(dataErrorMessage { _ = try LabeledTexts.read(scores, labelFormat: LabelFormat(separator: "")) }
                .hasSuffix("--label-separator is empty; give the text between two labels, e.g. \";\""))
    }

    @Test func parseDecimalReadsWhatPythonFloatReads() {
        for (text, value) in [("3", 3.0), (" -0.5 ", -0.5), (".5", 0.5), ("5.", 5.0), ("1e3", 1000.0), ("+2E-2", 0.02)] {
            #expect(parseDecimal(Array(text.utf8)) == value, "\(text)")
        }
        for text in ["", ".", "e3", "1e", "nan", "inf", "-infinity", "0x1p3", "1_000", "1 2", "--1", "1e400"] {
            #expect(parseDecimal(Array(text.utf8)) == nil, "\(text)")
        }
    }

    // MARK: - token cache

    static let multiLabelRows = """
        {"text": "Markets rally as shares climb", "label": ["business", "long"]}
        {"text": "Cup final tonight", "label": ["sports"]}
        {"text": "Nothing", "label": []}
        {"text": "A long report on the match", "label": ["long", "sports"]}
        """
    static let regressionRows = "sentence1\tsentence2\tscore\nA man plays.\tA person plays.\t4.2\nA cat.\tA car.\t0.4\nHi.\tHello.\t3\n"

    @Test func multiLabelAndRegressionTargetsRoundTripThroughTheCache() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let tokenizer = try loadTokenizer("minilm-uncased")
        let cacheFolder = folder.url.appendingPathComponent("cache")

        let multiFile = try folder.file("topics.jsonl", Self.multiLabelRows)
        let multi = try TokenCache.locate(dataFile: multiFile, labelFormat: Self.inferred, tokenizer: tokenizer, maxLength: 16, directory: cacheFolder)
        let built = try multi.build(tokenizer: tokenizer)
        let opened = try multi.open(vocabularySize: tokenizer.vocabulary.count)
        let copied = try TokenizedDataset.deserialize(opened.serializedBytes, source: "rank 0")
        for dataset in [built, opened, copied] {
            #expect(dataset.problemType == .multiLabelClassification && dataset.count == 4 && dataset.positiveLabelCount == 5)
            #expect(dataset.labelSet.names == ["business", "long", "sports"])
            #expect((0..<4).map { Array(dataset.positiveLabels(at: $0)) } == [[0, 1], [2], [], [1, 2]])
            #expect(dataset.labelCounts == [1, 2, 2])
            #expect(Array(dataset.tokens(at: 1)) == Array(built.tokens(at: 1)))
        }

        let regressionFile = try folder.file("sts.tsv", Self.regressionRows)
        let format = DataFormat.tsv(DataColumns(text: "sentence1", textPair: "sentence2", label: "score"))
        let regression = try TokenCache.locate(dataFile: regressionFile, format: format, labelFormat: Self.regression, tokenizer: tokenizer,
                                               maxLength: 16, directory: cacheFolder)
        _ = try regression.build(tokenizer: tokenizer)
        let values = try regression.open()
        #expect(values.problemType == .regression && values.hasPairs && values.labelSet == LabelSet.regression)
        #expect((0..<3).map { values.value(at: $0) } == [4.2, 0.4, 3] && values.labelCounts == [])
        let sent = try TokenizedDataset.deserialize(values.serializedBytes, source: "rank 0")
        #expect((0..<3).map { sent.value(at: $0) } == [4.2, 0.4, 3])

        // The task and the separator are part of the key; a cache of another task is refused.
        let single = try TokenCache.locate(dataFile: regressionFile, format: format, tokenizer: tokenizer, maxLength: 16,
                                           directory: cacheFolder)
        let separated = try TokenCache.locate(dataFile: multiFile, labelFormat: LabelFormat(separator: ";"), tokenizer: tokenizer,
                                              maxLength: 16, directory: cacheFolder)
        #expect(Set([single.url, regression.url, separated.url, multi.url]).count == 4)
        try FileManager.default.copyItem(at: regression.url, to: single.url)
        #expect(dataErrorMessage { _ = try single.open() }.contains("built for another data file, tokenizer, max length or labels"))
    }

    @Test func fromTokensForEveryTask() throws {
        let sequences: [[Int32]] = [[101, 7, 102], [101, 102], [101, 8, 9, 102]]
        let labels = try LabelSet(list: "a, b, c")
        let multi = TokenizedDataset.fromTokens(sequences, positiveLabels: [[2, 0, 2], [], [1]], labelSet: labels, maxLength: 8)
        #expect((0..<3).map { Array(multi.positiveLabels(at: $0)) } == [[0, 2], [], [1]] && multi.problemType == .multiLabelClassification)
        let regression = TokenizedDataset.fromTokens(sequences, values: [0.5, -1, 7], maxLength: 8)
        #expect((0..<3).map { regression.value(at: $0) } == [0.5, -1, 7] && regression.labelSet == LabelSet.regression)
        let single = TokenizedDataset.fromTokens(sequences, labels: [2, 0, 1], labelSet: labels, maxLength: 8)
        #expect(Array(single.labels) == [2, 0, 1] && single.labelCounts == [1, 1, 1] && single.problemType == .singleLabelClassification)
    }

    /// The structure checks of `open` behind the checksum: targets that a damaged or foreign
    /// writer could leave (the checksum recomputed, so that only the structure is wrong).
    @Test func damagedTargetsAreRefused() throws {
        let sequences: [[Int32]] = [[101, 7, 102], [101, 102]]
        let labels = try LabelSet(list: "a, b, c")
        func reopened(_ dataset: TokenizedDataset, _ change: (inout [UInt8], TokenizedDataset.Layout) -> Void) -> String {
            var bytes = Array(dataset.serializedBytes)
            let layout = TokenizedDataset.Layout(exampleCount: dataset.count, tokenCount: dataset.tokenCount, hasPairs: false,
                                                 positiveLabelCount: dataset.positiveLabelCount,
                                                 labelNamesByteCount: TokenizedDataset.encodeLabelNames(dataset.labelSet.names).count)
            change(&bytes, layout)
            let hash = bytes.withUnsafeBytes { ContentHash64.hash(UnsafeRawBufferPointer(rebasing: $0[TokenizedDataset.headerByteCount...])) }
            withUnsafeBytes(of: hash.littleEndian) { bytes.replaceSubrange(56..<64, with: $0) }
            return dataErrorMessage { _ = try bytes.withUnsafeBytes { try TokenizedDataset.deserialize($0, source: "sent") } }
        }
        func setInt32(_ bytes: inout [UInt8], at offset: Int, _ value: Int32) {
            withUnsafeBytes(of: value.littleEndian) { bytes.replaceSubrange(offset..<offset + 4, with: $0) }
        }
        let multi = TokenizedDataset.fromTokens(sequences, positiveLabels: [[0, 2], [1]], labelSet: labels, maxLength: 8)
        #expect(reopened(multi) { _, _ in } == "no error")
        #expect(reopened(multi) { bytes, layout in setInt32(&bytes, at: layout.positives, 2) }   // [2, 2]: not increasing
                == "sent: the token data is damaged (example 0 has labels [2, 2])")
        #expect(reopened(multi) { bytes, layout in setInt32(&bytes, at: layout.positives + 8, 3) }  // class 3 of 3
                == "sent: the token data is damaged (example 1 has labels [3])")
        #expect(reopened(multi) { bytes, layout in setInt32(&bytes, at: layout.labels + 4, 2) }  // ends 2, 2 of 3
                == "sent: the token data is damaged (its examples have 2 labels, its header says 3)")
        #expect(reopened(multi) { bytes, layout in setInt32(&bytes, at: layout.labels, 4) }
                == "sent: the token data is damaged (example 0 ends its labels at 4)")
        #expect(reopened(multi) { bytes, _ in bytes[65] = 7 } == "sent: the token data is damaged (unknown flags 1792)")
        let regression = TokenizedDataset.fromTokens(sequences, values: [1, 2], maxLength: 8)
        #expect(reopened(regression) { bytes, layout in setInt32(&bytes, at: layout.labels, Int32(bitPattern: Float.nan.bitPattern)) }
                == "sent: the token data is damaged (example 0 has target nan)")
    }

    /// A cache in the previous layout (format 2, single-label only) is rebuilt, never misread.
    @Test func formatTwoCachesAreRebuilt() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let dataFile = try folder.file("train.jsonl", Self.multiLabelRows)
        let tokenizer = try loadTokenizer("minilm-uncased")
        let cache = try TokenCache.locate(dataFile: dataFile, labelFormat: Self.inferred, tokenizer: tokenizer, maxLength: 16,
                                          directory: folder.url)
        let built = try cache.build(tokenizer: tokenizer)
        var old = withExtendedLifetime(built) { Array(built.serializedBytes) }
        old[8] = 2
        try Data(old).write(to: cache.url)
        #expect(dataErrorMessage { _ = try cache.open() } == "\(cache.url.path): token cache format 2 is not 3; delete it and it will be rebuilt")
        #expect(try cache.openOrBuild(tokenizer: tokenizer).positiveLabelCount == 5)
    }
}
