import Foundation

/// The files of a model folder a tokenizer may be read from (what a checkpoint copies).
let tokenizerFileNames = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                          "vocab.txt", "vocab.json", "merges.txt", "sentencepiece.bpe.model"]

func existingTokenizerFiles(in directory: URL) -> [URL] {
    tokenizerFileNames.map { directory.appendingPathComponent($0) }.filter { FileManager.default.fileExists(atPath: $0.path) }
}

/// Loads the tokenizer of a Hugging Face model folder: the one transformers 5's
/// `AutoTokenizer.from_pretrained(folder)` builds, giving the same ids.
///
/// Which tokenizer: `tokenizer_config.json`'s `tokenizer_class` when it names one, else the
/// family of `modelType` (config.json's `model_type`; read from the folder's config.json when
/// nil):
///   - BertTokenizer, DistilBertTokenizer, ElectraTokenizer (bert, distilbert, electra):
///     `BertTokenizer` (WordPiece, from tokenizer.json or vocab.txt);
///   - RobertaTokenizer (roberta): byte-level BPE from tokenizer.json's BPE model or
///     vocab.json + merges.txt, with transformers' RoBERTa pipeline (ByteLevel pre-tokenizer with
///     `add_prefix_space` from tokenizer_config.json, no normalizer, `<s> A </s></s> B </s>`);
///   - XLMRobertaTokenizer, CamembertTokenizer (xlm-roberta, camembert): Unigram from
///     tokenizer.json's Unigram model or sentencepiece.bpe.model (fairseq's id offsets), with
///     transformers' pipeline (the Precompiled normalizer, WhitespaceSplit + Metaspace);
///   - TokenizersBackend / PreTrainedTokenizerFast, or no class at all: tokenizer.json as
///     written (its normalizer, pre-tokenizer, model, post-processor and added tokens).
/// As in transformers 5, a class's own pipeline replaces the normalizer and pre-tokenizer of
/// its tokenizer.json (only the vocabulary, merges and precompiled charsmap are taken from it).
public func loadTextTokenizer(modelDirectory: URL, modelType: String? = nil) throws -> any TextTokenizer {
    try TokenizerFolder(modelDirectory, modelType: modelType).load()
}

/// transformers 5's tokenizer classes that bert-dist reproduces.
enum TokenizerClass: String {
    case bert = "BertTokenizer"
    case roberta = "RobertaTokenizer"
    case xlmRoberta = "XLMRobertaTokenizer"
    case camembert = "CamembertTokenizer"
    case generic = "TokenizersBackend"

    /// The class `AutoTokenizer` picks for a model_type without a tokenizer_class.
    static func ofModelType(_ modelType: String) -> TokenizerClass? {
        switch modelType {
        case "bert", "distilbert", "electra": return .bert
        case "roberta": return .roberta
        case "xlm-roberta": return .xlmRoberta
        case "camembert": return .camembert
        default: return nil
        }
    }

    static func named(_ name: String) -> TokenizerClass? {
        switch name.hasSuffix("Fast") ? String(name.dropLast(4)) : name {
        case "BertTokenizer", "DistilBertTokenizer", "ElectraTokenizer": return .bert
        case "RobertaTokenizer": return .roberta
        case "XLMRobertaTokenizer": return .xlmRoberta
        case "CamembertTokenizer": return .camembert
        case "TokenizersBackend", "PreTrainedTokenizer": return .generic
        default: return nil
        }
    }
}

/// A token name as tokenizer_config.json or special_tokens_map.json writes it: a string, or an
/// object with "content" and the AddedToken flags.
struct AddedTokenSpec {
    var content: String
    var flags: Flags?

    struct Flags: Equatable {
        var leftStrip = false, rightStrip = false, singleWord = false, normalized = false, special = false
    }

    init(content: String, flags: Flags? = nil) {
        self.content = content
        self.flags = flags
    }

    /// Reads a string or an AddedToken object; `special` is the default of the "special" flag.
    init?(_ value: JSONValue, special: Bool) throws {
        if let name = value.string {
            self.init(content: name)
            return
        }
        guard value.isObject, let content = value["content"]?.string else { return nil }
        var flags = Flags()
        func flag(_ key: String, _ fallback: Bool) throws -> Bool {
            guard let entry = value[key], !entry.isNull else { return fallback }
            guard let flag = entry.bool else {
                throw DataError("the \"\(key)\" of added token \"\(content.prefix(40))\" must be true or false")
            }
            return flag
        }
        flags.special = try flag("special", special)
        flags.leftStrip = try flag("lstrip", false)
        flags.rightStrip = try flag("rstrip", false)
        flags.singleWord = try flag("single_word", false)
        flags.normalized = try flag("normalized", !flags.special)
        self.init(content: content, flags: flags)
    }
}

/// A model folder's tokenizer files and the class transformers would use for them.
struct TokenizerFolder {
    let directory: URL
    let tokenizerClass: TokenizerClass
    /// tokenizer_config.json (an empty object when absent).
    let config: JSONValue
    let configPath: String

    static let specialTokenKeys = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]

    init(_ directory: URL, modelType: String?) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw DataError("\(directory.path): no such model folder (expected a Hugging Face folder with its tokenizer files)")
        }
        self.directory = directory
        let configURL = directory.appendingPathComponent("tokenizer_config.json")
        configPath = configURL.path
        config = FileManager.default.fileExists(atPath: configURL.path) ? try JSONValue.readObject(configURL) : .object([])
        var chosen: TokenizerClass? = nil
        if let value = config["tokenizer_class"], !value.isNull {
            guard let name = value.string else { throw DataError("\(configPath): \"tokenizer_class\" must be a string") }
            guard let named = TokenizerClass.named(name) else {
                throw DataError("\(configPath): tokenizer_class \"\(name)\" is not supported; bert-dist reads BertTokenizer, DistilBertTokenizer, ElectraTokenizer, RobertaTokenizer, XLMRobertaTokenizer, CamembertTokenizer and tokenizer.json files (TokenizersBackend)")
            }
            chosen = named
        }
        if chosen == nil {
            var type = modelType
            let modelConfigURL = directory.appendingPathComponent("config.json")
            if type == nil && FileManager.default.fileExists(atPath: modelConfigURL.path) {
                type = try JSONValue.readObject(modelConfigURL)["model_type"]?.string
            }
            chosen = type.flatMap(TokenizerClass.ofModelType)
            // Another family's model_type means another tokenizer class for AutoTokenizer
            // (GPT2Tokenizer for gpt2): reading the folder's files as ours would give other ids.
            if let type, chosen == nil {
                throw DataError("\(modelConfigURL.path): model_type \"\(type)\" is not supported: bert-dist reads the tokenizers of bert, distilbert, electra, roberta, xlm-roberta and camembert (or set tokenizer_class in tokenizer_config.json)")
            }
        }
        if chosen == nil {
            if FileManager.default.fileExists(atPath: directory.appendingPathComponent("tokenizer.json").path) {
                chosen = .generic
            } else if FileManager.default.fileExists(atPath: directory.appendingPathComponent("vocab.txt").path) {
                chosen = .bert
            } else {
                throw DataError("\(directory.path): no tokenizer.json or vocab.txt, and neither tokenizer_config.json's tokenizer_class nor config.json's model_type says which tokenizer the folder holds")
            }
        }
        tokenizerClass = chosen!
        if let side = config["truncation_side"]?.string, side != "right" {
            throw DataError("\(configPath): truncation_side \"\(side)\" is not supported (bert-dist cuts texts on the right, as transformers does by default)")
        }
    }

    func url(_ name: String) -> URL { directory.appendingPathComponent(name) }
    func has(_ name: String) -> Bool { FileManager.default.fileExists(atPath: url(name).path) }

    func load() throws -> any TextTokenizer {
        switch tokenizerClass {
        case .bert:
            return try BertTokenizer(modelDirectory: directory)
        case .roberta:
            return try loadRoberta()
        case .xlmRoberta, .camembert:
            return try loadSentencePieceFamily()
        case .generic:
            guard has("tokenizer.json") else {
                throw DataError("\(directory.path): no tokenizer.json (tokenizer_class \(tokenizerClass.rawValue) reads its tokenizer from tokenizer.json)")
            }
            let file = try TokenizerJSONFile(url: url("tokenizer.json"))
            if file.modelType == "WordPiece" { return try BertTokenizer(modelDirectory: directory) }
            return try loadGeneric(file)
        }
    }

    // MARK: - Special and added tokens, as transformers 5 assembles them

    /// A named special token (bos_token, ...) from tokenizer_config.json, nil when absent or null.
    func configToken(_ key: String, in object: JSONValue, path: String) throws -> AddedTokenSpec? {
        guard let value = object[key], !value.isNull else { return nil }
        do {
            guard let spec = try AddedTokenSpec(value, special: true) else {
                throw DataError("\"\(key)\" must be a string or an object with \"content\"")
            }
            return spec
        } catch let error as DataError {
            throw DataError("\(path): \(error.description)")
        }
    }

    /// The added tokens transformers 5 gives the tokenizer, in the order it adds them, and the
    /// names of the special tokens. `defaults`: the class's default names (and flags).
    /// `fileAddedTokens`: tokenizer.json's added_tokens (used when tokenizer_config.json has no
    /// added_tokens_decoder, as transformers' legacy loading does).
    func addedTokenSpecs(defaults: [String: AddedTokenSpec], fileAddedTokens: [(id: Int32, spec: AddedTokenSpec)],
                         extraSpecials: [AddedTokenSpec] = []) throws
        -> (declared: [(id: Int32?, spec: AddedTokenSpec)], named: [String: AddedTokenSpec]) {
        var named: [String: AddedTokenSpec] = [:]
        for key in TokenizerFolder.specialTokenKeys {
            if let spec = try configToken(key, in: config, path: configPath) { named[key] = spec }
        }
        var declared: [(id: Int32?, spec: AddedTokenSpec)] = []
        if let decoder = config["added_tokens_decoder"], !decoder.isNull {
            guard let entries = decoder.entries else {
                throw DataError("\(configPath): \"added_tokens_decoder\" must be an object of id -> token")
            }
            for (key, entry) in entries {
                guard let id = Int32(key), id >= 0, let spec = try AddedTokenSpec(entry, special: false) else {
                    throw DataError("\(configPath): added_tokens_decoder entry \"\(key.prefix(20))\" needs an integer id and a \"content\"")
                }
                declared.append((id, spec))
            }
        } else {
            // Legacy: special_tokens_map.json overrides the names; added_tokens.json and
            // tokenizer.json's added tokens are the added tokens.
            if has("special_tokens_map.json") {
                let map = try JSONValue.readObject(url("special_tokens_map.json"))
                for key in TokenizerFolder.specialTokenKeys {
                    if let spec = try configToken(key, in: map, path: url("special_tokens_map.json").path) {
                        var spec = spec
                        if spec.flags != nil { spec.flags!.special = true }
                        named[key] = spec
                    }
                }
            }
            if has("added_tokens.json") {
                let path = url("added_tokens.json").path
                let specialNames = Set(named.values.map(\.content))
                for (content, value) in try JSONValue.readObject(url("added_tokens.json")).entries ?? [] {
                    guard let id = value.int32, id >= 0 else {
                        throw DataError("\(path): the id of \"\(content.prefix(40))\" must be a whole number")
                    }
                    let special = specialNames.contains(content)
                    declared.append((id, AddedTokenSpec(content: content, flags: .init(normalized: !special, special: special))))
                }
            }
            declared += fileAddedTokens.map { (id: Optional($0.id), spec: $0.spec) }
        }
        declared.sort { ($0.id ?? -1) < ($1.id ?? -1) }
        // A named token written as a plain string takes the flags of the added token with that content.
        var declaredFlags: [[UInt8]: AddedTokenSpec.Flags] = [:]
        for (_, spec) in declared { if let flags = spec.flags { declaredFlags[Array(spec.content.utf8)] = flags } }
        for key in TokenizerFolder.specialTokenKeys {
            if var spec = named[key] ?? defaults[key] {
                if spec.flags == nil {
                    spec.flags = declaredFlags[Array(spec.content.utf8)]
                        ?? defaults[key].flatMap { sameText($0.content, spec.content) ? $0.flags : nil }
                }
                named[key] = spec
            }
        }
        var extras = extraSpecials
        for key in ["extra_special_tokens", "additional_special_tokens"] {
            guard let list = config[key], !list.isNull else { continue }
            if list.isObject { continue }  // named model-specific tokens: not added
            guard let items = list.array else { throw DataError("\(configPath): \"\(key)\" must be a list of tokens") }
            for item in items {
                guard let spec = try AddedTokenSpec(item, special: true) else {
                    throw DataError("\(configPath): an entry of \"\(key)\" must be a string or an object with \"content\"")
                }
                extras.append(spec)
            }
        }
        var result = declared
        for key in TokenizerFolder.specialTokenKeys {
            if let spec = named[key] { result.append((nil, spec)) }
        }
        result += extras.map { (id: nil, spec: $0) }
        return (result, named)
    }

    /// Gives each added token its id (the model's id of its content, else its declared id, else
    /// the next free one), keeping the first occurrence of each content.
    static func resolveAddedTokens(_ specs: [(id: Int32?, spec: AddedTokenSpec)], modelId: (String) -> Int32?,
                                   modelSize: Int) -> [AddedToken] {
        var tokens: [AddedToken] = []
        var seen = Set<[UInt8]>()
        var nextId = modelSize
        for (declaredId, spec) in specs where !spec.content.isEmpty && !seen.contains(Array(spec.content.utf8)) {
            seen.insert(Array(spec.content.utf8))
            let flags = spec.flags ?? AddedTokenSpec.Flags(normalized: false, special: true)
            let id: Int32
            if let known = modelId(spec.content) {
                id = known
            } else if let declaredId {
                id = declaredId
            } else {
                id = Int32(clamping: nextId)
            }
            nextId = max(nextId, Int(id) + 1)
            tokens.append(AddedToken(content: spec.content, id: id, special: flags.special, normalized: flags.normalized,
                                     leftStrip: flags.leftStrip, rightStrip: flags.rightStrip, singleWord: flags.singleWord))
        }
        return tokens
    }

    func addPrefixSpace(default value: Bool) throws -> Bool {
        guard let entry = config["add_prefix_space"], !entry.isNull else { return value }
        guard let flag = entry.bool else { throw DataError("\(configPath): \"add_prefix_space\" must be true or false") }
        return flag
    }

    /// Id of a named special token, from the added tokens or the model.
    func tokenId(_ spec: AddedTokenSpec?, _ added: [AddedToken], _ modelId: (String) -> Int32?) -> Int32? {
        guard let spec else { return nil }
        return added.first(where: { sameText($0.content, spec.content) })?.id ?? modelId(spec.content)
    }

    func specialIds(named: [String: AddedTokenSpec], added: [AddedToken], template: SpecialTokenTemplate,
                    modelId: (String) -> Int32?, source: String) throws -> SpecialTokenIds {
        func id(_ key: String) -> Int32? { tokenId(named[key], added, modelId) }
        var templateSpecials: [Int32] = []
        for item in template.single { if case .special(let ids) = item.piece { templateSpecials += ids } }
        guard let classifier = id("cls_token") ?? id("bos_token") ?? templateSpecials.first else {
            throw DataError("\(source): the tokenizer puts no special token in front of a text ([CLS] or <s>), which sequence classification reads; set cls_token in tokenizer_config.json")
        }
        guard let separator = id("sep_token") ?? id("eos_token") ?? templateSpecials.last else {
            throw DataError("\(source): the tokenizer has no separator token ([SEP] or </s>); set sep_token in tokenizer_config.json")
        }
        guard let padding = id("pad_token") else {
            throw DataError("\(source): the tokenizer has no padding token; set pad_token in tokenizer_config.json")
        }
        return SpecialTokenIds(classifier: classifier, separator: separator, padding: padding, unknown: id("unk_token"))
    }

    // MARK: - RoBERTa

    func loadRoberta() throws -> PipelineTokenizer {
        var vocabulary: [(String, Int32)]
        var merges: [(String, String)]
        var fileAddedTokens: [(id: Int32, spec: AddedTokenSpec)] = []
        let source: String
        if has("tokenizer.json") {
            let file = try TokenizerJSONFile(url: url("tokenizer.json"))
            guard file.modelType == "BPE" else {
                throw DataError("\(file.path): RobertaTokenizer needs a BPE model, the file has \(file.modelType)")
            }
            (vocabulary, merges) = try file.bytePairVocabularyAndMerges()
            fileAddedTokens = try file.addedTokens()
            source = file.path
        } else if has("vocab.json") && has("merges.txt") {
            vocabulary = try readVocabularyJSON(url("vocab.json"))
            merges = try readMergesText(url("merges.txt"))
            source = url("vocab.json").path + " and merges.txt"
        } else {
            throw DataError("\(directory.path): a RoBERTa tokenizer needs tokenizer.json, or vocab.json and merges.txt")
        }
        let bpe = try BytePairModel(vocabulary: vocabulary, merges: merges, unknownToken: nil, fuseUnknown: false,
                                    byteFallback: false, ignoreMerges: false, continuingSubwordPrefix: "",
                                    endOfWordSuffix: "", byteLevel: true, source: source)
        let defaults = ["bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>",
                        "pad_token": "<pad>", "mask_token": "<mask>"].mapValues { AddedTokenSpec(content: $0) }
        let (specs, named) = try addedTokenSpecs(defaults: defaults, fileAddedTokens: fileAddedTokens)
        let modelId: (String) -> Int32? = { bpe.id(of: $0) }
        let added = TokenizerFolder.resolveAddedTokens(specs, modelId: modelId, modelSize: bpe.tokens.count)
        guard let cls = tokenId(named["cls_token"], added, modelId), let sep = tokenId(named["sep_token"], added, modelId) else {
            throw DataError("\(source): the cls_token or sep_token of the RoBERTa tokenizer is not in its vocabulary")
        }
        let template = SpecialTokenTemplate.roberta(classifier: cls, separator: sep)
        let addPrefixSpace = try addPrefixSpace(default: false)
        return PipelineTokenizer(addedTokens: added, normalizer: [],
                                 preTokenizer: [.byteLevel(addPrefixSpace: addPrefixSpace, useRegex: true)],
                                 model: .bytePair(bpe), template: template,
                                 specialTokenIds: try specialIds(named: named, added: added, template: template, modelId: modelId, source: source),
                                 files: existingTokenizerFiles(in: directory),
                                 summary: "RobertaTokenizer (byte-level BPE) from \(source)")
    }

    // MARK: - XLM-RoBERTa and CamemBERT

    func loadSentencePieceFamily() throws -> PipelineTokenizer {
        let camembert = tokenizerClass == .camembert
        let className = tokenizerClass.rawValue
        var defaults = ["bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>",
                        "pad_token": "<pad>", "mask_token": "<mask>"].mapValues { AddedTokenSpec(content: $0) }
        if camembert {
            // CamembertTokenizer makes its mask token take the space before it.
            defaults["mask_token"]!.flags = .init(leftStrip: true, normalized: false, special: true)
        }
        let name = { (key: String) -> String in
            (try? self.configToken(key, in: self.config, path: self.configPath))??.content ?? defaults[key]!.content
        }
        var pieces: [(piece: String, score: Double)]
        var charsmap: [UInt8]? = nil
        var fileAddedTokens: [(id: Int32, spec: AddedTokenSpec)] = []
        var extraSpecials: [AddedTokenSpec] = []
        let source: String
        if has("tokenizer.json") {
            let file = try TokenizerJSONFile(url: url("tokenizer.json"))
            guard file.modelType == "Unigram" else {
                throw DataError("\(file.path): \(className) needs a Unigram model, the file has \(file.modelType)")
            }
            pieces = try file.unigramPieces()
            charsmap = try file.precompiledCharsmap()
            fileAddedTokens = try file.addedTokens()
            source = file.path
        } else if has("sentencepiece.bpe.model") {
            let modelURL = url("sentencepiece.bpe.model")
            let model = try SentencePieceModel(url: modelURL)
            source = modelURL.path
            // transformers' converters: fairseq's specials first, then the SentencePiece pieces
            // shifted (XLM-R: pieces 3... at 4...; CamemBERT: pieces 1... at 5...), <mask> last.
            let spm = model.pieces.map { (piece: $0.piece, score: Double($0.score)) }
            if camembert {
                pieces = [("<s>NOTUSED", 0), (name("pad_token"), 0), ("</s>NOTUSED", 0), (name("unk_token"), 0), ("<unk>NOTUSED", -100)]
                pieces += spm.dropFirst(1)
            } else {
                pieces = [(name("bos_token"), 0), (name("pad_token"), 0), (name("eos_token"), 0), (name("unk_token"), 0)]
                pieces += spm.dropFirst(3)
            }
            pieces.append((name("mask_token"), 0))
            charsmap = model.precompiledCharsmap.isEmpty ? nil : model.precompiledCharsmap
            // Control pieces (<s>, </s>) become special tokens.
            extraSpecials = model.pieces.filter { $0.type == SentencePieceModel.PieceType.control.rawValue }
                .map { AddedTokenSpec(content: $0.piece, flags: .init(normalized: false, special: true)) }
        } else {
            throw DataError("\(directory.path): an \(className) needs tokenizer.json or sentencepiece.bpe.model")
        }
        let unknownId: Int
        if camembert {
            unknownId = pieces.firstIndex { sameText($0.piece, name("unk_token")) } ?? 0
        } else {
            unknownId = 3
        }
        let unigram = try UnigramModel(pieces: pieces, unknownId: unknownId, byteFallback: false, source: source)
        var normalizer: [NormalizerStep] = []
        if let charsmap { normalizer.append(.precompiled(try PrecompiledCharsmap(charsmap, source: source))) }
        normalizer = try NormalizerStep.checked(normalizer, source: source)
        let (specs, named) = try addedTokenSpecs(defaults: defaults, fileAddedTokens: fileAddedTokens, extraSpecials: extraSpecials)
        let modelId: (String) -> Int32? = { unigram.id(of: $0) }
        let added = TokenizerFolder.resolveAddedTokens(specs, modelId: modelId, modelSize: pieces.count)
        guard let bos = tokenId(named["bos_token"], added, modelId), let eos = tokenId(named["eos_token"], added, modelId) else {
            throw DataError("\(source): the bos_token or eos_token of the \(className) is not in its vocabulary")
        }
        let template = SpecialTokenTemplate(
            single: [.init(.special([bos])), .init(.first), .init(.special([eos]))],
            pair: [.init(.special([bos])), .init(.first), .init(.special([eos])), .init(.special([eos])), .init(.second),
                   .init(.special([eos]))])
        let scheme: PreTokenizerStep.PrependScheme = try addPrefixSpace(default: true) ? .always : .never
        return PipelineTokenizer(addedTokens: added, normalizer: normalizer,
                                 preTokenizer: [.whitespaceSplit, .metaspace(replacement: Array("▁".utf8), scheme: scheme, split: true)],
                                 model: .unigram(unigram), template: template,
                                 specialTokenIds: try specialIds(named: named, added: added, template: template, modelId: modelId, source: source),
                                 files: existingTokenizerFiles(in: directory),
                                 summary: "\(className) (Unigram) from \(source)")
    }

    // MARK: - tokenizer.json as written

    func loadGeneric(_ file: TokenizerJSONFile) throws -> PipelineTokenizer {
        let normalizer = try NormalizerStep.checked(try file.normalizerSteps(), source: file.path)
        let preTokenizer = try file.preTokenizerSteps()
        let byteLevel = preTokenizer.contains { if case .byteLevel = $0 { return true } else { return false } }
        if let index = preTokenizer.firstIndex(where: { if case .byteLevel = $0 { return true } else { return false } }),
           index != preTokenizer.count - 1 {
            throw DataError("\(file.path): a pre-tokenizer after ByteLevel is not supported")
        }
        let model: TokenModel
        let modelId: (String) -> Int32?
        let modelSize: Int
        switch file.modelType {
        case "BPE":
            let bpe = try file.bytePairModel(byteLevel: byteLevel)
            model = .bytePair(bpe)
            modelId = { bpe.id(of: $0) }
            modelSize = bpe.tokens.count
        case "Unigram":
            if byteLevel { throw DataError("\(file.path): a Unigram model after a ByteLevel pre-tokenizer is not supported") }
            let unigram = try file.unigramModel()
            model = .unigram(unigram)
            modelId = { unigram.id(of: $0) }
            modelSize = unigram.pieces.count
        default:
            throw DataError("\(file.path): the model is \(file.modelType); bert-dist reads BPE, Unigram and WordPiece models")
        }
        // tokenizers' own added tokens keep their ids; the special tokens named in
        // tokenizer_config.json are added when missing.
        let fileTokens = try file.addedTokens()
        let (specs, named) = try addedTokenSpecs(defaults: [:], fileAddedTokens: fileTokens)
        var resolved = fileTokens.map { entry -> AddedToken in
            let flags = entry.spec.flags ?? .init(normalized: false, special: true)
            return AddedToken(content: entry.spec.content, id: entry.id, special: flags.special, normalized: flags.normalized,
                              leftStrip: flags.leftStrip, rightStrip: flags.rightStrip, singleWord: flags.singleWord)
        }
        let known = Set(resolved.map { Array($0.content.utf8) })
        let maxId = Int(max(Int32(modelSize - 1), resolved.map(\.id).max() ?? -1))
        resolved += TokenizerFolder.resolveAddedTokens(specs.filter { !known.contains(Array($0.spec.content.utf8)) },
                                                        modelId: { content in modelId(content) }, modelSize: maxId + 1)
        // Without a post-processor transformers puts none around the texts (and B gets token
        // type 1). (It ignores add_bos_token / add_eos_token when there is a tokenizer.json.)
        let template = try file.template()
            ?? SpecialTokenTemplate(single: [.init(.first)], pair: [.init(.first), .init(.second, typeId: 1)])
        return PipelineTokenizer(addedTokens: resolved, normalizer: normalizer, preTokenizer: preTokenizer, model: model,
                                 template: template,
                                 specialTokenIds: try specialIds(named: named, added: resolved, template: template, modelId: modelId, source: file.path),
                                 files: existingTokenizerFiles(in: directory),
                                 summary: "tokenizer.json (\(file.modelType)) from \(file.path)")
    }
}

/// Byte equality of two strings (Swift's `==` treats canonically equivalent strings as equal;
/// tokenizers compares bytes).
func sameText(_ a: String, _ b: String) -> Bool { a.utf8.elementsEqual(b.utf8) }

// MARK: - vocab.json and merges.txt

/// vocab.json: an object token -> id (GPT-2 / RoBERTa).
func readVocabularyJSON(_ url: URL) throws -> [(String, Int32)] {
    let entries = try JSONValue.readObject(url).entries ?? []
    guard !entries.isEmpty else { throw DataError("\(url.path): the vocabulary is empty") }
    var vocabulary: [(String, Int32)] = []
    vocabulary.reserveCapacity(entries.count)
    for (token, value) in entries {
        guard let id = value.int32, id >= 0 else {
            throw DataError("\(url.path): the id of \"\(token.prefix(40))\" must be a whole number from 0")
        }
        vocabulary.append((token, id))
    }
    return vocabulary
}

/// merges.txt: one merge "left right" per line, in rank order; a first line "#version..." is
/// skipped (as tokenizers reads it: every line starting with "#version").
func readMergesText(_ url: URL) throws -> [(String, String)] {
    let data: Data
    do {
        data = try Data(contentsOf: url)
    } catch {
        throw DataError("\(url.path): cannot read (\(describeFileError(error)))")
    }
    guard let text = String(data: data, encoding: .utf8) else { throw DataError("\(url.path): not valid UTF-8") }
    var merges: [(String, String)] = []
    var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
    if lines.last == "" { lines.removeLast() }  // the newline that ends the last line
    for (index, rawLine) in lines.enumerated() {
        let line = rawLine.hasSuffix("\r") ? rawLine.dropLast() : rawLine
        if line.hasPrefix("#version") { continue }
        let parts = line.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 2 else {
            throw DataError("\(url.path):\(index + 1): expected two tokens separated by one space")
        }
        merges.append((String(parts[0]), String(parts[1])))
    }
    return merges
}

// MARK: - tokenizer.json

/// A tokenizer.json (tokenizers' serialization), read part by part on demand.
struct TokenizerJSONFile {
    let path: String
    let object: JSONValue
    let model: JSONValue
    let modelType: String

    init(url: URL) throws {
        path = url.path
        object = try JSONValue.readObject(url)
        guard let model = object["model"], model.isObject else { throw DataError("\(path): no \"model\" object") }
        self.model = model
        if let type = model["type"]?.string {
            modelType = type
        } else if model["merges"] != nil {
            modelType = "BPE"  // older files without "type"
        } else if model["vocab"]?.array != nil {
            modelType = "Unigram"
        } else {
            modelType = "WordPiece"
        }
    }

    func error(_ message: String) -> DataError { DataError("\(path): \(message)") }

    func bool(_ object: JSONValue, _ key: String, default value: Bool) throws -> Bool {
        guard let entry = object[key], !entry.isNull else { return value }
        guard let flag = entry.bool else { throw error("\"\(key)\" must be true or false") }
        return flag
    }

    func optionalString(_ object: JSONValue, _ key: String) throws -> String? {
        guard let entry = object[key], !entry.isNull else { return nil }
        guard let string = entry.string else { throw error("\"\(key)\" must be a string") }
        return string
    }

    func type(_ object: JSONValue) -> String { object["type"]?.string ?? "(no type)" }

    /// The BPE model's vocabulary (in file order) and merges.
    func bytePairVocabularyAndMerges() throws -> ([(String, Int32)], [(String, String)]) {
        guard let vocab = model["vocab"]?.entries, !vocab.isEmpty else {
            throw error("the BPE model has no \"vocab\" object")
        }
        var vocabulary: [(String, Int32)] = []
        vocabulary.reserveCapacity(vocab.count)
        for (token, value) in vocab {
            guard let id = value.int32, id >= 0 else {
                throw error("vocabulary entry \"\(token.prefix(40))\" has no whole-number id from 0")
            }
            vocabulary.append((token, id))
        }
        guard let list = model["merges"]?.array else { throw error("the BPE model has no \"merges\" list") }
        var merges: [(String, String)] = []
        merges.reserveCapacity(list.count)
        var rank = 0
        for entry in list {
            if let line = entry.string {
                if line.hasPrefix("#version") { continue }
                let parts = line.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw error("merge \(rank + 1) (\(line.prefix(40).debugDescription)) is not two tokens separated by one space") }
                merges.append((String(parts[0]), String(parts[1])))
            } else if let pair = entry.array, pair.count == 2, let left = pair[0].string, let right = pair[1].string {
                merges.append((left, right))
            } else {
                throw error("merge \(rank + 1) must be a string \"a b\" or a pair of strings")
            }
            rank += 1
        }
        return (vocabulary, merges)
    }

    func bytePairModel(byteLevel: Bool) throws -> BytePairModel {
        let (vocabulary, merges) = try bytePairVocabularyAndMerges()
        if let dropout = model["dropout"], !dropout.isNull {
            guard let value = dropout.double else { throw error("the BPE \"dropout\" must be a number or null") }
            if value != 0 { throw error("BPE dropout \(value) makes the ids random; bert-dist reads models without dropout") }
        }
        return try BytePairModel(vocabulary: vocabulary, merges: merges, unknownToken: try optionalString(model, "unk_token"),
                                 fuseUnknown: try bool(model, "fuse_unk", default: false),
                                 byteFallback: try bool(model, "byte_fallback", default: false),
                                 ignoreMerges: try bool(model, "ignore_merges", default: false),
                                 continuingSubwordPrefix: try optionalString(model, "continuing_subword_prefix") ?? "",
                                 endOfWordSuffix: try optionalString(model, "end_of_word_suffix") ?? "",
                                 byteLevel: byteLevel, source: path)
    }

    /// The Unigram model's pieces and scores (the scores exactly as written: see JSONValue).
    func unigramPieces() throws -> [(piece: String, score: Double)] {
        guard let vocab = model["vocab"]?.array, !vocab.isEmpty else {
            throw error("the Unigram model has no \"vocab\" list")
        }
        var pieces: [(piece: String, score: Double)] = []
        pieces.reserveCapacity(vocab.count)
        for (index, entry) in vocab.enumerated() {
            guard let pair = entry.array, pair.count == 2, let piece = pair[0].string, let score = pair[1].double else {
                throw error("Unigram vocabulary entry \(index) must be [piece, score]")
            }
            pieces.append((piece, score))
        }
        return pieces
    }

    func unigramModel() throws -> UnigramModel {
        let pieces = try unigramPieces()
        guard let unknown = model["unk_id"], !unknown.isNull else {
            throw error("the Unigram model has no unk_id; bert-dist needs one for characters no piece covers")
        }
        guard let unknownId = unknown.int32 else { throw error("the Unigram \"unk_id\" must be a whole number") }
        return try UnigramModel(pieces: pieces, unknownId: Int(unknownId), byteFallback: try bool(model, "byte_fallback", default: false),
                                source: path)
    }

    /// The charsmap of the first Precompiled normalizer (alone or in a Sequence), as
    /// transformers' classes take it.
    func precompiledCharsmap() throws -> [UInt8]? {
        guard let normalizer = object["normalizer"], normalizer.isObject else { return nil }
        let candidates = type(normalizer) == "Sequence" ? (normalizer["normalizers"]?.array ?? []) : [normalizer]
        for step in candidates where type(step) == "Precompiled" {
            return try decodeCharsmap(step)
        }
        return nil
    }

    private func decodeCharsmap(_ step: JSONValue) throws -> [UInt8] {
        guard let encoded = step["precompiled_charsmap"]?.string else {
            throw error("the Precompiled normalizer has no \"precompiled_charsmap\" string")
        }
        guard let data = Data(base64Encoded: encoded) else { throw error("the precompiled_charsmap is not valid base64") }
        return [UInt8](data)
    }

    /// The added tokens with their ids and flags.
    func addedTokens() throws -> [(id: Int32, spec: AddedTokenSpec)] {
        guard let list = object["added_tokens"], !list.isNull else { return [] }
        guard let entries = list.array else { throw error("\"added_tokens\" must be a list") }
        return try entries.map { entry in
            guard entry.isObject, let id = entry["id"]?.int32, id >= 0 else {
                throw error("an added token has no whole-number \"id\"")
            }
            do {
                guard let spec = try AddedTokenSpec(entry, special: false) else { throw error("added token \(id) has no \"content\"") }
                return (id, spec)
            } catch let failure as DataError {
                throw error(failure.description)
            }
        }
    }

    // MARK: Normalizer, pre-tokenizer, post-processor

    func normalizerSteps() throws -> [NormalizerStep] {
        guard let normalizer = object["normalizer"], !normalizer.isNull else { return [] }
        guard normalizer.isObject else { throw error("\"normalizer\" must be an object") }
        return try normalizerSteps(normalizer, depth: 0)
    }

    private func normalizerSteps(_ normalizer: JSONValue, depth: Int) throws -> [NormalizerStep] {
        guard depth < 8 else { throw error("normalizer Sequences nested too deep") }
        let type = type(normalizer)
        switch type {
        case "Sequence":
            guard let list = normalizer["normalizers"]?.array else { throw error("a Sequence normalizer has no \"normalizers\" list") }
            return try list.flatMap { step -> [NormalizerStep] in
                guard step.isObject else { throw error("a normalizer of the Sequence is not an object") }
                return try normalizerSteps(step, depth: depth + 1)
            }
        case "Precompiled":
            return [.precompiled(try PrecompiledCharsmap(try decodeCharsmap(normalizer), source: path))]
        case "Replace":
            guard let pattern = normalizer["pattern"], pattern.isObject, let content = normalizer["content"]?.string else {
                throw error("a Replace normalizer needs a \"pattern\" object and a \"content\" string")
            }
            do {
                if let literal = pattern["String"]?.string {
                    return [.replace(try ReplacePattern(literal: literal), content: Array(content.utf8))]
                }
                if let regex = pattern["Regex"]?.string {
                    return [.replace(try ReplacePattern(regex: regex), content: Array(content.utf8))]
                }
            } catch let failure as DataError {
                throw error(failure.description)
            }
            throw error("a Replace normalizer's pattern must be {\"String\": ...} or {\"Regex\": ...}")
        case "NFC", "NFD", "NFKC", "NFKD":
            return [.unicodeForm(NormalizerStep.UnicodeForm(rawValue: type)!)]
        case "Lowercase":
            return [.lowercase]
        case "Strip":
            return [.strip(left: try bool(normalizer, "strip_left", default: true), right: try bool(normalizer, "strip_right", default: true))]
        case "Prepend":
            guard let content = normalizer["prepend"]?.string else { throw error("a Prepend normalizer needs a \"prepend\" string") }
            return [.prepend(Array(content.utf8))]
        default:
            throw error("normalizer \(type) is not supported; bert-dist reads Precompiled, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip, Prepend and Sequence (BertNormalizer with WordPiece)")
        }
    }

    func preTokenizerSteps() throws -> [PreTokenizerStep] {
        guard let preTokenizer = object["pre_tokenizer"], !preTokenizer.isNull else { return [] }
        guard preTokenizer.isObject else { throw error("\"pre_tokenizer\" must be an object") }
        return try preTokenizerSteps(preTokenizer, depth: 0)
    }

    private func preTokenizerSteps(_ preTokenizer: JSONValue, depth: Int) throws -> [PreTokenizerStep] {
        guard depth < 8 else { throw error("pre-tokenizer Sequences nested too deep") }
        let type = type(preTokenizer)
        switch type {
        case "Sequence":
            guard let list = preTokenizer["pretokenizers"]?.array else { throw error("a Sequence pre-tokenizer has no \"pretokenizers\" list") }
            return try list.flatMap { step -> [PreTokenizerStep] in
                guard step.isObject else { throw error("a pre-tokenizer of the Sequence is not an object") }
                return try preTokenizerSteps(step, depth: depth + 1)
            }
        case "WhitespaceSplit":
            return [.whitespaceSplit]
        case "Metaspace":
            guard let replacement = preTokenizer["replacement"]?.string, replacement.unicodeScalars.count == 1 else {
                throw error("a Metaspace pre-tokenizer needs a one-character \"replacement\"")
            }
            var scheme = PreTokenizerStep.PrependScheme.always
            if let name = try optionalString(preTokenizer, "prepend_scheme") {
                guard let parsed = PreTokenizerStep.PrependScheme(rawValue: name) else {
                    throw error("Metaspace prepend_scheme \"\(name)\" is not first, always or never")
                }
                scheme = parsed
            }
            if try bool(preTokenizer, "add_prefix_space", default: true) == false {
                guard scheme == .never || preTokenizer["prepend_scheme"] == nil else {
                    throw error("Metaspace add_prefix_space false does not match its prepend_scheme \"\(scheme.rawValue)\"")
                }
                scheme = .never
            }
            return [.metaspace(replacement: Array(replacement.utf8), scheme: scheme, split: try bool(preTokenizer, "split", default: true))]
        case "ByteLevel":
            return [.byteLevel(addPrefixSpace: try bool(preTokenizer, "add_prefix_space", default: true),
                               useRegex: try bool(preTokenizer, "use_regex", default: true))]
        default:
            throw error("pre-tokenizer \(type) is not supported; bert-dist reads ByteLevel, Metaspace, WhitespaceSplit and Sequence (BertPreTokenizer with WordPiece)")
        }
    }

    /// The post-processor's template; nil when the file has none.
    func template() throws -> SpecialTokenTemplate? {
        guard let processor = object["post_processor"], !processor.isNull else { return nil }
        guard processor.isObject else { throw error("\"post_processor\" must be an object") }
        let template = try template(processor, depth: 0) ?? SpecialTokenTemplate.none
        for (name, items) in [("single", template.single), ("pair", template.pair)] {
            let firsts = items.filter { $0.piece == .first }.count, seconds = items.filter { $0.piece == .second }.count
            guard firsts == 1, seconds == (name == "pair" ? 1 : 0) else {
                throw error("the post-processor's \(name) template must hold $A once\(name == "pair" ? " and $B once" : " and no $B")")
            }
            // Token types 0 then 1: what bert-dist's batches (one segment start) can carry.
            var seenOne = false
            for item in items {
                guard item.typeId == 0 || item.typeId == 1, !(seenOne && item.typeId == 0) else {
                    throw error("the post-processor's \(name) template has token types other than 0 then 1")
                }
                if item.typeId == 1 { seenOne = true }
            }
        }
        return template
    }

    private func template(_ processor: JSONValue, depth: Int) throws -> SpecialTokenTemplate? {
        guard depth < 8 else { throw error("post-processor Sequences nested too deep") }
        let type = type(processor)
        func tokenAndId(_ key: String) throws -> Int32 {
            guard let pair = processor[key]?.array, pair.count == 2, pair[0].string != nil, let id = pair[1].int32, id >= 0 else {
                throw error("\(type) needs \"\(key)\": [token, id]")
            }
            return id
        }
        switch type {
        case "ByteLevel":
            return nil
        case "RobertaProcessing":
            return .roberta(classifier: try tokenAndId("cls"), separator: try tokenAndId("sep"))
        case "BertProcessing":
            return .bert(classifier: try tokenAndId("cls"), separator: try tokenAndId("sep"))
        case "TemplateProcessing":
            guard let specials = processor["special_tokens"], specials.isObject else {
                throw error("TemplateProcessing has no \"special_tokens\" object")
            }
            func items(_ key: String) throws -> [SpecialTokenTemplate.Item] {
                guard let list = processor[key]?.array else { throw error("TemplateProcessing has no \"\(key)\" list") }
                return try list.map { entry in
                    guard let fields = entry.entries, fields.count == 1, fields[0].value.isObject, let name = fields[0].value["id"]?.string else {
                        throw error("a TemplateProcessing \(key) item must be {\"SpecialToken\": {...}} or {\"Sequence\": {...}}")
                    }
                    let body = fields[0].value
                    var typeId: Int32 = 0
                    if let typeValue = body["type_id"], !typeValue.isNull {
                        guard let value = typeValue.int32 else { throw error("a type_id must be a whole number") }
                        typeId = value
                    }
                    switch fields[0].key {
                    case "Sequence":
                        guard name == "A" || name == "B" else { throw error("a TemplateProcessing sequence must be A or B") }
                        return .init(name == "A" ? .first : .second, typeId: typeId)
                    case "SpecialToken":
                        guard let special = specials[name], let ids = special["ids"]?.array else {
                            throw error("TemplateProcessing special token \(name.debugDescription) is not in its special_tokens")
                        }
                        let values = try ids.map { value -> Int32 in
                            guard let id = value.int32, id >= 0 else {
                                throw error("TemplateProcessing special token \(name.debugDescription) has an id that is not a whole number")
                            }
                            return id
                        }
                        return .init(.special(values), typeId: typeId)
                    default:
                        throw error("a TemplateProcessing item must be SpecialToken or Sequence")
                    }
                }
            }
            return SpecialTokenTemplate(single: try items("single"), pair: try items("pair"))
        case "Sequence":
            guard let list = processor["processors"]?.array else { throw error("a Sequence post-processor has no \"processors\" list") }
            var found: SpecialTokenTemplate? = nil
            for step in list {
                guard step.isObject else { throw error("a post-processor of the Sequence is not an object") }
                if let template = try template(step, depth: depth + 1) {
                    guard found == nil else { throw error("a Sequence post-processor with two templates is not supported") }
                    found = template
                }
            }
            return found
        default:
            throw error("post-processor \(type) is not supported; bert-dist reads TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel and Sequence")
        }
    }
}
