import ArgumentParser
import Foundation

/// Where and how often train writes checkpoints, and resuming from them.
public struct CheckpointOptions: ParsableArguments, Sendable {
    @Option(name: .customLong("output"), help: ArgumentHelp("Folder for checkpoints (created if needed).", valueName: "dir"), transform: fileURL)
    public var folder: URL
    @Option(help: "Write a checkpoint every N steps (and at the end; 0: only at the end).")
    public var checkpointEvery = 500
    @Option(help: "Keep the K newest complete checkpoints.")
    public var keepCheckpoints = 3
    @Flag(help: "Continue from the newest complete checkpoint in --output.")
    public var resume = false
    @Flag(help: "Keep a copy of every checkpoint on a second host's disk too (the lowest rank not on rank 0's host writes it, at the same path), so that losing the head's disk loses no checkpoint; --resume finds the newest copy on any host.")
    public var checkpointMirror = false

    public init() {}

    public func validate() throws {
        if keepCheckpoints < 1 { throw ValidationError("--keep-checkpoints must be at least 1") }
        if checkpointEvery < 0 { throw ValidationError("--checkpoint-every must not be negative") }
    }
}
