@testable import Data
import Foundation
import Storage
import Testing
@testable import Training

/// Each file that once crashed, aborted or hung a loader (found by the fuzzer or reported in
/// issue 17), kept as a named case: the loader must now refuse it with this one-line error.
@Suite struct FuzzRegressionTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        let file: String
        let edit: @Sendable ([UInt8]) -> [UInt8]
        /// A part of the expected message.
        let expected: String
        /// The loader's variant (FuzzTarget.load); data targets read with labels from the data
        /// when it is 1, with a fixed set and stopping at a bad row when it is 3.
        var variant = 1
        var testDescription: String { name }
    }

    /// config.json with `key` set to the JSON text `raw` (added when absent).
    static func config(_ key: String, _ raw: String) -> @Sendable ([UInt8]) -> [UInt8] {
        { bytes in
            var object = JSONMutations.parse(bytes) as! [String: Any]
            object[key] = JSONMutations.rawMarker
            return JSONMutations.serialize(object, raw: raw)!
        }
    }

    /// model.safetensors with its header edited.
    static func header(_ edit: @escaping @Sendable (inout [String: Any]) -> Void, raw: String = "") -> @Sendable ([UInt8]) -> [UInt8] {
        { bytes in
            var parts = SafeTensorsParts(bytes)!
            edit(&parts.header)
            return parts.bytes(raw: raw)!
        }
    }

    static func tensor(_ name: String, _ field: String, _ raw: String) -> @Sendable ([UInt8]) -> [UInt8] {
        header({ header in
            var entry = header[name] as! [String: Any]
            entry[field] = JSONMutations.rawMarker
            header[name] = entry
        }, raw: raw)
    }

    static let query = "bert.encoder.layer.0.attention.self.query.weight"

    static let modelCases: [Case] = [
        // Issue 17's reports.
        Case(name: "header length 2^63", file: "model.safetensors", edit: { withUnsafeBytes(of: (UInt64(1) << 63).littleEndian) { Array($0) } + $0[8...] },
             expected: "truncated or not safetensors: header of 9223372036854775808 bytes"),
        Case(name: "header length 2^64 - 1", file: "model.safetensors", edit: { [UInt8](repeating: 0xff, count: 8) + $0[8...] },
             expected: "header of 18446744073709551615 bytes"),
        Case(name: "hidden_size 2^31", file: "config.json", edit: config("hidden_size", "2147483648"),
             expected: "hidden_size 2147483648 is larger than 16777216"),
        Case(name: "intermediate_size 10^12", file: "config.json", edit: config("intermediate_size", "1000000000000"),
             expected: "intermediate_size 1000000000000 is larger than"),
        Case(name: "vocab_size 2^31", file: "config.json", edit: config("vocab_size", "2147483648"), expected: "vocab_size 2147483648 is larger than"),
        Case(name: "max_position_embeddings 10^12", file: "config.json", edit: config("max_position_embeddings", "1000000000000"),
             expected: "max_position_embeddings 1000000000000 is larger than"),
        Case(name: "type_vocab_size 2^31", file: "config.json", edit: config("type_vocab_size", "2147483648"),
             expected: "type_vocab_size 2147483648 is larger than"),
        Case(name: "num_hidden_layers 10^12", file: "config.json", edit: config("num_hidden_layers", "1000000000000"),
             expected: "num_hidden_layers 1000000000000 is larger than 1024"),
        // Sizes within the bounds but not in the file: refused before the arenas are allocated.
        Case(name: "vocab_size 16777216 without the tensors", file: "config.json", edit: config("vocab_size", "16777216"),
             expected: "bert.embeddings.word_embeddings.weight: shape [99, 32], expected [16777216, 32] (config.json and model.safetensors do not match)"),
        Case(name: "num_hidden_layers 1024 without the tensors", file: "config.json", edit: config("num_hidden_layers", "1024"),
             expected: "tensor bert.encoder.layer.2.attention.self.query.weight: missing"),
        Case(name: "max_position_embeddings 1 (train tokenised with a length of 1)", file: "config.json",
             edit: config("max_position_embeddings", "1"), expected: "max_position_embeddings 1 leaves no room for [CLS] and [SEP]"),
        Case(name: "num_attention_heads not dividing hidden_size", file: "config.json", edit: config("num_attention_heads", "5"),
             expected: "hidden_size 32 is not a multiple of num_attention_heads 5"),
        // Found by the fuzzer.
        Case(name: "shape whose product overflows", file: "model.safetensors", edit: tensor(query, "shape", "[4611686018427387904,4]"),
             expected: "do not hold shape [4611686018427387904, 4] of F32"),
        Case(name: "shape whose product overflows (square)", file: "model.safetensors", edit: tensor(query, "shape", "[3037000500,3037000500]"),
             expected: "do not hold shape [3037000500, 3037000500]"),
        Case(name: "classifier of 10^12 labels and no bytes", file: "model.safetensors",
             edit: header { $0["classifier.weight"] = ["dtype": "F32", "shape": [1_000_000_000_000, 0], "data_offsets": [0, 0]] },
             expected: "the number of labels (the rows of classifier.weight) 1000000000000 is larger than"),
        Case(name: "classifier of 0 labels", file: "model.safetensors",
             edit: header({ header in
                 header["classifier.weight"] = ["dtype": "F32", "shape": [0, 32], "data_offsets": [0, 0]]
                 header["classifier.bias"] = ["dtype": "F32", "shape": [0], "data_offsets": [0, 0]]
             }),
             expected: "the number of labels (the rows of classifier.weight) must be positive, found 0"),
        Case(name: "vocab_size given twice", file: "config.json",
             edit: { bytes in Array("{\"vocab_size\":1000000000000,".utf8) + bytes.drop(while: { $0 != UInt8(ascii: "{") }).dropFirst() },
             expected: "vocab_size 1000000000000 is larger than"),
        Case(name: "two tensors over the same bytes", file: "model.safetensors",
             edit: header { header in
                 // The pooler's bias over the first 32 floats of a query weight.
                 let begin = ((header[query] as! [String: Any])["data_offsets"] as! [Int])[0]
                 header["bert.pooler.dense.bias"] = ["dtype": "F32", "shape": [32], "data_offsets": [begin, begin + 128]]
             },
             expected: "overlap those of"),
        Case(name: "a tensor name twice", file: "model.safetensors",
             edit: { bytes in
                 let parts = SafeTensorsParts(bytes)!
                 var json = Array(JSONMutations.serialize(parts.header, raw: "")!)
                 json.insert(contentsOf: Array("\"classifier.bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},".utf8), at: 1)
                 while json.count % 8 != 0 { json.append(32) }
                 return withUnsafeBytes(of: UInt64(json.count).littleEndian) { Array($0) } + json + parts.data
             },
             expected: "names \"classifier.bias\" twice"),
        Case(name: "hidden_act of 70000 characters (a 70 KB message)", file: "config.json",
             edit: config("hidden_act", "\"" + String(repeating: "a", count: 70_000) + "\""), expected: "config.json: hidden_act \"aaaa"),
        Case(name: "header of 2^31 bytes", file: "model.safetensors", edit: { withUnsafeBytes(of: UInt64(1 << 31).littleEndian) { Array($0) } + $0[8...] },
             expected: "header of 2147483648 bytes in a"),
        // Found by the fuzzer with BERT_DIST_FUZZ_SEED=3: ModelError quoted the value as it was.
        Case(name: "model_type a line break", file: "config.json", edit: config("model_type", #""\n""#),
             expected: #"model_type "\n" is not supported"#),
        Case(name: "hidden_act a line break", file: "config.json", edit: config("hidden_act", #""\n""#),
             expected: #"hidden_act "\n" is not supported"#),
    ]

    @Test(arguments: modelCases) func modelFolder(_ regression: Case) throws {
        try expectRefusal(regression, target: FuzzTargets.predict())
        try expectRefusal(regression, target: FuzzTargets.train())
    }

    /// A checkpoint whose trainer_state.pb was edited and re-signed (its own SHA-256 recomputed).
    static func state(_ edit: @escaping @Sendable (inout TrainerState) -> Void) -> @Sendable ([UInt8]) -> [UInt8] {
        { bytes in
            var state = try! TrainerState(decoding: bytes, file: "trainer_state.pb")
            edit(&state)
            return state.encoded()
        }
    }

    static let checkpointCases: [Case] = [
        Case(name: "an optimizer range starting at -2^63", file: "trainer_state.pb",
             edit: state { $0.optimizerShards.append(.init(rank: 0, start: Int(Int64.min), count: 1)) },
             expected: "optimizer range -9223372036854775808 + 1 of rank 0 is outside the"),
        Case(name: "an optimizer range past the parameters", file: "trainer_state.pb",
             edit: state { $0.optimizerShards[0].count = Int(Int64.max) },
             expected: "is outside the"),
        Case(name: "a listed file that is /dev/zero", file: "trainer_state.pb",
             edit: state { $0.files.append(.init(name: "../../../../../../../../dev/zero", sizeBytes: 0, sha256: SHA256.hash([]))) },
             expected: "which is not a file name inside the checkpoint folder"),
        Case(name: "a negative sample position", file: "trainer_state.pb", edit: state { $0.samplesConsumedInEpoch = -1 },
             expected: "samples_consumed_in_epoch is -1, below 0"),
        // Resuming it trapped: Adam's step count overflowed at the next update.
        Case(name: "2^63 - 1 optimizer steps", file: "trainer_state.pb",
             edit: state { $0.optimizerStep = Int(Int64.max); $0.totalSteps = Int(Int64.max) },
             expected: "optimizer_step is 9223372036854775807, more than the 6 steps taken"),
        Case(name: "a listed file with a carriage return in its name and an empty SHA-256", file: "trainer_state.pb",
             edit: emptyChecksumOfConfigNamed("config\rjson"), expected: "the SHA-256 of \"config\\rjson\" has 0 bytes, not 32"),
    ]

    /// trainer_state.pb with config.json's entry renamed to `name` (as long) and its SHA-256
    /// emptied, as bit flips once did (before the file's own checksum is read).
    static func emptyChecksumOfConfigNamed(_ name: String) -> @Sendable ([UInt8]) -> [UInt8] {
        { bytes in
            // FileChecksum: 0x0a <name length> name, 0x10 <size varint>, 0x1a 0x20 <32 bytes>.
            let old = [0x0a, 11] + Array("config.json".utf8)
            var bytes = bytes
            let start = (0...(bytes.count - old.count)).first { Array(bytes[$0..<($0 + old.count)]) == old }!
            bytes.replaceSubrange((start + 2)..<(start + old.count), with: Array(name.utf8))
            var digest = start + old.count + 1
            while bytes[digest] & 0x80 != 0 { digest += 1 }  // the size's varint
            digest += 1
            precondition(bytes[digest] == 0x1a && bytes[digest + 1] == 32 && bytes[start - 1] < 128)
            bytes[digest + 1] = 0
            bytes.removeSubrange((digest + 2)..<(digest + 34))
            bytes[start - 1] -= 32  // the entry's length
            return bytes
        }
    }

    @Test(arguments: checkpointCases) func checkpoint(_ regression: Case) throws {
        try expectRefusal(regression, target: FuzzTargets.checkpoint())
    }

    static let resumeCases: [Case] = [
        Case(name: "a sample position beyond the data", file: "trainer_state.pb", edit: state { $0.samplesConsumedInEpoch = 1_000_000_000_000 },
             expected: "checkpoint-6: records sample 1000000000000 of an epoch of 64 examples"),
    ]

    @Test(arguments: resumeCases) func resume(_ regression: Case) throws {
        try expectRefusal(regression, target: FuzzTargets.resume())
    }

    static let tokenizerCases: [Case] = [
        Case(name: "tokenizer.json vocabulary id 2^31 - 1", file: "tokenizer.json",
             edit: { bytes in
                 var tree = JSONMutations.parse(bytes) as! [String: Any]
                 var model = tree["model"] as! [String: Any]
                 var vocab = model["vocab"] as! [String: Any]
                 vocab["w50"] = 2_147_483_647
                 model["vocab"] = vocab
                 tree["model"] = model
                 return JSONMutations.serialize(tree, raw: "")!
             },
             expected: "vocabulary: an id is 2147483647 for 99 tokens"),
        Case(name: "tokenizer.json post-processor type of 70000 characters (a 70 KB message)", file: "tokenizer.json",
             edit: { bytes in
                 var tree = JSONMutations.parse(bytes) as! [String: Any]
                 tree["post_processor"] = ["type": String(repeating: "a", count: 70_000)]
                 return JSONMutations.serialize(tree, raw: "")!
             },
             expected: "tokenizer.json: post-processor aaaa"),
        // Found by the 20x campaign: the message was two lines (DataError now escapes line breaks).
        Case(name: "tokenizer.json pre-tokenizer type of a line break", file: "tokenizer.json",
             edit: { bytes in
                 var tree = JSONMutations.parse(bytes) as! [String: Any]
                 tree["pre_tokenizer"] = ["type": "\n"]
                 return JSONMutations.serialize(tree, raw: "")!
             },
             expected: #"tokenizer.json: pre-tokenizer \n is not supported"#),
        // Found with BERT_DIST_FUZZ_SEED=6: each encode call allocated 5 x 4 bytes per character of
        // max_input_chars_per_word (Fatal error: failed to allocate 34359738384 bytes).
        Case(name: "tokenizer.json max_input_chars_per_word 2^31 - 1", file: "tokenizer.json",
             edit: { bytes in
                 var tree = JSONMutations.parse(bytes) as! [String: Any]
                 var model = tree["model"] as! [String: Any]
                 model["max_input_chars_per_word"] = 2_147_483_647
                 tree["model"] = model
                 return JSONMutations.serialize(tree, raw: "")!
             },
             expected: "tokenizer.json: model.max_input_chars_per_word must be an integer from 0 to 65536, found 2147483647"),
    ]

    @Test(arguments: tokenizerCases) func tokenizer(_ regression: Case) throws {
        try expectRefusal(regression, target: FuzzTargets.tokenizers()[1])
    }

    /// A token cache with `edit` applied to its bytes and its damage hash recomputed.
    static func cache(_ edit: @escaping @Sendable (inout [UInt8]) -> Void) -> @Sendable ([UInt8]) -> [UInt8] {
        { bytes in
            var out = bytes
            edit(&out)
            return FuzzTargets.rehashed(out)
        }
    }

    static func store(_ value: UInt64, at offset: Int, in bytes: inout [UInt8]) {
        for byte in 0..<8 { bytes[offset + byte] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(byte))) }
    }

    static let dataCases: [(target: Int, regression: Case)] = [
        (4, Case(name: "token cache: 2^63 skipped rows", file: "train.tokens", edit: cache { store(1 << 63, at: 32, in: &$0) },
                 expected: "the token cache is damaged (its size")),
        (4, Case(name: "token cache: an offset of -2^63 after a valid one", file: "train.tokens",
                 edit: cache { store(UInt64(bitPattern: Int64.min), at: TokenizedDataset.headerByteCount + 2 * 8, in: &$0) }, expected: "the token cache is damaged (bad offsets)")),
        (3, Case(name: "JSON Lines: a label that is a line break", file: "train.jsonl",
                 edit: { _ in Array(#"{"text": "w5", "text_pair": "", "label": "\n"}"#.utf8) },
                 expected: #"train.jsonl:1: label "\n" is not one of the 3 labels"#, variant: 3)),
        (2, Case(name: "TSV: a header naming a column of 30000 characters", file: "train.tsv",
                 edit: { _ in Array(("id\ttext\t" + String(repeating: "\u{4e2d}", count: 30_000) + "\n1\tw5\t0\n").utf8) },
                 expected: #"no column "label" (the label column) in the header; its columns are "id", "text", ""#)),
    ]

    @Test(arguments: dataCases.indices) func dataFile(_ index: Int) throws {
        let (target, regression) = Self.dataCases[index]
        let targets = try FuzzTargets.dataFiles() + [FuzzTargets.tokenCache()]
        try expectRefusal(regression, target: targets[target])
    }

    /// A model file replaced by a pipe: the open must not block.
    @Test(.timeLimit(.minutes(1))) func weightsThatArePipe() throws {
        let target = try FuzzTargets.predict()
        let folder = try FuzzRunner.scratchFolder(for: target)
        defer { try? FileManager.default.removeItem(at: folder.deletingLastPathComponent()) }
        let weights = folder.appendingPathComponent("model.safetensors")
        try FileManager.default.removeItem(at: weights)
        #expect(mkfifo(weights.path, 0o600) == 0)
        #expect(throws: Error.self) { try target.load(folder, 0) }
        do { try target.load(folder, 0) } catch { #expect("\(error)".contains("not a regular file"), "\(error)") }
    }

    func expectRefusal(_ regression: Case, target: FuzzTarget) throws {
        let folder = try FuzzRunner.scratchFolder(for: target)
        defer { try? FileManager.default.removeItem(at: folder.deletingLastPathComponent()) }
        try Data(regression.edit(target.files[regression.file]!)).write(to: folder.appendingPathComponent(regression.file))
        FuzzActivity.begin("regression \(regression.name) of \(target.name) (files in \(folder.path))")
        defer { FuzzActivity.end() }
        do {
            try target.load(folder, regression.variant)
            Issue.record("\(regression.name): \(target.name) loaded it")
        } catch {
            #expect(FuzzRunner.problemWith(error) == nil, "\(regression.name): \(error)")
            #expect("\(error)".contains(regression.expected), "\(regression.name): \(error)")
        }
    }
}
