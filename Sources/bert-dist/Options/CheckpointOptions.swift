import ArgumentParser

/// Where and how often train writes checkpoints, and resuming from them.
struct CheckpointOptions: ParsableArguments {
    @Option(help: "Folder for checkpoints (created if needed).")
    var output: String
    @Option(help: "Write a checkpoint every N steps (and at the end; 0: only at the end).")
    var checkpointEvery = 500
    @Option(help: "Keep the K newest complete checkpoints.")
    var keepCheckpoints = 3
    @Flag(help: "Continue from the newest complete checkpoint in --output.")
    var resume = false

    func validate() throws {
        if keepCheckpoints < 1 { throw ValidationError("--keep-checkpoints must be at least 1") }
        if checkpointEvery < 0 { throw ValidationError("--checkpoint-every must not be negative") }
    }
}
