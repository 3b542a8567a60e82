import Foundation

/// RoBERTa, XLM-RoBERTa and CamemBERT (`model_type` "roberta", "xlm-roberta", "camembert"): one
/// architecture, transformers' RobertaForSequenceClassification and its two copies, whose
/// tensors are all named `roberta.` (their tokenizers differ, not their models).
///   config keys   BERT's (each config class's defaults: vocab_size 50265 for RoBERTa, 30522 for
///                 the others; pad_token_id 1)
///   embeddings    word + position + token type (type_vocab_size is 1 in the real models),
///                 LayerNorm, dropout. Positions as create_position_ids_from_input_ids: a
///                 sequence's tokens count from pad_token_id + 1, a pad-id token gets pad_token_id
///                 and is not counted; every packed sequence starts again at pad_token_id + 1, so
///                 the longest sequence is max_position_embeddings - pad_token_id - 1 tokens.
///                 The position table's pad row, like the word table's, gets no gradient.
///   layers        BERT's, under roberta.encoder.layer.N
///   head          <s> -> dropout -> classifier.dense -> tanh -> dropout -> classifier.out_proj;
///                 no pooler (a pooler in the folder, from an MLM checkpoint, is ignored)
enum RobertaFamily: EncoderFamilyDefinition {
    static func defaults(_ family: EncoderFamily) -> BertConfig {
        var d = BertConfig()
        d.family = family
        d.vocabSize = family == .roberta ? 50265 : 30522
        d.padTokenId = 1
        return d
    }

    static func decodeConfig(_ decoder: Decoder, family: EncoderFamily) throws -> BertConfig {
        try BertConfig(bertKeysFrom: decoder, defaults: defaults(family))
    }

    static func encodeConfig(_ config: BertConfig, to encoder: Encoder) throws {
        try BertFamily.encodeBertKeys(config, to: encoder)
    }

    static func validate(_ config: BertConfig, file: String) throws {
        guard config.padTokenId >= 0 && config.padTokenId < config.vocabSize else {
            throw ModelError.invalidConfig(file: file, reason: "pad_token_id \(config.padTokenId) is outside the vocabulary of \(config.vocabSize) (\(config.family.displayName) counts positions from it)")
        }
        guard config.maxSequenceLength >= 1 else {
            throw ModelError.invalidConfig(file: file, reason: "max_position_embeddings \(config.maxPositionEmbeddings) leaves no position for a token: \(config.family.displayName)'s positions start at pad_token_id + 1 = \(config.padTokenId + 1)")
        }
    }

    static func architecture(_ config: BertConfig) -> EncoderArchitecture {
        let hidden = config.hiddenDropoutProb, head = config.effectiveClassifierDropout
        let className = switch config.family {
        case .xlmRoberta: "XLMRobertaForSequenceClassification"
        case .camembert: "CamembertForSequenceClassification"
        default: "RobertaForSequenceClassification"
        }
        return EncoderArchitecture(
            family: config.family, className: className, basePrefix: "roberta.",
            names: .bertStyle(prefix: "roberta.", headDense: "classifier.dense", headOutput: "classifier.out_proj"),
            embeddingWidth: config.hiddenSize, positions: .countingFromPadding(padTokenId: config.padTokenId),
            headActivation: .tanh,
            dropout: DropoutProbabilities(embeddings: hidden, attentionProbabilities: config.attentionDropoutProb,
                                          attentionOutput: hidden, feedForwardOutput: hidden, classifierInput: head,
                                          classifier: head),
            wordPaddingRow: config.padTokenId, positionPaddingRow: config.padTokenId)
    }
}
