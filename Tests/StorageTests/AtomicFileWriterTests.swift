import Foundation
import Testing
import TestSupport
@testable import Storage

@Suite struct AtomicFileWriterTests {
    private func contents(_ url: URL) throws -> [UInt8] { [UInt8](try Data(contentsOf: url)) }

    private func entries(_ directory: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
    }

    @Test func commitReplacesTheFileAndReturnsItsDigest() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("model.safetensors")
        try writeFileAtomically(file, bytes: Array("old".utf8))

        // Pieces smaller than, equal to and larger than the internal 1 MiB buffer.
        let pieces = [pseudoRandomBytes(count: 10, seed: 1), pseudoRandomBytes(count: 3 << 20, seed: 2),
                      pseudoRandomBytes(count: 1 << 20, seed: 3), pseudoRandomBytes(count: 999, seed: 4)]
        let writer = try AtomicFileWriter(destination: file)
        for piece in pieces { try writer.write(piece) }
        #expect(try contents(file) == Array("old".utf8), "the destination is untouched until commit")
        let digest = try writer.commit()

        let expected = pieces.flatMap { $0 }
        #expect(try contents(file) == expected)
        let sha256sum = try runProgram("/usr/bin/sha256sum", [file.path])
        #expect(digest.hex == String(sha256sum.output.prefix(64)))
        #expect(try entries(directory) == ["model.safetensors"], "no temporary file left behind")
    }

    @Test func abandonLeavesThePreviousFileAndNoTemporary() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("trainer_state.pb")
        try writeFileAtomically(file, bytes: Array("previous".utf8))

        let writer = try AtomicFileWriter(destination: file)
        try writer.write(pseudoRandomBytes(count: 2 << 20, seed: 5))
        #expect(FileManager.default.fileExists(atPath: writer.temporaryURL.path))
        #expect(writer.temporaryURL.lastPathComponent == ".trainer_state.pb.tmp-\(getpid())")
        writer.abandon()
        writer.abandon()  // idempotent
        #expect(try contents(file) == Array("previous".utf8))
        #expect(try entries(directory) == ["trainer_state.pb"])
        #expect(throws: StorageError.self) { try writer.write([1, 2, 3]) }
        #expect(throws: StorageError.self) { try writer.commit() }
    }

    @Test func droppingAnUncommittedWriterRemovesTheTemporary() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("vocab.txt")
        try writeFileAtomically(file, bytes: Array("kept".utf8))
        do {
            let writer = try AtomicFileWriter(destination: file)
            try writer.write(Array("never committed".utf8))
            try writer.write(pseudoRandomBytes(count: 3 << 20, seed: 6))  // reaches the disk, not just the buffer
        }
        #expect(try contents(file) == Array("kept".utf8))
        #expect(try entries(directory) == ["vocab.txt"])
    }

    @Test func commitTwiceIsAnError() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let writer = try AtomicFileWriter(destination: directory.appendingPathComponent("a"))
        try writer.commit()
        #expect(throws: StorageError.self) { try writer.commit() }
        #expect(try contents(directory.appendingPathComponent("a")) == [])
    }

    @Test func missingDirectoryErrorNamesTheFile() {
        let file = URL(fileURLWithPath: "/nonexistent-storage-test/checkpoint-5/model.safetensors")
        #expect {
            try writeFileAtomically(file, bytes: [1])
        } throws: { error in
            let error = error as? StorageError
            return error?.kind == .io && error!.description.contains(file.path)
        }
    }

    /// /dev/full fails every write with ENOSPC: the write path must turn that into a clear disk-full error.
    @Test func writeToDevFullIsADiskFullError() throws {
        let descriptor = open("/dev/full", O_WRONLY)
        try #require(descriptor >= 0, "/dev/full is not available")
        defer { close(descriptor) }
        let bytes = [UInt8](repeating: 7, count: 100)
        #expect {
            try bytes.withUnsafeBytes { try writeAll(descriptor: descriptor, bytes: $0, path: "/out/model.safetensors") }
        } throws: { error in
            let error = error as? StorageError
            return error?.kind == .diskFull && error!.description.contains("/out/model.safetensors")
                && error!.description.contains("disk is full")
        }
    }

    /// A real full filesystem: a 1 MiB tmpfs. The failed write must leave the previous file and no temporary.
    @Test(.enabled(if: canMountTmpfs, "needs root with CAP_SYS_ADMIN to mount a 1 MiB tmpfs"))
    func fullFilesystemLeavesThePreviousFileIntact() throws {
        let tmpfs = try TmpfsMount(size: "1m")
        defer { tmpfs.unmount() }
        let directory = tmpfs.folder

        let file = directory.appendingPathComponent("model.safetensors")
        let previous = pseudoRandomBytes(count: 300_000, seed: 8)
        try writeFileAtomically(file, bytes: previous)

        // 800 KB more does not fit next to the 300 KB previous file in 1 MiB. Written in 64 KiB pieces
        // (below the writer's buffer size), so the error may come from a write or from commit.
        let writer = try AtomicFileWriter(destination: file)
        #expect {
            for index in 0..<13 { try writer.write(pseudoRandomBytes(count: 64 << 10, seed: UInt64(index))) }
            try writer.commit()
        } throws: { error in
            let error = error as? StorageError
            return error?.kind == .diskFull && error!.description.contains(file.path)
                && error!.description.contains("disk is full")
        }
        #expect(try contents(file) == previous)
        #expect(try entries(directory) == ["model.safetensors"])

        // And after freeing space the same writer path works again.
        try writeFileAtomically(file, bytes: [1, 2, 3])
        #expect(try contents(file) == [1, 2, 3])
    }
}
