import Foundation

/// DistilBERT (`model_type` "distilbert"): transformers' DistilBertForSequenceClassification.
///   config keys   dim, n_layers, n_heads, hidden_dim, dropout, attention_dropout,
///                 seq_classif_dropout, activation, max_position_embeddings, vocab_size,
///                 initializer_range, pad_token_id, sinusoidal_pos_embds (DistilBertConfig's
///                 defaults); every LayerNorm's eps is 1e-12
///   embeddings    word + position, LayerNorm, dropout: no token types (token type ids ignored)
///   layers        distilbert.transformer.layer.N: attention.{q_lin,k_lin,v_lin}, attention.out_lin
///                 and NO dropout before the residual sum (BERT has one there), sa_layer_norm;
///                 ffn.lin1, activation, ffn.lin2, dropout, output_layer_norm
///   head          [CLS] -> pre_classifier -> ReLU -> dropout (seq_classif_dropout) -> classifier
///   sinusoidal_pos_embds: in transformers 5 the sinusoidal table is an ordinary trained
///                 parameter that only starts sinusoidal; so it is here: read from the folder,
///                 trained, and filled with the sinusoids only when the folder lacks it.
enum DistilBertFamily: EncoderFamilyDefinition {
    /// transformers' DistilBertConfig defaults.
    static var defaults: BertConfig {
        var d = BertConfig()
        d.family = .distilbert
        d.vocabSize = 30522
        d.maxPositionEmbeddings = 512
        d.layerCount = 6
        d.headCount = 12
        d.hiddenSize = 768
        d.intermediateSize = 4 * 768
        d.hiddenDropoutProb = 0.1
        d.attentionDropoutProb = 0.1
        d.hiddenAct = "gelu"
        d.initializerRange = 0.02
        d.classifierDropout = 0.2
        d.padTokenId = 0
        d.layerNormEps = 1e-12
        return d
    }

    /// DistilBertConfig's keys and the fields of the description they are: the one table that
    /// reading and writing config.json follow (with the four keys below it).
    private static var integerKeys: [(String, WritableKeyPath<BertConfig, Int>)] {
        [("vocab_size", \.vocabSize), ("max_position_embeddings", \.maxPositionEmbeddings), ("n_layers", \.layerCount),
         ("n_heads", \.headCount), ("dim", \.hiddenSize), ("hidden_dim", \.intermediateSize)]
    }
    private static var floatKeys: [(String, WritableKeyPath<BertConfig, Float>)] {
        [("dropout", \.hiddenDropoutProb), ("attention_dropout", \.attentionDropoutProb), ("initializer_range", \.initializerRange)]
    }

    static func decodeConfig(_ decoder: Decoder, family: EncoderFamily) throws -> BertConfig {
        let c = try decoder.container(keyedBy: ConfigKey.self)
        let d = defaults
        var config = d
        for (key, field) in integerKeys { config[keyPath: field] = try c.decodeIfPresent(Int.self, forKey: ConfigKey(key)) ?? d[keyPath: field] }
        for (key, field) in floatKeys { config[keyPath: field] = try c.decodeIfPresent(Float.self, forKey: ConfigKey(key)) ?? d[keyPath: field] }
        config.classifierDropout = try c.decodeIfPresent(Float.self, forKey: ConfigKey("seq_classif_dropout")) ?? d.classifierDropout
        config.hiddenAct = try c.decodeIfPresent(String.self, forKey: ConfigKey("activation")) ?? d.hiddenAct
        config.sinusoidalPositionEmbeddings = try c.decodeIfPresent(Bool.self, forKey: ConfigKey("sinusoidal_pos_embds")) ?? false
        config.padTokenId = (try? c.decodeIfPresent(Int.self, forKey: ConfigKey("pad_token_id"))) ?? d.padTokenId   // null: the default
        config.id2label = try c.decodeIfPresent([String: String].self, forKey: ConfigKey("id2label"))
        return config
    }

    static func encodeConfig(_ config: BertConfig, to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: ConfigKey.self)
        for (key, field) in integerKeys { try c.encode(config[keyPath: field], forKey: ConfigKey(key)) }
        for (key, field) in floatKeys { try c.encode(jsonNumber(config[keyPath: field]), forKey: ConfigKey(key)) }
        try c.encode(jsonNumber(config.effectiveClassifierDropout), forKey: ConfigKey("seq_classif_dropout"))
        try c.encode(config.hiddenAct, forKey: ConfigKey("activation"))
        try c.encode(config.sinusoidalPositionEmbeddings, forKey: ConfigKey("sinusoidal_pos_embds"))
        try c.encode(config.padTokenId, forKey: ConfigKey("pad_token_id"))
        try BertFamily.encodeCommonKeys(config, to: encoder)
    }

    static func validate(_ config: BertConfig, file: String) throws {}

    static func architecture(_ config: BertConfig) -> EncoderArchitecture {
        let layer = "distilbert.transformer.layer."
        return EncoderArchitecture(
            family: .distilbert, className: "DistilBertForSequenceClassification", basePrefix: "distilbert.",
            names: EncoderTensorNames(
                wordEmbeddings: "distilbert.embeddings.word_embeddings", positionEmbeddings: "distilbert.embeddings.position_embeddings",
                tokenTypeEmbeddings: nil, embeddingNorm: "distilbert.embeddings.LayerNorm", embeddingProjection: nil,
                layerPrefix: layer, query: "attention.q_lin", key: "attention.k_lin", value: "attention.v_lin",
                attentionOutput: "attention.out_lin", attentionNorm: "sa_layer_norm", intermediate: "ffn.lin1",
                output: "ffn.lin2", outputNorm: "output_layer_norm", headDense: "pre_classifier", headOutput: "classifier"),
            embeddingWidth: config.hiddenSize, positions: .index, headActivation: .relu,
            dropout: DropoutProbabilities(embeddings: config.hiddenDropoutProb, attentionProbabilities: config.attentionDropoutProb,
                                          attentionOutput: nil, feedForwardOutput: config.hiddenDropoutProb, classifierInput: nil,
                                          classifier: config.effectiveClassifierDropout),
            wordPaddingRow: config.padTokenId, positionPaddingRow: nil)
    }
}
