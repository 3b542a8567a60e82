import Foundation
import Testing

@testable import Data
import TestSupport

/// A fresh folder under the test process's scratch folder, removed by `remove()`.
struct TemporaryFolder {
    let url: URL

    init(_ name: String = #function) throws { url = try makeTemporaryDirectory(name) }

    func file(_ name: String, _ contents: String) throws -> URL {
        let target = url.appendingPathComponent(name)
        try Data(contents.utf8).write(to: target)
        return target
    }

    func file(_ name: String, bytes: [UInt8]) throws -> URL {
        let target = url.appendingPathComponent(name)
        try Data(bytes).write(to: target)
        return target
    }

    func remove() {
        try? FileManager.default.removeItem(at: url)
    }
}

/// The error message of `body`, which must throw a DataError.
func dataErrorMessage(_ body: () throws -> Void) -> String {
    do {
        try body()
    } catch let error as DataError {
        return error.description
    } catch {
        return "unexpected error type: \(error)"
    }
    return "no error"
}

@Suite struct ReaderTests {
    @Test func agNewsCSVMatchesHuggingFaceLoader() throws {
        // ag_news_reader.json holds what the HF datasets ag_news loader (csv.reader with its
        // settings, text = title + " " + description) makes of ag_news_reader.csv.
        let data = try Data(contentsOf: fixturesDirectory.appendingPathComponent("ag_news_reader.json"))
        let expected = try JSONSerialization.jsonObject(with: data) as! [[String: Any]]
        let texts = try LabeledTexts.read(fixturesDirectory.appendingPathComponent("ag_news_reader.csv"))
        #expect(texts.count == expected.count)
        for (index, row) in expected.enumerated() where index < texts.count {
            #expect(texts.text(at: index) == row["text"] as! String, "row \(index)")
            #expect(Int(texts.labels[index]) == (row["label"] as! NSNumber).intValue, "row \(index)")
        }
        #expect(texts.skippedRowCount == 0)
        // Row 4 holds two line breaks (lines 4-6); the next row starts on line 7.
        #expect(Array(texts.lineNumbers.prefix(6)) == [1, 2, 3, 4, 7, 8])
        #expect(texts.text(at: 2).contains("\\"))  // backslashes kept as they are
    }

    @Test func jsonLinesReadsEscapesAndIgnoresOtherKeys() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let lines = [
            #"{"text": "plain", "label": 0}"#,
            #"{"label": 3, "text": "caf\u00e9 \ud83c\udf89 \"q\" \\ \/ \n\t end"}"#,
            "",
            #"  {"id": 7, "meta": {"a": [1, 2.5e3, true, null, "x"]}, "text": "ünïcode ✓", "label": 2}  "#,
            #"{"text": "", "label": 1}"#,
        ]
        let url = try folder.file("data.jsonl", lines.joined(separator: "\n") + "\r\n")
        let texts = try LabeledTexts.read(url)
        #expect(texts.count == 4)
        #expect(texts.text(at: 0) == "plain")
        #expect(texts.text(at: 1) == "café 🎉 \"q\" \\ / \n\t end")
        #expect(texts.text(at: 2) == "ünïcode ✓")
        #expect(texts.text(at: 3) == "")
        #expect(texts.labels == [0, 3, 2, 1])
        #expect(texts.lineNumbers == [1, 2, 4, 5])
        // .json is read as JSON Lines too.
        let json = try folder.file("data.json", lines[0] + "\n" + lines[1])
        #expect(try LabeledTexts.read(json).count == 2)
    }

    static let csvBadRows: [(String, String)] = [
        ("\"1\",\"only two\"\n", "expected 3 columns (class index, title, description), found 2"),
        ("\"1\",\"a\",\"b\",\"c\"\n", "expected 3 columns (class index, title, description), found 4"),
        ("\"5\",\"a\",\"b\"\n", "class index \"5\" is not an integer from 1 to 4"),
        ("\"0\",\"a\",\"b\"\n", "class index \"0\" is not an integer from 1 to 4"),
        ("\"Sports\",\"a\",\"b\"\n", "class index \"Sports\" is not an integer from 1 to 4"),
        ("\"2\",\"a \"quoted\" word\",\"b\"\n", "unexpected text after the closing quote of column 2"),
        ("\"2\",\"a\",\"unterminated\n", "unterminated quoted field in column 3 (the quote opened on this line is only closed on line 4"),
    ]

    @Test(arguments: 0..<csvBadRows.count)
    func csvBadRowStopsWithFileAndLine(case index: Int) throws {
        let (badRow, reason) = Self.csvBadRows[index]
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let good = "\"3\",\"good\",\"row\"\n"
        let url = try folder.file("train.csv", good + good + badRow + good)
        let message = dataErrorMessage { _ = try LabeledTexts.read(url) }
        #expect(message.hasPrefix("\(url.path):3: "), "\(message)")
        #expect(message.contains(reason), "\(message)")
        let skipped = try LabeledTexts.read(url, skipBadRows: true)
        #expect(skipped.skippedRowCount == 1)
        #expect(skipped.count == 3)
        #expect(skipped.text(at: 2) == "good row")
        #expect(skipped.lineNumbers == [1, 2, 4])
        #expect(skipped.skippedRowErrors.first?.hasPrefix("\(url.path):3: ") == true)
    }

    @Test func csvInvalidUTF8NamesTheLine() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        var bytes = Array("\"1\",\"ok\",\"fine\"\n\"2\",\"multi\nline\",\"bad ".utf8)
        bytes += [0xC3, 0x28]  // a lead byte followed by a non-continuation byte
        bytes += Array(" here\"\n\"4\",\"last\",\"row\"\n".utf8)
        let url = try folder.file("bad.csv", bytes: bytes)
        let message = dataErrorMessage { _ = try LabeledTexts.read(url) }
        #expect(message == "\(url.path):3: invalid UTF-8 (byte 0xC3 in column 3)")
        let skipped = try LabeledTexts.read(url, skipBadRows: true)
        #expect(skipped.skippedRowCount == 1)
        #expect(skipped.count == 2 && skipped.text(at: 1) == "last row" && skipped.lineNumbers == [1, 4])
    }

    static let jsonBadRows: [(String, String)] = [
        (#"{"text": "a", "label": 1.5}"#, "\"label\" must be a string or an integer, found 1.5 (for regression targets give --problem-type regression)"),
        (#"{"text": "a", "label": true}"#, "\"label\" must be a string or an integer, found true"),
        (#"{"text": "a", "label": {"name": "pos"}}"#, "\"label\" must be a string or an integer, found {\"name\": \"pos\"}"),
        (#"{"text": "a", "label": null}"#, "\"label\" must be a string or an integer, found null"),
        (#"{"text": "a", "label": "1"}"#, "label the string \"1\" is written as a string, but the label on line 1 as a number; write every label the same way"),
        (#"{"text": "a", "label": ""}"#, "empty label"),
        (#"{"text": "a"}"#, "missing \"label\""),
        (#"{"label": 1}"#, "missing \"text\""),
        (#"{"text": 5, "label": 1}"#, "\"text\" must be a string, found 5"),
        (#"{"text": "a", "label": 1"#, "bad JSON"),
        (#"{"text": "a" "label": 1}"#, "bad JSON"),
        (#"{"text": "a", "label": 1} extra"#, "bad JSON: extra text"),
        (#"{"text": "a\x", "label": 1}"#, "bad JSON: invalid escape"),
        (#"{"text": "\ud800", "label": 1}"#, "bad JSON: lone surrogate \\ud800 in a string"),
        ("{\"text\": \"tab\there\", \"label\": 1}", "bad JSON: raw control character 0x9 in a string"),
        ("not json", "bad JSON"),
    ]

    @Test(arguments: 0..<jsonBadRows.count)
    func jsonLinesBadRowStopsWithFileAndLine(case index: Int) throws {
        let (badRow, reason) = Self.jsonBadRows[index]
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let good = #"{"text": "good row", "label": 2}"#, other = #"{"text": "other row", "label": 0}"#
        let url = try folder.file("train.jsonl", [good, other, badRow, good].joined(separator: "\n"))
        let message = dataErrorMessage { _ = try LabeledTexts.read(url) }
        // The whole reason, from its start (label messages in full: nothing cut off).
        #expect(message.hasPrefix("\(url.path):3: \(reason)"), "\(message)")
        if !reason.hasPrefix("bad JSON") { #expect(message == "\(url.path):3: \(reason)") }
        let skipped = try LabeledTexts.read(url, skipBadRows: true)
        #expect(skipped.skippedRowCount == 1)
        #expect(skipped.count == 3 && skipped.lineNumbers == [1, 2, 4])
    }

    @Test func jsonLinesInvalidUTF8() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let bytes = Array(#"{"text": "ok", "label": 0}"#.utf8) + [0x0A] + Array(#"{"text": "bad "#.utf8) + [0xFF]
            + Array(#"", "label": 0}"#.utf8)
        let url = try folder.file("bad.jsonl", bytes: bytes)
        #expect(dataErrorMessage { _ = try LabeledTexts.read(url) } == "\(url.path):2: invalid UTF-8 (byte 0xFF at column 15)")
    }

    @Test func csvQuoteOpenUntilTheEndOfTheFile() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let url = try folder.file("test.csv", "\"1\",\"a\",\"b\"\n\"2\",\"c\",\"never closed\nstill inside\n")
        #expect(dataErrorMessage { _ = try LabeledTexts.read(url) } == "\(url.path):2: unterminated quoted field in column 3 (a quote opened here is never closed)")
        let skipped = try LabeledTexts.read(url, skipBadRows: true)
        // Resynchronised at line 3, which is not a row either.
        #expect(skipped.count == 1 && skipped.skippedRowCount == 2)
    }

    @Test func jsonArrayFileGetsAHint() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let url = try folder.file("data.json", #"[{"text": "a", "label": 0}]"#)
        #expect(dataErrorMessage { _ = try LabeledTexts.read(url) }.contains(":1: expected one JSON object per line (JSON Lines)"))
    }

    @Test func emptyMissingAndUnknownFilesGiveClearErrors() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let empty = try folder.file("empty.csv", "")
        #expect(dataErrorMessage { _ = try LabeledTexts.read(empty) } == "\(empty.path): the file has no rows (it is empty or blank)")
        let blank = try folder.file("blank.jsonl", "\n  \n\n")
        #expect(dataErrorMessage { _ = try LabeledTexts.read(blank) } == "\(blank.path): the file has no rows (it is empty or blank)")
        let missing = folder.url.appendingPathComponent("missing.csv")
        #expect(dataErrorMessage { _ = try LabeledTexts.read(missing) } == "\(missing.path): no such file")
        let directory = folder.url.appendingPathComponent("dir.csv")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        #expect(dataErrorMessage { _ = try LabeledTexts.read(directory) }.contains("is a folder"))
        let parquet = try folder.file("train.parquet", "PAR1")
        #expect(dataErrorMessage { _ = try LabeledTexts.read(parquet) }.contains("unknown data format \"parquet\""))
        let allBad = try folder.file("bad.csv", "\"9\",\"a\",\"b\"\n\"9\",\"c\",\"d\"\n")
        let message = dataErrorMessage { _ = try LabeledTexts.read(allBad, skipBadRows: true) }
        #expect(message.hasPrefix("\(allBad.path): all 2 rows are malformed; the first: \(allBad.path):1: class index"))
    }

    @Test func readsAGNewsSizedFileQuickly() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        var csv = ""
        csv.reserveCapacity(120_000 * 240)
        for row in 0..<120_000 {
            csv += "\"\(row % 4 + 1)\",\"Title number \(row) (Reuters)\",\"Reuters - A description with \"\"quotes\"\", commas, and a backslash\\here about story \(row).\"\n"
        }
        let url = try folder.file("train.csv", csv)
        let start = DispatchTime.now().uptimeNanoseconds
        let texts = try LabeledTexts.read(url)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        #expect(texts.count == 120_000)
        #expect(texts.text(at: 119_999) == "Title number 119999 (Reuters) Reuters - A description with \"quotes\", commas, and a backslash\\here about story 119999.")
        #expect(texts.labels[119_999] == 3)
        print("read 120,000 AG News-style rows (\(csv.utf8.count / 1_000_000) MB) in \(String(format: "%.3f", seconds)) s (debug build)")
    }
}

@Suite struct ExampleDataTests {
    /// The offline demo data committed under examples/ag_news_sample.
    @Test func agNewsSampleReadsAsTheAGNewsPreset() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("examples/ag_news_sample")
        let train = try LabeledTexts.read(folder.appendingPathComponent("train.csv"))
        let test = try LabeledTexts.read(folder.appendingPathComponent("test.csv"))
        #expect(train.format == .preset(.agNews) && train.count == 300 && test.count == 100)
        #expect(train.labelCounts == [89, 74, 72, 65] && test.labelCounts == [23, 24, 31, 22])
        #expect(train.labelSet.names == ["World", "Sports", "Business", "Sci/Tech"])
        #expect(train.skippedRowCount == 0 && test.skippedRowCount == 0)
    }
}
