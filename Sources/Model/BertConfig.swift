import Foundation
import Storage

/// The common description of an encoder (the name stays BertConfig until the rename across
/// Training): a Hugging Face `config.json` of any family of `EncoderFamily`, read through the
/// family's keys (Families/); missing keys take the family's transformers defaults.
public struct BertConfig: Codable, Equatable, Sendable {
    public var vocabSize = 30522
    public var hiddenSize = 768
    public var layerCount = 12
    public var headCount = 12
    public var intermediateSize = 3072
    public var hiddenAct = "gelu"
    public var hiddenDropoutProb: Float = 0.1
    public var attentionDropoutProb: Float = 0.1
    public var classifierDropout: Float? = nil
    public var maxPositionEmbeddings = 512
    public var typeVocabSize = 2
    public var initializerRange: Float = 0.02
    public var layerNormEps: Float = 1e-12
    public var padTokenId = 0
    public var positionEmbeddingType = "absolute"
    /// Class names by id ("0": "World", ...). HF writes this for every model; we read it to
    /// know the label count of a fine-tuned checkpoint.
    public var id2label: [String: String]? = nil
    /// config.json's `model_type`: the family, whose file reads and writes the keys.
    public var family: EncoderFamily = .bert
    /// ELECTRA's `embedding_size` (nil: the hidden size).
    public var embeddingSize: Int? = nil
    /// DistilBERT's `sinusoidal_pos_embds`: a position table absent from a folder is the sinusoidal one.
    public var sinusoidalPositionEmbeddings = false

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size"
        case hiddenSize = "hidden_size"
        case layerCount = "num_hidden_layers"
        case headCount = "num_attention_heads"
        case intermediateSize = "intermediate_size"
        case hiddenAct = "hidden_act"
        case hiddenDropoutProb = "hidden_dropout_prob"
        case attentionDropoutProb = "attention_probs_dropout_prob"
        case classifierDropout = "classifier_dropout"
        case maxPositionEmbeddings = "max_position_embeddings"
        case typeVocabSize = "type_vocab_size"
        case initializerRange = "initializer_range"
        case layerNormEps = "layer_norm_eps"
        case padTokenId = "pad_token_id"
        case positionEmbeddingType = "position_embedding_type"
        case id2label
    }

    public init() {}

    /// Any family's config.json (or `encode(to:)`'s output), by its model_type.
    public init(from decoder: Decoder) throws {
        let family = try EncoderFamily(modelTypeOf: decoder)
        self = try family.definition.decodeConfig(decoder, family: family)
    }

    /// BERT's keys (transformers' BertConfig, which ELECTRA and RoBERTa share); absent keys
    /// take `defaults`' values (and family).
    init(bertKeysFrom decoder: Decoder, defaults d: BertConfig) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func read<T: Decodable>(_ key: CodingKeys, _ fallback: T) throws -> T {
            try c.decodeIfPresent(T.self, forKey: key) ?? fallback
        }
        self = d
        vocabSize = try read(.vocabSize, d.vocabSize)
        hiddenSize = try read(.hiddenSize, d.hiddenSize)
        layerCount = try read(.layerCount, d.layerCount)
        headCount = try read(.headCount, d.headCount)
        intermediateSize = try read(.intermediateSize, d.intermediateSize)
        hiddenAct = try read(.hiddenAct, d.hiddenAct)
        hiddenDropoutProb = try read(.hiddenDropoutProb, d.hiddenDropoutProb)
        attentionDropoutProb = try read(.attentionDropoutProb, d.attentionDropoutProb)
        classifierDropout = try c.decodeIfPresent(Float.self, forKey: .classifierDropout)
        maxPositionEmbeddings = try read(.maxPositionEmbeddings, d.maxPositionEmbeddings)
        typeVocabSize = try read(.typeVocabSize, d.typeVocabSize)
        initializerRange = try read(.initializerRange, d.initializerRange)
        layerNormEps = try read(.layerNormEps, d.layerNormEps)
        padTokenId = (try? c.decodeIfPresent(Int.self, forKey: .padTokenId)) ?? d.padTokenId
        positionEmbeddingType = try read(.positionEmbeddingType, d.positionEmbeddingType)
        id2label = try c.decodeIfPresent([String: String].self, forKey: .id2label)
    }

    public var headSize: Int { hiddenSize / headCount }

    /// Dropout before the classifier: `classifier_dropout`, else `hidden_dropout_prob` (as HF).
    public var effectiveClassifierDropout: Float { classifierDropout ?? hiddenDropoutProb }

    /// The label names of a fine-tuned checkpoint, in id order; nil if the config has none.
    public var labelNames: [String]? {
        guard let id2label, !id2label.isEmpty else { return nil }
        var names: [String] = []
        for id in 0..<id2label.count {
            guard let name = id2label[String(id)] else { return nil }
            names.append(name)
        }
        return names
    }

    /// Checks what the Swift BERT supports; `file` names the config in the error.
    public func validate(file: String) throws {
        func fail(_ reason: String) -> ModelError { .invalidConfig(file: file, reason: reason) }
        guard hiddenAct == "gelu" else {
            throw fail("hidden_act \"\(hiddenAct)\" is not supported (only the exact-erf \"gelu\" of BERT)")
        }
        guard positionEmbeddingType == "absolute" else {
            throw fail("position_embedding_type \"\(positionEmbeddingType)\" is not supported (only \"absolute\")")
        }
        // Bounded before any shape is computed from them (see SizeLimits); the weight file then
        // has to hold every tensor of these sizes (SafeTensorsFile.resolve). Named by the
        // family's keys (DistilBERT has its own).
        let distil = family == .distilbert
        let (hiddenKey, headsKey) = distil ? ("dim", "n_heads") : ("hidden_size", "num_attention_heads")
        var sizes = [("vocab_size", vocabSize), (hiddenKey, hiddenSize), (headsKey, headCount),
                     (distil ? "hidden_dim" : "intermediate_size", intermediateSize), ("max_position_embeddings", maxPositionEmbeddings)]
        if !distil { sizes.append(("type_vocab_size", typeVocabSize)) }
        if let embeddingSize { sizes.append(("embedding_size", embeddingSize)) }
        for (name, value) in sizes { try checkSize(value, key: name, file: file) }
        try checkSize(layerCount, key: distil ? "n_layers" : "num_hidden_layers", file: file, limit: SizeLimits.layers)
        guard hiddenSize % headCount == 0 else {
            throw fail("\(hiddenKey) \(hiddenSize) is not a multiple of \(headsKey) \(headCount)")
        }
        for (name, p) in [("hidden_dropout_prob", hiddenDropoutProb),
                          ("attention_probs_dropout_prob", attentionDropoutProb),
                          ("classifier_dropout", effectiveClassifierDropout)] where !(p >= 0 && p < 1) {
            throw fail("\(name) must be in [0, 1), found \(p)")
        }
        guard layerNormEps >= 0 && layerNormEps.isFinite else {
            throw fail("layer_norm_eps must be a non-negative number, found \(layerNormEps)")
        }
        guard initializerRange.isFinite else { throw fail("initializer_range must be a finite number, found \(initializerRange)") }
        try family.definition.validate(self, file: file)
        // The sequence length defaults to at most this: [CLS] and [SEP] must fit.
        guard maxSequenceLength >= 2 else {
            throw fail("max_position_embeddings \(maxPositionEmbeddings) leaves no room for [CLS] and [SEP] (\(maxSequenceLength) positions for tokens, at least 2)")
        }
    }

    /// Reads and validates `DIR/config.json`.
    public static func load(modelDirectory: URL) throws -> BertConfig {
        let url = modelDirectory.appendingPathComponent("config.json")
        guard let bytes = try? Data(contentsOf: url) else {
            throw ModelError.missingFile(path: url.path, hint: "a Hugging Face BERT folder has config.json, vocab.txt and model.safetensors")
        }
        return try decode(bytes, file: url.path)
    }

    /// The config in the bytes of a config.json (`file` names it in errors), validated.
    public static func decode(_ bytes: Data, file: String) throws -> BertConfig {
        let config: BertConfig
        do {
            config = try JSONDecoder().decode(BertConfig.self, from: bytes)
        } catch let error as UnsupportedModelType {
            throw ModelError.invalidConfig(file: file, reason: error.reason)
        } catch {
            throw ModelError.invalidConfig(file: file, reason: "not a valid BERT config.json (\(describeDecodingError(error)))")
        }
        try config.validate(file: file)
        return config
    }
}

func describeDecodingError(_ error: Error) -> String {
    switch error {
    case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context),
         DecodingError.keyNotFound(_, let context), DecodingError.dataCorrupted(let context):
        let path = context.codingPath.map(\.stringValue).joined(separator: ".")
        return path.isEmpty ? context.debugDescription : "\(path): \(context.debugDescription)"
    default:
        return "\(error)"
    }
}

/// Errors of the Model module; `description` is the one line the user sees.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    case missingFile(path: String, hint: String)
    case invalidConfig(file: String, reason: String)
    case invalidTensorFile(file: String, reason: String)
    case tensor(file: String, tensor: String, reason: String)
    case nonFinite(location: String)
    case invalidBatch(reason: String)

    public var description: String {
        // Messages quote the files: a 70 KB string must not make a 70 KB line, nor a line break two.
        errorLine(fullDescription)
    }

    private var fullDescription: String {
        switch self {
        case let .missingFile(path, hint): return "\(path): file not found (\(hint))"
        case let .invalidConfig(file, reason): return "\(file): \(reason)"
        case let .invalidTensorFile(file, reason): return "\(file): \(reason)"
        case let .tensor(file, tensor, reason): return "\(file): tensor \(tensor): \(reason)"
        case let .nonFinite(location): return "non-finite value (NaN or Inf) first seen in \(location)"
        case let .invalidBatch(reason): return "invalid batch: \(reason)"
        }
    }
}
