import Foundation

/// Where the token ids of a data file are cached, and how to build or open that cache.
///
/// The file is `<cache folder>/<data file name>.<key>.tokens`, never next to the data: the key
/// is a hash of the data file's content, the tokenizer fingerprint, the max length, the format
/// (columns or preset), the label rule and label format (the task, the separator), the
/// skip-bad-rows flag and the cache format version, so
/// any change of these gives another file, never a stale one. The cache folder is a value the
/// caller passes (`--cache-dir`; `defaultDirectory(environment:)` computes the usual default).
///
/// Distributed use: rank 0 calls `locate` (one hash of the data file) and `build` unless
/// `exists`; other ranks of the same host may `open` the same file after a barrier (the pages
/// are shared) or receive the dataset's bytes from rank 0.
public struct TokenCache: Sendable {
    public let dataFile: URL
    public let url: URL
    public let format: DataFormat
    public let labels: LabelRule
    public let labelFormat: LabelFormat
    public let dataHash: UInt64
    public let tokenizerFingerprint: UInt64
    public let maxLength: Int
    public let skipBadRows: Bool

    /// The cache of `dataFile` read as `format` (nil: by its extension) with `labels` and
    /// `labelFormat`, in `directory`. The tokenizer enters the key through its fingerprint, which
    /// covers whatever decides its ids (vocabulary, merges, Unigram scores, charsmap, pipeline,
    /// added tokens, template).
    public static func locate(dataFile: URL, format: DataFormat? = nil, labels: LabelRule = .fromData,
                              labelFormat: LabelFormat = .singleLabel, tokenizer: any TextTokenizer, maxLength: Int,
                              skipBadRows: Bool = false, directory: URL) throws -> TokenCache {
        let format = try format ?? DataFormat(of: dataFile)
        let dataHash = ContentHash64.hash(try readDataFile(dataFile))
        var key = ContentHash64(seed: 0x746F_6B65_6E63_6163)  // "tokencac"
        key.update(dataHash)
        key.update(tokenizer.fingerprint)
        key.update(UInt64(maxLength))
        key.update(skipBadRows ? 1 : 0)
        key.update(UInt64(TokenizedDataset.formatVersion))
        key.update(format.fingerprintText)
        key.update(labels.fingerprintText)
        key.update(labelFormat.fingerprintText)
        let name = "\(dataFile.lastPathComponent).\(hex64(key.finalize())).tokens"
        return TokenCache(dataFile: dataFile, url: directory.appendingPathComponent(name), format: format, labels: labels,
                          labelFormat: labelFormat, dataHash: dataHash, tokenizerFingerprint: tokenizer.fingerprint, maxLength: maxLength,
                          skipBadRows: skipBadRows)
    }

    /// The default cache folder: `$XDG_CACHE_HOME/bert-dist` when XDG_CACHE_HOME is an absolute
    /// path (the XDG base directory rule), else `$HOME/.cache/bert-dist`. `environment` is the
    /// process environment, passed in by the executable.
    public static func defaultDirectory(environment: [String: String]) throws -> URL {
        if let cacheHome = environment["XDG_CACHE_HOME"], cacheHome.hasPrefix("/") {
            return URL(fileURLWithPath: cacheHome, isDirectory: true).appendingPathComponent("bert-dist", isDirectory: true)
        }
        if let home = environment["HOME"], !home.isEmpty {
            return URL(fileURLWithPath: home, isDirectory: true).appendingPathComponent(".cache/bert-dist", isDirectory: true)
        }
        throw DataError("neither XDG_CACHE_HOME nor HOME is set, so there is no default token cache folder; give one with --cache-dir")
    }

    public var exists: Bool { FileManager.default.fileExists(atPath: url.path) }

    /// Reads and tokenizes the data file and writes the cache atomically. Returns the dataset
    /// (already in memory: the builder need not `open` it again). Nothing is written when the
    /// data has a bad row (without `skipBadRows`).
    public func build(tokenizer: any TextTokenizer) throws -> TokenizedDataset {
        precondition(tokenizer.fingerprint == tokenizerFingerprint, "build with the tokenizer the cache was located for")
        let bytes = try readDataFile(dataFile)
        guard ContentHash64.hash(bytes) == dataHash else {
            throw DataError("\(dataFile.path): the file changed while preparing its token cache; run again")
        }
        let texts = try LabeledTexts.parse(bytes, format: format, labels: labels, labelFormat: labelFormat, source: dataFile,
                                           skipBadRows: skipBadRows)
        let dataset = TokenizedDataset.tokenize(texts, tokenizer: tokenizer, maxLength: maxLength, dataHash: dataHash)
        let directory = url.deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw DataError("\(directory.path): cannot create the token cache folder (\(describeFileError(error))); give a writable one with --cache-dir")
        }
        return try dataset.written(to: url)
    }

    /// Maps the cache and checks that it is intact and was built for this data file, tokenizer,
    /// max length, label rule and task.
    public func open(vocabularySize: Int? = nil) throws -> TokenizedDataset {
        guard exists else {
            throw DataError("\(url.path): the token cache of \(dataFile.path) does not exist (it is built by rank 0 before the others open it)")
        }
        // The names' origin as reading the data file gives it: the fixed set's, a preset's, the file.
        let origin: String
        switch (labels, format) {
        case (.fixed(let set), _): origin = set.origin
        case (.fromData, .preset(let preset)): origin = preset.labelSet.origin
        case (.fromData, _): origin = dataFile.path
        }
        let dataset = try TokenizedDataset.open(url, vocabularySize: vocabularySize, labelOrigin: origin)
        var matchesLabels = labelFormat.problemType.map { $0 == dataset.problemType } ?? true
        if case .fixed(let set) = labels, dataset.problemType != .regression { matchesLabels = matchesLabels && dataset.labelSet == set }
        guard dataset.dataHash == dataHash, dataset.tokenizerFingerprint == tokenizerFingerprint,
              dataset.maxLength == maxLength, dataset.hasPairs == format.hasPairs, matchesLabels else {
            throw DataError("\(url.path): this token cache was built for another data file, tokenizer, max length or labels; delete it and it will be rebuilt")
        }
        return dataset
    }
}
