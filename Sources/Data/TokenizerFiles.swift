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
        let object = try readJSONObject(url)
        func bool(_ key: String, default value: Bool) throws -> Bool {
            switch object[key] {
            case nil, is NSNull: return value
            case let flag as Bool: return flag
            default: throw DataError("\(url.path): \"\(key)\" must be true or false")
            }
        }
        let lowercase = try bool("do_lower_case", default: true)
        let chinese = try bool("tokenize_chinese_chars", default: true)
        var strip: Bool? = nil
        if let value = object["strip_accents"], !(value is NSNull) {
            guard let flag = value as? Bool else { throw DataError("\(url.path): \"strip_accents\" must be true, false or null") }
            strip = flag
        }
        options = NormalizerOptions(cleanText: true, handleChineseChars: chinese, stripAccents: strip, lowercase: lowercase)
        func tokenName(_ key: String, default value: String) throws -> String {
            guard let entry = object[key], !(entry is NSNull) else { return value }
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
        if let list = object["additional_special_tokens"] as? [Any] {
            additionalSpecialTokens = list.compactMap(addedTokenContent)
        }
        if let decoder = object["added_tokens_decoder"] as? [String: Any] {
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

    init(url: URL) throws {
        let path = url.path
        let object = try readJSONObject(url)
        guard let model = object["model"] as? [String: Any] else {
            throw DataError("\(path): no \"model\" object")
        }
        let modelType = model["type"] as? String ?? "(none)"
        guard modelType == "WordPiece" else {
            throw DataError("\(path): the model is \(modelType), not WordPiece; bert-dist reads BERT (WordPiece) tokenizers only")
        }
        guard let vocab = model["vocab"] as? [String: Any], !vocab.isEmpty else {
            throw DataError("\(path): the WordPiece model has no \"vocab\"")
        }
        var ids: [String: Int32] = [:]
        ids.reserveCapacity(vocab.count)
        for (token, value) in vocab {
            guard let number = value as? NSNumber, let id = Int32(exactly: number.doubleValue) else {
                throw DataError("\(path): vocabulary entry \"\(token)\" has no integer id")
            }
            ids[token] = id
        }
        vocabulary = try Vocabulary(ids: ids)
        unknownToken = model["unk_token"] as? String ?? "[UNK]"
        continuationPrefix = model["continuing_subword_prefix"] as? String ?? "##"
        maxInputCharactersPerWord = (model["max_input_chars_per_word"] as? NSNumber)?.intValue ?? 100

        switch object["normalizer"] {
        case nil, is NSNull:
            options = NormalizerOptions(cleanText: false, handleChineseChars: false, stripAccents: false, lowercase: false)
        case let normalizer as [String: Any]:
            guard normalizer["type"] as? String == "BertNormalizer" else {
                throw DataError("\(path): normalizer \(normalizer["type"] as? String ?? "?") is not supported (BertNormalizer only)")
            }
            options = NormalizerOptions(
                cleanText: normalizer["clean_text"] as? Bool ?? true,
                handleChineseChars: normalizer["handle_chinese_chars"] as? Bool ?? true,
                stripAccents: normalizer["strip_accents"] as? Bool,
                lowercase: normalizer["lowercase"] as? Bool ?? true)
        default:
            throw DataError("\(path): \"normalizer\" must be an object")
        }
        let preTokenizer = (object["pre_tokenizer"] as? [String: Any])?["type"] as? String
        guard preTokenizer == "BertPreTokenizer" else {
            throw DataError("\(path): pre-tokenizer \(preTokenizer ?? "null") is not supported (BertPreTokenizer only)")
        }

        for entry in object["added_tokens"] as? [[String: Any]] ?? [] {
            guard let content = entry["content"] as? String, let id = (entry["id"] as? NSNumber)?.int32Value else {
                throw DataError("\(path): an added token has no \"content\" or \"id\"")
            }
            for flag in ["normalized", "lstrip", "rstrip", "single_word"] where entry[flag] as? Bool == true {
                throw DataError("\(path): added token \"\(content)\" has \(flag)=true, which bert-dist does not support")
            }
            addedTokens.append((content, id))
        }

        if let post = object["post_processor"] as? [String: Any] {
            switch post["type"] as? String {
            case "BertProcessing":
                classifierToken = (post["cls"] as? [Any])?.first as? String
                separatorToken = (post["sep"] as? [Any])?.first as? String
            case "TemplateProcessing":
                let single = post["single"] as? [[String: Any]] ?? []
                let names = single.map { ($0["SpecialToken"] as? [String: Any])?["id"] as? String }
                let isSequence = single.map { $0["Sequence"] != nil }
                guard single.count == 3, names[0] != nil, isSequence[1], names[2] != nil else {
                    throw DataError("\(path): the post-processor template must be \"[CLS] $A [SEP]\"")
                }
                classifierToken = names[0]
                separatorToken = names[2]
            default:
                throw DataError("\(path): post-processor \(post["type"] as? String ?? "?") is not supported")
            }
        }
    }
}

/// A token name written as "[CLS]" or as {"content": "[CLS]", ...}.
private func addedTokenContent(_ value: Any) -> String? {
    if let name = value as? String { return name }
    if let object = value as? [String: Any] { return object["content"] as? String }
    return nil
}

func readJSONObject(_ url: URL) throws -> [String: Any] {
    let data: Data
    do {
        data = try Data(contentsOf: url)
    } catch {
        throw DataError("\(url.path): cannot read (\(describeFileError(error)))")
    }
    let parsed: Any
    do {
        parsed = try JSONSerialization.jsonObject(with: escapingByteOrderMarks(data))
    } catch {
        throw DataError("\(url.path): not valid JSON")
    }
    guard let object = parsed as? [String: Any] else {
        throw DataError("\(url.path): expected a JSON object")
    }
    return object
}

/// The JSON text with every U+FEFF after the first byte written as the escape "\ufeff":
/// Foundation's JSONSerialization drops a raw U+FEFF that starts a string value (a vocabulary
/// token such as "\u{FEFF}abc" would lose it), but keeps an escaped one. Outside strings a
/// U+FEFF is not valid JSON anyway, and one that starts the file is left for the parser to skip.
func escapingByteOrderMarks(_ data: Data) -> Data {
    let bytes = [UInt8](data)
    var index = 1
    var found = false
    while index + 2 < bytes.count {
        if bytes[index] == 0xEF && bytes[index + 1] == 0xBB && bytes[index + 2] == 0xBF {
            found = true
            break
        }
        index += 1
    }
    guard found else { return data }
    var output: [UInt8] = []
    output.reserveCapacity(bytes.count + 64)
    output.append(contentsOf: bytes[0..<index])
    while index < bytes.count {
        if index + 2 < bytes.count && bytes[index] == 0xEF && bytes[index + 1] == 0xBB && bytes[index + 2] == 0xBF {
            output.append(contentsOf: Array("\\ufeff".utf8))
            index += 3
        } else {
            output.append(bytes[index])
            index += 1
        }
    }
    return Data(output)
}
