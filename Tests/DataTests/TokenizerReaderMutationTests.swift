import Foundation
import Testing

@testable import Data
import TestSupport

/// Damaged tokenizer files: each reader of the family tokenizers (tokenizer.json with BPE or
/// Unigram models, Precompiled charsmaps, Replace/Metaspace/templates; vocab.json; merges.txt;
/// the SentencePiece .model protobuf; tokenizer_config.json) gets fixed-seed mutations of a real
/// fixture file. Each must give a one-line DataError or a tokenizer that encodes texts and pairs
/// within its own vocabulary and length limits: never a crash (which would end the test
/// process), never a hang.
@Suite struct TokenizerReaderMutationTests {
    /// SplitMix64: the same mutations on every run.
    struct Generator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(max(bound, 1))) }
        mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }
    }

    /// Bytes whose replacement is likely to upset a parser.
    static let interestingBytes: [UInt8] = Array("\"{}[],:0123456789-.eE\\u \n".utf8) + [0x00, 0x7F, 0x80, 0xBF, 0xC3, 0xE2, 0xEF, 0xF0, 0xFF]
    /// Numbers to write over a number of a JSON file (ids, scores, counts).
    static let interestingNumbers = ["-1", "0", "2147483647", "2147483648", "4294967296", "-2147483649", "1e999", "1e308",
                                     "0.5", "-0", "99999999999999999999", "3", "65535", "-1e-400", "1E5"]
    /// Varints to write into a protobuf (lengths, field keys).
    static let interestingVarints: [[UInt8]] = [[0x00], [0x7F], [0xFF, 0xFF, 0xFF, 0xFF, 0x0F], [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
                                                [0x0A], [0x12], [0x1A], [0x08], [0x15], [0xFF]]

    static func mutate(_ original: [UInt8], _ random: inout Generator, json: Bool, protobuf: Bool) -> [UInt8] {
        var bytes = original
        for _ in 0..<(1 + random.below(3)) {
            guard !bytes.isEmpty else { return bytes }
            let position = random.below(bytes.count)
            switch random.below(json || protobuf ? 8 : 6) {
            case 0: bytes[position] ^= UInt8(1 << random.below(8))
            case 1: bytes[position] = random.pick(interestingBytes)
            case 2: bytes[position] = UInt8(truncatingIfNeeded: random.next())
            case 3: bytes.removeSubrange(position..<min(bytes.count, position + 1 + random.below(16)))
            case 4: bytes.insert(contentsOf: bytes[position..<min(bytes.count, position + 1 + random.below(32))], at: random.below(bytes.count))
            case 5: bytes.removeSubrange((position / 2 + bytes.count / 2)...)  // truncation
            case 6 where json:
                // Over a number: find the digits at or after the position.
                guard let start = bytes[position...].firstIndex(where: { $0 >= 0x30 && $0 <= 0x39 }) else { break }
                var end = start
                while end < bytes.count && (bytes[end] >= 0x30 && bytes[end] <= 0x39 || bytes[end] == 0x2E || bytes[end] == 0x2D) { end += 1 }
                bytes.replaceSubrange(start..<end, with: Array(random.pick(interestingNumbers).utf8))
            case 7 where json:
                // Empty or swap a string value / key.
                guard let quote = bytes[position...].firstIndex(of: 0x22),
                      let close = bytes[(quote + 1)...].firstIndex(of: 0x22) else { break }
                bytes.replaceSubrange((quote + 1)..<close, with: random.below(2) == 0 ? [] : Array("<mask>".utf8))
            case 6, 7:
                bytes.replaceSubrange(position..<min(bytes.count, position + 1), with: random.pick(interestingVarints))
            default: break
            }
        }
        return bytes
    }

    /// The texts every loaded tokenizer must encode.
    static let texts = ["Hello, world! <mask> Café 日本 \u{1F389}", "", "   ", "e\u{301}\u{FEFF}x \u{2581}a  b\tc", "ＡＢＣ ﬁ K Ω",
                        String(repeating: "the quick brown fox ", count: 30)]

    /// Loads `folder` (a copy of a fixture folder with `file` replaced by `bytes`): a one-line
    /// DataError, or a tokenizer whose ids stay within its vocabulary and the max length.
    @discardableResult
    static func check(_ folder: URL, _ file: String, _ bytes: [UInt8], case index: Int) throws -> Bool {
        try Data(bytes).write(to: folder.appendingPathComponent(file))
        let started = Date()
        defer { #expect(Date().timeIntervalSince(started) < 20, "case \(index): \(file) took \(Date().timeIntervalSince(started)) s") }
        do {
            let tokenizer = try loadTextTokenizer(modelDirectory: folder)
            let (single, pair) = tokenizer.minimumMaxLength
            for text in texts {
                for maxLength in [max(single, 3), 17, 512] where maxLength >= single {
                    let ids = tokenizer.encode(text, maxLength: maxLength)
                    #expect(ids.count <= maxLength && ids.allSatisfy { $0 >= 0 && Int($0) < tokenizer.vocabularySize },
                            "case \(index): \(file) encodes \(text.prefix(20).debugDescription) outside its limits: \(ids.prefix(40))")
                }
                let maxLength = max(pair, 9)
                let (ids, types) = tokenizer.encodePair(text, texts[0], maxLength: maxLength)
                #expect(ids.count <= maxLength && types.count == ids.count
                        && ids.allSatisfy { $0 >= 0 && Int($0) < tokenizer.vocabularySize },
                        "case \(index): \(file) encodes a pair outside its limits")
            }
            return true
        } catch let error as DataError {
            #expect(!error.description.contains("\n") && error.description.contains(folder.path),
                    "case \(index): \(file): \(error.description)")
            return false
        }
    }

    /// (fixture folder, file to damage, mutations): BPE tokenizer.json read with RoBERTa's and
    /// the generic pipeline, vocab files, Unigram tokenizer.json (class and generic, with a
    /// Precompiled charsmap, Replace regexes, byte fallback, NFKC/Lowercase/Strip/Prepend, added
    /// tokens), character-level BPE with byte fallback, the .model, tokenizer_config.json.
    static let targets: [(String, String, Int)] = [
        ("bpe-generic", "tokenizer.json", 120),
        ("roberta-json", "tokenizer.json", 60),
        ("roberta-vocab", "vocab.json", 80),
        ("roberta-vocab", "merges.txt", 80),
        ("camembert-json", "tokenizer.json", 100),
        ("unigram-generic", "tokenizer.json", 100),
        ("unigram-byte-fallback", "tokenizer.json", 120),
        ("bpe-spm-byte-fallback", "tokenizer.json", 100),
        ("unigram-edge", "tokenizer.json", 100),
        ("camembert-spm", "sentencepiece.bpe.model", 200),
        ("roberta-hub", "tokenizer_config.json", 80),
        ("xlmr-spm", "tokenizer_config.json", 60),
    ]

    @Test(arguments: 0..<targets.count)
    func damagedFilesGiveOneLineErrorsOrWorkingTokenizers(target: Int) throws {
        let (name, file, count) = Self.targets[target]
        let source = familiesDirectory.appendingPathComponent(name)
        let folder = scratchURL("bert-dist-mutation-\(getpid())-\(target)")
        try? FileManager.default.removeItem(at: folder)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        for entry in try FileManager.default.contentsOfDirectory(atPath: source.path) {
            // (resolving symlinks: roberta-hub's tokenizer.json is one)
            try FileManager.default.copyItem(at: source.appendingPathComponent(entry).resolvingSymlinksInPath(),
                                             to: folder.appendingPathComponent(entry))
        }
        let original = [UInt8](try Data(contentsOf: source.appendingPathComponent(file).resolvingSymlinksInPath()))
        #expect(try Self.check(folder, file, original, case: -1), "the undamaged \(name)/\(file) loads")
        var random = Generator(state: 0x6D75_7461_7465 &+ UInt64(target))
        var loaded = 0
        for index in 0..<count {
            let mutated = Self.mutate(original, &random, json: file.hasSuffix(".json"), protobuf: file.hasSuffix(".model"))
            if try Self.check(folder, file, mutated, case: index) { loaded += 1 }
        }
        print("mutations of \(name)/\(file): \(loaded) of \(count) loaded, the others refused")
        #expect(loaded < count, "no mutation of \(name)/\(file) was refused: the mutations do not reach the reader")
    }

    /// The double array and strings of a charsmap, damaged directly (not through base64 or a
    /// protobuf): an error naming the source, or a normalizer that runs.
    @Test func damagedCharsmapsGiveErrorsOrRun() throws {
        let model = try SentencePieceModel(url: familiesDirectory.appendingPathComponent("camembert-spm/sentencepiece.bpe.model"))
        let original = model.precompiledCharsmap
        #expect(original.count > 100)
        var random = Generator(state: 0x6368_6172_736D_6170)
        var loaded = 0
        for index in 0..<400 {
            let mutated = Self.mutate(original, &random, json: false, protobuf: true)
            do {
                let charsmap = try PrecompiledCharsmap(mutated, source: "case \(index)")
                loaded += 1
                for text in Self.texts {
                    var output: [UInt8] = []
                    Array(text.utf8).withUnsafeBufferPointer { charsmap.normalize($0, appendingTo: &output) }
                    #expect(String(validating: output, as: UTF8.self) != nil, "case \(index): invalid UTF-8 out")
                }
            } catch let error as DataError {
                #expect(error.description.hasPrefix("case \(index): the precompiled_charsmap") && !error.description.contains("\n"))
            }
        }
        #expect(loaded > 0 && loaded < 400)
    }

    /// Unbalanced or deep JSON stops at 128 levels, with an error, whatever the depth.
    @Test func deepJSONIsAnErrorNotAStackOverflow() throws {
        for depth in [127, 129, 100_000] {
            let text = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
            do {
                _ = try JSONValue.parse(Array(text.utf8), source: "deep.json")
                #expect(depth < 128)
            } catch let error as DataError {
                #expect(depth >= 128 && error.description.contains("128 levels"))
            }
        }
    }
}
