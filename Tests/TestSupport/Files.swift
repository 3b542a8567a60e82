import Foundation

// Helpers shared by the test targets (a library of the test suite only, never of bert-dist).

/// The one folder this test process keeps its temporary files in (bert-dist-tests-PID in the
/// system temporary directory), removed when the process exits: a test run leaves nothing
/// behind (the MiniLM tests alone write 260 MB). A crashed run leaves the folder.
public let testScratchRoot: URL = {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("bert-dist-tests-\(getpid())")
    try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    atexit {
        // Not from a forked child that exits this way: the folder is its parent's.
        if getpid() == testScratchOwner { try? FileManager.default.removeItem(at: testScratchRoot) }
    }
    return url
}()
private let testScratchOwner = getpid()

/// `name` inside `testScratchRoot` (nothing is created).
public func scratchURL(_ name: String) -> URL { testScratchRoot.appendingPathComponent(name) }

/// A fresh empty directory under `testScratchRoot`, unique per call.
public func makeTemporaryDirectory(_ label: String = #function) throws -> URL {
    let safeLabel = label.filter { $0.isLetter || $0.isNumber }
    let url = scratchURL("\(safeLabel)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Runs a program and returns (exit status, standard output).
@discardableResult
public func runProgram(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: output, as: UTF8.self))
}

/// Deterministic pseudo-random bytes (SplitMix64), so failures are reproducible.
public func pseudoRandomBytes(count: Int, seed: UInt64) -> [UInt8] {
    var state = seed
    var bytes = [UInt8]()
    bytes.reserveCapacity(count + 8)
    while bytes.count < count {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        z ^= z >> 31
        for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: z >> UInt64(shift))) }
    }
    return Array(bytes.prefix(count))
}

/// True when this process may mount a tmpfs (root with CAP_SYS_ADMIN): tests of full disks.
public let canMountTmpfs: Bool = {
    guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/bin/mount") else { return false }
    guard let probe = try? makeTemporaryDirectory("tmpfsprobe") else { return false }
    defer { try? FileManager.default.removeItem(at: probe) }
    guard let mounted = try? runProgram("/bin/mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", probe.path]),
          mounted.status == 0 else { return false }
    _ = try? runProgram("/bin/umount", [probe.path])
    return true
}()

/// A small tmpfs mounted on a fresh folder, unmounted (and removed) by `unmount()`.
public struct TmpfsMount {
    public let folder: URL

    public init(size: String, label: String = #function) throws {
        folder = try makeTemporaryDirectory(label)
        let mounted = try runProgram("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", folder.path])
        guard mounted.status == 0 else { throw CocoaError(.fileWriteNoPermission, userInfo: [NSLocalizedDescriptionKey: mounted.output]) }
    }

    public func unmount() {
        _ = try? runProgram("/bin/umount", [folder.path])
        try? FileManager.default.removeItem(at: folder)
    }
}
