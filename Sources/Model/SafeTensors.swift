import Foundation

/// Element types of the safetensors format that we read. F32 is used as is, F16 and BF16 are
/// widened to F32, integer tensors (e.g. `embeddings.position_ids`) can be read as Int64.
public enum SafeTensorsDType: String, Sendable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
    case u8 = "U8", bool = "BOOL", f64 = "F64"

    public var byteCount: Int {
        switch self {
        case .f64, .i64: return 8
        case .f32, .i32: return 4
        case .f16, .bf16, .i16: return 2
        case .i8, .u8, .bool: return 1
        }
    }
    public var isFloat: Bool { self == .f32 || self == .f16 || self == .bf16 }
}

/// One tensor in a safetensors file: element type, shape, and where its bytes are.
public struct SafeTensorsRecord: Sendable {
    public let name: String
    public let dtype: SafeTensorsDType
    public let shape: [Int]
    public let byteRange: Range<Int>   // relative to the start of the data section
    /// The product of `shape`, computed once with overflow checks when the header was read.
    public let elementCount: Int
}

/// A memory-mapped safetensors file: 8-byte little-endian header length, a JSON header
/// {name: {dtype, shape, data_offsets}, "__metadata__": {..}}, then the tensor bytes.
/// Every offset is validated against the file size, so a truncated file is an error naming
/// the file and the tensor, never a crash.
public final class SafeTensorsFile: @unchecked Sendable {
    // @unchecked Sendable: the mapping is read-only after init.
    /// The longest JSON header read (the limit of the safetensors library itself).
    public static let maximumHeaderBytes: UInt64 = 100_000_000

    public let path: String
    public let records: [String: SafeTensorsRecord]
    public let metadata: [String: String]
    private let mapping: UnsafeMutableRawPointer?
    private let mappedBytes: Int
    private let dataStart: Int

    public init(url: URL) throws {
        path = url.path
        // O_NONBLOCK: a FIFO in place of the file must not block the open (it is refused below).
        let fd = open(url.path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            throw ModelError.missingFile(path: url.path, hint: "expected a safetensors weight file")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw ModelError.invalidTensorFile(file: url.path, reason: "cannot stat: \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw ModelError.invalidTensorFile(file: url.path, reason: "not a regular file (a folder, device or pipe)")
        }
        let fileSize = Int(info.st_size)
        guard fileSize >= 8 else {
            throw ModelError.invalidTensorFile(file: url.path, reason: "truncated: \(fileSize) bytes is shorter than the 8-byte header length")
        }
        guard let map = mmap(nil, fileSize, PROT_READ, MAP_PRIVATE, fd, 0), map != MAP_FAILED else {
            throw ModelError.invalidTensorFile(file: url.path, reason: "cannot map the file: \(String(cString: strerror(errno)))")
        }
        mapping = map
        mappedBytes = fileSize
        // Compared as UInt64 before any conversion: a lying length (2^63 and more) is an error, not a trap.
        let declaredLength = UInt64(littleEndian: map.loadUnaligned(as: UInt64.self))
        guard declaredLength <= UInt64(fileSize - 8), declaredLength <= SafeTensorsFile.maximumHeaderBytes else {
            munmap(map, fileSize)
            let reason = declaredLength <= UInt64(fileSize - 8)
                ? "a header of \(declaredLength) bytes is longer than the \(SafeTensorsFile.maximumHeaderBytes) a safetensors header may have (corrupt file?)"
                : "truncated or not safetensors: header of \(declaredLength) bytes in a \(fileSize)-byte file"
            throw ModelError.invalidTensorFile(file: url.path, reason: reason)
        }
        let headerLength = Int(declaredLength)
        dataStart = 8 + headerLength
        let headerBytes = Data(bytes: map + 8, count: headerLength)
        do {
            (records, metadata) = try SafeTensorsFile.parseHeader(headerBytes, dataBytes: fileSize - dataStart, file: url.path)
        } catch {
            munmap(map, fileSize)
            throw error
        }
    }

    deinit { if let mapping { munmap(mapping, mappedBytes) } }

    /// The records of a header, each checked: a known dtype, a shape of non-negative sizes whose
    /// byte count (computed without overflow) is exactly its data range, the range inside the
    /// data section and overlapping no other tensor's, no name twice.
    private static func parseHeader(_ header: Data, dataBytes: Int, file: String) throws
        -> ([String: SafeTensorsRecord], [String: String]) {
        func bad(_ reason: String) -> ModelError { .invalidTensorFile(file: file, reason: reason) }
        guard let object = try? JSONSerialization.jsonObject(with: header) as? [String: Any] else {
            throw bad("the safetensors header is not a JSON object (not a safetensors file?)")
        }
        // JSON parsers keep one of two equal names silently: count the names as written.
        if let repeated = repeatedTopLevelName(header) {
            throw bad("the safetensors header names \(repeated) twice (corrupt file?)")
        }
        var records: [String: SafeTensorsRecord] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in object {
            if name == "__metadata__" {
                metadata = (value as? [String: String]) ?? [:]
                continue
            }
            guard let entry = value as? [String: Any],
                  let dtypeName = entry["dtype"] as? String,
                  let shape = integers(entry["shape"]),
                  let offsets = integers(entry["data_offsets"]), offsets.count == 2 else {
                throw ModelError.tensor(file: file, tensor: name, reason: "malformed header entry (needs \"dtype\", integer \"shape\" and two integer \"data_offsets\")")
            }
            guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
                throw ModelError.tensor(file: file, tensor: name, reason: "unsupported dtype \(dtypeName)")
            }
            let begin = offsets[0], end = offsets[1]
            guard begin >= 0, end >= begin, shape.allSatisfy({ $0 >= 0 }) else {
                throw ModelError.tensor(file: file, tensor: name, reason: "invalid data offsets \(offsets) or shape \(shape)")
            }
            guard end <= dataBytes else {
                throw ModelError.tensor(file: file, tensor: name, reason: "data ends at byte \(end) but the file has only \(dataBytes) data bytes (truncated file?)")
            }
            guard let elementCount = checkedProduct(shape), let byteCount = checkedProduct([elementCount, dtype.byteCount]),
                  byteCount == end - begin else {
                throw ModelError.tensor(file: file, tensor: name, reason: "\(end - begin) bytes do not hold shape \(shape) of \(dtypeName)")
            }
            records[name] = SafeTensorsRecord(name: name, dtype: dtype, shape: shape, byteRange: begin..<end, elementCount: elementCount)
        }
        // Two tensors sharing bytes: writing one through a view would change the other.
        let ranges = records.values.filter { !$0.byteRange.isEmpty }.sorted { ($0.byteRange.lowerBound, $0.name) < ($1.byteRange.lowerBound, $1.name) }
        for (previous, next) in zip(ranges, ranges.dropFirst()) where next.byteRange.lowerBound < previous.byteRange.upperBound {
            throw ModelError.tensor(file: file, tensor: next.name, reason: "its bytes \(next.byteRange) overlap those of \(previous.name) \(previous.byteRange) (corrupt file?)")
        }
        return (records, metadata)
    }

    /// A JSON array of integers (JSON numbers with no fraction that fit an Int); nil otherwise.
    private static func integers(_ value: Any?) -> [Int]? {
        guard let array = value as? [Any] else { return nil }
        var result: [Int] = []
        for element in array {
            // In range and whole as a Double first, so that reading the exact Int64 cannot trap.
            guard let number = element as? NSNumber, Int(exactly: number.doubleValue) != nil else { return nil }
            result.append(Int(number.int64Value))
        }
        return result
    }

    /// The first name that the top-level object of a JSON text has twice (as written, escapes
    /// and all), or nil. The text is already known to be valid JSON.
    private static func repeatedTopLevelName(_ json: Data) -> String? {
        var seen = Set<Data>()
        var depth = 0, index = json.startIndex
        var expectingName = false
        while index < json.endIndex {
            let byte = json[index]
            switch byte {
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                expectingName = byte == UInt8(ascii: "{") && depth == 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
            case UInt8(ascii: ","):
                expectingName = depth == 1
            case UInt8(ascii: "\""):
                // A string: find its end (a quote not escaped).
                var end = index + 1
                while end < json.endIndex && json[end] != UInt8(ascii: "\"") {
                    end += json[end] == UInt8(ascii: "\\") ? 2 : 1
                }
                if expectingName {
                    let name = json[index..<min(end + 1, json.endIndex)]
                    if !seen.insert(name).inserted { return String(decoding: name, as: UTF8.self) }
                    expectingName = false
                }
                index = end
            default:
                break
            }
            index += 1
        }
        return nil
    }

    public func record(_ name: String) throws -> SafeTensorsRecord {
        guard let record = records[name] else {
            throw ModelError.tensor(file: path, tensor: name, reason: "missing")
        }
        return record
    }

    /// Copies a floating-point tensor into `destination` as F32 (F16 and BF16 widened).
    public func copyFloats(_ name: String, into destination: UnsafeMutableBufferPointer<Float>) throws {
        let record = try record(name)
        guard record.elementCount == destination.count else {
            throw ModelError.tensor(file: path, tensor: name, reason: "has \(record.elementCount) elements, expected \(destination.count)")
        }
        try copyFloats(name, elements: 0..<record.elementCount, into: destination)
    }

    /// Copies elements `elements` of a floating-point tensor (flattened) into `destination`.
    public func copyFloats(_ name: String, elements: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws {
        let record = try record(name)
        guard record.dtype.isFloat else {
            throw ModelError.tensor(file: path, tensor: name, reason: "dtype \(record.dtype.rawValue) is not a floating-point type (F32, F16 or BF16)")
        }
        guard elements.lowerBound >= 0, elements.upperBound <= record.elementCount, elements.count == destination.count else {
            throw ModelError.tensor(file: path, tensor: name, reason: "has \(record.elementCount) elements, elements \(elements) were asked for")
        }
        let elementBytes = record.dtype == .f32 ? 4 : 2
        let source = mapping! + dataStart + record.byteRange.lowerBound + elements.lowerBound * elementBytes
        let out = destination.baseAddress!
        switch record.dtype {
        case .f32:
            memcpy(out, source, 4 * destination.count)
        case .f16:
            for i in 0..<destination.count {
                out[i] = Float(Float16(bitPattern: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
            }
        case .bf16:
            // bfloat16 is the upper half of an IEEE float32.
            for i in 0..<destination.count {
                let bits = UInt32(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16
                out[i] = Float(bitPattern: bits)
            }
        default:
            break
        }
    }

    public func floats(_ name: String) throws -> [Float] {
        let count = try record(name).elementCount
        return try [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            try copyFloats(name, into: buffer)
            initialized = count
        }
    }

    /// Reads an integer tensor (I64, I32, I16, I8, U8) as Int64.
    public func integers(_ name: String) throws -> [Int64] {
        let record = try record(name)
        let source = mapping! + dataStart + record.byteRange.lowerBound
        let n = record.elementCount
        switch record.dtype {
        case .i64: return (0..<n).map { source.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self) }
        case .i32: return (0..<n).map { Int64(source.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) }
        case .i16: return (0..<n).map { Int64(source.loadUnaligned(fromByteOffset: 2 * $0, as: Int16.self)) }
        case .i8: return (0..<n).map { Int64(source.load(fromByteOffset: $0, as: Int8.self)) }
        case .u8, .bool: return (0..<n).map { Int64(source.load(fromByteOffset: $0, as: UInt8.self)) }
        default:
            throw ModelError.tensor(file: path, tensor: record.name, reason: "dtype \(record.dtype.rawValue) is not an integer type")
        }
    }
}

/// A tensor to write: a name, a shape and a view of F32 values (often into an arena).
public struct SafeTensorsEntry {
    public let name: String
    public let shape: [Int]
    public let values: UnsafeBufferPointer<Float>
    public init(name: String, shape: [Int], values: UnsafeBufferPointer<Float>) {
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not match \(values.count) values of \(name)")
        self.name = name
        self.shape = shape
        self.values = values
    }
}

/// The first bytes of a safetensors file of F32 tensors with these names and shapes, in this
/// order: the 8-byte header length and the JSON header, padded with spaces so that the data
/// starts 8-byte aligned. The tensors' bytes follow in the same order. Deterministic.
public func safeTensorsHeader(_ tensors: [(name: String, shape: [Int])], metadata: [String: String] = [:]) -> [UInt8] {
    func quoted(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
    var fields: [String] = []
    if !metadata.isEmpty {
        let items = metadata.keys.sorted().map { "\(quoted($0)):\(quoted(metadata[$0]!))" }
        fields.append("\"__metadata__\":{\(items.joined(separator: ","))}")
    }
    var offset = 0
    for tensor in tensors {
        let bytes = tensor.shape.reduce(1, *) * 4
        let shape = tensor.shape.map(String.init).joined(separator: ",")
        fields.append("\(quoted(tensor.name)):{\"dtype\":\"F32\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + bytes)]}")
        offset += bytes
    }
    var header = Array("{\(fields.joined(separator: ","))}".utf8)
    while (8 + header.count) % 8 != 0 { header.append(UInt8(ascii: " ")) }
    return withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header
}

/// Writes F32 tensors in the safetensors format through `sink`, in the order given, so that a
/// checkpoint is written straight from arena views with no copy.
public func writeSafeTensors(_ entries: [SafeTensorsEntry], metadata: [String: String] = [:],
                             to sink: (UnsafeRawBufferPointer) throws -> Void) throws {
    try safeTensorsHeader(entries.map { ($0.name, $0.shape) }, metadata: metadata).withUnsafeBytes { try sink($0) }
    for entry in entries where entry.values.count > 0 {
        // Little-endian hosts only (x86_64, arm64): the F32 bytes are written as they are.
        try sink(UnsafeRawBufferPointer(entry.values))
    }
}

/// Convenience for tests and tools: writes a safetensors file directly (not atomically).
public func writeSafeTensors(_ entries: [SafeTensorsEntry], metadata: [String: String] = [:], to url: URL) throws {
    guard FileManager.default.createFile(atPath: url.path, contents: nil),
          let handle = FileHandle(forWritingAtPath: url.path) else {
        throw ModelError.invalidTensorFile(file: url.path, reason: "cannot create the file")
    }
    defer { try? handle.close() }
    try writeSafeTensors(entries, metadata: metadata) { bytes in
        try handle.write(contentsOf: Data(bytes: bytes.baseAddress!, count: bytes.count))
    }
}
