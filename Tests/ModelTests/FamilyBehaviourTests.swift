import Foundation
import Testing
@testable import Model
import TestSupport

/// What the families must keep of the BERT path beyond PyTorch parity: dropout masks that do not
/// depend on micro-batches, backward as the derivative of the dropped-out forward, the [CLS]-only
/// last layer, RoBERTa's positions in packed batches, the gradient rows the training loop sends,
/// and loading (missing heads, other label counts, names without the base prefix, errors).
@Suite struct FamilyBehaviourTests {
    static let families = FamilyParityTests.families

    /// The fixture model of `family` with every dropout probability `dropout`, and its batch.
    func model(_ family: String, dropout: Float, threads: Int = 1) throws -> (BertForSequenceClassification, PackedBatch) {
        let directory = fixtures.appendingPathComponent("tiny_" + family)
        var config = try BertConfig.load(modelDirectory: directory)
        config.hiddenDropoutProb = dropout
        config.attentionDropoutProb = dropout
        config.classifierDropout = dropout
        let model = BertForSequenceClassification(config: config, labelCount: 3, compute: Compute(threads: threads))
        _ = try model.loadWeights(from: SafeTensorsFile(url: directory.appendingPathComponent("model.safetensors")), seed: 0)
        let reference = try SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_\(family)_reference.safetensors"))
        return (model, try packedBatch(from: reference))
    }

    /// A random ELECTRA whose embeddings are wider than its hidden states (E 48 > C 32).
    func wideElectra(dropout: Float) -> (BertForSequenceClassification, PackedBatch) {
        var config = ElectraFamily.defaults
        config.vocabSize = 61
        config.embeddingSize = 48
        config.hiddenSize = 32
        config.headCount = 2
        config.layerCount = 2
        config.intermediateSize = 40
        config.maxPositionEmbeddings = 40
        config.hiddenDropoutProb = dropout
        config.attentionDropoutProb = dropout
        config.initializerRange = 0.2
        let model = BertForSequenceClassification(config: config, labelCount: 3, compute: Compute(threads: 1))
        model.initializeRandomly(seed: 2)
        var batch = PackedBatch()
        for (s, length) in [9, 1, 17, 4].enumerated() {
            let tokens = (0..<length).map { Int32((s * 13 + $0 * 7) % 61) }
            batch.append(tokens: tokens, tokenTypes: tokens.map { $0 % 2 }, label: Int32(s % 3), sampleIndex: 30 + s)
        }
        return (model, batch)
    }

    /// -n 1 against micro-batches at the model level: the batch whole, and its sequences in
    /// other groups and order, give the same loss and gradient (dropout on everywhere).
    @Test(arguments: families)
    func microBatchesAndOrderDoNotChangeTheGradient(family: String) throws {
        let (model, batch) = try model(family, dropout: 0.3)
        try expectMicroBatchesGiveTheSameGradient(model, batch, parts: [[3, 1], [0], [2]], family)
    }

    /// Backward is the derivative of the forward (expectBackwardIsTheDerivative), with every
    /// dropout of the family on.
    @Test(arguments: families + ["electra E > C"], [Float(0), 0.2])
    func backwardIsTheDerivativeOfTheDroppedOutForward(family: String, probability: Float) throws {
        let (model, batch) = family == "electra E > C" ? wideElectra(dropout: probability) : try model(family, dropout: probability)
        try expectBackwardIsTheDerivative(model, batch, context: DropoutContext(seed: 3, step: 1), "\(family), dropout \(probability)")
    }

    /// Only the first tokens in the last layer equals every row (as HF computes), dropout on;
    /// and two kernel threads equal one.
    @Test(arguments: families + ["electra E > C"])
    func fastPathsEqualTheFullComputation(family: String) throws {
        func run(_ model: BertForSequenceClassification, _ batch: PackedBatch) throws -> [Float] {
            model.gradients.zero()
            let context = DropoutContext(seed: 11, step: 4)
            try model.forward(batch, dropout: context)
            let logits = Array(model.logits)
            try model.backward(batch, dropout: context, lossScale: 1 / Float(batch.sequenceCount))
            return logits + Array(model.gradients.buffer)
        }
        let make = { (threads: Int) in
            family == "electra E > C" ? self.wideElectra(dropout: 0.2) : try self.model(family, dropout: 0.2, threads: threads)
        }
        let (model, batch) = try make(1)
        model.clsOnlyLastLayer = false
        let full = try run(model, batch)
        model.clsOnlyLastLayer = true
        full.withUnsafeBufferPointer { expectClose($0, try! run(model, batch), relativeTolerance: 1e-5, "\(family) [CLS] only") }
        let (twoThreads, _) = try make(2)
        if family != "electra E > C" {
            full.withUnsafeBufferPointer { expectClose($0, try! run(twoThreads, batch), relativeTolerance: 1e-5, "\(family) 2 threads") }
        }
    }

    /// --bf16 with embeddings wider than the hidden states (the bf16 scratch sized for the
    /// projection's E inputs): as close to fp32 as bf16 is (measured: logits 1.1e-2, gradients
    /// 1.6e-2 relative L2 at initializer_range 0.2), not equal to it; a scratch too small for E
    /// would give garbage (distance ~1).
    @Test func wideElectraUnderBF16IsCloseToFP32() throws {
        func run(_ precision: Precision) throws -> (logits: [Float], gradients: [Float]) {
            let (template, batch) = wideElectra(dropout: 0)
            let model = BertForSequenceClassification(config: template.config, labelCount: 3,
                                                      compute: Compute(threads: 2, precision: precision, bf16Engine: .software))
            model.parameters.copy(from: template.parameters)
            try model.forward(batch, dropout: nil)
            let logits = Array(model.logits)
            try model.backward(batch, dropout: nil, lossScale: 1 / Float(batch.sequenceCount))
            return (logits, Array(model.gradients.buffer))
        }
        let fp32 = try run(.fp32), bf16 = try run(.bf16)
        let logits = relativeDistance(bf16.logits, fp32.logits), gradients = relativeDistance(bf16.gradients, fp32.gradients)
        print(String(format: "ELECTRA E > C, bf16 vs fp32: logits %.2e, gradients %.2e", logits, gradients))
        #expect(logits > 0 && logits < 5e-2 && gradients > 0 && gradients < 1e-1)
    }

    /// The embedding rows backward writes are those the training loop sends: the batch's token
    /// ids (never the pad id's row) and the position rows `usedRows` of its longest sequence
    /// (RoBERTa's start at pad_token_id + 1 in every packed sequence, the pad row gets nothing).
    @Test(arguments: families + ["bert"])
    func gradientRowsAreTheDeclaredOnes(family: String) throws {
        let (model, batch) = family == "bert"
            ? (try BertForSequenceClassification.load(modelDirectory: fixtures.appendingPathComponent("tiny_bert"), labelCount: nil, seed: 0,
                                                      compute: Compute(threads: 1)).0,
               try packedBatch(from: SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_reference.safetensors"))))
            : try model(family, dropout: 0)
        model.gradients.zero()
        try model.forward(batch, dropout: nil)
        try model.backward(batch, dropout: nil, lossScale: 1)
        func rowsWithGradient(_ tensor: ParameterTensor) -> Set<Int> {
            let width = tensor.shape[1], values = model.gradients[tensor.range]
            return Set((0..<tensor.shape[0]).filter { r in (0..<width).contains { values[r * width + $0] != 0 } })
        }
        let layout = model.layout, pad = model.config.padTokenId
        #expect(layout.wordTable.shape == [model.config.vocabSize, layout.embeddingRowLength])
        #expect(layout.positionTable.shape == [model.config.maxPositionEmbeddings, layout.embeddingRowLength])
        let ids = Set(batch.tokenIds.map(Int.init))
        #expect(rowsWithGradient(layout.wordTable) == ids.subtracting([pad]))
        let longest = (0..<batch.sequenceCount).map { batch.length(of: $0) }.max()!
        let used = layout.architecture.positions.usedRows(longestSequence: longest)
        let positions = rowsWithGradient(layout.positionTable)
        #expect(positions.isSubset(of: Set(used)) && positions.contains(used.lowerBound) && positions.contains(used.upperBound - 1))
        if family.contains("roberta") || family == "camembert" {
            #expect(used.lowerBound == pad + 1 && batch.tokenIds.contains(Int32(pad)), "the batch has the pad id inside a sequence")
        }
    }

    /// RoBERTa's longest sequence is max_position_embeddings - pad_token_id - 1 (the fixture
    /// batch has one that long); one token more is a one-line error, not a read past the table.
    @Test(arguments: ["roberta", "camembert"])
    func robertaSequencesLongerThanThePositionsAreRefused(family: String) throws {
        let (model, _) = try model(family, dropout: 0)
        let config = model.config
        #expect(config.maxSequenceLength == config.maxPositionEmbeddings - config.padTokenId - 1)
        var batch = PackedBatch()
        batch.append(tokens: [Int32](repeating: 9, count: config.maxSequenceLength + 1), label: 0, sampleIndex: 0)
        #expect(throws: ModelError.invalidBatch(reason: "a sequence of \(config.maxSequenceLength + 1) tokens is longer than the \(config.maxSequenceLength) positions of max_position_embeddings \(config.maxPositionEmbeddings) after pad_token_id + 1; use a smaller --max-seq-len")) {
            try model.forward(batch, dropout: nil)
        }
        batch.removeAll()
        batch.append(tokens: [Int32](repeating: 9, count: config.maxSequenceLength), label: 0, sampleIndex: 0)
        try model.forward(batch, dropout: nil)
    }

    /// DistilBERT ignores token types: the fixture's pairs have types 1 that HF never saw.
    @Test func distilBertIgnoresTokenTypes() throws {
        let (model, batch) = try model("distilbert", dropout: 0)
        #expect(batch.tokenTypeIds.contains(1))
        try model.forward(batch, dropout: nil)
        let typed = Array(model.logits)
        var untyped = batch
        untyped.tokenTypeIds = [Int32](repeating: 0, count: batch.tokenCount)
        try model.forward(untyped, dropout: nil)
        #expect(Array(model.logits) == typed)
    }

    /// sinusoidal_pos_embds: a folder without the position table gets transformers' sinusoids
    /// (create_sinusoidal_embeddings); one with it keeps its own (in transformers 5 the table is
    /// an ordinary trained parameter).
    @Test func distilBertSinusoidalPositionsAreTransformers() throws {
        let reference = try SafeTensorsFile(url: fixtures.appendingPathComponent("tiny_distilbert_reference.safetensors"))
        let name = "distilbert.embeddings.position_embeddings.weight"
        let directory = try familyFolder("distilbert", "sinusoidal", config: { $0["sinusoidal_pos_embds"] = true }) { $0 != name }
        let (model, report) = try BertForSequenceClassification.load(modelDirectory: directory, labelCount: nil, seed: 0, compute: Compute(threads: 1))
        #expect(model.config.sinusoidalPositionEmbeddings && report.initialized == [name])
        expectClose(UnsafeBufferPointer(model.parameters[model.layout[name].range]), try reference.floats("sinusoidal_position_embeddings"),
                    relativeTolerance: 1e-6, "sinusoidal table")
        // Without the flag the table is required.
        let plain = try familyFolder("distilbert", "plain") { $0 != name }
        #expect(throws: ModelError.tensor(file: plain.appendingPathComponent("model.safetensors").path, tensor: name,
                                          reason: "missing (is this a DistilBERT checkpoint matching its config.json?)")) {
            try BertForSequenceClassification.load(modelDirectory: plain, labelCount: nil, seed: 0, compute: Compute(threads: 1))
        }
    }

    /// A base-model folder (names without the family's prefix, an MLM head or pooler, no
    /// classifier) loads; the head is initialised like HF from the seed (normal(0,
    /// initializer_range), biases 0), the same seed giving the same head.
    @Test(arguments: families)
    func baseModelFoldersLoadWithANewHead(family: String) throws {
        let (reference, _) = try loadFamily(family)
        let prefix = reference.architecture.basePrefix
        let directory = try familyFolder(family, "base", extra: [(prefix + "pooler.dense.bias", [32]), ("lm_head.bias", [99])],
                                         rename: { $0.hasPrefix(prefix) ? String($0.dropFirst(prefix.count)) : $0 }) {
            !$0.hasPrefix("classifier") && !$0.hasPrefix("pre_classifier")
        }
        let (model, report) = try BertForSequenceClassification.load(modelDirectory: directory, labelCount: 5, seed: 3, compute: Compute(threads: 1))
        let head = model.layout.tensors.filter(\.initializedWhenAbsent).map(\.name)
        #expect(report.initialized == head && head.count == 4)
        #expect(report.ignored == ["lm_head.bias", prefix + "pooler.dense.bias"].sorted())
        for tensor in model.layout.tensors where !tensor.initializedWhenAbsent {
            #expect(Array(model.parameters[tensor.range]) == Array(reference.parameters[tensor.range]), "\(tensor.name)")
        }
        for tensor in model.layout.tensors where tensor.initializedWhenAbsent {
            let values = Array(model.parameters[tensor.range])
            if tensor.name.hasSuffix(".bias") {
                #expect(values.allSatisfy { $0 == 0 })
            } else {
                let std = (values.map { Double($0 * $0) }.reduce(0, +) / Double(values.count)).squareRoot()
                #expect(std > 0.15 && std < 0.25, "\(tensor.name): normal(0, 0.2), found std \(std)")
            }
        }
        #expect(model.layout[model.architecture.labelOutputWeightName].shape == [5, 32])
        let (again, _) = try BertForSequenceClassification.load(modelDirectory: directory, labelCount: 5, seed: 3, compute: Compute(threads: 1))
        #expect(Array(again.parameters.buffer) == Array(model.parameters.buffer))
    }

    /// Another label count than the folder's head: an error naming the head's output weight, or
    /// with ignoreMismatchedSizes a new output layer (the dense layer stays the folder's).
    @Test(arguments: families)
    func anotherLabelCountNeedsIgnoreMismatchedSizes(family: String) throws {
        let directory = fixtures.appendingPathComponent("tiny_" + family)
        #expect(try BertForSequenceClassification.labelCount(modelDirectory: directory) == 3)
        let (reference, _) = try loadFamily(family)
        let output = reference.architecture.labelOutputWeightName
        do {
            _ = try BertForSequenceClassification.load(modelDirectory: directory, labelCount: 2, seed: 0, compute: Compute(threads: 1))
            Issue.record("expected a shape error")
        } catch let error as ModelError {
            #expect(error.description.contains("\(output): shape [3, 32], expected [2, 32] (the checkpoint was fine-tuned for 3 labels"))
        }
        let (model, report) = try BertForSequenceClassification.load(modelDirectory: directory, labelCount: 2, seed: 0,
                                                                     ignoreMismatchedSizes: true, compute: Compute(threads: 1))
        let bias = output.replacingOccurrences(of: ".weight", with: ".bias")
        #expect(report.reinitialized == ["\(output): [3, 32] in the file, [2, 32] here", "\(bias): [3] in the file, [2] here"])
        for tensor in model.layout.tensors where !tensor.dependsOnLabelCount {
            #expect(Array(model.parameters[tensor.range]) == Array(reference.parameters[reference.layout[tensor.name].range]))
        }
    }

    @Test func anotherModelTypeIsAOneLineErrorNamingTheSupportedOnes() throws {
        let expected = ModelError.invalidConfig(file: "c.json", reason: "model_type \"gpt2\" is not supported: bert-dist fine-tunes bert, distilbert, electra, roberta, xlm-roberta, camembert")
        #expect(throws: expected) { try BertConfig.decode(Data(#"{"model_type": "gpt2", "n_embd": 768}"#.utf8), file: "c.json") }
        #expect(!expected.description.contains("\n"))
        // No model_type: BERT, as bert-dist has always read such folders.
        #expect(try BertConfig.decode(Data(#"{"hidden_size": 64, "num_attention_heads": 4}"#.utf8), file: "c.json").family == .bert)
    }

    /// Each family's transformers defaults for keys a config.json leaves out.
    @Test func configDefaultsAreEachFamilysTransformersDefaults() throws {
        func decode(_ json: String) throws -> BertConfig { try BertConfig.decode(Data(json.utf8), file: "c.json") }
        let distil = try decode(#"{"model_type": "distilbert"}"#)
        #expect(distil.hiddenSize == 768 && distil.layerCount == 6 && distil.headCount == 12 && distil.intermediateSize == 3072)
        #expect(distil.hiddenDropoutProb == 0.1 && distil.attentionDropoutProb == 0.1 && distil.effectiveClassifierDropout == 0.2)
        #expect(distil.layerNormEps == 1e-12 && !distil.sinusoidalPositionEmbeddings && !distil.architecture.hasTokenTypes)
        let electra = try decode(#"{"model_type": "electra"}"#)
        #expect(electra.embeddingWidth == 128 && electra.hiddenSize == 256 && electra.headCount == 4 && electra.intermediateSize == 1024)
        #expect(electra.architecture.hasEmbeddingProjection)
        #expect(try !decode(#"{"model_type": "electra", "embedding_size": 256}"#).architecture.hasEmbeddingProjection)
        let roberta = try decode(#"{"model_type": "roberta"}"#)
        #expect(roberta.vocabSize == 50265 && roberta.padTokenId == 1 && roberta.maxSequenceLength == 510)
        #expect(try decode(#"{"model_type": "xlm-roberta"}"#).vocabSize == 30522)
        #expect(throws: ModelError.self) { try decode(#"{"model_type": "roberta", "max_position_embeddings": 2}"#) }
        #expect(throws: ModelError.self) { try decode(#"{"model_type": "electra", "embedding_size": 0}"#) }
    }
}

/// A copy of a family's fixture folder with its config.json edited by `config` and its weights
/// filtered by `keep` (names), renamed by `rename`, plus zero tensors `extra`.
func familyFolder(_ family: String, _ name: String, config edit: (inout [String: Any]) -> Void = { _ in },
                  extra: [(String, [Int])] = [], rename: (String) -> String = { $0 },
                  keep: (String) -> Bool) throws -> URL {
    let source = fixtures.appendingPathComponent("tiny_" + family)
    let directory = scratchURL("family-\(family)-\(name)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    var config = try JSONSerialization.jsonObject(with: Data(contentsOf: source.appendingPathComponent("config.json"))) as! [String: Any]
    edit(&config)
    try JSONSerialization.data(withJSONObject: config).write(to: directory.appendingPathComponent("config.json"))
    let file = try SafeTensorsFile(url: source.appendingPathComponent("model.safetensors"))
    var tensors = try file.records.keys.sorted().filter(keep).map { (rename($0), file.records[$0]!.shape, try file.floats($0)) }
    tensors += extra.map { ($0.0, $0.1, [Float](repeating: 0, count: $0.1.reduce(1, *))) }
    var storage = tensors.map { $0.2 }
    try withExtendedLifetime(storage) {
        let entries = tensors.indices.map { i in
            storage[i].withUnsafeBufferPointer { SafeTensorsEntry(name: tensors[i].0, shape: tensors[i].1, values: $0) }
        }
        try writeSafeTensors(entries, metadata: ["format": "pt"], to: directory.appendingPathComponent("model.safetensors"))
    }
    storage.removeAll()
    return directory
}
