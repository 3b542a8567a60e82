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

    /// Reads and tokenises one data file.
    static func examples(_ url: URL, tokenizer: BertTokenizer, maxSequenceLength: Int, skipBadRows: Bool,
                         labelCount: Int, log: (String) -> Void) throws -> InMemoryExamples {
        let texts = try LabeledTexts.read(url, skipBadRows: skipBadRows, labelCount: labelCount)
        guard texts.count > 0 else { throw TrainingError.invalidInput("\(url.path): no examples") }
        if texts.skippedRowCount > 0 {
            log("\(url.lastPathComponent): skipped \(texts.skippedRowCount) bad row(s), e.g. \(texts.skippedRowErrors.first ?? "")")
        }
        var sequences: [[Int32]] = []
        sequences.reserveCapacity(texts.count)
        for i in 0..<texts.count {
            var ids: [Int32] = []
            ids.reserveCapacity(maxSequenceLength)
            texts.withTextBytes(at: i) { tokenizer.encode(utf8: $0, maxLength: maxSequenceLength, appendingTo: &ids) }
            sequences.append(ids)
        }
        return InMemoryExamples(sequences: sequences, labels: texts.labels.map { Int($0) })
    }

    /// Everything a run needs, read identically on every rank.
    static func prepare(_ options: TrainingOptions, log: (String) -> Void) throws -> PreparedData {
        let tokenizer = try BertTokenizer(modelDirectory: options.modelDirectory)
        let labels = agNewsLabelNames
        let train = try examples(options.trainFile, tokenizer: tokenizer, maxSequenceLength: options.maxSequenceLength,
                                 skipBadRows: options.skipBadRows, labelCount: labels.count, log: log)
        let eval = try options.evalFile.map {
            try examples($0, tokenizer: tokenizer, maxSequenceLength: options.maxSequenceLength,
                         skipBadRows: options.skipBadRows, labelCount: labels.count, log: log)
        }
        let fingerprint = String(format: "%016llx", try ContentHash64.hash(Array(Data(contentsOf: options.trainFile))))
        return PreparedData(train: train, eval: eval, labels: labels, trainFingerprint: fingerprint,
                            modelFiles: try modelFiles(modelDirectory: options.modelDirectory, tokenizer: tokenizer))
    }
}
