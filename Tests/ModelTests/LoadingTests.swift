import Foundation
import Testing
@testable import Model
import TestSupport

@Suite struct LoadingTests {
    let temporary = scratchURL("model-tests-\(UUID().uuidString)")

    init() throws { try FileManager.default.createDirectory(at: temporary, withIntermediateDirectories: true) }

    func write(_ tensors: [(String, [Int], [Float])], to name: String) throws -> URL {
        let url = temporary.appendingPathComponent(name)
        var storage = tensors.map { $0.2 }
        try withExtendedLifetime(storage) {
            let entries = tensors.indices.map { i in
                storage[i].withUnsafeBufferPointer { SafeTensorsEntry(name: tensors[i].0, shape: tensors[i].1, values: $0) }
            }
            try writeSafeTensors(entries, metadata: ["format": "pt"], to: url)
        }
        storage.removeAll()
        return url
    }

    @Test func safeTensorsRoundTrip() throws {
        let url = try write([("a", [2, 3], [1, 2, 3, 4, 5, 6]), ("b", [1], [-0.5]), ("empty", [0], [])], to: "rt.safetensors")
        let file = try SafeTensorsFile(url: url)
        #expect(try file.floats("a") == [1, 2, 3, 4, 5, 6])
        #expect(try file.floats("b") == [-0.5])
        #expect(try file.floats("empty") == [])
        #expect(file.records["a"]?.shape == [2, 3])
        #expect(file.metadata == ["format": "pt"])
    }

    @Test func readsWhatPyTorchWrote() throws {
        // The HF fixture: I64 position ids would be ignored, F32 tensors read exactly.
        let file = try SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_reference.safetensors"))
        #expect(try file.integers("labels") == [2, 0, 3])
        #expect(try file.floats("logits").count == 12)
    }

    @Test func widensHalfAndBFloat16() throws {
        // Hand-built file: F16 [1.5, -2] and BF16 [3.0] (bfloat16 = top half of float32).
        let f16: [UInt16] = [Float16(1.5).bitPattern, Float16(-2).bitPattern]
        let bf16: [UInt16] = [UInt16(Float(3).bitPattern >> 16)]
        var header = Array(#"{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[4,6]}}"#.utf8)
        while header.count % 8 != 0 { header.append(32) }
        var bytes = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header
        for v in f16 + bf16 { bytes += withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        let url = temporary.appendingPathComponent("half.safetensors")
        try Data(bytes).write(to: url)
        let file = try SafeTensorsFile(url: url)
        #expect(try file.floats("h") == [1.5, -2])
        #expect(try file.floats("b") == [3])
    }

    @Test func truncatedFileNamesTheFileAndTensor() throws {
        let url = try write([("a", [4], [1, 2, 3, 4]), ("b", [4], [5, 6, 7, 8])], to: "full.safetensors")
        let bytes = try Data(contentsOf: url)
        let cut = temporary.appendingPathComponent("cut.safetensors")
        try bytes.prefix(bytes.count - 5).write(to: cut)
        #expect(throws: ModelError.tensor(file: cut.path, tensor: "b", reason: "data ends at byte 32 but the file has only 27 data bytes (truncated file?)")) {
            try SafeTensorsFile(url: cut)
        }
        let tiny = temporary.appendingPathComponent("tiny.safetensors")
        try Data([1, 2, 3]).write(to: tiny)
        #expect(throws: ModelError.self) { try SafeTensorsFile(url: tiny) }
    }

    @Test func unsupportedDTypeIsNamed() throws {
        var header = Array(#"{"x":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}"#.utf8)
        while header.count % 8 != 0 { header.append(32) }
        let bytes = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header + [0]
        let url = temporary.appendingPathComponent("f8.safetensors")
        try Data(bytes).write(to: url)
        #expect(throws: ModelError.tensor(file: url.path, tensor: "x", reason: "unsupported dtype F8_E4M3")) {
            try SafeTensorsFile(url: url)
        }
    }

    /// A model folder made of the tiny fixture's config and a rewritten weight file.
    func folder(_ name: String, transform: ([(String, [Int], [Float])]) -> [(String, [Int], [Float])]) throws -> URL {
        let source = fixtures.appendingPathComponent("tiny_bert")
        let directory = temporary.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: source.appendingPathComponent("config.json"), to: directory.appendingPathComponent("config.json"))
        let file = try SafeTensorsFile(url: source.appendingPathComponent("model.safetensors"))
        let tensors = try file.records.keys.sorted().map { ($0, file.records[$0]!.shape, try file.floats($0)) }
        _ = try write(transform(tensors), to: "\(name)/model.safetensors")
        return directory
    }

    @Test func namesWithoutBertPrefixAndExtraHeadsLoad() throws {
        // A BertModel / BertForPreTraining style file: no "bert." prefix, an MLM head, no classifier.
        let directory = try folder("base") { tensors in
            tensors.filter { !$0.0.hasPrefix("classifier.") }
                .map { ($0.0.hasPrefix("bert.") ? String($0.0.dropFirst(5)) : $0.0, $0.1, $0.2) }
                + [("cls.predictions.bias", [99], [Float](repeating: 0, count: 99))]
        }
        let (model, report) = try BertForSequenceClassification.load(modelDirectory: directory, labelCount: 4, seed: 11, compute: Compute(threads: 1))
        #expect(report.initialized == ["classifier.weight", "classifier.bias"])
        #expect(report.ignored == ["cls.predictions.bias"])
        let weight = Array(model.parameters[model.layout["classifier.weight"].range])
        #expect(Array(model.parameters[model.layout["classifier.bias"].range]) == [0, 0, 0, 0])
        // normal(0, 0.02): the sample standard deviation of 128 values is near 0.02 ...
        let std = (weight.map { Double($0 * $0) }.reduce(0, +) / Double(weight.count)).squareRoot()
        #expect(std > 0.014 && std < 0.026)
        // ... and the same seed gives the same head.
        let (again, _) = try BertForSequenceClassification.load(modelDirectory: directory, labelCount: 4, seed: 11, compute: Compute(threads: 1))
        #expect(Array(again.parameters[again.layout["classifier.weight"].range]) == weight)
    }

    @Test func missingOrMisshapenTensorsAreNamed() throws {
        let missing = try folder("missing") { $0.filter { $0.0 != "bert.encoder.layer.1.output.dense.weight" } }
        #expect(throws: ModelError.tensor(file: missing.appendingPathComponent("model.safetensors").path,
                                          tensor: "bert.encoder.layer.1.output.dense.weight",
                                          reason: "missing (is this a BERT checkpoint matching its config.json?)")) {
            try BertForSequenceClassification.load(modelDirectory: missing, labelCount: 4, seed: 0, compute: Compute(threads: 1))
        }
        let twoLabels = try folder("two") { $0.map { $0.0 == "classifier.weight" ? ($0.0, [2, 32], Array($0.2.prefix(64))) : $0 } }
        do {
            _ = try BertForSequenceClassification.load(modelDirectory: twoLabels, labelCount: 4, seed: 0, compute: Compute(threads: 1))
            Issue.record("expected a shape error")
        } catch let error as ModelError {
            #expect(error.description.contains("classifier.weight: shape [2, 32], expected [4, 32]"))
        }
    }

    @Test func ignoreMismatchedSizesStartsANewHeadLikeHuggingFace() throws {
        // The tiny fixture's head has 4 labels; a run with 2 asks for a new one (HF's
        // from_pretrained(..., num_labels=2, ignore_mismatched_sizes=True)).
        let directory = fixtures.appendingPathComponent("tiny_bert")
        #expect(try BertForSequenceClassification.labelCount(modelDirectory: directory) == 4)
        let (model, report) = try BertForSequenceClassification.load(modelDirectory: directory, labelCount: 2, seed: 5, ignoreMismatchedSizes: true, compute: Compute(threads: 1))
        #expect(model.labelCount == 2 && report.initialized.isEmpty)
        #expect(report.reinitialized == ["classifier.weight: [4, 32] in the file, [2, 32] here", "classifier.bias: [4] in the file, [2] here"])
        #expect(Array(model.parameters[model.layout["classifier.bias"].range]) == [0, 0])
        let weight = Array(model.parameters[model.layout["classifier.weight"].range])
        let std = (weight.map { Double($0 * $0) }.reduce(0, +) / Double(weight.count)).squareRoot()
        #expect(std > 0.012 && std < 0.028, "normal(0, 0.02): \(std)")
        // The rest is the file's, and the same seed gives the same head.
        let file = try SafeTensorsFile(url: directory.appendingPathComponent("model.safetensors"))
        let pooler = model.layout["bert.pooler.dense.weight"]
        #expect(Array(model.parameters[pooler.range]) == (try file.floats("bert.pooler.dense.weight")))
        let (again, _) = try BertForSequenceClassification.load(modelDirectory: directory, labelCount: 2, seed: 5, ignoreMismatchedSizes: true, compute: Compute(threads: 1))
        #expect(Array(again.parameters[again.layout["classifier.weight"].range]) == weight)
        // Without the flag it is an error; with the right size the flag changes nothing.
        #expect(throws: ModelError.self) { try BertForSequenceClassification.load(modelDirectory: directory, labelCount: 2, seed: 5, compute: Compute(threads: 1)) }
        let (same, sameReport) = try BertForSequenceClassification.load(modelDirectory: directory, labelCount: 4, seed: 5, ignoreMismatchedSizes: true, compute: Compute(threads: 1))
        #expect(sameReport.reinitialized.isEmpty)
        #expect(Array(same.parameters[same.layout["classifier.weight"].range]) == (try file.floats("classifier.weight")))
        // A folder without a head has no label count of its own.
        let headless = try folder("headless") { $0.filter { !$0.0.hasPrefix("classifier.") } }
        #expect(try BertForSequenceClassification.labelCount(modelDirectory: headless) == 4)  // config.json's id2label
    }

    @Test func configDefaultsAndUnsupportedActivation() throws {
        let config = try JSONDecoder().decode(BertConfig.self, from: Data(#"{"hidden_size": 64, "num_attention_heads": 4}"#.utf8))
        #expect(config.hiddenSize == 64 && config.layerCount == 12 && config.vocabSize == 30522 && config.layerNormEps == 1e-12)
        var relu = config
        relu.hiddenAct = "relu"
        #expect(throws: ModelError.invalidConfig(file: "c.json", reason: "hidden_act \"relu\" is not supported (only the exact-erf \"gelu\" of BERT)")) {
            try relu.validate(file: "c.json")
        }
    }
}
