/// TFRecord framing, the container of TensorBoard event files. Each record is
///
///     uint64 length (little-endian) | uint32 masked CRC-32C of those 8 bytes
///     | length bytes of data        | uint32 masked CRC-32C of the data
///
/// with the CRCs little-endian and masked as in `CRC32C.mask`.
public enum TFRecord {
    /// Bytes of framing around each record: 8 + 4 before the data, 4 after.
    public static let overheadByteCount = 16

    /// One framed record holding `payload`.
    public static func frame(_ payload: [UInt8]) -> [UInt8] {
        var record = [UInt8]()
        record.reserveCapacity(payload.count + overheadByteCount)
        let length = littleEndianBytes(UInt64(payload.count))
        record.append(contentsOf: length)
        record.append(contentsOf: littleEndianBytes(CRC32C.maskedChecksum(length)))
        record.append(contentsOf: payload)
        record.append(contentsOf: littleEndianBytes(CRC32C.maskedChecksum(payload)))
        return record
    }

    /// The payloads of all records in `bytes`, after checking both CRCs of each. `file` names the
    /// file in errors; a damaged or truncated record is a `.malformed` error giving its offset.
    public static func records(in bytes: [UInt8], file: String) throws -> [[UInt8]] {
        func damaged(_ offset: Int, _ reason: String) -> StorageError {
            StorageError(kind: .malformed, path: file, description: "\(file): TFRecord at byte \(offset): \(reason)")
        }
        var payloads: [[UInt8]] = []
        var offset = 0
        while offset < bytes.count {
            guard bytes.count - offset >= 12 else { throw damaged(offset, "truncated header") }
            let lengthBytes = Array(bytes[offset..<(offset + 8)])
            guard readLittleEndianUInt32(bytes, at: offset + 8) == CRC32C.maskedChecksum(lengthBytes) else {
                throw damaged(offset, "length CRC mismatch")
            }
            let length = lengthBytes.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let dataStart = offset + 12
            guard length <= UInt64(bytes.count - dataStart), bytes.count - dataStart - Int(length) >= 4 else {
                throw damaged(offset, "truncated record of \(length) bytes")
            }
            let payload = Array(bytes[dataStart..<(dataStart + Int(length))])
            guard readLittleEndianUInt32(bytes, at: dataStart + Int(length)) == CRC32C.maskedChecksum(payload) else {
                throw damaged(offset, "data CRC mismatch")
            }
            payloads.append(payload)
            offset = dataStart + Int(length) + 4
        }
        return payloads
    }

    private static func littleEndianBytes<Integer: FixedWidthInteger>(_ value: Integer) -> [UInt8] {
        (0..<(Integer.bitWidth / 8)).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
    }

    private static func readLittleEndianUInt32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[offset + $1]) << ($1 * 8) }
    }
}
