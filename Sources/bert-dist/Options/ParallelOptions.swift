import ArgumentParser
import Distributed
import Training

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

    @Option(help: "Gradient bucket size in MB for the overlapped all-reduce (buckets also end at every layer).")
    var bucketMb = 25.0

    @Option(help: "What the gradient sum sends between ranks: none (fp32) or bf16 (half the bytes; the summed gradient is rounded to bf16, as PyTorch DDP's bf16_compress_hook).")
    var gradCompression: GradientCompression = .none

    @Option(help: "Milliseconds between the background progress thread's MPI polls while gradients travel (0: no thread).")
    var progressIntervalMs = 0.5

    @Flag(help: .hidden)
    var denseEmbeddingGradients = false   // send the embedding tables' gradients whole (for comparisons)

    func validate() throws {
        if let microBatchSize, microBatchSize < 1 { throw ValidationError("--micro-batch-size must be at least 1") }
        if !(bucketMb > 0) { throw ValidationError("--bucket-mb must be positive") }
        if !(progressIntervalMs >= 0) { throw ValidationError("--progress-interval-ms must not be negative") }
    }

    /// What RankRunner passes to MPICommunicator: nil for no progress thread.
    var progressIntervalSeconds: Double? { progressIntervalMs > 0 ? progressIntervalMs / 1000 : nil }

    /// The sync choices of these flags in `options`.
    func apply(to options: inout TrainingOptions) {
        options.microBatchSize = microBatchSize
        options.shardOptimizer = shardOptimizer
        options.bucketMegabytes = bucketMb
        options.gradientCompression = gradCompression
        options.sparseEmbeddingGradients = !denseEmbeddingGradients
    }
}

extension GradientCompression: ExpressibleByArgument {}
