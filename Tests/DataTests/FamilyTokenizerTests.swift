import Foundation
import Testing

@testable import Data
import TestSupport

let familiesDirectory = fixturesDirectory.appendingPathComponent("families")

/// families/family_texts.json and family_golden.json, written by
/// tools/make_family_tokenizer_fixtures.py from transformers 5's AutoTokenizer.
struct FamilyGolden {
    struct Group {
        let name: String
        let folders: [String]
        let textIndices: [Int]
        /// HF's ids of each text of `textIndices` at `fullMaxLength` (nothing cut).
        let full: [[Int32]]
        let fullMaxLength: Int
        let shortMaxLength: Int
        let singlePrefix: [Int32], singleSuffix: [Int32]
        let pairPrefix: [Int32], pairMiddle: [Int32], pairSuffix: [Int32]
        let pairIndices: [Int]
        /// Per max length, per pair of `pairIndices`: tokens kept of A and of B, and where token type 1 starts.
        let pairs: [Int: [(keptFirst: Int, keptSecond: Int, secondStart: Int)]]

        /// The tokens of text `index` without the special ids HF puts around it.
        func tokens(ofText index: Int) -> [Int32] {
            let ids = full[textIndices.firstIndex(of: index)!]
            return Array(ids[singlePrefix.count..<(ids.count - singleSuffix.count)])
        }
    }
    let texts: [String]
    let pairs: [(Int, Int)]
    let groups: [String: Group]

    static let shared: FamilyGolden = {
        func load(_ name: String) -> JSONValue { try! JSONValue.read(familiesDirectory.appendingPathComponent(name)) }
        func int(_ value: JSONValue) -> Int { Int(value.double!) }
        func ints(_ value: JSONValue) -> [Int32] { value.array!.map { $0.int32! } }
        func strings(_ value: JSONValue) -> [String] { value.array!.map { $0.string! } }
        let textFile = load("family_texts.json")
        let texts = strings(textFile["texts"]!)
        let pairs = textFile["pairs"]!.array!.map { (int($0.array![0]), int($0.array![1])) }
        func unpack(_ text: String) -> [Int32] {
            let bytes = [UInt8](Data(base64Encoded: text)!)
            return stride(from: 0, to: bytes.count, by: 2).map { Int32(bytes[$0]) | Int32(bytes[$0 + 1]) << 8 }
        }
        func ranges(_ value: JSONValue) -> [Int] {
            value.array!.flatMap { Array(int($0.array![0])...int($0.array![1])) }
        }
        var groups: [String: Group] = [:]
        for (name, value) in load("family_golden.json")["groups"]!.entries! {
            let single = value["single_template"]!.array!
            let pair = value["pair_template"]!.array!
            var pairCases: [Int: [(Int, Int, Int)]] = [:]
            for (maxLength, cases) in value["pairs"]!.entries! {
                pairCases[Int(maxLength)!] = cases.array!.map { let c = $0.array!.map(int); return (c[0], c[1], c[2]) }
            }
            groups[name] = Group(name: name, folders: strings(value["folders"]!), textIndices: ranges(value["text_indices"]!),
                                 full: strings(value["full"]!).map(unpack),
                                 fullMaxLength: int(value["full_max_length"]!),
                                 shortMaxLength: int(value["short_max_length"]!),
                                 singlePrefix: ints(single[0]), singleSuffix: ints(single[1]),
                                 pairPrefix: ints(pair[0]), pairMiddle: ints(pair[1]), pairSuffix: ints(pair[2]),
                                 pairIndices: ranges(value["pair_indices"]!), pairs: pairCases)
        }
        return FamilyGolden(texts: texts, pairs: pairs, groups: groups)
    }()

    /// (group, folder) of every tokenizer folder of the fixtures.
    static var folders: [(String, String)] {
        shared.groups.values.flatMap { group in group.folders.map { (group.name, $0) } }.sorted { $0.1 < $1.1 }
    }
}

func loadFamilyTokenizer(_ folder: String, modelType: String? = nil) throws -> any TextTokenizer {
    try loadTextTokenizer(modelDirectory: familiesDirectory.appendingPathComponent(folder), modelType: modelType)
}

@Suite struct FamilyTokenizerTests {
    static let folderNames = FamilyGolden.folders.map(\.1)

    /// The golden group of a folder and the folder's tokenizer.
    static func groupAndTokenizer(_ folder: String) throws -> (FamilyGolden.Group, any TextTokenizer) {
        (FamilyGolden.shared.groups.values.first { $0.folders.contains(folder) }!, try loadFamilyTokenizer(folder))
    }

    /// Every text at the full length and cut to 16, against HF's ids.
    @Test(arguments: folderNames)
    func textsMatchHuggingFace(folder: String) throws {
        let golden = FamilyGolden.shared
        let (group, tokenizer) = try Self.groupAndTokenizer(folder)
        #expect(group.textIndices.count >= (group.textIndices.count > 1000 ? 2000 : 500))
        var failures = 0
        var nonASCII = 0
        for (position, index) in group.textIndices.enumerated() {
            let text = golden.texts[index]
            if text.utf8.contains(where: { $0 >= 0x80 }) { nonASCII += 1 }
            let expectedFull = group.full[position]
            let tokens = group.tokens(ofText: index)
            let budget = group.shortMaxLength - group.singlePrefix.count - group.singleSuffix.count
            let expectedShort = group.singlePrefix + tokens.prefix(budget) + group.singleSuffix
            let full = tokenizer.encode(text, maxLength: group.fullMaxLength)
            let short = tokenizer.encode(text, maxLength: group.shortMaxLength)
            if full != expectedFull || short != expectedShort {
                failures += 1
                if failures <= 5 {
                    Issue.record("\(folder) text #\(index) \(text.debugDescription.prefix(100)):\n ours \(full)\n   HF \(expectedFull)\n ours(16) \(short)\n   HF(16) \(expectedShort)")
                }
            }
        }
        #expect(failures == 0, "\(folder): \(failures) of \(group.textIndices.count) texts differ")
        #expect(nonASCII > group.textIndices.count / 3)
    }

    /// Every pair at max lengths 9, 20 and 64 (longest_first), ids and token types.
    @Test(arguments: folderNames)
    func pairsMatchHuggingFace(folder: String) throws {
        let golden = FamilyGolden.shared
        let (group, tokenizer) = try Self.groupAndTokenizer(folder)
        #expect(group.pairIndices.count >= (group.pairIndices.count > 100 ? 300 : 40))
        var failures = 0
        var cases = 0
        var cutBoth = 0
        for (maxLength, expectations) in group.pairs.sorted(by: { $0.key < $1.key }) {
            for (position, pairIndex) in group.pairIndices.enumerated() {
                let (first, second) = golden.pairs[pairIndex]
                let expectation = expectations[position]
                let firstTokens = group.tokens(ofText: first), secondTokens = group.tokens(ofText: second)
                let expected = group.pairPrefix + firstTokens.prefix(expectation.keptFirst) + group.pairMiddle
                    + secondTokens.prefix(expectation.keptSecond) + group.pairSuffix
                let expectedTypes = (0..<expected.count).map { Int32($0 >= expectation.secondStart ? 1 : 0) }
                if expectation.keptFirst < firstTokens.count && expectation.keptSecond < secondTokens.count { cutBoth += 1 }
                let (ids, types) = tokenizer.encodePair(golden.texts[first], golden.texts[second], maxLength: maxLength)
                cases += 1
                if ids != expected || types != expectedTypes {
                    failures += 1
                    if failures <= 5 {
                        Issue.record("\(folder) pair #\(pairIndex) max_length=\(maxLength) \(golden.texts[first].debugDescription.prefix(40)) / \(golden.texts[second].debugDescription.prefix(40)):\n ours \(ids) \(types)\n   HF \(expected) \(expectedTypes)")
                    }
                }
            }
        }
        #expect(failures == 0, "\(folder): \(failures) of \(cases) pair cases differ")
        #expect(cutBoth > 0)
    }

    /// Folders of one group (tokenizer.json or vocab files) are the same tokenizer; other groups differ.
    @Test func fingerprintsFollowTheTokenizerNotTheFiles() throws {
        var fingerprints: [String: UInt64] = [:]
        for (group, folder) in FamilyGolden.folders {
            let fingerprint = try loadFamilyTokenizer(folder).fingerprint
            if let known = fingerprints[group] {
                #expect(known == fingerprint, "\(folder) and the other folders of \(group)")
            }
            fingerprints[group] = fingerprint
            #expect(try loadFamilyTokenizer(folder).fingerprint == fingerprint)  // stable
        }
        #expect(Set(fingerprints.values).count == fingerprints.count)
    }

    /// The token cache is keyed by the tokenizer: another family's tokenizer gives another cache
    /// file, the same tokenizer from other files the same one.
    @Test func tokenCacheKeyFollowsTheTokenizer() throws {
        let data = fixturesDirectory.appendingPathComponent("ag_news_reader.csv")
        let directory = FileManager.default.temporaryDirectory
        func cacheName(_ tokenizer: any TextTokenizer) throws -> String {
            try TokenCache.locate(dataFile: data, tokenizer: tokenizer, maxLength: 64, directory: directory).url.lastPathComponent
        }
        let names = try ["roberta-json", "roberta-vocab", "xlmr-json", "xlmr-spm", "camembert-json", "distilbert-json"].map {
            try cacheName(loadFamilyTokenizer($0))
        }
        #expect(names[0] == names[1] && names[2] == names[3])
        #expect(Set(names).count == 4)
        #expect(try cacheName(loadTokenizer("minilm-uncased")) != names[5])
    }

    @Test func specialTokensAndTemplatesPerFamily() throws {
        let roberta = try loadFamilyTokenizer("roberta-json")
        #expect(roberta is PipelineTokenizer)
        #expect(roberta.specialTokenIds == SpecialTokenIds(classifier: 0, separator: 2, padding: 1, unknown: 3))
        #expect(roberta.minimumMaxLength.single == 2 && roberta.minimumMaxLength.pair == 4)
        let xlmr = try loadFamilyTokenizer("xlmr-spm")
        #expect(xlmr.specialTokenIds == SpecialTokenIds(classifier: 0, separator: 2, padding: 1, unknown: 3))
        #expect(xlmr.vocabularySize == 2002)  // 4 fairseq specials + 1997 pieces + <mask>
        #expect(xlmr.encode("", maxLength: 8) == [0, 2])
        let camembert = try loadFamilyTokenizer("camembert-spm")
        #expect(camembert.specialTokenIds == SpecialTokenIds(classifier: 5, separator: 6, padding: 1, unknown: 3))
        let distilbert = try loadFamilyTokenizer("distilbert-json")
        #expect(distilbert is BertTokenizer)
        #expect(distilbert.specialTokenIds == SpecialTokenIds(classifier: 2, separator: 3, padding: 0, unknown: 1))
        // RoBERTa's pair has no token type 1: the second segment "starts" at the end.
        var ids: [Int32] = []
        let start = Array("a b".utf8).withUnsafeBufferPointer { a in
            Array("c".utf8).withUnsafeBufferPointer { b in roberta.encodePair(utf8: a, utf8: b, maxLength: 32, appendingTo: &ids) }
        }
        #expect(start == ids.count && ids.first == 0 && ids.last == 2)
        #expect(ids.filter { $0 == 2 }.count == 3)
    }

    @Test func tokenizerFilesAreTheFolderFilesTransformersReads() throws {
        func names(_ folder: String) throws -> [String] {
            try loadFamilyTokenizer(folder).tokenizerFiles.map(\.lastPathComponent).sorted()
        }
        #expect(try names("roberta-json") == ["tokenizer.json", "tokenizer_config.json"])
        #expect(try names("roberta-vocab") == ["merges.txt", "tokenizer_config.json", "vocab.json"])
        #expect(try names("xlmr-spm") == ["sentencepiece.bpe.model", "tokenizer_config.json"])
        #expect(try names("distilbert-json") == ["tokenizer.json", "tokenizer_config.json"])
        #expect(try loadTokenizer("minilm-uncased").tokenizerFiles.map(\.lastPathComponent).sorted() == ["tokenizer_config.json", "vocab.txt"])
    }

    /// Without tokenizer_config.json the model_type (hint or config.json) picks the pipeline.
    @Test func modelTypeDecidesWhenNoTokenizerClassIsGiven() throws {
        let folder = scratchURL("bert-dist-family-hint-\(getpid())")
        try? FileManager.default.removeItem(at: folder)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try FileManager.default.copyItem(at: familiesDirectory.appendingPathComponent("xlmr-spm/sentencepiece.bpe.model"),
                                         to: folder.appendingPathComponent("sentencepiece.bpe.model"))
        #expect(throws: DataError.self) { try loadTextTokenizer(modelDirectory: folder) }
        let reference = try loadFamilyTokenizer("xlmr-spm")
        let hinted = try loadTextTokenizer(modelDirectory: folder, modelType: "xlm-roberta")
        #expect(hinted.fingerprint == reference.fingerprint)
        try #"{"model_type": "xlm-roberta"}"#.write(to: folder.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        #expect(try loadTextTokenizer(modelDirectory: folder).fingerprint == reference.fingerprint)
        // The same .model as CamemBERT gives other ids (fairseq's offsets differ).
        let asCamembert = try loadTextTokenizer(modelDirectory: folder, modelType: "camembert")
        #expect(asCamembert.fingerprint != reference.fingerprint)
        #expect(asCamembert.encode("hello", maxLength: 16) != reference.encode("hello", maxLength: 16))
    }

    @Test func refusesWhatItCannotReadWithOneLine() throws {
        let folder = scratchURL("bert-dist-family-errors-\(getpid())")
        try? FileManager.default.removeItem(at: folder)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        func message(_ files: [String: String], modelType: String? = nil) -> String {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [] {
                try? FileManager.default.removeItem(at: folder.appendingPathComponent(name))
            }
            for (name, content) in files {
                try! content.write(to: folder.appendingPathComponent(name), atomically: true, encoding: .utf8)
            }
            do {
                _ = try loadTextTokenizer(modelDirectory: folder, modelType: modelType)
                return "loaded"
            } catch let error as DataError {
                #expect(!error.description.contains("\n"))
                return error.description
            } catch {
                return "unexpected \(error)"
            }
        }
        #expect(message([:]).contains("no tokenizer.json or vocab.txt"))
        #expect(message(["tokenizer_config.json": #"{"tokenizer_class": "T5Tokenizer"}"#]).contains("tokenizer_class \"T5Tokenizer\" is not supported"))
        // Another family's folder is refused, not read as ours (AutoTokenizer would use its class);
        // a supported tokenizer_class decides whatever the model_type.
        #expect(message(["vocab.txt": "[PAD]\n[UNK]\n[CLS]\n[SEP]\n", "config.json": #"{"model_type": "gpt2"}"#])
            .contains("config.json: model_type \"gpt2\" is not supported"))
        #expect(message(["vocab.txt": "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n", "config.json": #"{"model_type": "gpt2"}"#,
                         "tokenizer_config.json": #"{"tokenizer_class": "BertTokenizer"}"#]) == "loaded")
        #expect(message(["tokenizer_config.json": #"{"tokenizer_class": "RobertaTokenizer"}"#]).contains("needs tokenizer.json, or vocab.json and merges.txt"))
        #expect(message(["tokenizer_config.json": #"{"tokenizer_class": "XLMRobertaTokenizer"}"#]).contains("needs tokenizer.json or sentencepiece.bpe.model"))
        #expect(message(["tokenizer.json": #"{"model": {"type": "WordLevel", "vocab": {"a": 0}}}"#]).contains("the model is WordLevel"))
        #expect(message(["tokenizer.json": #"{"model": {"type": "Unigram", "vocab": [["a", 0.0]], "unk_id": 0}, "pre_tokenizer": {"type": "Whitespace"}}"#])
            .contains("pre-tokenizer Whitespace is not supported"))
        #expect(message(["tokenizer.json": #"{"model": {"type": "Unigram", "vocab": [["a", 0.0]], "unk_id": 0}, "normalizer": {"type": "Replace", "pattern": {"Regex": "[a-z]+"}, "content": ""}}"#])
            .contains("is not supported"))
        #expect(message(["tokenizer.json": #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}"#])
            .contains("names a token that is not in the vocabulary"))
        #expect(message(["tokenizer.json": #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": 0.1}}"#])
            .contains("dropout"))
        #expect(message(["vocab.json": #"{"a": 0}"#, "merges.txt": "#version: 0.2\na\n"], modelType: "roberta").contains("merges.txt:2: expected two tokens"))
        #expect(message(["sentencepiece.bpe.model": "not a protobuf"], modelType: "xlm-roberta").contains("not a readable SentencePiece model"))
        #expect(message(["tokenizer_config.json": #"{"tokenizer_class": "RobertaTokenizer", "truncation_side": "left"}"#])
            .contains("truncation_side"))

        // Hostile sizes, refused when the file is read: normalizers that multiply a text's length
        // (six Replace steps made "abc" 68 GB: a hang), a BPE prefix that multiplies a word's
        // symbols with byte fallback (1 MB of prefix aborted on a long word).
        let replaceA = #"{"type": "Replace", "pattern": {"String": "a"}, "content": "\#(String(repeating: "a", count: 64))"}"#
        #expect(message(["tokenizer.json": #"{"model": {"type": "Unigram", "vocab": [["a", 0.0]], "unk_id": 0}, "normalizer": {"type": "Sequence", "normalizers": [\#(Array(repeating: replaceA, count: 6).joined(separator: ","))]}}"#])
            .contains("the normalizers can make a text up to 68719476736 times longer (bert-dist reads up to 1024 times"))
        #expect(message(["tokenizer.json": #"{"model": {"type": "Unigram", "vocab": [["a", 0.0]], "unk_id": 0}, "normalizer": {"type": "Prepend", "prepend": "\#(String(repeating: "x", count: 1024))"}}"#])
            .contains("up to 1025 times longer"))
        #expect(message(["tokenizer.json": #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "continuing_subword_prefix": "\#(String(repeating: "#", count: 65))"}}"#])
            .contains("the continuing_subword_prefix is 65 bytes long; bert-dist reads up to 64"))
        // Within the limit: NFKC (11x) then Lowercase (3x) and a Replace to 31 bytes (31x) make
        // 1023 (the file is then refused for what it lacks, after the normalizers were read).
        let replace31 = #"{"type": "Replace", "pattern": {"String": "a"}, "content": "\#(String(repeating: "b", count: 31))"}"#
        #expect(message(["tokenizer.json": #"{"model": {"type": "Unigram", "vocab": [["a", 0.0]], "unk_id": 0}, "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}, \#(replace31)]}}"#])
            .contains("the tokenizer puts no special token in front of a text"))
    }

    /// HF's classes of GPT-2's regex for every scalar (letter, number, space, other).
    @Test func byteLevelClassesMatchHuggingFace() throws {
        let text = try String(contentsOf: familiesDirectory.appendingPathComponent("bytelevel_classes.txt"), encoding: .utf8)
        var expected = [UInt8](repeating: 255, count: 0x110000)
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let fields = line.split(separator: " ")
            let kind: UInt8 = ["O": ByteLevel.other, "L": ByteLevel.letter, "N": ByteLevel.number, "S": ByteLevel.space][String(fields[0])]!
            for value in Int(fields[1], radix: 16)!...Int(fields[2], radix: 16)! { expected[value] = kind }
        }
        var failures: [String] = []
        var checked = 0
        for value in 0..<0x110000 where !(0xD800...0xDFFF).contains(value) {
            checked += 1
            let ours = ByteLevel.characterClass(UInt32(value))
            if ours != expected[value] && failures.count < 20 { failures.append("U+\(String(value, radix: 16)) ours \(ours) HF \(expected[value])") }
        }
        #expect(checked == 0x110000 - 0x800)
        #expect(failures.isEmpty, "\(failures)")
    }

    /// tokenizers' Precompiled normalizer with XLM-R's nmt_nfkc rules, on every scalar alone.
    @Test func precompiledCharsmapMatchesHuggingFaceOnEveryScalar() throws {
        let model = try SentencePieceModel(url: familiesDirectory.appendingPathComponent("xlmr-spm/sentencepiece.bpe.model"))
        #expect(model.normalizerName == "nmt_nfkc")
        let charsmap = try PrecompiledCharsmap(model.precompiledCharsmap, source: "nmt_nfkc")
        let text = try String(contentsOf: familiesDirectory.appendingPathComponent("precompiled_nmt_nfkc.txt"), encoding: .utf8)
        var expected: [UInt32: [UInt8]] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let halves = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let scalars = halves[1].split(separator: " ").map { UInt32($0, radix: 16)! }
            var bytes: [UInt8] = []
            for scalar in scalars { bytes += Array(String(Unicode.Scalar(scalar)!).utf8) }
            expected[UInt32(halves[0].trimmingCharacters(in: .whitespaces), radix: 16)!] = bytes
        }
        #expect(expected.count > 3000)
        var failures: [String] = []
        var largestRatio = 1
        for value in UInt32(0)..<0x110000 where !(0xD800...0xDFFF).contains(value) {
            let input = Array(String(Unicode.Scalar(value)!).utf8)
            var output: [UInt8] = []
            input.withUnsafeBufferPointer { charsmap.normalize($0, appendingTo: &output) }
            largestRatio = max(largestRatio, (output.count + input.count - 1) / input.count)
            let wanted = expected[value] ?? input
            if output != wanted && failures.count < 20 {
                failures.append("U+\(String(value, radix: 16)) ours \(output) HF \(wanted)")
            }
        }
        #expect(failures.isEmpty, "\(failures)")
        // The bound read from the trie (the normalizer limit's factor) holds, and is reached (U+FDFA).
        #expect(largestRatio == 11 && charsmap.largestExpansion == 11, "\(largestRatio) \(charsmap.largestExpansion)")
    }

    @Test func oneTokenizerSharedByThreadsGivesTheSameIds() async throws {
        let golden = FamilyGolden.shared
        for folder in ["roberta-json", "xlmr-json"] {
            let expected = try loadFamilyTokenizer(folder)
            let texts = Array(golden.texts.prefix(600))
            let reference = texts.map { expected.encode($0, maxLength: 64) }
            let results = await encodedByFourTasks(try loadFamilyTokenizer(folder), texts)  // empty word cache
            #expect(results.count == 4 && results.allSatisfy { $0 == reference }, "\(folder)")
        }
    }

    @Test func appendingVariantsMatchAndKeepWhatIsThere() throws {
        for folder in ["roberta-json", "xlmr-json", "camembert-json"] {
            let tokenizer = try loadFamilyTokenizer(folder)
            var buffer: [Int32] = [7, 7]
            let text = "Hello, world! Café 日本"
            Array(text.utf8).withUnsafeBufferPointer { tokenizer.encode(utf8: $0, maxLength: 128, appendingTo: &buffer) }
            #expect(Array(buffer.dropFirst(2)) == tokenizer.encode(text, maxLength: 128))
            #expect(tokenizer.encode(text, maxLength: 2).count == 2)
            // A long text costs what its prefix costs, and gives the prefix's ids.
            let long = String(repeating: "the quick brown fox jumps over the lazy dog ", count: 20_000)
            let cut = tokenizer.encode(long, maxLength: 12)
            #expect(cut.count == 12 && cut == tokenizer.encode(String(long.prefix(400)), maxLength: 12))
        }
    }
}
