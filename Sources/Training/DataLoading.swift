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

    /// The token ids of one data file through its token cache: rank 0 builds the cache when it
    /// is missing (or damaged) while the other ranks wait, then they all map it.
    static func examples(_ url: URL, tokenizer: BertTokenizer, options: TrainingOptions, labelCount: Int,
                         communicator: any Communicator, log: (String) -> Void) throws -> TokenizedDataset {
        let cache = try collectively(communicator) {
            try TokenCache.locate(dataFile: url, tokenizer: tokenizer, maxLength: options.maxSequenceLength ?? defaultMaxSequenceLength,
                                  skipBadRows: options.skipBadRows,
                                  fallbackDirectory: options.outputDirectory?.appendingPathComponent(".token-cache"))
        }
        let built = try collectively(communicator) { () throws -> TokenizedDataset? in
            guard communicator.rank == 0 else { return nil }
            if cache.exists, let dataset = try? cache.open(vocabularySize: tokenizer.vocabulary.count, labelCount: labelCount) {
                return dataset
            }
            let started = Date()
            let dataset = try cache.build(tokenizer: tokenizer, labelCount: labelCount)
            log(String(format: "tokenised %@: %d examples, %d tokens in %.1f s (cached in %@)", url.lastPathComponent,
                       dataset.count, dataset.tokenCount, Date().timeIntervalSince(started), cache.url.path))
            return dataset
        }
        let dataset = try collectively(communicator) {
            try built ?? cache.open(vocabularySize: tokenizer.vocabulary.count, labelCount: labelCount)
        }
        guard dataset.count > 0 else { throw AgreedFailure(error: communicator.rank == 0 ? TrainingError.invalidInput("\(url.path): no examples") : nil) }
        if dataset.skippedRowCount > 0 { log("\(url.lastPathComponent): skipped \(dataset.skippedRowCount) bad row(s)") }
        return dataset
    }

    /// Everything a run needs; a collective (rank 0 builds token caches).
    static func prepare(_ options: TrainingOptions, communicator: any Communicator, log: (String) -> Void) throws -> PreparedData {
        let (tokenizer, files) = try collectively(communicator) { () throws -> (BertTokenizer, ModelFiles) in
            let tokenizer = try BertTokenizer(modelDirectory: options.modelDirectory)
            return (tokenizer, try modelFiles(modelDirectory: options.modelDirectory, tokenizer: tokenizer))
        }
        guard let trainFile = options.trainFile else { throw TrainingError.invalidInput("training needs a data file (--train)") }
        let labels = agNewsLabelNames
        let train = try examples(trainFile, tokenizer: tokenizer, options: options, labelCount: labels.count,
                                 communicator: communicator, log: log)
        let eval = try options.evalFile.map {
            try examples($0, tokenizer: tokenizer, options: options, labelCount: labels.count, communicator: communicator, log: log)
        }
        return PreparedData(train: train, eval: eval, labels: labels, trainFingerprint: String(format: "%016llx", train.dataHash),
                            modelFiles: files)
    }
}
