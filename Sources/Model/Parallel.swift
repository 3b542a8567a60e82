import Dispatch

/// How many threads our own kernels (LayerNorm, GELU, softmax, attention, AdamW) use; BLAS has
/// its own setting (see BLASSetup). Set once at start-up, before any step runs.
nonisolated(unsafe) public var kernelThreadCount = 1

/// Runs `body(chunk, range)` over `0..<count` split into at most `kernelThreadCount` contiguous
/// chunks of at least `minimumChunk` items; `chunk` (0 ..< kernelThreadCount) tells which
/// per-thread scratch a chunk may use. Runs inline when one chunk is enough (small work is not
/// worth a thread hop). `body` must only write to the part of the output its range owns.
@inline(__always)
func parallelChunks(_ count: Int, minimumChunk: Int, _ body: (_ chunk: Int, _ range: Range<Int>) -> Void) {
    let chunks = min(kernelThreadCount, max(1, count / max(minimumChunk, 1)))
    if chunks <= 1 {
        body(0, 0..<count)
        return
    }
    withoutActuallyEscaping(body) { body in
        let shared = UncheckedSendable(body)
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            let begin = count * chunk / chunks, end = count * (chunk + 1) / chunks
            shared.value(chunk, begin..<end)
        }
    }
}

/// Lets a kernel closure that captures raw pointers cross into Dispatch's @Sendable closure:
/// parallelChunks gives each chunk a disjoint output range and waits for all chunks, so the
/// captured buffers are never written concurrently at the same place nor outlive the call.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
