import Foundation
import Testing
@testable import Model
import TestSupport

/// The encoder families against PyTorch + transformers (tools/make_family_model_fixtures.py): per
/// family a tiny random `<Family>ForSequenceClassification` (Fixtures/tiny_F/) and its reference
/// (tiny_F_reference.safetensors): logits, loss, every gradient and 3 AdamW steps with the
/// tolerances of the BERT twin (TinyParityTests), and what HF saves and loads (tensor names,
/// config.json, the places of dropout).
@Suite struct FamilyParityTests {
    static let families = ["distilbert", "electra", "roberta", "xlm-roberta", "camembert"]

    @Test(arguments: families)
    func forwardMatchesPyTorch(family: String) throws {
        let (model, reference) = try loadFamily(family)
        let batch = try packedBatch(from: reference)
        let result = try model.forward(batch, dropout: nil)
        expectClose(model.logits, try reference.floats("logits"), relativeTolerance: 1e-5, "\(family) logits")
        let loss = [Float(result.lossSum / Double(batch.sequenceCount))]
        loss.withUnsafeBufferPointer { expectClose($0, try! reference.floats("loss"), relativeTolerance: 1e-5, "\(family) loss") }
    }

    @Test(arguments: families)
    func everyGradientMatchesPyTorch(family: String) throws {
        let (model, reference) = try loadFamily(family)
        let batch = try packedBatch(from: reference)
        try model.forward(batch, dropout: nil)
        var finished: [Int] = []
        try model.backward(batch, dropout: nil, lossScale: 1 / Float(batch.sequenceCount)) { finished.append($0) }
        for tensor in model.layout.tensors {
            // The keys' bias gets no gradient in exact arithmetic (softmax ignores a constant added
            // to a row of scores): both sides hold rounding noise, measured against the scale of
            // the key weight's gradient.
            let floor = isKeyBias(tensor.name) ? magnitude(model.gradients[model.layout[keyWeight(tensor.name)].range]) : 1e-6
            expectClose(UnsafeBufferPointer(model.gradients[tensor.range]), try reference.floats("grad." + tensor.name),
                        relativeTolerance: 1e-4, scaleFloor: floor, "\(family) grad \(tensor.name)")
        }
        #expect(finished == model.layout.backwardReadyOffsets)
    }

    @Test(arguments: families)
    func threeAdamWStepsMatchPyTorch(family: String) throws {
        let (model, reference) = try loadFamily(family)
        let batch = try packedBatch(from: reference)
        let losses = try threeOptimizerSteps(model, batch, kind: .adamw, expectedLearningRates: try reference.floats("schedule.lr"))
        losses.withUnsafeBufferPointer { expectClose($0, try! reference.floats("adamw.loss"), relativeTolerance: 1e-5, "\(family) losses") }
        let clipFactor = try fixtureClipFactor(reference, model.layout)
        for tensor in model.layout.tensors {
            expectCloseAfterAdam(UnsafeBufferPointer(model.parameters[tensor.range]), try reference.floats("adamw." + tensor.name),
                                 firstGradient: try reference.floats("grad." + tensor.name), clipFactor: clipFactor,
                                 gradientIsNoise: isKeyBias(tensor.name),
                                 "\(family) \(tensor.name) after 3 steps")
        }
    }

    /// The layout's names are HF's state_dict keys of the class (what save_pretrained writes and
    /// from_pretrained reads), so checkpoints are written in the family's format; the weights
    /// written back under them load again unchanged.
    @Test(arguments: families)
    func tensorNamesAreTheStateDictKeysOfTheClass(family: String) throws {
        let (model, reference) = try loadFamily(family)
        let expected = try JSONDecoder().decode([String].self, from: Data(reference.metadata["state_dict_keys"]!.utf8))
        #expect(Set(model.layout.tensors.map(\.name)) == Set(expected))
        #expect(model.layout.tensors.count == expected.count)
        #expect(model.architecture.className == reference.metadata["architecture"])

        let folder = scratchURL("family-\(family)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try model.config.huggingFaceConfigJSON(labelNames: model.config.labelNames).write(to: folder.appendingPathComponent("config.json"))
        try writeSafeTensors(model.layout.tensors.map {
            SafeTensorsEntry(name: $0.name, shape: $0.shape, values: UnsafeBufferPointer(model.parameters[$0.range]))
        }, metadata: ["format": "pt"], to: folder.appendingPathComponent("model.safetensors"))
        let (again, report) = try BertForSequenceClassification.load(modelDirectory: folder, labelCount: nil, seed: 1, compute: Compute(threads: 1))
        #expect(report.initialized.isEmpty && report.ignored.isEmpty)
        #expect(again.config == model.config)
        #expect(Array(again.parameters.buffer) == Array(model.parameters.buffer))
    }

    /// config.json written back is what transformers wrote: every key written has HF's value,
    /// model_type and architectures included, and it reads back as the same description. The
    /// keys HF writes that are not written are those bert-dist does not model (checkpoints keep
    /// them from the folder's file). BERT's too (tiny_bert, written by transformers 5).
    @Test(arguments: families + ["bert"])
    func configJSONIsWhatTransformersWrites(family: String) throws {
        let directory = fixtures.appendingPathComponent("tiny_" + family)
        let config = try BertConfig.load(modelDirectory: directory)
        #expect(config.family.rawValue == family)
        let written = try config.huggingFaceConfigJSON(labelNames: config.labelNames)
        let ours = try JSONDecoder().decode([String: JSON].self, from: written)
        let theirs = try JSONDecoder().decode([String: JSON].self, from: Data(contentsOf: directory.appendingPathComponent("config.json")))
        for (key, value) in ours {
            if key == "num_labels" {
                #expect(value == .number(Double(config.labelNames?.count ?? -1)))
                continue
            }
            guard let expected = theirs[key] else {
                Issue.record("\(family): config key \(key) is not one transformers writes")
                continue
            }
            #expect(value == expected, "\(family) \(key): \(value) vs \(expected)")
        }
        let unmodelled: Set = ["add_cross_attention", "bos_token_id", "dtype", "eos_token_id", "is_decoder", "tie_word_embeddings",
                               "transformers_version", "use_cache", "qa_dropout", "summary_type", "summary_use_proj",
                               "summary_activation", "summary_last_dropout"]
        #expect(Set(theirs.keys).subtracting(ours.keys).subtracting(unmodelled).isEmpty,
                "\(family): keys transformers writes that bert-dist does not: \(Set(theirs.keys).subtracting(ours.keys).subtracting(unmodelled))")
        #expect(try BertConfig.decode(written, file: "written") == config)
        // The encoding ranks exchange is the same keys.
        #expect(try BertConfig.decode(JSONEncoder().encode(config), file: "encoded") == config)
    }

    /// Where HF applies dropout and with which probability, recorded from one train-mode forward
    /// with a distinct probability per config key (hidden 0.11, attention 0.13, classifier 0.17):
    /// the description has the same sites in the same order (DistilBERT: none after the attention
    /// output; ELECTRA and RoBERTa: one before the head's dense layer too).
    @Test(arguments: families)
    func dropoutSitesAreHuggingFaces(family: String) throws {
        let reference = try SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_\(family)_reference.safetensors"))
        let recorded = try JSONSerialization.jsonObject(with: Data(reference.metadata["dropout_sites"]!.utf8)) as! [[Any]]
        func kind(_ name: String) -> String {
            if name == "attention probabilities" { return "attention probabilities" }
            if name.hasSuffix("embeddings.dropout") { return "embeddings" }
            if name.hasSuffix("attention.output.dropout") { return "attention output" }
            if name.hasSuffix("output.dropout") || name.hasSuffix("ffn.dropout") { return "feed-forward output" }
            return "head"
        }
        let theirs = recorded.map { "\(kind($0[0] as! String)) \(($0[1] as! NSNumber).floatValue)" }
        var config = try BertConfig.load(modelDirectory: fixtures.appendingPathComponent("tiny_" + family))
        config.hiddenDropoutProb = 0.11
        config.attentionDropoutProb = 0.13
        config.classifierDropout = 0.17
        let ours = config.architecture.dropout.sites(layerCount: config.layerCount).map { site, probability in
            let name = switch site {
            case .embeddings: "embeddings"
            case .attentionProbabilities: "attention probabilities"
            case .attentionOutput: "attention output"
            case .feedForwardOutput: "feed-forward output"
            case .classifierInput, .classifier: "head"
            }
            return "\(name) \(probability)"
        }
        #expect(ours == theirs)
    }
}

/// --bf16 per family against PyTorch (tiny_F_bf16_reference.safetensors), with the tolerances
/// and reasoning of BF16ParityTests: within 1e-4 (relative L2) of `emulated.*`, bert-dist's
/// semantics written in PyTorch (every Linear — the head's two and ELECTRA's projection
/// included — and both attention products round their inputs to bf16 and sum in fp32), and
/// within 2x autocast's own distance from fp32 of PyTorch's autocast.
@Suite struct FamilyBF16ParityTests {
    static let families = ["distilbert", "electra", "roberta"]

    struct References {
        let bf16, fp32: SafeTensorsFile
        init(_ family: String) throws {
            bf16 = try SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_\(family)_bf16_reference.safetensors"))
            fp32 = try SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_\(family)_reference.safetensors"))
        }

        /// Within 1e-4 of emulated, and within 2x autocast's distance from fp32 of autocast — or, where
        /// PyTorch's emulated semantics is itself further from autocast than that (measured: a few of
        /// RoBERTa's head tensors after 3 AdamW steps, where autocast's bf16 Linear outputs matter
        /// most), within 2x that distance.
        func expect(_ actual: [Float], _ key: String, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let emulated = try bf16.floats("emulated." + key)
            let distance = relativeDistance(actual, emulated)
            let autocast = try bf16.floats("autocast." + key)
            let bound = 2 * max(relativeDistance(autocast, try fp32.floats(key)), relativeDistance(emulated, autocast))
            let fromAutocast = relativeDistance(actual, autocast)
            print(String(format: "%@: relative L2 distance from emulated %.2e, from autocast %.2e (bound %.2e)", what, distance,
                         fromAutocast, bound))
            #expect(distance <= 1e-4, "\(what): \(distance) from emulated", sourceLocation: sourceLocation)
            #expect(fromAutocast <= bound, "\(what): \(fromAutocast) from autocast > 2x autocast-fp32 \(bound)", sourceLocation: sourceLocation)
        }
    }

    static var arguments: [(String, BF16Engine)] {
        families.flatMap { family in BF16ParityTests.engines.map { (family, $0) } }
    }

    @Test(arguments: arguments)
    func forwardAndEveryGradientMatchTheEmulatedSemantics(family: String, engine: BF16Engine) throws {
        let references = try References(family)
        let (model, _) = try loadFamily(family, compute: Compute(threads: 1, precision: .bf16, bf16Engine: engine))
        let batch = try packedBatch(from: references.fp32)
        let result = try model.forward(batch, dropout: nil)
        try references.expect(Array(model.logits), "logits", "\(family) logits")
        try references.expect([Float(result.lossSum / Double(batch.sequenceCount))], "loss", "\(family) loss")
        try model.backward(batch, dropout: nil, lossScale: 1 / Float(batch.sequenceCount))
        for tensor in model.layout.tensors {
            let gradient = Array(model.gradients[tensor.range])
            if tensor.name.hasSuffix("key.bias") || tensor.name.hasSuffix("k_lin.bias") {
                // Zero in exact arithmetic; rounding noise bounded as in BF16ParityTests.
                let weight = Array(model.gradients[model.layout[tensor.name.replacingOccurrences(of: ".bias", with: ".weight")].range])
                #expect(norm(gradient) <= 0x1p-8 * norm(weight), "\(family) grad \(tensor.name)")
                continue
            }
            try references.expect(gradient, "grad." + tensor.name, "\(family) grad \(tensor.name)")
        }
    }

    @Test(arguments: arguments)
    func threeAdamWStepsMatchTheEmulatedSemantics(family: String, engine: BF16Engine) throws {
        let references = try References(family)
        let (model, _) = try loadFamily(family, compute: Compute(threads: 1, precision: .bf16, bf16Engine: engine))
        let losses = try threeOptimizerSteps(model, try packedBatch(from: references.fp32), kind: .adamw)
        try references.expect(losses, "adamw.loss", "\(family) AdamW losses")
        for tensor in model.layout.tensors {
            try references.expect(Array(model.parameters[tensor.range]), "adamw." + tensor.name, "\(family) \(tensor.name) after 3 steps")
        }
    }
}

/// The keys' bias ("key.bias", DistilBERT's "k_lin.bias") and its weight.
func isKeyBias(_ name: String) -> Bool { name.hasSuffix("key.bias") || name.hasSuffix("k_lin.bias") }
func keyWeight(_ name: String) -> String { String(name.dropLast("bias".count)) + "weight" }
func magnitude(_ values: UnsafeMutableBufferPointer<Float>) -> Float { values.map(abs).max() ?? 0 }

/// A JSON value, to compare config.json files key by key (false is not 0).
enum JSON: Decodable, Equatable, CustomStringConvertible {
    case null, bool(Bool), number(Double), string(String), array([JSON]), object([String: JSON])

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSON].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSON].self)) }
    }

    var description: String {
        switch self {
        case .null: "null"
        case .bool(let b): "\(b)"
        case .number(let n): "\(n)"
        case .string(let s): "\"\(s)\""
        case .array(let a): "\(a)"
        case .object(let o): "\(o)"
        }
    }
}

/// A tiny family model of the fixtures (labels from its folder) and its fp32 reference.
func loadFamily(_ family: String, compute: Compute = Compute(threads: 1)) throws -> (BertForSequenceClassification, SafeTensorsFile) {
    let reference = try SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_\(family)_reference.safetensors"))
    let (model, report) = try BertForSequenceClassification.load(modelDirectory: fixtures.appendingPathComponent("tiny_" + family),
                                                                 labelCount: nil, seed: 0, compute: compute)
    #expect(report.initialized.isEmpty && report.ignored.isEmpty)
    #expect(model.labelCount == 3 && model.architecture.family.rawValue == family)
    return (model, reference)
}
