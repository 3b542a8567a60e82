import Foundation

/// The whole contents of a file; errors name the file and give the system's reason.
public func readFile(_ url: URL) throws -> [UInt8] {
    let path = url.path
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    if descriptor < 0 { throw StorageError.systemCall("opening", path: path, errorNumber: errno) }
    defer { close(descriptor) }
    var status = stat()
    if fstat(descriptor, &status) != 0 { throw StorageError.systemCall("reading", path: path, errorNumber: errno) }
    var bytes = [UInt8]()
    bytes.reserveCapacity(Int(status.st_size))
    let chunkByteCount = 1 << 20
    var chunk = [UInt8](repeating: 0, count: chunkByteCount)
    while true {
        let readCount = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress!, chunkByteCount) }
        if readCount < 0 {
            if errno == EINTR { continue }
            throw StorageError.systemCall("reading", path: path, errorNumber: errno)
        }
        if readCount == 0 { return bytes }
        bytes.append(contentsOf: chunk[0..<readCount])
    }
}
