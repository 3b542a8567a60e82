import Foundation
import Options
import Testing
import TestSupport
@testable import Training

/// A disk that fills up while a checkpoint is written: the run stops with a clear error, the
/// previous checkpoint stays complete and resumable, the broken one is removed.
@Suite struct FullDiskTests {
    /// A real full file system: a 1 MiB tmpfs.
    @Test(.enabled(if: canMountTmpfs, "needs root with CAP_SYS_ADMIN to mount a 1 MiB tmpfs"))
    func fullDiskLeavesThePreviousCheckpointIntact() throws {
        let tmpfs = try TmpfsMount(size: "1m")
        defer { tmpfs.unmount() }
        let mountPoint = tmpfs.folder
        // Each tiny checkpoint takes ~0.35 MB: the third one does not fit.
        let options = tinyOptions(output: mountPoint, ["--checkpoint-every", "1", "--keep-checkpoints", "10"])
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
