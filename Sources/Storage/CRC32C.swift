/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI, ext4 and TFRecord files.
///
/// Slicing-by-8: eight 256-entry tables let the loop consume 8 bytes per step.
/// `bitwiseChecksum` is the one-bit-at-a-time reference the fast path is tested against.
public enum CRC32C {
    /// The CRC-32C of `bytes`. Pass a previous result as `continuing` to checksum data in pieces:
    /// `checksum(b, continuing: checksum(a)) == checksum(a + b)`.
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing previous: UInt32 = 0) -> UInt32 {
        guard var input = bytes.baseAddress else { return previous }
        var remaining = bytes.count
        var crc = ~previous
        tables.withUnsafeBufferPointer { tablesBuffer in
            let table = tablesBuffer.baseAddress!  // (8, 256): table[k * 256 + byte]
            while remaining >= 8 {
                let low = UInt32(littleEndian: input.loadUnaligned(as: UInt32.self)) ^ crc
                let high = UInt32(littleEndian: input.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
                crc = table[7 * 256 + Int(low & 0xff)]
                    ^ table[6 * 256 + Int((low >> 8) & 0xff)]
                    ^ table[5 * 256 + Int((low >> 16) & 0xff)]
                    ^ table[4 * 256 + Int(low >> 24)]
                    ^ table[3 * 256 + Int(high & 0xff)]
                    ^ table[2 * 256 + Int((high >> 8) & 0xff)]
                    ^ table[1 * 256 + Int((high >> 16) & 0xff)]
                    ^ table[0 * 256 + Int(high >> 24)]
                input += 8
                remaining -= 8
            }
            while remaining > 0 {
                let byte = input.load(as: UInt8.self)
                crc = table[Int((crc ^ UInt32(byte)) & 0xff)] ^ (crc >> 8)
                input += 1
                remaining -= 1
            }
        }
        return ~crc
    }

    public static func checksum(_ bytes: [UInt8], continuing previous: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0, continuing: previous) }
    }

    /// TFRecord's masked CRC: rotate right by 15 and add a constant, so that a CRC stored inside the
    /// data it covers does not checksum to something trivial.
    public static func mask(_ crc: UInt32) -> UInt32 {
        ((crc >> 15) | (crc << 17)) &+ 0xa282_ead8
    }

    /// `mask(checksum(bytes))`: what a TFRecord file stores.
    public static func maskedChecksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        mask(checksum(bytes))
    }

    public static func maskedChecksum(_ bytes: [UInt8]) -> UInt32 {
        mask(checksum(bytes))
    }

    /// Reference implementation, one bit at a time (slow; for tests).
    public static func bitwiseChecksum(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xffff_ffff
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 {
                crc = (crc & 1) != 0 ? (crc >> 1) ^ reflectedPolynomial : crc >> 1
            }
        }
        return ~crc
    }

    static let reflectedPolynomial: UInt32 = 0x82f6_3b78

    /// tables[k * 256 + byte]: the CRC of `byte` followed by k zero bytes.
    static let tables: [UInt32] = {
        var tables = [UInt32](repeating: 0, count: 8 * 256)
        for byte in 0..<256 {
            var crc = UInt32(byte)
            for _ in 0..<8 {
                crc = (crc & 1) != 0 ? (crc >> 1) ^ reflectedPolynomial : crc >> 1
            }
            tables[byte] = crc
        }
        for k in 1..<8 {
            for byte in 0..<256 {
                let previous = tables[(k - 1) * 256 + byte]
                tables[k * 256 + byte] = tables[Int(previous & 0xff)] ^ (previous >> 8)
            }
        }
        return tables
    }()
}
