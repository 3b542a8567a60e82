import Foundation
import Testing
@testable import Training

/// A disk that fills up while a checkpoint is written: the run stops with a clear error, the
/// previous checkpoint stays complete and resumable, the broken one is removed.
@Suite struct FullDiskTests {
    @Test func fullDiskLeavesThePreviousCheckpointIntact() throws {
        // A real full file system: a 1 MiB tmpfs (needs root; skipped with the reason otherwise).
        let mountPoint = temporaryDirectory("full-disk")
        let mounted = Process()
        mounted.executableURL = URL(fileURLWithPath: "/bin/mount")
        mounted.arguments = ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mountPoint.path]
        try mounted.run()
        mounted.waitUntilExit()
        guard mounted.terminationStatus == 0 else {
            print("skipped: cannot mount a tmpfs here (needs root)")
            return
        }
        defer {
            let unmount = Process()
            unmount.executableURL = URL(fileURLWithPath: "/bin/umount")
            unmount.arguments = [mountPoint.path]
            try? unmount.run()
            unmount.waitUntilExit()
        }
        // Each tiny checkpoint takes ~0.35 MB: the third one does not fit.
        var options = tinyOptions(output: mountPoint)
        options.checkpointEvery = 1
        options.keepCheckpoints = 10
        #expect {
            try train(options, ranks: 2, data: try syntheticData())
        } throws: { error in
            print("\(error)")
            return "\(error)".contains("disk is full") && "\(error)".contains("writing \(mountPoint.path)/checkpoint-")
        }
        let complete = CheckpointFolder.candidates(in: mountPoint).filter { (try? CheckpointFolder.verify($0.url)) != nil }
        let all = CheckpointFolder.candidates(in: mountPoint)
        #expect(!complete.isEmpty && complete.count == all.count, "incomplete folders must be removed: \(all.map(\.step))")
        let latest = try String(contentsOf: mountPoint.appendingPathComponent("latest"), encoding: .utf8)
        #expect(latest == "checkpoint-\(complete[0].step)\n")
    }
}
