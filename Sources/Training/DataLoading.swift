import Data
import Foundation

/// Files to tokenised examples for a run (rank 0): the model folder's tokenizer files, a data
/// file through its token cache (RunSetup calls these).
enum DataLoading {
    /// The tokenizer files and config that every checkpoint carries along.
    static func modelFiles(modelDirectory: URL, tokenizer: BertTokenizer) throws -> ModelFiles {
        guard let config = try JSONValue.readObject(modelDirectory.appendingPathComponent("config.json")) else {
            throw TrainingError.invalidInput("\(modelDirectory.appendingPathComponent("config.json").path): file not found")
        }
        var tokenizerConfig = try JSONValue.readObject(modelDirectory.appendingPathComponent("tokenizer_config.json")) ?? [:]
        // What BertTokenizer needs when the source folder had only tokenizer.json (transformers 5).
        tokenizerConfig["tokenizer_class"] = tokenizerConfig["tokenizer_class"] ?? .string("BertTokenizer")
        tokenizerConfig["do_lower_case"] = tokenizerConfig["do_lower_case"] ?? .bool(tokenizer.options.lowercase)
        tokenizerConfig["tokenize_chinese_chars"] = tokenizerConfig["tokenize_chinese_chars"] ?? .bool(tokenizer.options.handleChineseChars)
        tokenizerConfig.removeValue(forKey: "tokenizer_file")
        return ModelFiles(config: config, vocabulary: tokenizer.vocabulary.tokens, tokenizerConfig: tokenizerConfig)
    }

    /// The token ids of one data file through its token cache (rank 0 only): opened when it is
    /// there and intact, else built. `columns` nil: the format by the file's extension alone.
    static func examples(_ url: URL, columns: DataColumns?, labels: LabelRule, labelFormat: LabelFormat = .singleLabel,
                         tokenizer: BertTokenizer, maxLength: Int, skipBadRows: Bool, cacheDirectory: URL?,
                         log: (String) -> Void) throws -> TokenizedDataset {
        let format = try DataFormat(of: url, columns: columns)
        guard !format.hasPairs || maxLength >= 3 else {
            throw TrainingError.invalidInput("text pairs need a max sequence length of at least 3 ([CLS] A [SEP] B [SEP] without A and B), this run has \(maxLength)")
        }
        guard let cacheDirectory else { throw TrainingError.invalidInput("no folder for the token cache; give one with --cache-dir") }
        let cache = try TokenCache.locate(dataFile: url, format: format, labels: labels, labelFormat: labelFormat, tokenizer: tokenizer,
                                          maxLength: maxLength, skipBadRows: skipBadRows, directory: cacheDirectory)
        var dataset: TokenizedDataset
        if cache.exists, let cached = try? cache.open(vocabularySize: tokenizer.vocabulary.count) {
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
