import Foundation
import Storage

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Every example of a data file as token ids ([CLS] ... [SEP], truncated to `maxLength`), flat:
/// one Int32 array of all tokens, per-example offsets, labels.
///
/// In memory and on disk the bytes have the same layout (the token cache file), so `open` maps
/// the file and reads it in place:
///
///     offset  size              field
///     0       8                 magic "BDTOKENS"
///     8       4                 format version (1), little-endian like everything else
///     12      4                 max length
///     16      8                 example count N
///     24      8                 token count T
///     32      8                 rows skipped as malformed
///     40      8                 content hash of the data file (ContentHash64)
///     48      8                 tokenizer fingerprint
///     56      8                 ContentHash64 of every byte after the header (damage check)
///     64      8 (N + 1)         Int64 offsets: example i is tokens[offsets[i] ..< offsets[i + 1]]
///     ..      4 N (+4 if N odd) Int32 labels (padded to 8 bytes)
///     ..      4 T               Int32 token ids
///
/// Immutable after creation; the memory it reads is never written, so it is safe to share
/// between threads (hence @unchecked Sendable).
public final class TokenizedDataset: @unchecked Sendable {
    public let count: Int
    public let tokenCount: Int
    public let maxLength: Int
    public let skippedRowCount: Int
    public let dataHash: UInt64
    public let tokenizerFingerprint: UInt64
    /// The cache file this was read from or written to, if any.
    public private(set) var cacheFile: URL?

    private let storage: UnsafeMutableRawPointer
    private let storageByteCount: Int
    private let isMapped: Bool
    private let offsets: UnsafePointer<Int64>      // (N + 1)
    private let labelValues: UnsafePointer<Int32>  // (N)
    private let tokenValues: UnsafePointer<Int32>  // (T)

    static let magic: [UInt8] = Array("BDTOKENS".utf8)
    static let formatVersion: UInt32 = 1
    static let headerByteCount = 64

    static func byteCount(exampleCount: Int, tokenCount: Int) -> Int {
        headerByteCount + 8 * (exampleCount + 1) + 4 * (exampleCount + exampleCount % 2) + 4 * tokenCount
    }

    private init(storage: UnsafeMutableRawPointer, byteCount: Int, isMapped: Bool, cacheFile: URL?) {
        self.storage = storage
        self.storageByteCount = byteCount
        self.isMapped = isMapped
        self.cacheFile = cacheFile
        let header = UnsafeRawPointer(storage)
        maxLength = Int(header.loadUnaligned(fromByteOffset: 12, as: UInt32.self).littleEndian)
        count = Int(header.loadUnaligned(fromByteOffset: 16, as: UInt64.self).littleEndian)
        tokenCount = Int(header.loadUnaligned(fromByteOffset: 24, as: UInt64.self).littleEndian)
        skippedRowCount = Int(header.loadUnaligned(fromByteOffset: 32, as: UInt64.self).littleEndian)
        dataHash = header.loadUnaligned(fromByteOffset: 40, as: UInt64.self).littleEndian
        tokenizerFingerprint = header.loadUnaligned(fromByteOffset: 48, as: UInt64.self).littleEndian
        let offsetsStart = TokenizedDataset.headerByteCount
        let labelsStart = offsetsStart + 8 * (count + 1)
        let tokensStart = labelsStart + 4 * (count + count % 2)
        offsets = UnsafePointer((header + offsetsStart).assumingMemoryBound(to: Int64.self))
        labelValues = UnsafePointer((header + labelsStart).assumingMemoryBound(to: Int32.self))
        tokenValues = UnsafePointer((header + tokensStart).assumingMemoryBound(to: Int32.self))
    }

    deinit {
        if isMapped {
            munmap(storage, storageByteCount)
        } else {
            storage.deallocate()
        }
    }

    /// Token ids of example `index`: [CLS] ... [SEP], at most `maxLength`.
    @inline(__always)
    public func tokens(at index: Int) -> UnsafeBufferPointer<Int32> {
        let start = Int(offsets[index])
        return UnsafeBufferPointer(start: tokenValues + start, count: Int(offsets[index + 1]) - start)
    }

    @inline(__always)
    public func length(at index: Int) -> Int {
        Int(offsets[index + 1] - offsets[index])
    }

    @inline(__always)
    public func label(at index: Int) -> Int32 {
        labelValues[index]
    }

    /// Lengths of all examples (for length grouping).                                  (N)
    public var lengths: [Int32] {
        (0..<count).map { Int32(length(at: $0)) }
    }

    public var labels: UnsafeBufferPointer<Int32> {
        UnsafeBufferPointer(start: labelValues, count: count)
    }

    /// The raw bytes in the cache-file layout.
    var bytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage, count: storageByteCount)
    }

    // MARK: - Building

    /// Tokenizes every text of `texts` (in memory; see `TokenCache.build` for the cached path).
    public static func tokenize(_ texts: LabeledTexts, tokenizer: BertTokenizer, maxLength: Int,
                                dataHash: UInt64 = 0) -> TokenizedDataset {
        precondition(maxLength >= 2)
        var tokens: [Int32] = []
        tokens.reserveCapacity(texts.textBytes.count / 4 + 2 * texts.count)
        var offsets: [Int64] = [0]
        offsets.reserveCapacity(texts.count + 1)
        texts.textBytes.withUnsafeBufferPointer { all in
            for index in 0..<texts.count {
                let text = UnsafeBufferPointer(rebasing: all[texts.textOffsets[index]..<texts.textOffsets[index + 1]])
                tokenizer.encode(utf8: text, maxLength: maxLength, appendingTo: &tokens)
                offsets.append(Int64(tokens.count))
            }
        }
        let exampleCount = texts.count
        let total = byteCount(exampleCount: exampleCount, tokenCount: tokens.count)
        let storage = UnsafeMutableRawPointer.allocate(byteCount: total, alignment: 16)
        storage.initializeMemory(as: UInt8.self, repeating: 0, count: total)
        func store<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            storage.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
        }
        for (index, byte) in magic.enumerated() { store(byte, at: index) }
        store(formatVersion, at: 8)
        store(UInt32(maxLength), at: 12)
        store(UInt64(exampleCount), at: 16)
        store(UInt64(tokens.count), at: 24)
        store(UInt64(texts.skippedRowCount), at: 32)
        store(dataHash, at: 40)
        store(tokenizer.fingerprint, at: 48)
        let offsetsStart = headerByteCount
        let labelsStart = offsetsStart + 8 * (exampleCount + 1)
        let tokensStart = labelsStart + 4 * (exampleCount + exampleCount % 2)
        offsets.withUnsafeBytes { (storage + offsetsStart).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        texts.labels.withUnsafeBytes { (storage + labelsStart).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        tokens.withUnsafeBytes {
            if $0.count > 0 { (storage + tokensStart).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
        let payload = UnsafeRawBufferPointer(start: storage + headerByteCount, count: total - headerByteCount)
        store(ContentHash64.hash(payload), at: 56)
        return TokenizedDataset(storage: storage, byteCount: total, isMapped: false, cacheFile: nil)
    }

    /// Writes the dataset to `url` atomically (temp file, fsync, rename) and returns it, now
    /// tagged with that file.
    func written(to url: URL) throws -> TokenizedDataset {
        var writer: AtomicFileWriter? = nil
        do {
            writer = try AtomicFileWriter(destination: url)
            try writer!.write(bytes)
            _ = try writer!.commit()
        } catch {
            writer?.abandon()
            throw DataError("\(url.path): cannot write the token cache (\(error)); give a writable cache folder")
        }
        cacheFile = url  // before the dataset is shared with anyone
        return self
    }

    // MARK: - Opening

    /// Maps a token cache file and checks it: header, sizes, damage hash, offsets, labels and
    /// (when `vocabularySize` is given) token ids. Every failure names the file.
    public static func open(_ url: URL, vocabularySize: Int? = nil, labelCount: Int = agNewsLabelNames.count) throws -> TokenizedDataset {
        let path = url.path
        let descriptor = Glibc.open(path, O_RDONLY)
        guard descriptor >= 0 else {
            throw DataError("\(path): cannot open the token cache (\(String(cString: strerror(errno))))")
        }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            throw DataError("\(path): cannot read the token cache (\(String(cString: strerror(errno))))")
        }
        let size = Int(status.st_size)
        let damaged = { (reason: String) in
            DataError("\(path): the token cache is damaged (\(reason)); delete it and it will be rebuilt")
        }
        guard size >= headerByteCount else { throw damaged("\(size) bytes, shorter than its header") }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0), mapped != MAP_FAILED else {
            throw DataError("\(path): cannot map the token cache (\(String(cString: strerror(errno))))")
        }
        let raw = UnsafeRawBufferPointer(start: mapped, count: size)
        func fail(_ error: DataError) -> DataError {
            munmap(mapped, size)
            return error
        }
        guard Array(raw[0..<8]) == magic else { throw fail(damaged("not a bert-dist token cache")) }
        let version = raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian
        guard version == formatVersion else {
            throw fail(DataError("\(path): token cache format \(version) is not \(formatVersion); delete it and it will be rebuilt"))
        }
        let exampleCount = raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self).littleEndian
        let tokenCount = raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self).littleEndian
        guard exampleCount < UInt64(Int32.max), tokenCount < UInt64(Int.max / 8),
              byteCount(exampleCount: Int(exampleCount), tokenCount: Int(tokenCount)) == size else {
            throw fail(damaged("its size \(size) does not match its header"))
        }
        let expectedHash = raw.loadUnaligned(fromByteOffset: 56, as: UInt64.self).littleEndian
        guard ContentHash64.hash(UnsafeRawBufferPointer(rebasing: raw[headerByteCount...])) == expectedHash else {
            throw fail(damaged("checksum mismatch"))
        }
        let dataset = TokenizedDataset(storage: mapped, byteCount: size, isMapped: true, cacheFile: url)
        // Structure: offsets increase from 0 to T, lengths 2...maxLength, labels and ids in range.
        guard dataset.offsets[0] == 0, dataset.offsets[dataset.count] == Int64(dataset.tokenCount) else {
            throw damaged("bad offsets")
        }
        for index in 0..<dataset.count {
            let length = dataset.length(at: index)
            guard length >= 2 && length <= dataset.maxLength else { throw damaged("example \(index) has \(length) tokens") }
            let label = dataset.label(at: index)
            guard label >= 0 && label < labelCount else { throw damaged("example \(index) has label \(label)") }
        }
        if let vocabularySize {
            for index in 0..<dataset.tokenCount where dataset.tokenValues[index] < 0 || dataset.tokenValues[index] >= vocabularySize {
                throw damaged("token id \(dataset.tokenValues[index]) is outside the vocabulary of \(vocabularySize)")
            }
        }
        return dataset
    }
}
