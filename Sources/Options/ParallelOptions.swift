import ArgumentParser
import Distributed

extension GradientCompression: ExpressibleByArgument {}

/// --threads: threads per rank, the size of each rank's kernel team (every command that computes).
public struct ThreadOptions: ParsableArguments, Sendable {
    @Option(help: "Threads per rank, the size of each rank's kernel team (default: the cores the rank is bound to, else cores per node / ranks per node).")
    public var threads: Int?

    public init() {}

    public func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }
}

/// How a training step is spread over ranks and micro-batches, and how its gradients travel
/// (train, bench).
public struct ParallelOptions: ParsableArguments, Sendable {
    @Option(help: "Per-rank forward/backward size; gradient accumulation fills the rest of the rank's share.")
    public var microBatchSize: Int?

    @Flag(help: "ZeRO-1: each rank keeps and updates 1/N of the Adam state.")
    public var shardOptimizer = false

    @Option(name: .customLong("bucket-mb"), help: "Gradient bucket size in MB for the overlapped all-reduce (buckets also end at every layer).")
    public var bucketMegabytes = 25.0

    @Option(name: .customLong("grad-compression"), help: "What the gradient sum sends between ranks: none (fp32) or bf16 (half the bytes; the summed gradient is rounded to bf16, as PyTorch DDP's bf16_compress_hook).")
    public var gradientCompression: GradientCompression = .none

    @Option(name: .customLong("progress-interval-ms"), help: "Milliseconds between the background progress thread's MPI polls while gradients travel (0: no thread).")
    public var progressIntervalMilliseconds = 2.0

    public init() {}

    public func validate() throws {
        if let microBatchSize, microBatchSize < 1 { throw ValidationError("--micro-batch-size must be at least 1") }
        if !(bucketMegabytes > 0) { throw ValidationError("--bucket-mb must be positive") }
        if !(progressIntervalMilliseconds >= 0) { throw ValidationError("--progress-interval-ms must not be negative") }
    }

    /// What the MPI communicator's background progress thread polls at: nil for no thread.
    public var progressIntervalSeconds: Double? { progressIntervalMilliseconds > 0 ? progressIntervalMilliseconds / 1000 : nil }
}
