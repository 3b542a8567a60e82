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
        // Sizes come from files checked before (SizeChecks.swift); an impossible one still fails
        // as out of memory, not as an arithmetic trap.
        let (bytes, overflow) = max(count, 1).multipliedReportingOverflow(by: MemoryLayout<Float>.stride)
        if overflow { fatalError("out of memory allocating \(count) floats") }
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

/// Hands out the offsets of buffers in one flat arena, in the order they are declared: every
/// buffer starts 64-byte aligned (a multiple of 16 floats, whole vectors for the kernels).
/// The parameter layout and the activation buffers are each declared once through a planner,
/// so no second list has to repeat their order or sizes.
struct ArenaPlanner {
    /// Floats handed out so far (with alignment padding): the arena size once all are declared.
    private(set) var count = 0

    /// The offset of a new buffer of `floats` floats.
    mutating func take(_ floats: Int) -> Int { take(stacked: 1, of: floats) }

    /// The offset of `parts` buffers of `floats` floats each stored back to back, with no
    /// padding between them (e.g. the query, key and value weights: one (3C, C) matrix).
    mutating func take(stacked parts: Int, of floats: Int) -> Int {
        let offset = count
        count = (count + parts * floats + 15) / 16 * 16
        return offset
    }
}
