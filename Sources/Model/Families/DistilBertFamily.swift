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

    static func decodeConfig(_ decoder: Decoder, family: EncoderFamily) throws -> BertConfig {
        let c = try decoder.container(keyedBy: ConfigKey.self)
        func read<T: Decodable>(_ key: String, _ fallback: T) throws -> T {
            try c.decodeIfPresent(T.self, forKey: ConfigKey(key)) ?? fallback
        }
        let d = defaults
        var config = d
        config.vocabSize = try read("vocab_size", d.vocabSize)
        config.maxPositionEmbeddings = try read("max_position_embeddings", d.maxPositionEmbeddings)
        config.sinusoidalPositionEmbeddings = try read("sinusoidal_pos_embds", d.sinusoidalPositionEmbeddings)
        config.layerCount = try read("n_layers", d.layerCount)
        config.headCount = try read("n_heads", d.headCount)
        config.hiddenSize = try read("dim", d.hiddenSize)
        config.intermediateSize = try read("hidden_dim", d.intermediateSize)
        config.hiddenDropoutProb = try read("dropout", d.hiddenDropoutProb)
        config.attentionDropoutProb = try read("attention_dropout", d.attentionDropoutProb)
        config.hiddenAct = try read("activation", d.hiddenAct)
        config.initializerRange = try read("initializer_range", d.initializerRange)
        config.classifierDropout = try read("seq_classif_dropout", d.effectiveClassifierDropout)
        config.padTokenId = (try? c.decodeIfPresent(Int.self, forKey: ConfigKey("pad_token_id"))) ?? d.padTokenId
        config.id2label = try c.decodeIfPresent([String: String].self, forKey: ConfigKey("id2label"))
        return config
    }

    static func encodeConfig(_ config: BertConfig, to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: ConfigKey.self)
        try c.encode(config.vocabSize, forKey: ConfigKey("vocab_size"))
        try c.encode(config.maxPositionEmbeddings, forKey: ConfigKey("max_position_embeddings"))
        try c.encode(config.sinusoidalPositionEmbeddings, forKey: ConfigKey("sinusoidal_pos_embds"))
        try c.encode(config.layerCount, forKey: ConfigKey("n_layers"))
        try c.encode(config.headCount, forKey: ConfigKey("n_heads"))
        try c.encode(config.hiddenSize, forKey: ConfigKey("dim"))
        try c.encode(config.intermediateSize, forKey: ConfigKey("hidden_dim"))
        try c.encode(jsonNumber(config.hiddenDropoutProb), forKey: ConfigKey("dropout"))
        try c.encode(jsonNumber(config.attentionDropoutProb), forKey: ConfigKey("attention_dropout"))
        try c.encode(config.hiddenAct, forKey: ConfigKey("activation"))
        try c.encode(jsonNumber(config.initializerRange), forKey: ConfigKey("initializer_range"))
        try c.encode(jsonNumber(config.effectiveClassifierDropout), forKey: ConfigKey("seq_classif_dropout"))
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
