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
        let tokenizer = try loadTokenizer("minilm-uncased")
        let cache = try TokenCache.locate(dataFile: dataFile, tokenizer: tokenizer, maxLength: 16)
        #expect(cache.url.deletingLastPathComponent().path == folder.url.path)
        #expect(cache.url.lastPathComponent.hasPrefix("train.csv.") && cache.url.pathExtension == "tokens")
        #expect(!cache.exists)
        let built = try cache.build(tokenizer: tokenizer)
        #expect(cache.exists && built.cacheFile == cache.url)
        let texts = try LabeledTexts.read(dataFile)
        for dataset in [built, try cache.open(vocabularySize: tokenizer.vocabulary.count)] {
            #expect(dataset.count == 4 && dataset.maxLength == 16)
            for index in 0..<texts.count {
                #expect(Array(dataset.tokens(at: index)) == tokenizer.encode(texts.text(at: index), maxLength: 16))
                #expect(dataset.length(at: index) == dataset.tokens(at: index).count)
                #expect(dataset.label(at: index) == texts.labels[index])
            }
            #expect(dataset.tokenCount == (0..<4).reduce(0) { $0 + dataset.length(at: $1) })
            #expect(dataset.length(at: 3) == 16)  // truncated
        }
        // Ranks opening the same file concurrently all see the same data.
        let url = cache.url
        let counts = try (0..<4).map { _ in try TokenizedDataset.open(url).tokenCount }
        #expect(Set(counts) == [built.tokenCount])
    }

    @Test func keyChangesWithDataTokenizerAndMaxLength() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let dataFile = try folder.file("train.csv", Self.csv)
        let uncased = try loadTokenizer("minilm-uncased")
        let base = try TokenCache.locate(dataFile: dataFile, tokenizer: uncased, maxLength: 128)
        #expect(try TokenCache.locate(dataFile: dataFile, tokenizer: uncased, maxLength: 128).url == base.url)
        #expect(try TokenCache.locate(dataFile: dataFile, tokenizer: uncased, maxLength: 64).url != base.url)
        #expect(try TokenCache.locate(dataFile: dataFile, tokenizer: uncased, maxLength: 128, skipBadRows: true).url != base.url)
        #expect(try TokenCache.locate(dataFile: dataFile, tokenizer: loadTokenizer("minilm-cased"), maxLength: 128).url != base.url)
        _ = try folder.file("train.csv", Self.csv + "\"1\",\"one more\",\"row\"\n")
        #expect(try TokenCache.locate(dataFile: dataFile, tokenizer: uncased, maxLength: 128).url != base.url)
    }

    @Test func fallsBackToTheCacheDirectoryWhenTheDataFolderIsReadOnly() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let dataFile = try folder.file("train.csv", Self.csv)
        let cacheDirectory = folder.url.appendingPathComponent("cache")
        let tokenizer = try loadTokenizer("minilm-uncased")
        let cache = try TokenCache.locate(dataFile: dataFile, tokenizer: tokenizer, maxLength: 32, skipBadRows: false,
                                          fallbackDirectory: cacheDirectory, isWritable: { _ in false })
        #expect(cache.url.deletingLastPathComponent().path == cacheDirectory.path)
        _ = try cache.build(tokenizer: tokenizer)
        // Found there afterwards, even by a caller that could write next to the data.
        let again = try TokenCache.locate(dataFile: dataFile, tokenizer: tokenizer, maxLength: 32,
                                          fallbackDirectory: cacheDirectory)
        #expect(again.url == cache.url && again.exists)
    }

    @Test func damagedCachesAreRejectedWithTheirName() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let dataFile = try folder.file("train.csv", Self.csv)
        let tokenizer = try loadTokenizer("minilm-uncased")
        let cache = try TokenCache.locate(dataFile: dataFile, tokenizer: tokenizer, maxLength: 32)
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
        let other = try TokenCache.locate(dataFile: dataFile, tokenizer: tokenizer, maxLength: 16)
        try FileManager.default.copyItem(at: cache.url, to: other.url)
        #expect(dataErrorMessage { _ = try other.open() }.contains("built for another data file, tokenizer or max length"))
    }

    @Test func badRowsFailTheBuildUnlessSkipped() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let dataFile = try folder.file("train.csv", Self.csv + "\"7\",\"bad\",\"label\"\n")
        let tokenizer = try loadTokenizer("minilm-uncased")
        let strict = try TokenCache.locate(dataFile: dataFile, tokenizer: tokenizer, maxLength: 32)
        #expect(dataErrorMessage { _ = try strict.build(tokenizer: tokenizer) }.hasPrefix("\(dataFile.path):5: class index \"7\""))
        #expect(!strict.exists)
        let lenient = try TokenCache.locate(dataFile: dataFile, tokenizer: tokenizer, maxLength: 32, skipBadRows: true)
        #expect(try lenient.build(tokenizer: tokenizer).skippedRowCount == 1)
        #expect(try lenient.open().skippedRowCount == 1 && (try lenient.open().count) == 4)
    }

    @Test func paddedBatchFromDataset() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let dataFile = try folder.file("train.csv", Self.csv)
        let tokenizer = try loadTokenizer("minilm-uncased")
        let dataset = try TokenCache.locate(dataFile: dataFile, tokenizer: tokenizer, maxLength: 128).build(tokenizer: tokenizer)
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
}
