import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Where the token ids of a data file are cached, and how to build or open that cache.
///
/// The file sits next to the data file (or in `fallbackDirectory` when the data folder is not
/// writable) and is named `<data file name>.<key>.tokens`, the key being a hash of the data
/// file's content, the tokenizer fingerprint, the max length and the skip-bad-rows flag: any
/// change of these gives another file, never a stale one.
///
/// Distributed use: every rank calls `locate` (cheap: one hash of the data file); rank 0 calls
/// `build` unless `exists`; all ranks meet at a barrier; then all call `open`, which maps the
/// file (the pages are shared by the ranks of a node). Ranks on other machines need the file on
/// a shared file system or a build of their own.
public struct TokenCache: Sendable {
    public let dataFile: URL
    public let url: URL
    public let dataHash: UInt64
    public let tokenizerFingerprint: UInt64
    public let maxLength: Int
    public let skipBadRows: Bool

    public static func locate(dataFile: URL, tokenizer: BertTokenizer, maxLength: Int, skipBadRows: Bool = false,
                              fallbackDirectory: URL? = nil) throws -> TokenCache {
        try locate(dataFile: dataFile, tokenizer: tokenizer, maxLength: maxLength, skipBadRows: skipBadRows,
                   fallbackDirectory: fallbackDirectory, isWritable: { access($0.path, W_OK) == 0 })
    }

    /// `isWritable` is replaceable for tests (root may write anywhere).
    static func locate(dataFile: URL, tokenizer: BertTokenizer, maxLength: Int, skipBadRows: Bool,
                       fallbackDirectory: URL?, isWritable: (URL) -> Bool) throws -> TokenCache {
        _ = try LabeledTexts.format(of: dataFile)
        let dataHash = ContentHash64.hash(try readDataFile(dataFile))
        var key = ContentHash64(seed: 0x746F_6B65_6E63_6163)  // "tokencac"
        key.update(dataHash)
        key.update(tokenizer.fingerprint)
        key.update(UInt64(maxLength))
        key.update(skipBadRows ? 1 : 0)
        key.update(UInt64(TokenizedDataset.formatVersion))
        let name = "\(dataFile.lastPathComponent).\(hex64(key.finalize())).tokens"
        let dataDirectory = dataFile.deletingLastPathComponent()
        let primary = dataDirectory.appendingPathComponent(name)
        var chosen = primary
        if !FileManager.default.fileExists(atPath: primary.path), let fallbackDirectory {
            let fallback = fallbackDirectory.appendingPathComponent(name)
            if FileManager.default.fileExists(atPath: fallback.path) || !isWritable(dataDirectory) {
                chosen = fallback
            }
        }
        return TokenCache(dataFile: dataFile, url: chosen, dataHash: dataHash, tokenizerFingerprint: tokenizer.fingerprint,
                          maxLength: maxLength, skipBadRows: skipBadRows)
    }

    public var exists: Bool { FileManager.default.fileExists(atPath: url.path) }

    /// Reads and tokenizes the data file and writes the cache atomically. Returns the dataset
    /// (already in memory: the builder need not `open` it again).
    public func build(tokenizer: BertTokenizer, labelCount: Int = agNewsLabelNames.count) throws -> TokenizedDataset {
        precondition(tokenizer.fingerprint == tokenizerFingerprint, "build with the tokenizer the cache was located for")
        let bytes = try readDataFile(dataFile)
        guard ContentHash64.hash(bytes) == dataHash else {
            throw DataError("\(dataFile.path): the file changed while preparing its token cache; run again")
        }
        let texts = try LabeledTexts.parse(bytes, format: LabeledTexts.format(of: dataFile), source: dataFile,
                                           skipBadRows: skipBadRows, labelCount: labelCount)
        let dataset = TokenizedDataset.tokenize(texts, tokenizer: tokenizer, maxLength: maxLength, dataHash: dataHash)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        return try dataset.written(to: url)
    }

    /// Maps the cache and checks that it is intact and was built for this data file, tokenizer
    /// and max length.
    public func open(vocabularySize: Int? = nil, labelCount: Int = agNewsLabelNames.count) throws -> TokenizedDataset {
        guard exists else {
            throw DataError("\(url.path): the token cache of \(dataFile.path) does not exist (it is built by rank 0 before the others open it)")
        }
        let dataset = try TokenizedDataset.open(url, vocabularySize: vocabularySize, labelCount: labelCount)
        guard dataset.dataHash == dataHash, dataset.tokenizerFingerprint == tokenizerFingerprint,
              dataset.maxLength == maxLength else {
            throw DataError("\(url.path): this token cache was built for another data file, tokenizer or max length; delete it and it will be rebuilt")
        }
        return dataset
    }

    /// For a single process: opens the cache when it is there and intact, else builds it.
    public func openOrBuild(tokenizer: BertTokenizer, labelCount: Int = agNewsLabelNames.count) throws -> TokenizedDataset {
        if exists, let dataset = try? open(vocabularySize: tokenizer.vocabulary.count, labelCount: labelCount) {
            return dataset
        }
        return try build(tokenizer: tokenizer, labelCount: labelCount)
    }
}
