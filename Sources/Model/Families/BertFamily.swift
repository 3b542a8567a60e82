import Foundation

/// BERT (`model_type` "bert"): transformers' BertForSequenceClassification.
///   config keys   BertConfig's CodingKeys (BertConfig.swift), transformers' BertConfig defaults
///   embeddings    word + position (index in the sequence) + token type, LayerNorm, dropout
///   layers        bert.encoder.layer.N: attention.self.{query,key,value}, attention.output.dense,
///                 dropout, LayerNorm; intermediate.dense, GELU, output.dense, dropout, LayerNorm
///   head          [CLS] -> bert.pooler.dense -> tanh -> dropout -> classifier
enum BertFamily: EncoderFamilyDefinition {
    static func decodeConfig(_ decoder: Decoder, family: EncoderFamily) throws -> BertConfig {
        try BertConfig(bertKeysFrom: decoder, defaults: BertConfig())
    }

    static func encodeConfig(_ config: BertConfig, to encoder: Encoder) throws {
        try encodeBertKeys(config, to: encoder)
    }

    static func validate(_ config: BertConfig, file: String) throws {}

    static func architecture(_ config: BertConfig) -> EncoderArchitecture {
        let hidden = config.hiddenDropoutProb
        return EncoderArchitecture(
            family: .bert, className: "BertForSequenceClassification", basePrefix: "bert.",
            names: .bertStyle(prefix: "bert.", headDense: "bert.pooler.dense", headOutput: "classifier"),
            embeddingWidth: config.hiddenSize, positions: .index, headActivation: .tanh,
            dropout: DropoutProbabilities(embeddings: hidden, attentionProbabilities: config.attentionDropoutProb,
                                          attentionOutput: hidden, feedForwardOutput: hidden, classifierInput: nil,
                                          classifier: config.effectiveClassifierDropout),
            wordPaddingRow: config.padTokenId, positionPaddingRow: nil)
    }

    /// The keys transformers' BertConfig writes (and ELECTRA's and RoBERTa's, which share them),
    /// with model_type and id2label.
    static func encodeBertKeys(_ config: BertConfig, to encoder: Encoder) throws {
        typealias Key = BertConfig.CodingKeys
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(config.vocabSize, forKey: .vocabSize)
        try c.encode(config.hiddenSize, forKey: .hiddenSize)
        try c.encode(config.layerCount, forKey: .layerCount)
        try c.encode(config.headCount, forKey: .headCount)
        try c.encode(config.intermediateSize, forKey: .intermediateSize)
        try c.encode(config.hiddenAct, forKey: .hiddenAct)
        try c.encode(jsonNumber(config.hiddenDropoutProb), forKey: .hiddenDropoutProb)
        try c.encode(jsonNumber(config.attentionDropoutProb), forKey: .attentionDropoutProb)
        try c.encode(config.classifierDropout.map(jsonNumber), forKey: .classifierDropout)   // null when unset, as HF
        try c.encode(config.maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(config.typeVocabSize, forKey: .typeVocabSize)
        try c.encode(jsonNumber(config.initializerRange), forKey: .initializerRange)
        try c.encode(jsonNumber(config.layerNormEps), forKey: .layerNormEps)
        try c.encode(config.padTokenId, forKey: .padTokenId)
        try encodeCommonKeys(config, to: encoder)
    }

    /// model_type and id2label, which every family's config.json has.
    static func encodeCommonKeys(_ config: BertConfig, to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: ConfigKey.self)
        try c.encode(config.family.rawValue, forKey: ConfigKey("model_type"))
        if let id2label = config.id2label { try c.encode(id2label, forKey: ConfigKey("id2label")) }
    }
}
