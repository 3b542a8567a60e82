import Model

/// Placeholder until Data's sampler lands: one shuffled order per epoch from (seed, epoch).
struct EpochOrder {
    let count: Int
    let seed: UInt64
    private var cachedEpoch = -1
    private var cached: [Int] = []

    init(count: Int, seed: UInt64) {
        self.count = count
        self.seed = seed
    }

    mutating func order(epoch: Int) -> [Int] {
        if epoch != cachedEpoch {
            var state = seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(epoch)
            func next() -> UInt64 {
                state &+= 0x9E37_79B9_7F4A_7C15
                var z = state
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                return z ^ (z >> 31)
            }
            cached = Array(0..<count)
            if count > 1 {
                for i in stride(from: count - 1, to: 0, by: -1) { cached.swapAt(i, Int(next() % UInt64(i + 1))) }
            }
            cachedEpoch = epoch
        }
        return cached
    }
}
