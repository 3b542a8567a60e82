import Foundation
import Testing
import TestSupport
@testable import Storage

@Suite struct SHA256Tests {
    // FIPS 180-4 / NIST example vectors (SHA-256 examples and the long-message test).
    @Test(arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",  // 448 bits
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
        ("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",  // 896 bits
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"),
    ])
    func nistVectors(message: String, expectedHex: String) {
        #expect(SHA256.hash(Array(message.utf8)).hex == expectedHex)
    }

    @Test func oneMillionLetterA() {
        let expected = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        #expect(SHA256.hash([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)).hex == expected)
        // The same message fed 1,000 bytes at a time, as the NIST long-message test describes it.
        var hasher = SHA256()
        let thousand = [UInt8](repeating: UInt8(ascii: "a"), count: 1000)
        for _ in 0..<1000 { hasher.update(thousand) }
        #expect(hasher.finalize().hex == expected)
    }

    /// Every split of a message into pieces (across block boundaries, odd sizes) gives the one-shot digest.
    @Test func streamingInPiecesEqualsOneShot() {
        let message = pseudoRandomBytes(count: 1000, seed: 7)
        let oneShot = SHA256.hash(message)
        for pieceSize in [1, 3, 55, 56, 63, 64, 65, 127, 128, 129, 999] {
            var hasher = SHA256()
            var start = 0
            while start < message.count {
                let end = min(start + pieceSize, message.count)
                hasher.update(Array(message[start..<end]))
                start = end
            }
            #expect(hasher.finalize() == oneShot, "piece size \(pieceSize)")
        }
        // Lengths around the padding boundaries (55/56/64): finalize() mid-stream must not disturb the
        // running state, and both digests must equal the one-shot ones.
        for length in [55, 56, 57, 63, 64, 65] {
            var hasher = SHA256()
            hasher.update(Array(message.prefix(length)))
            let intermediate = hasher.finalize()
            hasher.update(Array(message[length..<(length + 10)]))
            #expect(intermediate == SHA256.hash(Array(message.prefix(length))))
            #expect(hasher.finalize() == SHA256.hash(Array(message.prefix(length + 10))))
        }
    }

    @Test func fileHashMatchesSha256sum() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("blob.bin")
        // 9 MiB + 37 bytes: more than two 4 MiB read chunks and not a whole number of blocks.
        let bytes = pseudoRandomBytes(count: 9 * 1024 * 1024 + 37, seed: 42)
        try Data(bytes).write(to: file)
        let result = try runProgram("/usr/bin/sha256sum", [file.path])
        #expect(result.status == 0)
        let referenceHex = String(result.output.prefix(64))
        #expect(try SHA256.hash(fileAt: file).hex == referenceHex)
        #expect(SHA256.hash(bytes).hex == referenceHex)
    }

    @Test func missingFileErrorNamesTheFile() {
        let missing = URL(fileURLWithPath: "/nonexistent-storage-test/model.safetensors")
        #expect {
            _ = try SHA256.hash(fileAt: missing)
        } throws: { error in
            "\(error)".contains("/nonexistent-storage-test/model.safetensors")
        }
    }

    @Test func hexRoundTrip() throws {
        let digest = SHA256.hash(Array("abc".utf8))
        #expect(SHA256Digest(hex: digest.hex) == digest)
        #expect(SHA256Digest(hex: digest.hex.uppercased()) == digest)
        #expect(SHA256Digest(hex: "abc") == nil)
        #expect(SHA256Digest(hex: String(repeating: "g", count: 64)) == nil)
    }
}
