import Data
import Foundation

/// Files to tokenised examples for a run (rank 0): the model folder's tokenizer files, a data
/// file through its token cache (RunSetup calls these).
enum DataLoading {
    /// The config and the tokenizer files that every checkpoint carries along: the files the
    /// tokenizer was read from, as they are, except tokenizer_config.json without its
    /// `tokenizer_file` (a path on the machine that saved it). A WordPiece tokenizer's
    /// checkpoint always has vocab.txt and what BertTokenizer needs in tokenizer_config.json
    /// (its class and options), also when the folder had only tokenizer.json (transformers 5).
    static func modelFiles(modelDirectory: URL, tokenizer: any TextTokenizer) throws -> ModelFiles {
        guard let config = try JSONValue.readFieldsIfPresent(modelDirectory.appendingPathComponent("config.json")) else {
            throw TrainingError.invalidInput("\(modelDirectory.appendingPathComponent("config.json").path): file not found")
        }
        var files: [String: [UInt8]] = [:]
        for url in tokenizer.tokenizerFiles {
            guard let bytes = FileManager.default.contents(atPath: url.path) else {
                throw TrainingError.invalidInput("\(url.path): cannot read the tokenizer file")
            }
            files[url.lastPathComponent] = Array(bytes)
        }
        var tokenizerConfig = try JSONValue.readFieldsIfPresent(modelDirectory.appendingPathComponent("tokenizer_config.json"))
        if let wordPiece = tokenizer as? BertTokenizer {
            var object = tokenizerConfig ?? [:]
            object["tokenizer_class"] = object["tokenizer_class"] ?? .string("BertTokenizer")
            object["do_lower_case"] = object["do_lower_case"] ?? .bool(wordPiece.options.lowercase)
            object["tokenize_chinese_chars"] = object["tokenize_chinese_chars"] ?? .bool(wordPiece.options.handleChineseChars)
            tokenizerConfig = object
            if files["vocab.txt"] == nil { files["vocab.txt"] = Array((wordPiece.vocabulary.tokens.joined(separator: "\n") + "\n").utf8) }
        }
        if var tokenizerConfig {
            tokenizerConfig.removeValue(forKey: "tokenizer_file")
            files["tokenizer_config.json"] = JSONValue(object: tokenizerConfig).serialized()
        }
        return ModelFiles(config: config, tokenizerFiles: files)
    }

    /// The token ids of one data file through its token cache (rank 0 only): opened when it is
    /// there and intact, else built. `columns` nil: the format by the file's extension alone.
    static func examples(_ url: URL, columns: DataColumns?, labels: LabelRule, labelFormat: LabelFormat = .singleLabel,
                         tokenizer: any TextTokenizer, maxLength: Int, skipBadRows: Bool, cacheDirectory: URL?,
                         log: (String) -> Void) throws -> TokenizedDataset {
        let format = try DataFormat(of: url, columns: columns)
        try tokenizer.checkMaxLength(maxLength, pairs: format.hasPairs)
        guard let cacheDirectory else { throw TrainingError.invalidInput("no folder for the token cache; give one with --cache-dir") }
        let cache = try TokenCache.locate(dataFile: url, format: format, labels: labels, labelFormat: labelFormat, tokenizer: tokenizer,
                                          maxLength: maxLength, skipBadRows: skipBadRows, directory: cacheDirectory)
        var dataset: TokenizedDataset
        if cache.exists, let cached = try? cache.open(vocabularySize: tokenizer.vocabularySize) {
            dataset = cached
        } else {
            let started = Date()
            dataset = try cache.build(tokenizer: tokenizer)
            log(String(format: "tokenised %@: %d examples%@, %d tokens in %.1f s (cached in %@)", url.lastPathComponent, dataset.count,
                       dataset.hasPairs ? " (text pairs)" : "", dataset.tokenCount, Date().timeIntervalSince(started), cache.url.path))
        }
        guard dataset.count > 0 else { throw TrainingError.invalidInput("\(url.path): no examples") }
        if dataset.skippedRowCount > 0 { log("\(url.lastPathComponent): skipped \(dataset.skippedRowCount) bad row(s)") }
        return dataset
    }

    /// Identifies what a run trains on (checkpoints record it; a resume on anything else is
    /// refused): the data file's content hash, and a hash of its label names, pair layout and
    /// task (single-label adds nothing, so single-label fingerprints are those of older runs).
    static func fingerprint(of dataset: TokenizedDataset) -> String {
        var labels = ContentHash64(seed: 0x6C61_6265_6C73)  // "labels"
        for name in dataset.labelSet.names { labels.update(UInt64(name.utf8.count)); labels.update(name) }
        labels.update(dataset.hasPairs ? 1 : 0)
        if dataset.problemType != .singleLabelClassification { labels.update(dataset.problemType.rawValue) }
        return String(format: "%016llx-%016llx", dataset.dataHash, labels.finalize())
    }
}
