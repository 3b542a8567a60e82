import Foundation

// The encoder families: config.json's `model_type` selects one, and the family decides what is
// not shared — its config keys, its tensor names, its embeddings and its classification head.
// The forward and backward of BertForSequenceClassification are written once and follow the
// values of an `EncoderArchitecture`; each family is one file under Families/ (a type conforming
// to `EncoderFamilyDefinition`). A new family is such a file and a case below.

/// The encoder families bert-dist fine-tunes, named by config.json's `model_type`.
public enum EncoderFamily: String, CaseIterable, Sendable {
    case bert, distilbert, electra, roberta
    case xlmRoberta = "xlm-roberta"
    case camembert

    /// The file that defines the family.
    var definition: any EncoderFamilyDefinition.Type {
        switch self {
        case .bert: BertFamily.self
        case .distilbert: DistilBertFamily.self
        case .electra: ElectraFamily.self
        case .roberta, .xlmRoberta, .camembert: RobertaFamily.self
        }
    }

    /// How the family is written in prose ("RoBERTa").
    public var displayName: String {
        switch self {
        case .bert: "BERT"
        case .distilbert: "DistilBERT"
        case .electra: "ELECTRA"
        case .roberta: "RoBERTa"
        case .xlmRoberta: "XLM-RoBERTa"
        case .camembert: "CamemBERT"
        }
    }

    /// config.json's `model_type` (absent: "bert", as bert-dist has always read such folders).
    init(modelTypeOf decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: ModelTypeKey.self)
        let name = try container.decodeIfPresent(String.self, forKey: .modelType) ?? EncoderFamily.bert.rawValue
        guard let family = EncoderFamily(rawValue: name) else { throw UnsupportedModelType(modelType: name) }
        self = family
    }

    private enum ModelTypeKey: String, CodingKey { case modelType = "model_type" }
}

/// A config.json whose `model_type` is not one of `EncoderFamily`.
struct UnsupportedModelType: Error {
    let modelType: String
    var reason: String {
        "model_type \"\(modelType)\" is not supported: bert-dist fine-tunes "
            + EncoderFamily.allCases.map(\.rawValue).joined(separator: ", ")
    }
}

/// What makes a family: implemented once per family, in Sources/Model/Families/.
protocol EncoderFamilyDefinition {
    /// The family's config.json keys (transformers' defaults for absent ones) as the common
    /// description. `family` is the model_type read (RoBERTa's file serves three).
    static func decodeConfig(_ decoder: Decoder, family: EncoderFamily) throws -> BertConfig
    /// The description as the family's config keys, as its transformers config class writes them
    /// (model_type included): the inverse of `decodeConfig`.
    static func encodeConfig(_ config: BertConfig, to encoder: Encoder) throws
    /// What only this family checks (after `BertConfig.validate`'s common checks).
    static func validate(_ config: BertConfig, file: String) throws
    /// The structure forward and backward follow.
    static func architecture(_ config: BertConfig) -> EncoderArchitecture
}

/// The structure of one family's `<Family>ForSequenceClassification`, as values: the shared forward
/// and backward (BertForSequenceClassification), the parameter layout and the loader follow it.
public struct EncoderArchitecture: Sendable, Equatable {
    public let family: EncoderFamily
    /// transformers' class, config.json's `architectures` ("RobertaForSequenceClassification").
    public let className: String
    /// The base model's prefix of every encoder tensor name ("roberta."): a folder saved from the
    /// base model class (RobertaModel) has the names without it.
    public let basePrefix: String
    /// Module paths of every parameter (HF names without ".weight" / ".bias").
    let names: EncoderTensorNames
    /// E: the embedding tables are E wide. E != hidden size C adds a Linear E -> C after the
    /// embeddings' LayerNorm and dropout (ELECTRA's `embeddings_project`).
    public let embeddingWidth: Int
    /// How a token's position id follows from its place in its sequence.
    public let positions: PositionRule
    /// The activation between the head's two Linear layers.
    let headActivation: HeadActivation
    /// The probability of each dropout, nil where the family has none.
    let dropout: DropoutProbabilities
    /// The rows of the word and position tables that HF's nn.Embedding(padding_idx:) keeps at
    /// zero gradient (nil: none).
    let wordPaddingRow, positionPaddingRow: Int?

    /// DistilBERT has no token types: its batches' token type ids are ignored.
    public var hasTokenTypes: Bool { names.tokenTypeEmbeddings != nil }
    /// ELECTRA's `embeddings_project` (E -> C) is there: the embeddings are not C wide.
    public var hasEmbeddingProjection: Bool { names.embeddingProjection != nil }
    /// HF name of the head's output weight (label count x C): a folder's fine-tuned label count.
    public var labelOutputWeightName: String { names.headOutput + ".weight" }
}

/// Position ids of the tokens of one sequence (packed sequences each start again).
public enum PositionRule: Sendable, Equatable {
    /// Token i of its sequence has position i (BERT, DistilBERT, ELECTRA).
    case index
    /// RoBERTa's create_position_ids_from_input_ids: tokens count from `padTokenId + 1` on, and
    /// a token whose id is the pad id has position `padTokenId` and is not counted.
    case countingFromPadding(padTokenId: Int)

    /// The first position id a sequence's tokens get.
    public var firstPosition: Int {
        switch self {
        case .index: 0
        case .countingFromPadding(let pad): pad + 1
        }
    }

    /// The rows of the position table that tokens of sequences up to `longestSequence` tokens
    /// can give a gradient (the pad row gets none).
    public func usedRows(longestSequence: Int) -> Range<Int> { firstPosition..<(firstPosition + longestSequence) }

    /// The longest sequence a table of `positionCount` rows can place.
    public func maxSequenceLength(positionCount: Int) -> Int { max(0, positionCount - firstPosition) }
}

/// The activation of the classification head.
enum HeadActivation: Sendable, Equatable {
    case tanh   // BERT's pooler, RoBERTa's head
    case relu   // DistilBERT's pre_classifier
    case gelu   // ELECTRA's head (the exact erf form)
}

/// Dropout probabilities per site of the forward pass; nil: the family has no dropout there.
struct DropoutProbabilities: Sendable, Equatable {
    var embeddings: Float                // after the embeddings' LayerNorm
    var attentionProbabilities: Float
    var attentionOutput: Float?          // before the attention's residual sum (none in DistilBERT)
    var feedForwardOutput: Float         // before the feed-forward's residual sum
    var classifierInput: Float?          // on the first token's state before the head (ELECTRA, RoBERTa)
    var classifier: Float                // before the head's output layer

    /// The probability at `site` (0 where there is none).
    func probability(_ site: DropoutSite) -> Float {
        switch site {
        case .embeddings: embeddings
        case .attentionProbabilities: attentionProbabilities
        case .attentionOutput: attentionOutput ?? 0
        case .feedForwardOutput: feedForwardOutput
        case .classifierInput: classifierInput ?? 0
        case .classifier: classifier
        }
    }

    /// Every dropout of one forward pass of `layerCount` layers, in the order it is applied.
    func sites(layerCount: Int) -> [(site: DropoutSite, probability: Float)] {
        var sites: [(DropoutSite, Float)] = [(.embeddings, embeddings)]
        for _ in 0..<layerCount {
            sites.append((.attentionProbabilities, attentionProbabilities))
            if let attentionOutput { sites.append((.attentionOutput, attentionOutput)) }
            sites.append((.feedForwardOutput, feedForwardOutput))
        }
        if let classifierInput { sites.append((.classifierInput, classifierInput)) }
        sites.append((.classifier, classifier))
        return sites
    }
}

/// The HF module path of every parameter of a family (a tensor's name is its module's path plus
/// ".weight" or ".bias").
struct EncoderTensorNames: Sendable, Equatable {
    var wordEmbeddings, positionEmbeddings: String
    var tokenTypeEmbeddings: String?       // nil: no token types
    var embeddingNorm: String
    var embeddingProjection: String?       // nil: the embeddings are C wide
    /// Layer l's modules are `layerPrefix + "\(l)." + module`.
    var layerPrefix: String
    var query, key, value, attentionOutput, attentionNorm, intermediate, output, outputNorm: String
    /// The head's C x C layer (BERT's pooler) and its output layer (label count x C).
    var headDense, headOutput: String

    /// The names of transformers' BERT modules (BertModel, which ELECTRA and RoBERTa copy) under
    /// `prefix`, with the head's two layers.
    static func bertStyle(prefix: String, headDense: String, headOutput: String) -> EncoderTensorNames {
        EncoderTensorNames(
            wordEmbeddings: prefix + "embeddings.word_embeddings", positionEmbeddings: prefix + "embeddings.position_embeddings",
            tokenTypeEmbeddings: prefix + "embeddings.token_type_embeddings", embeddingNorm: prefix + "embeddings.LayerNorm",
            embeddingProjection: nil, layerPrefix: prefix + "encoder.layer.",
            query: "attention.self.query", key: "attention.self.key", value: "attention.self.value",
            attentionOutput: "attention.output.dense", attentionNorm: "attention.output.LayerNorm",
            intermediate: "intermediate.dense", output: "output.dense", outputNorm: "output.LayerNorm",
            headDense: headDense, headOutput: headOutput)
    }
}

// MARK: - The common description, read and written through the family

extension BertConfig {
    /// The structure of this config's family.
    public var architecture: EncoderArchitecture { family.definition.architecture(self) }

    /// E: ELECTRA's `embedding_size`, else the hidden size.
    public var embeddingWidth: Int { embeddingSize ?? hiddenSize }

    /// The longest sequence (special tokens included) the position table can place:
    /// max_position_embeddings, less RoBERTa's pad_token_id + 1.
    public var maxSequenceLength: Int {
        architecture.positions.maxSequenceLength(positionCount: maxPositionEmbeddings)
    }

    /// The family's config.json keys (what `decode` reads back).
    public func encode(to encoder: Encoder) throws {
        try family.definition.encodeConfig(self, to: encoder)
    }

    /// config.json as transformers writes it for this family's `<Family>ForSequenceClassification`:
    /// `model_type`, `architectures` and every hyperparameter key of the family's config class
    /// with this description's values, and with `labelNames` `id2label`, `label2id` and
    /// `num_labels`; a JSON object with sorted keys. Checkpoints write this over the folder's own
    /// config.json, whose other keys (e.g. bos_token_id) they keep.
    public func huggingFaceConfigJSON(labelNames: [String]? = nil) throws -> Data {
        let encoded = try JSONEncoder().encode(self)
        guard var object = try JSONSerialization.jsonObject(with: encoded) as? [String: Any] else {
            preconditionFailure("a config encodes as a JSON object")
        }
        object["architectures"] = [architecture.className]
        if let labelNames {
            object["id2label"] = Dictionary(uniqueKeysWithValues: labelNames.enumerated().map { (String($0.offset), $0.element) })
            object["label2id"] = Dictionary(uniqueKeysWithValues: labelNames.enumerated().map { ($0.element, $0.offset) })
            object["num_labels"] = labelNames.count
        }
        return try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
    }
}

/// Keys of a config.json by name, for the families' encoders and decoders.
struct ConfigKey: CodingKey {
    let stringValue: String
    init(_ name: String) { stringValue = name }
    init?(stringValue: String) { self.stringValue = stringValue }
    var intValue: Int? { nil }
    init?(intValue: Int) { nil }
}

/// Float values as JSON numbers with their shortest decimal (0.1, not 0.10000000149011612).
func jsonNumber(_ value: Float) -> Double { Double("\(value)") ?? Double(value) }
