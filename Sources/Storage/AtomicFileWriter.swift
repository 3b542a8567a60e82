import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes a file so that readers see either the previous file or the complete new one, never a part.
///
/// Bytes go to `<directory>/.<name>.tmp-<pid>`; `commit()` fsyncs it, renames it over the
/// destination and fsyncs the directory (so the rename itself survives a power cut). Every system
/// call is checked: a full disk gives a `StorageError` of kind `.diskFull` naming the file. On any
/// error, on `abandon()`, or if the writer is dropped without `commit()`, the temporary file is
/// removed and the previous destination file is left untouched.
///
/// Not thread-safe: one writer is used by one thread at a time.
public final class AtomicFileWriter {
    public let destination: URL
    /// The temporary file the bytes go to until `commit()`.
    public let temporaryURL: URL

    private var descriptor: Int32
    private var hasher = SHA256()
    /// Small writes are gathered here so that writing a header field by field costs few system calls.
    private let buffer: UnsafeMutableRawBufferPointer
    private var bufferedByteCount = 0
    private var state: State = .open
    private enum State { case open, committed, abandoned }

    private static let bufferByteCount = 1 << 20

    public init(destination: URL) throws {
        self.destination = destination
        let directory = destination.deletingLastPathComponent()
        temporaryURL = directory.appendingPathComponent(".\(destination.lastPathComponent).tmp-\(getpid())")
        // No O_EXCL: a temporary left by a crashed process that had the same pid is simply replaced.
        descriptor = open(temporaryURL.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if descriptor < 0 {
            throw StorageError.systemCall("creating a temporary file for", path: destination.path, errorNumber: errno)
        }
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.bufferByteCount, alignment: 64)
    }

    deinit {
        if state == .open { abandon() }
        buffer.deallocate()
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard state == .open else {
            throw StorageError(kind: .io, path: destination.path,
                               description: "writing '\(destination.path)' after it was committed or abandoned")
        }
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        hasher.update(bytes)
        if bufferedByteCount + bytes.count <= buffer.count {
            (buffer.baseAddress! + bufferedByteCount).copyMemory(from: source, byteCount: bytes.count)
            bufferedByteCount += bytes.count
            return
        }
        try flushBuffer()
        if bytes.count >= buffer.count {
            try writeOrAbandon(bytes)
        } else {
            buffer.baseAddress!.copyMemory(from: source, byteCount: bytes.count)
            bufferedByteCount = bytes.count
        }
    }

    /// Makes the new file durable and visible under `destination`. Returns the SHA-256 of every byte written.
    @discardableResult
    public func commit() throws -> SHA256Digest {
        guard state == .open else {
            throw StorageError(kind: .io, path: destination.path,
                               description: "committing '\(destination.path)' twice or after abandoning it")
        }
        try flushBuffer()
        // Write errors can surface only at fsync or close (e.g. delayed allocation, network filesystems).
        if fsync(descriptor) != 0 {
            let error = StorageError.systemCall("syncing", path: destination.path, errorNumber: errno)
            abandon()
            throw error
        }
        let closeResult = close(descriptor)
        descriptor = -1
        if closeResult != 0 {
            let error = StorageError.systemCall("closing", path: destination.path, errorNumber: errno)
            abandon()
            throw error
        }
        if rename(temporaryURL.path, destination.path) != 0 {
            let error = StorageError.systemCall("renaming to", path: destination.path, errorNumber: errno)
            abandon()
            throw error
        }
        state = .committed
        try syncDirectory(destination.deletingLastPathComponent())
        return hasher.finalize()
    }

    /// Closes and removes the temporary file; the destination keeps its previous contents. Idempotent.
    public func abandon() {
        guard state == .open else { return }
        state = .abandoned
        if descriptor >= 0 {
            close(descriptor)
            descriptor = -1
        }
        unlink(temporaryURL.path)
    }

    private func flushBuffer() throws {
        guard bufferedByteCount > 0 else { return }
        let count = bufferedByteCount
        bufferedByteCount = 0
        try writeOrAbandon(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
    }

    private func writeOrAbandon(_ bytes: UnsafeRawBufferPointer) throws {
        do {
            try writeAll(descriptor: descriptor, bytes: bytes, path: destination.path)
        } catch {
            abandon()
            throw error
        }
    }
}

/// Writes all of `bytes` to `descriptor`, retrying short writes and EINTR; the error names `path`.
func writeAll(descriptor: Int32, bytes: UnsafeRawBufferPointer, path: String) throws {
    guard var source = bytes.baseAddress else { return }
    var remaining = bytes.count
    while remaining > 0 {
        let writtenCount = Glibc.write(descriptor, source, remaining)
        if writtenCount < 0 {
            if errno == EINTR { continue }
            throw StorageError.systemCall("writing", path: path, errorNumber: errno)
        }
        if writtenCount == 0 {  // Should not happen for regular files; treat it as a full disk rather than spin.
            throw StorageError.systemCall("writing", path: path, errorNumber: ENOSPC)
        }
        source += writtenCount
        remaining -= writtenCount
    }
}

/// fsyncs a directory so that a rename or a new entry in it is durable.
func syncDirectory(_ directory: URL) throws {
    let descriptor = open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if descriptor < 0 {
        throw StorageError.systemCall("opening directory", path: directory.path, errorNumber: errno)
    }
    defer { close(descriptor) }
    // Some filesystems refuse fsync on directories (EINVAL); the rename is then as durable as it gets.
    if fsync(descriptor) != 0 && errno != EINVAL {
        throw StorageError.systemCall("syncing directory", path: directory.path, errorNumber: errno)
    }
}

/// Writes `bytes` to `url` atomically (see `AtomicFileWriter`) and returns their SHA-256.
@discardableResult
public func writeFileAtomically(_ url: URL, bytes: [UInt8]) throws -> SHA256Digest {
    let writer = try AtomicFileWriter(destination: url)
    try writer.write(bytes)
    return try writer.commit()
}
