import Foundation
import Testing

@testable import Data
import TestSupport

let fixturesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

/// tokenizer_golden.json, written by tools/make_tokenizer_fixtures.py from Hugging Face.
struct GoldenCorpus {
    struct Case {
        let textIndex: Int
        let maxLength: Int
        let ids: [Int32]
    }
    let texts: [String]
    let cases: [String: [Case]]
    let disagreements: [String: [Case]]  // ids of BertTokenizer (Rust) where the legacy Python one differs

    static let shared: GoldenCorpus = {
        let data = try! Data(contentsOf: fixturesDirectory.appendingPathComponent("tokenizer_golden.json"))
        let object = try! JSONSerialization.jsonObject(with: data) as! [String: Any]
        func cases(_ key: String) -> [String: [Case]] {
            var result: [String: [Case]] = [:]
            for (variant, list) in object[key] as! [String: [[Any]]] {
                result[variant] = list.map { entry in
                    Case(textIndex: (entry[0] as! NSNumber).intValue, maxLength: (entry[1] as! NSNumber).intValue,
                         ids: (entry[2] as! [NSNumber]).map { $0.int32Value })
                }
            }
            return result
        }
        return GoldenCorpus(texts: object["texts"] as! [String], cases: cases("cases"),
                            disagreements: cases("disagreements"))
    }()
}

func loadTokenizer(_ variant: String) throws -> BertTokenizer {
    try BertTokenizer(modelDirectory: fixturesDirectory.appendingPathComponent(variant))
}

@Suite struct TokenizerTests {
    static let variants = ["minilm-uncased", "minilm-tokenizer-json", "minilm-cased", "minilm-uncased-keep-accents"]

    @Test(arguments: variants)
    func goldenCorpusMatchesHuggingFace(variant: String) throws {
        let tokenizer = try loadTokenizer(variant)
        let corpus = GoldenCorpus.shared
        let cases = (corpus.cases[variant] ?? []) + (corpus.disagreements[variant] ?? [])
        #expect(cases.count > 100)
        var failures = 0
        for golden in cases {
            let text = corpus.texts[golden.textIndex]
            let ids = tokenizer.encode(text, maxLength: golden.maxLength)
            if ids != golden.ids {
                failures += 1
                if failures <= 5 {
                    Issue.record("\(variant) max_length=\(golden.maxLength) text #\(golden.textIndex) \(text.debugDescription.prefix(120)):\n ours \(ids)\n   HF \(golden.ids)")
                }
            }
        }
        #expect(failures == 0, "\(failures) of \(cases.count) cases differ")
    }

    @Test func loadsOptionsAndSpecialTokens() throws {
        let uncased = try loadTokenizer("minilm-uncased")
        #expect(uncased.options == NormalizerOptions(lowercase: true))
        #expect(uncased.classifierTokenId == 101 && uncased.separatorTokenId == 102)
        #expect(uncased.paddingTokenId == 0 && uncased.unknownTokenId == 100)
        #expect(uncased.vocabulary.count == 30522)
        let cased = try loadTokenizer("minilm-cased")
        #expect(cased.options == NormalizerOptions(stripAccents: nil, lowercase: false))
        #expect(!cased.options.stripAccents)
        let keepAccents = try loadTokenizer("minilm-uncased-keep-accents")
        #expect(keepAccents.options.lowercase && !keepAccents.options.stripAccents)
        let json = try loadTokenizer("minilm-tokenizer-json")
        #expect(json.options == uncased.options)
        #expect(json.classifierTokenId == 101 && json.separatorTokenId == 102 && json.paddingTokenId == 0)
        #expect(Set(json.literalTokens.map(\.token)) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        #expect(Set(uncased.literalTokens.map(\.token)) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    }

    @Test func fingerprintDependsOnVocabularyAndOptions() throws {
        let uncased = try loadTokenizer("minilm-uncased")
        let json = try loadTokenizer("minilm-tokenizer-json")
        let cased = try loadTokenizer("minilm-cased")
        #expect(uncased.fingerprint == (try loadTokenizer("minilm-uncased")).fingerprint)
        #expect(uncased.fingerprint == json.fingerprint)  // same vocabulary, options and special tokens
        #expect(uncased.fingerprint != cased.fingerprint)
        var tokens = uncased.vocabulary.tokens
        tokens.swapAt(2000, 2001)
        let shuffled = try BertTokenizer(vocabulary: Vocabulary(tokens: tokens))
        #expect(shuffled.fingerprint != uncased.fingerprint)
    }

    @Test func appendingVariantMatchesAndTruncates() throws {
        let tokenizer = try loadTokenizer("minilm-uncased")
        var buffer: [Int32] = []
        buffer.reserveCapacity(1024)
        tokenizer.encode("Hello, world!", maxLength: 128, appendingTo: &buffer)
        tokenizer.encode("second text", maxLength: 3, appendingTo: &buffer)
        #expect(buffer == tokenizer.encode("Hello, world!", maxLength: 128) + [101, 2117, 102])
        let text = "Hello, world!"
        let bytes = Array(text.utf8)
        var fromBytes: [Int32] = []
        bytes.withUnsafeBufferPointer { tokenizer.encode(utf8: $0, maxLength: 128, appendingTo: &fromBytes) }
        #expect(fromBytes == tokenizer.encode(text, maxLength: 128))
    }

    @Test func oneTokenizerSharedByThreadsGivesTheSameIds() async throws {
        let tokenizer = try loadTokenizer("minilm-uncased")
        let texts = GoldenCorpus.shared.texts
        let expected = texts.map { tokenizer.encode($0, maxLength: 64) }
        // A fresh tokenizer (empty scalar cache) used by four tasks at once.
        let results = await encodedByFourTasks(try loadTokenizer("minilm-uncased"), texts)
        #expect(results.count == 4 && results.allSatisfy { $0 == expected })
    }

    @Test func invalidUTF8BytesAreDroppedLikeReplacementCharacters() throws {
        let tokenizer = try loadTokenizer("minilm-uncased")
        let bytes: [UInt8] = Array("ab".utf8) + [0xFF, 0xC3] + Array("cd".utf8) + [0xE2, 0x82]
        var ids: [Int32] = []
        bytes.withUnsafeBufferPointer { tokenizer.encode(utf8: $0, maxLength: 32, appendingTo: &ids) }
        #expect(ids == tokenizer.encode("ab\u{FFFD}\u{FFFD}cd\u{FFFD}", maxLength: 32))
        #expect(ids == tokenizer.encode("abcd", maxLength: 32))
    }

    @Test func missingOrBrokenModelFolderGivesClearErrors() throws {
        let missing = fixturesDirectory.appendingPathComponent("no-such-model")
        #expect(throws: DataError.self) { try BertTokenizer(modelDirectory: missing) }
        do {
            _ = try BertTokenizer(modelDirectory: missing)
        } catch let error as DataError {
            #expect(error.description.contains("no-such-model"))
        }
        let empty = scratchURL("bert-dist-empty-model-\(getpid())")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: empty) }
        do {
            _ = try BertTokenizer(modelDirectory: empty)
            Issue.record("expected an error")
        } catch let error as DataError {
            #expect(error.description.contains("no vocab.txt or tokenizer.json"))
        }
        try "{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}".write(to: empty.appendingPathComponent("tokenizer.json"), atomically: true, encoding: .utf8)
        do {
            _ = try BertTokenizer(modelDirectory: empty)
            Issue.record("expected an error")
        } catch let error as DataError {
            #expect(error.description.contains("not WordPiece"))
        }
    }
}

/// unicode_pretokenization.txt: for every scalar c and four option settings, the pre-tokens HF
/// makes of "x" + c + "x".
@Suite struct UnicodeTableTests {
    struct Setting {
        var lowercase: Bool
        var stripAccents: Bool
        var entries: [UInt32: [[UInt32]]] = [:]
    }

    static func parse() throws -> [Setting] {
        let text = try String(contentsOf: fixturesDirectory.appendingPathComponent("unicode_pretokenization.txt"), encoding: .utf8)
        var settings: [Setting] = []
        let x: UInt32 = 0x78
        for line in text.split(separator: "\n") {
            if line.hasPrefix("#") {
                let lowercase = line.contains("lowercase=1")
                let strip = line.contains("strip_accents=1")
                settings.append(Setting(lowercase: lowercase, stripAccents: strip))
                continue
            }
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            let kind = fields[0]
            let first = UInt32(fields[1], radix: 16)!
            switch kind {
            case "R", "W", "P":
                let last = UInt32(fields[2], radix: 16)!
                for c in first...last {
                    switch kind {
                    case "R": settings[settings.count - 1].entries[c] = [[x, x]]
                    case "W": settings[settings.count - 1].entries[c] = [[x], [x]]
                    default: settings[settings.count - 1].entries[c] = [[x], [c], [x]]
                    }
                }
            case "S":
                let last = UInt32(fields[2], radix: 16)!
                let mapped = fields[4...].map { UInt32($0, radix: 16)! }
                for c in first...last {
                    var scalars = mapped
                    scalars[scalars.count - 1] += c - first
                    settings[settings.count - 1].entries[c] = [[x] + scalars + [x]]
                }
            case "M":
                let rest = line.split(separator: "=", maxSplits: 1)[1]
                let tokens = rest.split(separator: "|").map { token in
                    token.split(separator: " ").map { UInt32($0, radix: 16)! }
                }
                settings[settings.count - 1].entries[first] = tokens
            default:
                Issue.record("bad line \(line)")
            }
        }
        return settings
    }

    /// Our pre-tokens of "x" c "x", through the same dispatch as `BertTokenizer.encode`.
    static func preTokens(_ normalizer: ScalarNormalizer, _ c: UInt32) -> [[UInt32]] {
        var tokens: [[UInt32]] = []
        var word: [UInt32] = []
        func flush() {
            if !word.isEmpty { tokens.append(word) }
            word = []
        }
        for scalar in [0x78, c, 0x78] {
            if scalar < 0x80 {
                switch normalizer.asciiKinds[Int(scalar)] {
                case ASCIIKind.word: word.append(UInt32(normalizer.asciiNormalized[Int(scalar)]))
                case ASCIIKind.whitespace: flush()
                case ASCIIKind.isolated:
                    flush()
                    tokens.append([scalar])
                default: break
                }
                continue
            }
            for packed in ScalarNormalizer.compute(scalar, options: normalizer.options) {
                switch scalarKind(packed) {
                case PieceKind.normal.rawValue: word.append(scalarValue(packed))
                case PieceKind.isolated.rawValue:
                    flush()
                    tokens.append([scalarValue(packed)])
                default: flush()
                }
            }
        }
        flush()
        return tokens
    }

    static let settings = try! parse()

    @Test(arguments: 0..<4)
    func unicodeTableMatchesHuggingFace(settingIndex: Int) throws {
        #expect(Self.settings.count == 4)
        do {
            let setting = Self.settings[settingIndex]
            let normalizer = ScalarNormalizer(options: NormalizerOptions(stripAccents: setting.stripAccents,
                                                                         lowercase: setting.lowercase))
            var failures: [String] = []
            var failureCount = 0
            for c in UInt32(0)...0x10FFFF where !(0xD800...0xDFFF).contains(c) {
                let expected = setting.entries[c] ?? [[0x78, c, 0x78]]
                let ours = Self.preTokens(normalizer, c)
                if ours != expected {
                    failureCount += 1
                    if failures.count < 400 {
                        let hex = { (t: [[UInt32]]) in t.map { $0.map { String($0, radix: 16) }.joined(separator: " ") }.joined(separator: "|") }
                        failures.append("U+\(String(c, radix: 16)) ours \(hex(ours)) HF \(hex(expected))")
                    }
                }
            }
            #expect(failureCount == 0, "lowercase=\(setting.lowercase) strip=\(setting.stripAccents): \(failureCount) scalars differ:\n\(failures.joined(separator: "\n"))")
        }
    }
}

/// `texts` encoded (max 64 tokens) by four tasks at once with one `tokenizer`, half of them in
/// reverse order: the ids each task got.
func encodedByFourTasks(_ tokenizer: any TextTokenizer, _ texts: [String]) async -> [[[Int32]]] {
    await withTaskGroup(of: [[Int32]].self) { group in
        for task in 0..<4 {
            group.addTask {
                let order = task % 2 == 0 ? Array(texts.indices) : Array(texts.indices.reversed())
                var ids = [[Int32]](repeating: [], count: texts.count)
                for index in order { ids[index] = tokenizer.encode(texts[index], maxLength: 64) }
                return ids
            }
        }
        return await group.reduce(into: []) { $0.append($1) }
    }
}
