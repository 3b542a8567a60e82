import Data
import Distributed
import Foundation

/// Files to tokenised examples for a run: the model folder's tokenizer, the train/eval files.
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
    static func examples(_ url: URL, columns: DataColumns?, labels: LabelRule, tokenizer: BertTokenizer, maxLength: Int,
                         skipBadRows: Bool, cacheDirectory: URL?, log: (String) -> Void) throws -> TokenizedDataset {
        let format = try DataFormat(of: url, columns: columns)
        guard !format.hasPairs || maxLength >= 3 else {
            throw TrainingError.invalidInput("text pairs need a max sequence length of at least 3 ([CLS] A [SEP] B [SEP] without A and B), this run has \(maxLength)")
        }
        guard let cacheDirectory else { throw TrainingError.invalidInput("no folder for the token cache; give one with --cache-dir") }
        let cache = try TokenCache.locate(dataFile: url, format: format, labels: labels, tokenizer: tokenizer, maxLength: maxLength,
                                          skipBadRows: skipBadRows, directory: cacheDirectory)
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

    /// Everything a run needs, a collective: rank 0 reads the tokenizer and the data files
    /// (through its token caches) and sends the examples, with their label set, to the other
    /// ranks; only rank 0 keeps the model files checkpoints carry (it writes them). The labels
    /// are --labels, or the training data's; the eval file must use the same ones.
    static func prepare(_ options: TrainingOptions, communicator: any Communicator, log: (String) -> Void) throws -> PreparedData {
        guard let trainFile = options.trainFile else { throw TrainingError.invalidInput("training needs a data file (--train)") }
        let maxLength = options.maxSequenceLength ?? defaultMaxSequenceLength
        let local = try collectively(communicator) { () throws -> (ModelFiles, TokenizedDataset, TokenizedDataset?)? in
            guard communicator.rank == 0 else { return nil }
            let tokenizer = try BertTokenizer(modelDirectory: options.modelDirectory)
            let files = try modelFiles(modelDirectory: options.modelDirectory, tokenizer: tokenizer)
            func read(_ url: URL, _ labels: LabelRule) throws -> TokenizedDataset {
                try examples(url, columns: options.columns, labels: labels, tokenizer: tokenizer, maxLength: maxLength,
                             skipBadRows: options.skipBadRows, cacheDirectory: options.cacheDirectory, log: log)
            }
            let train = try read(trainFile, options.labels.map { .fixed($0) } ?? .fromData)
            log("\(train.labelSet.count) labels from \(train.labelSet.origin): \(train.labelSet)")
            let eval = try options.evalFile.map { try read($0, .fixed(train.labelSet)) }
            return (files, train, eval)
        }
        let train = try shareExamples(local?.1, communicator: communicator)
        let hasEval = try communicator.anyRank(local?.2 != nil)
        let eval = hasEval ? try shareExamples(local?.2, communicator: communicator) : nil
        return PreparedData(train: train, eval: eval, labels: train.labelSet, trainFingerprint: fingerprint(of: train),
                            modelFiles: local?.0 ?? ModelFiles(config: [:], vocabulary: [], tokenizerConfig: [:]))
    }

    /// Identifies what a run trains on (checkpoints record it; a resume on anything else is
    /// refused): the data file's content hash, and a hash of its label names and pair layout.
    static func fingerprint(of dataset: TokenizedDataset) -> String {
        var labels = ContentHash64(seed: 0x6C61_6265_6C73)  // "labels"
        for name in dataset.labelSet.names { labels.update(UInt64(name.utf8.count)); labels.update(name) }
        labels.update(dataset.hasPairs ? 1 : 0)
        return String(format: "%016llx-%016llx", dataset.dataHash, labels.finalize())
    }
}
