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
    /// there and intact, else built.
    static func examples(_ url: URL, labels: LabelRule, tokenizer: BertTokenizer, options: TrainingOptions,
                         log: (String) -> Void) throws -> TokenizedDataset {
        // Until --cache-dir is wired: a cache folder inside the output folder (never the data folder).
        let directory = (options.outputDirectory ?? URL(fileURLWithPath: FileManager.default.temporaryDirectory.path))
            .appendingPathComponent(".token-cache")
        let cache = try TokenCache.locate(dataFile: url, labels: labels, tokenizer: tokenizer,
                                          maxLength: options.maxSequenceLength ?? defaultMaxSequenceLength,
                                          skipBadRows: options.skipBadRows, directory: directory)
        var dataset: TokenizedDataset
        if cache.exists, let cached = try? cache.open(vocabularySize: tokenizer.vocabulary.count) {
            dataset = cached
        } else {
            let started = Date()
            dataset = try cache.build(tokenizer: tokenizer)
            log(String(format: "tokenised %@: %d examples, %d tokens in %.1f s (cached in %@)", url.lastPathComponent,
                       dataset.count, dataset.tokenCount, Date().timeIntervalSince(started), cache.url.path))
        }
        guard dataset.count > 0 else { throw TrainingError.invalidInput("\(url.path): no examples") }
        if dataset.skippedRowCount > 0 { log("\(url.lastPathComponent): skipped \(dataset.skippedRowCount) bad row(s)") }
        return dataset
    }

    /// Everything a run needs, a collective: rank 0 reads the tokenizer and the data files
    /// (through its token caches) and sends the examples to the other ranks; only rank 0 keeps
    /// the model files checkpoints carry (it writes them).
    static func prepare(_ options: TrainingOptions, communicator: any Communicator, log: (String) -> Void) throws -> PreparedData {
        guard let trainFile = options.trainFile else { throw TrainingError.invalidInput("training needs a data file (--train)") }
        let local = try collectively(communicator) { () throws -> (ModelFiles, TokenizedDataset, TokenizedDataset?)? in
            guard communicator.rank == 0 else { return nil }
            let tokenizer = try BertTokenizer(modelDirectory: options.modelDirectory)
            let files = try modelFiles(modelDirectory: options.modelDirectory, tokenizer: tokenizer)
            let train = try examples(trainFile, labels: .fromData, tokenizer: tokenizer, options: options, log: log)
            let eval = try options.evalFile.map { try examples($0, labels: .fixed(train.labelSet), tokenizer: tokenizer, options: options, log: log) }
            return (files, train, eval)
        }
        // The label set of the training data (rank 0 read it).
        let labels = try shareStrings(local?.1.labelSet.names ?? [], communicator: communicator)
        let train = try shareExamples(local?.1, communicator: communicator)
        let hasEval = try communicator.anyRank(local?.2 != nil)
        let eval = hasEval ? try shareExamples(local?.2, communicator: communicator) : nil
        let fingerprint = try shareStrings([local.map { String(format: "%016llx", $0.1.dataHash) } ?? ""], communicator: communicator)[0]
        return PreparedData(train: train, eval: eval, labels: labels, trainFingerprint: fingerprint,
                            modelFiles: local?.0 ?? ModelFiles(config: [:], vocabulary: [], tokenizerConfig: [:]))
    }
}
