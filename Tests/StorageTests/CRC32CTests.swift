import Testing
import TestSupport
@testable import Storage

@Suite struct CRC32CTests {
    // RFC 3720 appendix B.4 (iSCSI CRC-32C examples) and the usual "123456789" check value.
    @Test(arguments: [
        ([UInt8](repeating: 0x00, count: 32), UInt32(0x8A91_36AA)),
        ([UInt8](repeating: 0xFF, count: 32), UInt32(0x62A8_AB43)),
        ((0..<32).map { UInt8($0) }, UInt32(0x46DD_794E)),
        ((0..<32).map { UInt8(31 - $0) }, UInt32(0x113F_DB5C)),  // RFC 3720 B.4: descending 31..0
        (Array("123456789".utf8), UInt32(0xE306_9283)),
        ([UInt8](), UInt32(0)),
    ])
    func knownVectors(bytes: [UInt8], expected: UInt32) {
        #expect(CRC32C.checksum(bytes) == expected)
        #expect(CRC32C.bitwiseChecksum(bytes) == expected)
    }

    // Masked values from TensorBoard's own implementation
    // (tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c, tensorboard 2.21.0).
    @Test func tfrecordMaskMatchesTensorBoard() {
        #expect(CRC32C.maskedChecksum(Array("123456789".utf8)) == 0xC78A_B0E5)
        #expect(CRC32C.maskedChecksum([UInt8](repeating: 0, count: 32)) == 0x0FD7_FFFA)
        #expect(CRC32C.maskedChecksum([UInt8](repeating: 0xFF, count: 32)) == 0xF909_B029)
        #expect(CRC32C.maskedChecksum((0..<32).map { UInt8($0) }) == 0x951F_7892)
        #expect(CRC32C.maskedChecksum([]) == 0xA282_EAD8)
        #expect(CRC32C.maskedChecksum(Array("hello tensorboard".utf8)) == 0xD874_6FA4)
        for value: UInt32 in [0, 1, 0xE306_9283, 0xFFFF_FFFF, 0x8000_0000] {
            #expect(unmask(CRC32C.mask(value)) == value)
        }
    }

    /// The slicing-by-8 path equals the bitwise reference for every length 0...100 and every alignment.
    @Test func slicingBy8EqualsBitwiseReference() {
        let data = pseudoRandomBytes(count: 120, seed: 3)
        for start in 0..<8 {
            for length in 0...100 {
                let slice = Array(data[start..<(start + length)])
                #expect(CRC32C.checksum(slice) == CRC32C.bitwiseChecksum(slice), "start \(start) length \(length)")
            }
        }
    }

    @Test func checksumInPiecesEqualsOneShot() {
        let data = pseudoRandomBytes(count: 10_000, seed: 9)
        let oneShot = CRC32C.checksum(data)
        for split in [0, 1, 7, 8, 9, 4096, 9_999, 10_000] {
            let first = CRC32C.checksum(Array(data[..<split]))
            #expect(CRC32C.checksum(Array(data[split...]), continuing: first) == oneShot, "split \(split)")
        }
    }
}

/// The inverse of `CRC32C.mask` (rotate left by 15 after subtracting the constant).
func unmask(_ maskedCRC: UInt32) -> UInt32 {
    let rotated = maskedCRC &- 0xa282_ead8
    return (rotated >> 17) | (rotated << 15)
}
