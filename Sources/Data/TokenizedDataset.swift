import Foundation
import Storage

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Every example of a data file as token ids ([CLS] ... [SEP], or [CLS] A [SEP] B [SEP] for text
/// pairs, truncated to `maxLength`), flat: one Int32 array of all tokens, per-example offsets,
/// targets, and for pairs where each example's second segment starts; plus the label set.
/// The targets by task: a class id (single-label), a list of class ids (multi-label), a number
/// (regression).
///
/// In memory and on disk the bytes have the same layout (the token cache file), so `open` maps
/// the file and reads it in place:
///
///     offset  size              field
///     0       8                 magic "BDTOKENS"
///     8       4                 format version (3), little-endian like everything else
///     12      4                 max length
///     16      8                 example count N
///     24      8                 token count T
///     32      8                 rows skipped as malformed
///     40      8                 content hash of the data file (ContentHash64)
///     48      8                 tokenizer fingerprint
///     56      8                 ContentHash64 of every byte after the header (damage check)
///     64      4                 flags: bit 0 = text pairs (the segment starts are present);
///                               bits 8-15 = the task: 0 single-label, 1 multi-label, 2 regression
///     68      4                 label count K
///     72      8                 byte count B of the label names
///     80      8                 multi-label: count P of (example, label) pairs; else 0
///     88      8 (N + 1)         Int64 offsets: example i is tokens[offsets[i] ..< offsets[i + 1]]
///     ..      4 N (+4 if N odd) targets (padded to 8 bytes): single-label Int32 class ids;
///                               multi-label Int32 ends: the labels of example i are
///                               positives[ends[i - 1] ..< ends[i]] (from 0 for i = 0);
///                               regression Float32 values
///     ..      4 N (+4 if N odd) pairs only: Int32 start of the second segment of each example
///     ..      4 P (+4 if P odd) multi-label only: Int32 label ids of the examples, increasing
///                               within an example
///     ..      B                 label names in id order, each a UInt32 byte count + UTF-8;
///                               zero-padded to a multiple of 8
///     ..      4 T               Int32 token ids
///
/// Token type ids are 0 before an example's second segment start and 1 from it on (it is the
/// example's length for single texts, which store no segment starts, and for pairs whose
/// template gives every token type 0, as RoBERTa's).
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
    /// Whether the examples are text pairs (token type 1 segments).
    public let hasPairs: Bool
    /// What the targets are.
    public let problemType: ProblemType
    /// The labels' names in id order (regression: `LabelSet.regression`).
    public let labelSet: LabelSet
    /// The cache file this was read from or written to, if any.
    public private(set) var cacheFile: URL?

    private let storage: UnsafeMutableRawPointer
    private let storageByteCount: Int
    private let isMapped: Bool
    private let offsets: UnsafePointer<Int64>        // (N + 1)
    private let labelValues: UnsafePointer<Int32>    // (N) the targets section (class ids or ends; regression: Float32 bits)
    private let segmentStarts: UnsafePointer<Int32>? // (N), pairs only
    private let positives: UnsafePointer<Int32>      // (P), multi-label only
    public let positiveLabelCount: Int               // P
    private let tokenValues: UnsafePointer<Int32>    // (T)

    static let magic: [UInt8] = Array("BDTOKENS".utf8)
    static let formatVersion: UInt32 = 3
    static let headerByteCount = 88

    /// The task's code in the flags (bits 8-15).
    static func code(of problemType: ProblemType) -> UInt32 {
        switch problemType {
        case .singleLabelClassification: return 0
        case .multiLabelClassification: return 1
        case .regression: return 2
        }
    }

    static func problemType(code: UInt32) -> ProblemType? {
        [ProblemType.singleLabelClassification, .multiLabelClassification, .regression].first { self.code(of: $0) == code }
    }

    /// Where each section starts.
    struct Layout {
        let offsets: Int, labels: Int, segmentStarts: Int, positives: Int, labelNames: Int, tokens: Int, total: Int

        init(exampleCount: Int, tokenCount: Int, hasPairs: Bool, positiveLabelCount: Int, labelNamesByteCount: Int) {
            let int32Section = 4 * (exampleCount + exampleCount % 2)
            offsets = TokenizedDataset.headerByteCount
            labels = offsets + 8 * (exampleCount + 1)
            segmentStarts = labels + int32Section
            positives = segmentStarts + (hasPairs ? int32Section : 0)
            labelNames = positives + 4 * (positiveLabelCount + positiveLabelCount % 2)
            tokens = labelNames + labelNamesByteCount
            total = tokens + 4 * tokenCount
        }
    }

    /// The label names section: each a UInt32 byte count and the UTF-8, zero-padded to 8 bytes.
    static func encodeLabelNames(_ names: [String]) -> [UInt8] {
        var bytes: [UInt8] = []
        for name in names {
            withUnsafeBytes(of: UInt32(name.utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
            bytes.append(contentsOf: name.utf8)
        }
        bytes.append(contentsOf: [UInt8](repeating: 0, count: (8 - bytes.count % 8) % 8))
        return bytes
    }

    /// The names of a label names section, or nil when it is malformed.
    static func decodeLabelNames(_ bytes: UnsafeRawBufferPointer, count: Int) -> [String]? {
        var names: [String] = []
        var position = 0
        for _ in 0..<count {
            guard position + 4 <= bytes.count else { return nil }
            let length = Int(bytes.loadUnaligned(fromByteOffset: position, as: UInt32.self).littleEndian)
            position += 4
            guard length <= bytes.count - position else { return nil }
            names.append(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[position..<position + length]), as: UTF8.self))
            position += length
        }
        guard bytes.count - position < 8, bytes[position...].allSatisfy({ $0 == 0 }) else { return nil }
        return names
    }

    /// `storage` holds a complete dataset whose header, sizes and label names were checked.
    private init(storage: UnsafeMutableRawPointer, byteCount: Int, isMapped: Bool, cacheFile: URL?, labelSet: LabelSet) {
        self.storage = storage
        self.storageByteCount = byteCount
        self.isMapped = isMapped
        self.cacheFile = cacheFile
        self.labelSet = labelSet
        let header = UnsafeRawPointer(storage)
        maxLength = Int(header.loadUnaligned(fromByteOffset: 12, as: UInt32.self).littleEndian)
        count = Int(header.loadUnaligned(fromByteOffset: 16, as: UInt64.self).littleEndian)
        tokenCount = Int(header.loadUnaligned(fromByteOffset: 24, as: UInt64.self).littleEndian)
        skippedRowCount = Int(header.loadUnaligned(fromByteOffset: 32, as: UInt64.self).littleEndian)
        dataHash = header.loadUnaligned(fromByteOffset: 40, as: UInt64.self).littleEndian
        tokenizerFingerprint = header.loadUnaligned(fromByteOffset: 48, as: UInt64.self).littleEndian
        let flags = header.loadUnaligned(fromByteOffset: 64, as: UInt32.self).littleEndian
        hasPairs = flags & 1 != 0
        problemType = TokenizedDataset.problemType(code: (flags >> 8) & 0xFF)!  // checked before
        let namesByteCount = Int(header.loadUnaligned(fromByteOffset: 72, as: UInt64.self).littleEndian)
        positiveLabelCount = Int(header.loadUnaligned(fromByteOffset: 80, as: UInt64.self).littleEndian)
        let layout = Layout(exampleCount: count, tokenCount: tokenCount, hasPairs: hasPairs, positiveLabelCount: positiveLabelCount,
                            labelNamesByteCount: namesByteCount)
        offsets = UnsafePointer((header + layout.offsets).assumingMemoryBound(to: Int64.self))
        labelValues = UnsafePointer((header + layout.labels).assumingMemoryBound(to: Int32.self))
        segmentStarts = hasPairs ? UnsafePointer((header + layout.segmentStarts).assumingMemoryBound(to: Int32.self)) : nil
        positives = UnsafePointer((header + layout.positives).assumingMemoryBound(to: Int32.self))
        tokenValues = UnsafePointer((header + layout.tokens).assumingMemoryBound(to: Int32.self))
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

    /// Single-label: the class id of example `index`.
    @inline(__always)
    public func label(at index: Int) -> Int32 {
        precondition(problemType == .singleLabelClassification, "label(at:) is for single-label data")
        return labelValues[index]
    }

    /// Multi-label: the class ids of example `index`, increasing (possibly none).
    public func positiveLabels(at index: Int) -> UnsafeBufferPointer<Int32> {
        precondition(problemType == .multiLabelClassification, "positiveLabels(at:) is for multi-label data")
        let start = index == 0 ? 0 : Int(labelValues[index - 1])
        return UnsafeBufferPointer(start: positives + start, count: Int(labelValues[index]) - start)
    }

    /// Regression: the target of example `index`.
    @inline(__always)
    public func value(at index: Int) -> Float {
        precondition(problemType == .regression, "value(at:) is for regression data")
        return Float(bitPattern: UInt32(bitPattern: labelValues[index]))
    }

    /// How many examples have each class (multi-label: are positive for it), for balanced class
    /// weights; empty for regression.                                                  (labelSet.count)
    public var labelCounts: [Int] {
        var counts = [Int](repeating: 0, count: problemType == .regression ? 0 : labelSet.count)
        switch problemType {
        case .singleLabelClassification: for index in 0..<count { counts[Int(labelValues[index])] += 1 }
        case .multiLabelClassification: for index in 0..<positiveLabelCount { counts[Int(positives[index])] += 1 }
        case .regression: break
        }
        return counts
    }

    /// Where the second text of example `index` starts ([CLS] A [SEP] come before it): its token
    /// type ids are 0 before this position and 1 from it on. The example's length for single texts
    /// (and pairs all of type 0).
    @inline(__always)
    public func secondSegmentStart(at index: Int) -> Int {
        if let segmentStarts { return Int(segmentStarts[index]) }
        return length(at: index)
    }

    /// Writes the token type ids of example `index` (0 then 1) to `destination`
    /// (`length(at: index)` elements).
    public func tokenTypes(at index: Int, into destination: UnsafeMutableBufferPointer<Int32>) {
        let start = secondSegmentStart(at: index)
        for position in 0..<length(at: index) { destination[position] = position < start ? 0 : 1 }
    }

    /// Lengths of all examples (for length grouping).                                  (N)
    public var lengths: [Int32] {
        (0..<count).map { Int32(length(at: $0)) }
    }

    /// Single-label: the class ids of all examples.                                    (N)
    public var labels: UnsafeBufferPointer<Int32> {
        precondition(problemType == .singleLabelClassification, "labels is for single-label data")
        return UnsafeBufferPointer(start: labelValues, count: count)
    }

    /// The raw bytes in the cache-file layout.
    var bytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage, count: storageByteCount)
    }

    // MARK: - Building

    /// Tokenizes every text (or text pair) of `texts` (in memory; see `TokenCache.build` for the
    /// cached path).
    public static func tokenize(_ texts: LabeledTexts, tokenizer: any TextTokenizer, maxLength: Int,
                                dataHash: UInt64 = 0) -> TokenizedDataset {
        precondition(maxLength >= (texts.hasPairs ? tokenizer.minimumMaxLength.pair : tokenizer.minimumMaxLength.single))
        var tokens: [Int32] = []
        tokens.reserveCapacity((texts.textBytes.count + texts.pairBytes.count) / 4 + 3 * texts.count + maxLength)
        var offsets: [Int64] = [0]
        offsets.reserveCapacity(texts.count + 1)
        var segmentStarts: [Int32] = []
        if texts.hasPairs {
            segmentStarts.reserveCapacity(texts.count)
            for index in 0..<texts.count {
                texts.withPairBytes(at: index) { first, second in
                    let start = tokenizer.encodePair(utf8: first, utf8: second, maxLength: maxLength, appendingTo: &tokens)
                    segmentStarts.append(Int32(start))
                }
                offsets.append(Int64(tokens.count))
            }
        } else {
            texts.textBytes.withUnsafeBufferPointer { all in
                for index in 0..<texts.count {
                    let text = UnsafeBufferPointer(rebasing: all[texts.textOffsets[index]..<texts.textOffsets[index + 1]])
                    tokenizer.encode(utf8: text, maxLength: maxLength, appendingTo: &tokens)
                    offsets.append(Int64(tokens.count))
                }
            }
        }
        return assemble(tokens: tokens, offsets: offsets, targets: StoredTargets(texts), segmentStarts: texts.hasPairs ? segmentStarts : nil,
                        labelSet: texts.labelSet, maxLength: maxLength, skippedRowCount: texts.skippedRowCount,
                        dataHash: dataHash, tokenizerFingerprint: tokenizer.fingerprint)
    }

    /// The targets as the cache stores them: the (N) section and the (P) positive labels.
    struct StoredTargets {
        let problemType: ProblemType
        /// Class ids, ends of each example's positive labels, or Float32 bits.          (N)
        let section: [Int32]
        let positives: [Int32]                                                          // (P)

        init(_ texts: LabeledTexts) {
            problemType = texts.problemType
            switch texts.problemType {
            case .singleLabelClassification: section = texts.labels
            case .multiLabelClassification: section = texts.positiveLabelEnds.map { Int32($0) }  // < Int32.max: checked by parse
            case .regression: section = texts.values.map { Int32(bitPattern: $0.bitPattern) }
            }
            positives = texts.positiveLabels
        }

        init(problemType: ProblemType, section: [Int32], positives: [Int32] = []) {
            self.problemType = problemType
            self.section = section
            self.positives = positives
        }
    }

    /// A dataset of examples already tokenised (`[CLS] ... [SEP]`, at most `maxLength` ids each):
    /// synthetic benchmark rows, a part of a file, tests. `secondSegmentStarts`: for text pairs,
    /// where each example's token type 1 segment starts, its length when it has none (RoBERTa's
    /// pairs are all type 0); nil: single texts. Labels are ids of `labelSet`.
    public static func fromTokens(_ sequences: [[Int32]], secondSegmentStarts: [Int]? = nil, labels: [Int32],
                                  labelSet: LabelSet, maxLength: Int) -> TokenizedDataset {
        precondition(sequences.count == labels.count && (secondSegmentStarts?.count ?? sequences.count) == sequences.count)
        // What `open` and `deserialize` check: 2 ... maxLength ids (3 for pairs), the second
        // segment after [CLS] A [SEP] and at most at the end (none), labels in range.
        let shortest = secondSegmentStarts == nil ? 2 : 3
        precondition(sequences.allSatisfy { $0.count >= shortest && $0.count <= maxLength }
                     && labels.allSatisfy { $0 >= 0 && Int($0) < labelSet.count }
                     && (secondSegmentStarts.map { starts in starts.indices.allSatisfy { starts[$0] >= 2 && starts[$0] <= sequences[$0].count } } ?? true))
        return fromTokens(sequences, secondSegmentStarts: secondSegmentStarts,
                          targets: StoredTargets(problemType: .singleLabelClassification, section: labels), labelSet: labelSet, maxLength: maxLength)
    }

    /// Multi-label examples already tokenised (see the single-label `fromTokens`): the class ids
    /// of each example, ids of `labelSet` (any order; repeats count once).
    public static func fromTokens(_ sequences: [[Int32]], secondSegmentStarts: [Int]? = nil, positiveLabels: [[Int32]],
                                  labelSet: LabelSet, maxLength: Int) -> TokenizedDataset {
        precondition(sequences.count == positiveLabels.count
                     && positiveLabels.allSatisfy { $0.allSatisfy { $0 >= 0 && Int($0) < labelSet.count } })
        var ends: [Int32] = [], positives: [Int32] = []
        for labels in positiveLabels {
            positives += Set(labels).sorted()
            ends.append(Int32(positives.count))
        }
        return fromTokens(sequences, secondSegmentStarts: secondSegmentStarts,
                          targets: StoredTargets(problemType: .multiLabelClassification, section: ends, positives: positives),
                          labelSet: labelSet, maxLength: maxLength)
    }

    /// Regression examples already tokenised (see the single-label `fromTokens`): finite targets.
    public static func fromTokens(_ sequences: [[Int32]], secondSegmentStarts: [Int]? = nil, values: [Float],
                                  maxLength: Int) -> TokenizedDataset {
        precondition(sequences.count == values.count && values.allSatisfy(\.isFinite))
        return fromTokens(sequences, secondSegmentStarts: secondSegmentStarts,
                          targets: StoredTargets(problemType: .regression, section: values.map { Int32(bitPattern: $0.bitPattern) }),
                          labelSet: .regression, maxLength: maxLength)
    }

    private static func fromTokens(_ sequences: [[Int32]], secondSegmentStarts: [Int]?, targets: StoredTargets,
                                   labelSet: LabelSet, maxLength: Int) -> TokenizedDataset {
        var offsets: [Int64] = [0]
        for sequence in sequences { offsets.append(offsets.last! + Int64(sequence.count)) }
        return assemble(tokens: sequences.flatMap { $0 }, offsets: offsets, targets: targets,
                        segmentStarts: secondSegmentStarts.map { $0.map { Int32($0) } }, labelSet: labelSet,
                        maxLength: maxLength, skippedRowCount: 0, dataHash: 0, tokenizerFingerprint: 0)
    }

    /// Lays the sections out in one buffer (the cache file layout) and hashes them.
    private static func assemble(tokens: [Int32], offsets: [Int64], targets: StoredTargets, segmentStarts: [Int32]?,
                                 labelSet: LabelSet, maxLength: Int, skippedRowCount: Int, dataHash: UInt64,
                                 tokenizerFingerprint: UInt64) -> TokenizedDataset {
        let exampleCount = targets.section.count
        let hasPairs = segmentStarts != nil
        let labelNames = encodeLabelNames(labelSet.names)
        let layout = Layout(exampleCount: exampleCount, tokenCount: tokens.count, hasPairs: hasPairs,
                            positiveLabelCount: targets.positives.count, labelNamesByteCount: labelNames.count)
        let storage = UnsafeMutableRawPointer.allocate(byteCount: layout.total, alignment: 16)
        storage.initializeMemory(as: UInt8.self, repeating: 0, count: layout.total)
        func store<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            storage.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
        }
        func copy<T>(_ array: [T], to offset: Int) {
            array.withUnsafeBytes {
                if $0.count > 0 { (storage + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            }
        }
        for (index, byte) in magic.enumerated() { store(byte, at: index) }
        store(formatVersion, at: 8)
        store(UInt32(maxLength), at: 12)
        store(UInt64(exampleCount), at: 16)
        store(UInt64(tokens.count), at: 24)
        store(UInt64(skippedRowCount), at: 32)
        store(dataHash, at: 40)
        store(tokenizerFingerprint, at: 48)
        store(UInt32(hasPairs ? 1 : 0) | code(of: targets.problemType) << 8, at: 64)
        store(UInt32(labelSet.count), at: 68)
        store(UInt64(labelNames.count), at: 72)
        store(UInt64(targets.positives.count), at: 80)
        copy(offsets, to: layout.offsets)
        copy(targets.section, to: layout.labels)
        if let segmentStarts { copy(segmentStarts, to: layout.segmentStarts) }
        copy(targets.positives, to: layout.positives)
        copy(labelNames, to: layout.labelNames)
        copy(tokens, to: layout.tokens)
        let payload = UnsafeRawBufferPointer(start: storage + headerByteCount, count: layout.total - headerByteCount)
        store(ContentHash64.hash(payload), at: 56)
        return TokenizedDataset(storage: storage, byteCount: layout.total, isMapped: false, cacheFile: nil, labelSet: labelSet)
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
            throw DataError("\(url.path): cannot write the token cache (\(error)); give a writable cache folder (--cache-dir)")
        }
        cacheFile = url  // before the dataset is shared with anyone
        return self
    }

    // MARK: - Opening

    /// Maps a token cache file and checks it: header, sizes, damage hash, offsets, labels, label
    /// names, segment starts and (when `vocabularySize` is given) token ids. Every failure names
    /// the file.
    /// `labelOrigin` names where the label names come from in messages (default: the file).
    public static func open(_ url: URL, vocabularySize: Int? = nil, labelOrigin: String? = nil) throws -> TokenizedDataset {
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
        guard size >= 12 else { throw damaged("\(size) bytes, shorter than its header") }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0), mapped != MAP_FAILED else {
            throw DataError("\(path): cannot map the token cache (\(String(cString: strerror(errno))))")
        }
        return try checked(storage: mapped, byteCount: size, isMapped: true, cacheFile: url, origin: labelOrigin ?? path,
                           vocabularySize: vocabularySize, damaged: damaged) { version in
            DataError("\(path): token cache format \(version) is not \(formatVersion); delete it and it will be rebuilt")
        }
    }

    /// The dataset's bytes in the token cache layout (what `deserialize` reads): to send the
    /// dataset to other ranks. Valid while the dataset lives.
    public var serializedBytes: UnsafeRawBufferPointer { bytes }

    /// A dataset from bytes in the token cache layout (`serializedBytes`, e.g. received from rank
    /// 0), copied and checked as `open` checks a file; `source` names them in errors.
    public static func deserialize(_ bytes: UnsafeRawBufferPointer, source: String, vocabularySize: Int? = nil) throws -> TokenizedDataset {
        let damaged = { (reason: String) in DataError("\(source): the token data is damaged (\(reason))") }
        guard bytes.count >= 12 else { throw damaged("\(bytes.count) bytes, shorter than its header") }
        let storage = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 16)
        storage.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        return try checked(storage: storage, byteCount: bytes.count, isMapped: false, cacheFile: nil, origin: source,
                           vocabularySize: vocabularySize, damaged: damaged) { version in
            DataError("\(source): token data format \(version) is not \(formatVersion) (every rank must run the same bert-dist)")
        }
    }

    /// Checks the bytes at `storage` (at least 12) and makes them a dataset, which then owns them;
    /// on failure they are released here.
    private static func checked(storage: UnsafeMutableRawPointer, byteCount size: Int, isMapped: Bool, cacheFile: URL?,
                                origin: String, vocabularySize: Int?, damaged: (String) -> DataError,
                                versionMismatch: (UInt32) -> DataError) throws -> TokenizedDataset {
        let raw = UnsafeRawBufferPointer(start: storage, count: size)
        func fail(_ error: DataError) -> DataError {
            if isMapped { munmap(storage, size) } else { storage.deallocate() }
            return error
        }
        guard Array(raw[0..<8]) == magic else { throw fail(damaged("not a bert-dist token cache")) }
        let version = raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian
        guard version == formatVersion else { throw fail(versionMismatch(version)) }
        guard size >= headerByteCount else { throw fail(damaged("\(size) bytes, shorter than its header")) }
        let exampleCount = raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self).littleEndian
        let tokenCount = raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self).littleEndian
        let flags = raw.loadUnaligned(fromByteOffset: 64, as: UInt32.self).littleEndian
        let hasPairs = flags & 1 != 0
        guard flags & ~0xFF01 == 0, let problemType = problemType(code: (flags >> 8) & 0xFF) else {
            throw fail(damaged("unknown flags \(flags)"))
        }
        let labelCount = raw.loadUnaligned(fromByteOffset: 68, as: UInt32.self).littleEndian
        let namesByteCount = raw.loadUnaligned(fromByteOffset: 72, as: UInt64.self).littleEndian
        let positiveCount = raw.loadUnaligned(fromByteOffset: 80, as: UInt64.self).littleEndian
        let skippedRowCount = raw.loadUnaligned(fromByteOffset: 32, as: UInt64.self).littleEndian
        guard exampleCount < UInt64(Int32.max), tokenCount < UInt64(Int.max / 8), namesByteCount < UInt64(size),
              positiveCount < UInt64(Int32.max), problemType == .multiLabelClassification || positiveCount == 0,
              skippedRowCount < UInt64(Int.max) else {
            throw fail(damaged("its size \(size) does not match its header"))
        }
        let layout = Layout(exampleCount: Int(exampleCount), tokenCount: Int(tokenCount), hasPairs: hasPairs,
                            positiveLabelCount: Int(positiveCount), labelNamesByteCount: Int(namesByteCount))
        guard layout.total == size else { throw fail(damaged("its size \(size) does not match its header")) }
        let expectedHash = raw.loadUnaligned(fromByteOffset: 56, as: UInt64.self).littleEndian
        guard ContentHash64.hash(UnsafeRawBufferPointer(rebasing: raw[headerByteCount...])) == expectedHash else {
            throw fail(damaged("checksum mismatch"))
        }
        // Regression has its one output's name; classifiers at least 2 valid names.
        guard let names = decodeLabelNames(UnsafeRawBufferPointer(rebasing: raw[layout.labelNames..<layout.tokens]), count: Int(labelCount)),
              let labelSet = problemType == .regression ? (names == LabelSet.regression.names ? LabelSet.regression : nil)
                                                        : try? LabelSet(names: names, origin: origin) else {
            throw fail(damaged("bad label names"))
        }
        // From here the dataset owns (and releases) the bytes.
        let dataset = TokenizedDataset(storage: storage, byteCount: size, isMapped: isMapped, cacheFile: cacheFile, labelSet: labelSet)
        // Structure: offsets increase from 0 to T, lengths 2...maxLength (3 for pairs), labels,
        // segment starts and ids in range.
        guard dataset.offsets[0] == 0, dataset.offsets[dataset.count] == Int64(dataset.tokenCount) else {
            throw damaged("bad offsets")
        }
        let shortest = hasPairs ? 3 : 2
        var previousEnd: Int32 = 0
        for index in 0..<dataset.count {
            // Offsets within 0...T before any is subtracted from another (no overflow, no read outside).
            guard dataset.offsets[index + 1] >= dataset.offsets[index], dataset.offsets[index + 1] <= Int64(dataset.tokenCount) else {
                throw damaged("bad offsets")
            }
            let length = dataset.length(at: index)
            guard length >= shortest && length <= dataset.maxLength else { throw damaged("example \(index) has \(length) tokens") }
            let target = dataset.labelValues[index]
            switch problemType {
            case .singleLabelClassification:
                guard target >= 0 && target < labelSet.count else { throw damaged("example \(index) has label \(target)") }
            case .multiLabelClassification:
                // Ends increase to P; each example's ids increase and are classes.
                guard target >= previousEnd && Int(target) <= dataset.positiveLabelCount else {
                    throw damaged("example \(index) ends its labels at \(target)")
                }
                for position in Int(previousEnd)..<Int(target) {
                    let label = dataset.positives[position]
                    guard label >= 0 && label < labelSet.count, position == Int(previousEnd) || label > dataset.positives[position - 1] else {
                        throw damaged("example \(index) has labels \(Array(dataset.positiveLabels(at: index)))")
                    }
                }
                previousEnd = target
            case .regression:
                guard dataset.value(at: index).isFinite else { throw damaged("example \(index) has target \(dataset.value(at: index))") }
            }
            // A pair's second segment starts after [CLS] A [SEP], or at the end: no token of
            // type 1 (RoBERTa's, XLM-R's and CamemBERT's pairs).
            let start = dataset.secondSegmentStart(at: index)
            guard !hasPairs || (start >= 2 && start <= length) else {
                throw damaged("example \(index) has its second segment at \(start) of \(length) tokens")
            }
        }
        if problemType == .multiLabelClassification && Int(previousEnd) != dataset.positiveLabelCount {
            throw damaged("its examples have \(previousEnd) labels, its header says \(dataset.positiveLabelCount)")
        }
        if let vocabularySize {
            for index in 0..<dataset.tokenCount where dataset.tokenValues[index] < 0 || dataset.tokenValues[index] >= vocabularySize {
                throw damaged("token id \(dataset.tokenValues[index]) is outside the vocabulary of \(vocabularySize)")
            }
        }
        return dataset
    }
}
