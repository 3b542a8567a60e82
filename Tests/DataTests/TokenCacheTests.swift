import Foundation
import Testing

@testable import Data

@Suite struct TokenCacheTests {
    static let csv = #"""
        "3","Wall St. Bears Claw Back Into the Black (Reuters)","Reuters - Short-sellers, Wall Street's dwindling\band of ultra-cynics, are seeing green again."
        "4","Stocks fall; #36;5 million ""loss""","Café owners in Zürich say 東京 is far."
        "1","Short","text"
        "2","A much longer row to make lengths differ","One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty."

        """#

    @Test func buildThenOpenGivesTheTokenizerIds() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let dataFile = try folder.file("train.csv", Self.csv)
        let cacheDirectory = folder.url.appendingPathComponent("cache/nested")
        let tokenizer = try loadTokenizer("minilm-uncased")
        let cache = try TokenCache.locate(dataFile: dataFile, tokenizer: tokenizer, maxLength: 16, directory: cacheDirectory)
        #expect(cache.url.deletingLastPathComponent().path == cacheDirectory.path)
        #expect(cache.url.lastPathComponent.hasPrefix("train.csv.") && cache.url.pathExtension == "tokens")
        #expect(!cache.exists)
        let built = try cache.build(tokenizer: tokenizer)
        #expect(cache.exists && built.cacheFile == cache.url)
        // Nothing is written next to the data.
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.url.path).sorted() == ["cache", "train.csv"])
        let texts = try LabeledTexts.read(dataFile)
        for dataset in [built, try cache.open(vocabularySize: tokenizer.vocabulary.count)] {
            #expect(dataset.count == 4 && dataset.maxLength == 16)
            for index in 0..<texts.count {
                #expect(Array(dataset.tokens(at: index)) == tokenizer.encode(texts.text(at: index), maxLength: 16))
                #expect(dataset.length(at: index) == dataset.tokens(at: index).count)
                #expect(dataset.label(at: index) == texts.labels[index])
                #expect(dataset.secondSegmentStart(at: index) == dataset.length(at: index))
            }
            #expect(!dataset.hasPairs && dataset.labelSet.names == ["World", "Sports", "Business", "Sci/Tech"])
            #expect(dataset.tokenCount == (0..<4).reduce(0) { $0 + dataset.length(at: $1) })
            #expect(dataset.length(at: 3) == 16)  // truncated
        }
        // Ranks opening the same file concurrently all see the same data.
        let url = cache.url
        let counts = try (0..<4).map { _ in try TokenizedDataset.open(url).tokenCount }
        #expect(Set(counts) == [built.tokenCount])
    }

    @Test func keyChangesWithDataTokenizerMaxLengthColumnsAndLabels() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let dataFile = try folder.file("train.csv", Self.csv)
        let directory = folder.url.appendingPathComponent("cache")
        let uncased = try loadTokenizer("minilm-uncased")
        func locate(format: DataFormat? = nil, labels: LabelRule = .fromData, tokenizer: BertTokenizer? = nil,
                    maxLength: Int = 128, skipBadRows: Bool = false) throws -> URL {
            try TokenCache.locate(dataFile: dataFile, format: format, labels: labels, tokenizer: tokenizer ?? uncased,
                                  maxLength: maxLength, skipBadRows: skipBadRows, directory: directory).url
        }
        let base = try locate()
        #expect(try locate() == base)
        #expect(try locate(format: .preset(.agNews)) == base)  // what the extension gives
        #expect(try locate(maxLength: 64) != base)
        #expect(try locate(skipBadRows: true) != base)
        #expect(try locate(tokenizer: loadTokenizer("minilm-cased")) != base)
        #expect(try locate(format: .csv(DataColumns())) != base)
        let withPairs = try locate(format: .csv(DataColumns(textPair: "pair"))), header = try locate(format: .csv(DataColumns()))
        #expect(withPairs != header)
        let labels = try LabelSet(names: ["World", "Sports", "Business", "Sci/Tech"], origin: "test")
        let fixed = try locate(labels: .fixed(labels))
        #expect(fixed != base)
        #expect(try locate(labels: .fixed(LabelSet(names: ["Sports", "World", "Business", "Sci/Tech"], origin: "test"))) != fixed)
        _ = try folder.file("train.csv", Self.csv + "\"1\",\"one more\",\"row\"\n")
        #expect(try locate() != base)
    }

    @Test func defaultDirectoryFollowsXDGThenHome() throws {
        #expect(try TokenCache.defaultDirectory(environment: ["XDG_CACHE_HOME": "/x/cache", "HOME": "/home/u"]).path == "/x/cache/bert-dist")
        // A relative XDG_CACHE_HOME is ignored (XDG base directory rule), as is an empty one.
        #expect(try TokenCache.defaultDirectory(environment: ["XDG_CACHE_HOME": "rel", "HOME": "/home/u"]).path == "/home/u/.cache/bert-dist")
        #expect(try TokenCache.defaultDirectory(environment: ["XDG_CACHE_HOME": "", "HOME": "/home/u"]).path == "/home/u/.cache/bert-dist")
        #expect(dataErrorMessage { _ = try TokenCache.defaultDirectory(environment: [:]) }.contains("give one with --cache-dir"))
    }

    @Test func unwritableCacheDirectoryIsAClearError() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let dataFile = try folder.file("train.csv", Self.csv)
        let blocker = try folder.file("not-a-folder", "x")  // a file where the folder should be
        let tokenizer = try loadTokenizer("minilm-uncased")
        let cache = try TokenCache.locate(dataFile: dataFile, tokenizer: tokenizer, maxLength: 16,
                                          directory: blocker.appendingPathComponent("cache"))
        let message = dataErrorMessage { _ = try cache.build(tokenizer: tokenizer) }
        #expect(message.hasPrefix("\(blocker.path)/cache: cannot create the token cache folder") && message.hasSuffix("--cache-dir"), "\(message)")
    }

    @Test func damagedCachesAreRejectedWithTheirName() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let dataFile = try folder.file("train.csv", Self.csv)
        let tokenizer = try loadTokenizer("minilm-uncased")
        let cache = try TokenCache.locate(dataFile: dataFile, tokenizer: tokenizer, maxLength: 32, directory: folder.url)
        _ = try cache.build(tokenizer: tokenizer)
        let good = try [UInt8](Data(contentsOf: cache.url))

        var flipped = good
        flipped[flipped.count - 3] ^= 0x40
        try Data(flipped).write(to: cache.url)
        #expect(dataErrorMessage { _ = try cache.open() } == "\(cache.url.path): the token cache is damaged (checksum mismatch); delete it and it will be rebuilt")

        try Data(good.prefix(good.count - 4)).write(to: cache.url)
        #expect(dataErrorMessage { _ = try cache.open() }.contains("damaged (its size \(good.count - 4) does not match its header)"))

        try Data(String(repeating: "not a cache at all, just text. ", count: 4).utf8).write(to: cache.url)
        #expect(dataErrorMessage { _ = try cache.open() }.contains("damaged (not a bert-dist token cache)"))

        try Data([1, 2, 3]).write(to: cache.url)
        #expect(dataErrorMessage { _ = try cache.open() }.contains("shorter than its header"))

        // openOrBuild repairs it.
        let rebuilt = try cache.openOrBuild(tokenizer: tokenizer)
        #expect(rebuilt.count == 4)
        #expect(try [UInt8](Data(contentsOf: cache.url)) == good)

        // A cache copied over another key's name is refused too.
        let other = try TokenCache.locate(dataFile: dataFile, tokenizer: tokenizer, maxLength: 16, directory: folder.url)
        try FileManager.default.copyItem(at: cache.url, to: other.url)
        #expect(dataErrorMessage { _ = try other.open() }.contains("built for another data file, tokenizer, max length or labels"))
    }

    @Test func badRowsFailTheBuildUnlessSkipped() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let dataFile = try folder.file("train.csv", Self.csv + "\"7\",\"bad\",\"label\"\n")
        let tokenizer = try loadTokenizer("minilm-uncased")
        let strict = try TokenCache.locate(dataFile: dataFile, tokenizer: tokenizer, maxLength: 32, directory: folder.url)
        #expect(dataErrorMessage { _ = try strict.build(tokenizer: tokenizer) }.hasPrefix("\(dataFile.path):5: class index \"7\""))
        #expect(!strict.exists)
        let lenient = try TokenCache.locate(dataFile: dataFile, tokenizer: tokenizer, maxLength: 32, skipBadRows: true,
                                            directory: folder.url)
        #expect(try lenient.build(tokenizer: tokenizer).skippedRowCount == 1)
        #expect(try lenient.open().skippedRowCount == 1 && (try lenient.open().count) == 4)
    }

    @Test func paddedBatchFromDataset() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let dataFile = try folder.file("train.csv", Self.csv)
        let tokenizer = try loadTokenizer("minilm-uncased")
        let dataset = try TokenCache.locate(dataFile: dataFile, tokenizer: tokenizer, maxLength: 128, directory: folder.url)
            .build(tokenizer: tokenizer)
        let examples: [Int32] = [2, 0]
        let batch = PaddedBatch(dataset: dataset, examples: examples, paddingTokenId: tokenizer.paddingTokenId, maxLength: 128)
        let reference = PaddedBatch(sequences: examples.map { Array(dataset.tokens(at: Int($0))) },
                                    labels: examples.map { dataset.label(at: Int($0)) },
                                    paddingTokenId: tokenizer.paddingTokenId, maxLength: 128)
        #expect(batch == reference)
        #expect(batch.sequenceLength == dataset.length(at: 0))
        #expect(batch.realTokenCount == dataset.length(at: 0) + dataset.length(at: 2))
        #expect(Array(batch.inputIds[(batch.sequenceLength + 0)...].prefix(dataset.length(at: 0))) == Array(dataset.tokens(at: 0)))
    }

    @Test func pairsAndLabelNamesRoundTripThroughTheCache() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let rows = [
            #"{"a": "The cat sat on the mat.", "b": "A cat was sitting on a mat.", "label": "positif"}"#,
            #"{"a": "one two three four five six seven eight nine ten eleven twelve", "b": "", "label": "négatif"}"#,
            #"{"a": "", "b": "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu", "label": "日本"}"#,
            #"{"a": "Short.", "b": "Also short.", "label": "positif"}"#,
        ]
        let dataFile = try folder.file("pairs.jsonl", rows.joined(separator: "\n"))
        let format = DataFormat.jsonLines(DataColumns(text: "a", textPair: "b"))
        let tokenizer = try loadTokenizer("minilm-uncased")
        let cache = try TokenCache.locate(dataFile: dataFile, format: format, tokenizer: tokenizer, maxLength: 12,
                                          directory: folder.url.appendingPathComponent("cache"))
        let built = try cache.build(tokenizer: tokenizer)
        let texts = try LabeledTexts.read(dataFile, format: format)
        for dataset in [built, try cache.open(vocabularySize: tokenizer.vocabulary.count)] {
            #expect(dataset.hasPairs && dataset.count == 4)
            #expect(dataset.labelSet.names == ["négatif", "positif", "日本"] && Array(dataset.labels) == [1, 0, 2, 1])
            for index in 0..<4 {
                let (ids, types) = tokenizer.encodePair(texts.text(at: index), texts.pair(at: index)!, maxLength: 12)
                #expect(Array(dataset.tokens(at: index)) == ids)
                #expect(dataset.secondSegmentStart(at: index) == types.firstIndex(of: 1))
                var written = [Int32](repeating: 7, count: ids.count)
                written.withUnsafeMutableBufferPointer { dataset.tokenTypes(at: index, into: $0) }
                #expect(written == types)
            }
            #expect(dataset.length(at: 1) == 12 && dataset.length(at: 2) == 12)  // truncated, one side each
            let batch = PaddedBatch(dataset: dataset, examples: [2, 0] as [Int32], paddingTokenId: tokenizer.paddingTokenId, maxLength: 12)
            let reference = PaddedBatch(sequences: [2, 0].map { Array(dataset.tokens(at: $0)) }, labels: [2, 1],
                                        secondSegmentStarts: [2, 0].map { dataset.secondSegmentStart(at: $0) },
                                        paddingTokenId: tokenizer.paddingTokenId, maxLength: 12)
            #expect(batch == reference && batch.tokenTypeIds.contains(1))
        }
        // The same bytes travel to other ranks: deserialized, they are the same dataset.
        let copy = try TokenizedDataset.deserialize(built.serializedBytes, source: "rank 0", vocabularySize: tokenizer.vocabulary.count)
        #expect(copy.hasPairs && copy.labelSet == built.labelSet && copy.cacheFile == nil)
        #expect((0..<4).allSatisfy { Array(copy.tokens(at: $0)) == Array(built.tokens(at: $0)) && copy.secondSegmentStart(at: $0) == built.secondSegmentStart(at: $0) })
        var bent = Array(built.serializedBytes)
        bent[bent.count - 1] ^= 1
        #expect(dataErrorMessage { _ = try bent.withUnsafeBytes { try TokenizedDataset.deserialize($0, source: "rank 0") } }
                == "rank 0: the token data is damaged (checksum mismatch)")
        #expect(dataErrorMessage { _ = try [UInt8](repeating: 0, count: 4).withUnsafeBytes { try TokenizedDataset.deserialize($0, source: "rank 0") } }
                == "rank 0: the token data is damaged (4 bytes, shorter than its header)")
        // A cache of the same file read with a given label set is another file; a cache copied
        // over its name is refused.
        let fixed = try LabelSet(names: ["positif", "négatif", "日本"], origin: "--labels")
        let other = try TokenCache.locate(dataFile: dataFile, format: format, labels: .fixed(fixed), tokenizer: tokenizer,
                                          maxLength: 12, directory: folder.url.appendingPathComponent("cache"))
        #expect(other.url != cache.url && !other.exists)
        try FileManager.default.copyItem(at: cache.url, to: other.url)
        #expect(dataErrorMessage { _ = try other.open() }.contains("built for another data file, tokenizer, max length or labels"))
        try FileManager.default.removeItem(at: other.url)
        #expect(Array(try other.openOrBuild(tokenizer: tokenizer).labels) == [0, 1, 2, 0])
    }

    @Test func formatOneCachesAreRebuilt() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let dataFile = try folder.file("train.csv", Self.csv)
        let tokenizer = try loadTokenizer("minilm-uncased")
        let cache = try TokenCache.locate(dataFile: dataFile, tokenizer: tokenizer, maxLength: 16, directory: folder.url)
        var old = Array("BDTOKENS".utf8) + [1, 0, 0, 0]
        old += [UInt8](repeating: 0, count: 52)
        try Data(old).write(to: cache.url)
        #expect(dataErrorMessage { _ = try cache.open() } == "\(cache.url.path): token cache format 1 is not \(TokenizedDataset.formatVersion); delete it and it will be rebuilt")
        #expect(try cache.openOrBuild(tokenizer: tokenizer).count == 4)
    }
}

extension TokenCache {
    /// What a single process does: opens the cache when it is there and intact, else builds it.
    func openOrBuild(tokenizer: BertTokenizer) throws -> TokenizedDataset {
        if exists, let dataset = try? open(vocabularySize: tokenizer.vocabulary.count) {
            return dataset
        }
        return try build(tokenizer: tokenizer)
    }
}
