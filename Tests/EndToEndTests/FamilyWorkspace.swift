import Data
import Foundation
import Model
import TestSupport

/// A model folder of one encoder family as a user brings it, and real AG News rows
/// (Fixtures/families, tools/make_family_e2e_fixtures.py):
///   config.json   transformers' own of the tiny random `<Family>ForSequenceClassification` of the
///                 model parity tests (Tests/ModelTests/Fixtures/tiny_F: 2 layers, hidden 32), its
///                 vocabulary and special ids those of the tokenizer, without labels
///   the tokenizer transformers' files of a tokenizer trained offline for the family
///                 (Tests/DataTests/Fixtures/families: tokenizer.json, or CamemBERT's
///                 sentencepiece.bpe.model, with tokenizer_config.json)
///   weights       random (seed 7, initializer_range 0.02) and no classification head: a
///                 pretrained encoder whose head bert-dist initialises from --seed
struct FamilyWorkspace {
    /// The families and their tokenizer folders.
    static let tokenizerFolders = ["distilbert": "distilbert-json", "electra": "electra-json", "roberta": "roberta-json",
                                   "xlm-roberta": "xlmr-json", "camembert": "camembert-spm"]
    static let families = tokenizerFolders.keys.sorted()
    static let data = BinaryLocator.repositoryRoot.appendingPathComponent("Tests/EndToEndTests/Fixtures/families")

    let family: String
    let root: URL
    var model: URL { root.appendingPathComponent("model") }
    /// AG News as distributed (4 labels): 64 rows to train on, 24 to evaluate.
    let agTrain = Self.data.appendingPathComponent("ag_train.csv"), agTest = Self.data.appendingPathComponent("ag_test.csv")
    /// `headline,body,topic` with the string labels "sports" and "world": texts, or text pairs.
    let topicsTrain = Self.data.appendingPathComponent("topics_train.csv"), topicsTest = Self.data.appendingPathComponent("topics_test.csv")
    /// The tokenizer folder the model folder's tokenizer files come from.
    var tokenizerSource: URL {
        BinaryLocator.repositoryRoot.appendingPathComponent("Tests/DataTests/Fixtures/families/\(Self.tokenizerFolders[family]!)")
    }
    func output(_ name: String) -> URL { root.appendingPathComponent(name) }

    init(_ family: String) throws {
        self.family = family
        root = scratchURL("e2e-\(family)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("model"), withIntermediateDirectories: true)
        let model = root.appendingPathComponent("model")
        let source = BinaryLocator.repositoryRoot.appendingPathComponent("Tests/DataTests/Fixtures/families/\(Self.tokenizerFolders[family]!)")
        for name in try FileManager.default.contentsOfDirectory(atPath: source.path) {
            try Data(contentsOf: source.appendingPathComponent(name)).write(to: model.appendingPathComponent(name))  // (follows links)
        }
        let tokenizer = try loadTextTokenizer(modelDirectory: model, modelType: family)
        let tiny = BinaryLocator.repositoryRoot.appendingPathComponent("Tests/ModelTests/Fixtures/tiny_\(family)/config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: tiny)) as! [String: Any]
        config["vocab_size"] = tokenizer.vocabularySize
        if ["roberta", "xlm-roberta", "camembert"].contains(family) {
            // Positions count from pad_token_id + 1: the model's pad id is the tokenizer's.
            let ids = tokenizer.specialTokenIds
            (config["pad_token_id"], config["bos_token_id"], config["eos_token_id"]) = (ids.padding, ids.classifier, ids.separator)
        }
        // transformers' default scale (the parity fixtures' 0.2 makes tiny encoders sensitive to
        // their input, which those tests need; here it would only make the runs sensitive to the
        // order of float sums).
        config["initializer_range"] = 0.02
        config.removeValue(forKey: "id2label")
        config.removeValue(forKey: "label2id")
        try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys]).write(to: model.appendingPathComponent("config.json"))
        let encoder = BertForSequenceClassification(config: try BertConfig.load(modelDirectory: model), labelCount: 2, compute: Compute(threads: 1))
        encoder.initializeRandomly(seed: 7)
        try writeSafeTensors(encoder.layout.tensors.filter { !$0.initializedWhenAbsent }.map {
            SafeTensorsEntry(name: $0.name, shape: $0.shape, values: UnsafeBufferPointer(encoder.parameters[$0.range]))
        }, metadata: ["format": "pt"], to: model.appendingPathComponent("model.safetensors"))
    }

    /// The weights of a run's checkpoint.
    func weights(_ output: URL, step: Int) throws -> [String: [Float]] {
        let file = try SafeTensorsFile(url: output.appendingPathComponent("checkpoint-\(step)/model.safetensors"))
        var all: [String: [Float]] = [:]
        for name in file.records.keys { all[name] = try file.floats(name) }
        return all
    }

    /// The headlines of topics_test.csv, and its rows as "headline<TAB>body": predict's input.
    static func predictInput(pairs: Bool) throws -> String {
        try String(contentsOf: data.appendingPathComponent(pairs ? "topics_test_pairs.txt" : "topics_test.txt"), encoding: .utf8)
    }
}
