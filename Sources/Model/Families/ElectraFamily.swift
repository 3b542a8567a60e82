import Foundation

/// ELECTRA (`model_type` "electra"): transformers' ElectraForSequenceClassification (on a
/// discriminator; the generator is not a sequence classifier).
///   config keys   BERT's keys and embedding_size (ElectraConfig's defaults)
///   embeddings    word + position (index) + token type, E = embedding_size wide, LayerNorm,
///                 dropout, then electra.embeddings_project (E -> C) only when E != hidden_size
///   layers        BERT's, under electra.encoder.layer.N
///   head          first token -> dropout -> classifier.dense -> GELU -> dropout -> classifier.out_proj
///                 (both dropouts classifier_dropout, else hidden_dropout_prob); no pooler
enum ElectraFamily: EncoderFamilyDefinition {
    /// transformers' ElectraConfig defaults.
    static var defaults: BertConfig {
        var d = BertConfig()
        d.family = .electra
        d.embeddingSize = 128
        d.hiddenSize = 256
        d.headCount = 4
        d.intermediateSize = 1024
        return d
    }

    static func decodeConfig(_ decoder: Decoder, family: EncoderFamily) throws -> BertConfig {
        var config = try BertConfig(bertKeysFrom: decoder, defaults: defaults)
        let c = try decoder.container(keyedBy: ConfigKey.self)
        config.embeddingSize = try c.decodeIfPresent(Int.self, forKey: ConfigKey("embedding_size")) ?? defaults.embeddingSize
        return config
    }

    static func encodeConfig(_ config: BertConfig, to encoder: Encoder) throws {
        try BertFamily.encodeBertKeys(config, to: encoder)
        var c = encoder.container(keyedBy: ConfigKey.self)
        try c.encode(config.embeddingWidth, forKey: ConfigKey("embedding_size"))
    }

    static func validate(_ config: BertConfig, file: String) throws {
        guard config.embeddingWidth > 0 else {
            throw ModelError.invalidConfig(file: file, reason: "embedding_size must be positive, found \(config.embeddingWidth)")
        }
    }

    static func architecture(_ config: BertConfig) -> EncoderArchitecture {
        var names = EncoderTensorNames.bertStyle(prefix: "electra.", headDense: "classifier.dense", headOutput: "classifier.out_proj")
        if config.embeddingWidth != config.hiddenSize { names.embeddingProjection = "electra.embeddings_project" }
        let hidden = config.hiddenDropoutProb, head = config.effectiveClassifierDropout
        return EncoderArchitecture(
            family: .electra, className: "ElectraForSequenceClassification", basePrefix: "electra.", names: names,
            embeddingWidth: config.embeddingWidth, positions: .index, headActivation: .gelu,
            dropout: DropoutProbabilities(embeddings: hidden, attentionProbabilities: config.attentionDropoutProb,
                                          attentionOutput: hidden, feedForwardOutput: hidden, classifierInput: head,
                                          classifier: head),
            wordPaddingRow: config.padTokenId, positionPaddingRow: nil)
    }
}
