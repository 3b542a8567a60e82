import Foundation

/// One contiguous, page-aligned, zero-initialised buffer of Floats: parameters, gradients, Adam moments and
/// activations each live in one of these (llm.c's "one layout, four arenas").
/// Freed when the arena is deinitialised; views handed out must not outlive it.
public final class FloatArena: @unchecked Sendable {
    // @unchecked Sendable: the arena is a fixed allocation; who writes which range when is
    // decided by the training loop (one writer per range at a time), not by this class.
    public let base: UnsafeMutablePointer<Float>
    public let count: Int

    /// A zero-filled arena whose pages are all committed now (parameters, gradients, moments:
    /// every float is used each step, and faulting pages in during a step costs a TLB
    /// shootdown per page on a multi-threaded process).
    public convenience init(count: Int) { self.init(count: count, lazilyCommitted: false) }

    /// With `lazilyCommitted`, pages become resident only once touched: an activation arena
    /// sized for the longest possible micro-batch costs memory only for the rows real batches use.
    init(count: Int, lazilyCommitted: Bool) {
        self.count = count
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        // Anonymous pages from the kernel: zero-filled and page-aligned.
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | (lazilyCommitted ? 0 : MAP_POPULATE)
        guard let raw = mmap(nil, bytes, PROT_READ | PROT_WRITE, flags, -1, 0),
              raw != MAP_FAILED else {
            fatalError("out of memory allocating \(bytes) bytes (mmap: \(String(cString: strerror(errno))))")
        }
        mappedBytes = bytes
        base = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    private let mappedBytes: Int

    deinit { munmap(base, mappedBytes) }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: base, count: count) }

    public func zero() { base.update(repeating: 0, count: count) }

    public func zero(_ range: Range<Int>) { (base + range.lowerBound).update(repeating: 0, count: range.count) }

    public func copy(from other: FloatArena) {
        precondition(other.count == count)
        base.update(from: other.base, count: count)
    }

    public subscript(range: Range<Int>) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: base + range.lowerBound, count: range.count)
    }
}
