import ArgumentParser

/// --threads: kernel threads per rank (every command that computes).
struct ThreadOptions: ParsableArguments {
    @Option(help: "Threads per rank for the matrix products and kernels (default: cores per node / ranks per node).")
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }
}

/// How a training step is spread over ranks and micro-batches (train, bench).
struct ParallelOptions: ParsableArguments {
    @OptionGroup var threads: ThreadOptions

    @Option(help: "Per-rank forward/backward size; gradient accumulation fills the rest of the rank's share.")
    var microBatchSize: Int?

    @Flag(help: "ZeRO-1: each rank keeps and updates 1/N of the Adam state.")
    var shardOptimizer = false

    @Option(help: "Gradient bucket size in MB for the overlapped all-reduce.")
    var bucketMb = 25.0

    func validate() throws {
        if let microBatchSize, microBatchSize < 1 { throw ValidationError("--micro-batch-size must be at least 1") }
        if !(bucketMb > 0) { throw ValidationError("--bucket-mb must be positive") }
    }
}
