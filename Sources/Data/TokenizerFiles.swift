import Foundation

/// What we read from `tokenizer_config.json` (transformers' BertTokenizer arguments).
struct TokenizerConfig {
    var options = NormalizerOptions()
    var unknownToken = "[UNK]"
    var separatorToken = "[SEP]"
    var paddingToken = "[PAD]"
    var classifierToken = "[CLS]"
    var maskToken = "[MASK]"
    var additionalSpecialTokens: [String] = []
    /// `added_tokens_decoder`: content and id of each added token.
    var addedTokens: [(String, Int32)] = []

    var specialTokenNames: [String] {
        [unknownToken, separatorToken, paddingToken, classifierToken, maskToken] + additionalSpecialTokens
    }

    init() {}

    init(url: URL) throws {
        let object = try JSONValue.readObject(url)
        func bool(_ key: String, default value: Bool) throws -> Bool {
            guard let entry = object[key], !entry.isNull else { return value }
            guard let flag = entry.bool else { throw DataError("\(url.path): \"\(key)\" must be true or false") }
            return flag
        }
        let lowercase = try bool("do_lower_case", default: true)
        let chinese = try bool("tokenize_chinese_chars", default: true)
        var strip: Bool? = nil
        if let value = object["strip_accents"], !value.isNull {
            guard let flag = value.bool else { throw DataError("\(url.path): \"strip_accents\" must be true, false or null") }
            strip = flag
        }
        options = NormalizerOptions(cleanText: true, handleChineseChars: chinese, stripAccents: strip, lowercase: lowercase)
        func tokenName(_ key: String, default value: String) throws -> String {
            guard let entry = object[key], !entry.isNull else { return value }
            guard let name = addedTokenContent(entry) else {
                throw DataError("\(url.path): \"\(key)\" must be a string or an object with \"content\"")
            }
            return name
        }
        unknownToken = try tokenName("unk_token", default: unknownToken)
        separatorToken = try tokenName("sep_token", default: separatorToken)
        paddingToken = try tokenName("pad_token", default: paddingToken)
        classifierToken = try tokenName("cls_token", default: classifierToken)
        maskToken = try tokenName("mask_token", default: maskToken)
        if let list = object["additional_special_tokens"]?.array {
            additionalSpecialTokens = list.compactMap(addedTokenContent)
        }
        if let decoder = object["added_tokens_decoder"]?.entries {
            for (key, entry) in decoder {
                guard let id = Int32(key), let content = addedTokenContent(entry) else {
                    throw DataError("\(url.path): added_tokens_decoder entry \"\(key)\" needs an integer id and a \"content\"")
                }
                addedTokens.append((content, id))
            }
            addedTokens.sort { $0.1 < $1.1 }
        }
    }
}

/// What we read from `tokenizer.json` (the Rust tokenizers serialization).
struct TokenizerJSON {
    var vocabulary: Vocabulary
    var options: NormalizerOptions
    var unknownToken: String
    var continuationPrefix: String
    var maxInputCharactersPerWord: Int
    /// Added tokens, matched literally in the raw text.
    var addedTokens: [(String, Int32)] = []
    var classifierToken: String?
    var separatorToken: String?

    /// The largest `max_input_chars_per_word` read (HF's default is 100).
    static let maxInputCharactersLimit = 1 << 16

    init(url: URL) throws {
        let path = url.path
        let object = try JSONValue.readObject(url)
        guard let model = object["model"], model.isObject else {
            throw DataError("\(path): no \"model\" object")
        }
        let modelType = model["type"]?.string ?? "(none)"
        guard modelType == "WordPiece" else {
            throw DataError("\(path): the model is \(modelType), not WordPiece; bert-dist reads BERT (WordPiece) tokenizers only")
        }
        guard let vocab = model["vocab"]?.entries, !vocab.isEmpty else {
            throw DataError("\(path): the WordPiece model has no \"vocab\"")
        }
        var ids: [String: Int32] = [:]
        ids.reserveCapacity(vocab.count)
        for (token, value) in vocab {
            guard let id = value.int32 else {
                throw DataError("\(path): vocabulary entry \"\(token)\" has no integer id")
            }
            ids[token] = id
        }
        vocabulary = try Vocabulary(ids: ids)
        unknownToken = model["unk_token"]?.string ?? "[UNK]"
        continuationPrefix = model["continuing_subword_prefix"]?.string ?? "##"
        maxInputCharactersPerWord = 100
        if let value = model["max_input_chars_per_word"], !value.isNull {
            // Each encode call holds a buffer of this many characters: a value far beyond any word
            // (HF reads any usize) would allocate gigabytes.
            guard let count = value.int32, (0...Self.maxInputCharactersLimit).contains(Int(count)) else {
                throw DataError("\(path): model.max_input_chars_per_word must be an integer from 0 to \(Self.maxInputCharactersLimit), found \(value.compact)")
            }
            maxInputCharactersPerWord = Int(count)
        }

        let normalizer = object["normalizer"] ?? .null
        if normalizer.isNull {
            options = NormalizerOptions(cleanText: false, handleChineseChars: false, stripAccents: false, lowercase: false)
        } else {
            guard normalizer.isObject else { throw DataError("\(path): \"normalizer\" must be an object") }
            guard normalizer["type"]?.string == "BertNormalizer" else {
                throw DataError("\(path): normalizer \(normalizer["type"]?.string ?? "?") is not supported (BertNormalizer only)")
            }
            options = NormalizerOptions(
                cleanText: normalizer["clean_text"]?.bool ?? true,
                handleChineseChars: normalizer["handle_chinese_chars"]?.bool ?? true,
                stripAccents: normalizer["strip_accents"]?.bool,
                lowercase: normalizer["lowercase"]?.bool ?? true)
        }
        let preTokenizer = object["pre_tokenizer"]?["type"]?.string
        guard preTokenizer == "BertPreTokenizer" else {
            throw DataError("\(path): pre-tokenizer \(preTokenizer ?? "null") is not supported (BertPreTokenizer only)")
        }

        for entry in object["added_tokens"]?.array ?? [] {
            guard let content = entry["content"]?.string, let id = entry["id"]?.int32 else {
                throw DataError("\(path): an added token has no \"content\" or \"id\"")
            }
            for flag in ["normalized", "lstrip", "rstrip", "single_word"] where entry[flag]?.bool == true {
                throw DataError("\(path): added token \"\(content)\" has \(flag)=true, which bert-dist does not support")
            }
            addedTokens.append((content, id))
        }

        if let post = object["post_processor"], post.isObject {
            switch post["type"]?.string {
            case "BertProcessing":
                classifierToken = post["cls"]?.array?.first?.string
                separatorToken = post["sep"]?.array?.first?.string
            case "TemplateProcessing":
                let single = post["single"]?.array ?? []
                let names = single.map { $0["SpecialToken"]?["id"]?.string }
                let isSequence = single.map { $0["Sequence"] != nil }
                guard single.count == 3, names[0] != nil, isSequence[1], names[2] != nil else {
                    throw DataError("\(path): the post-processor template must be \"[CLS] $A [SEP]\"")
                }
                classifierToken = names[0]
                separatorToken = names[2]
            default:
                throw DataError("\(path): post-processor \(post["type"]?.string ?? "?") is not supported")
            }
        }
    }
}

/// A token name written as "[CLS]" or as {"content": "[CLS]", ...}.
private func addedTokenContent(_ value: JSONValue) -> String? {
    value.string ?? value["content"]?.string
}
