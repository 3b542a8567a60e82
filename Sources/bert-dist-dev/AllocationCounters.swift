import Foundation
import Training

/// The counters of benchmarks/malloc_counter.so (heap allocations of the malloc family, anonymous
/// memory mappings), when it is preloaded; nil otherwise. Read without allocating.
struct AllocationCounters: StepCounter {
    private typealias Counter = @convention(c) () -> Int
    private typealias Switch = @convention(c) (Int32) -> Void
    private let heap: Counter, mappings: Counter, backtraces: Switch

    init?() {
        guard let program = dlopen(nil, RTLD_NOW),
              let heap = dlsym(program, "bert_dist_heap_allocations"),
              let mappings = dlsym(program, "bert_dist_memory_mappings"),
              let backtraces = dlsym(program, "bert_dist_allocation_backtraces") else { return nil }
        self.heap = unsafeBitCast(heap, to: Counter.self)
        self.mappings = unsafeBitCast(mappings, to: Counter.self)
        self.backtraces = unsafeBitCast(backtraces, to: Switch.self)
    }

    /// (heap allocations, memory mappings) so far.
    func read() -> SIMD2<Int> { SIMD2(heap(), mappings()) }

    /// Between trace(true) and trace(false) the counter prints a backtrace of every allocation
    /// to stderr if BERT_DIST_ALLOCATION_BACKTRACES=1 was set.
    func trace(_ on: Bool) { backtraces(on ? 1 : 0) }
}
