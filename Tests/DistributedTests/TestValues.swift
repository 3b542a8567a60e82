/// Values each simulated rank writes into its buffers: a Float derived from (rank, index) with a
/// random sign, mantissa and an exponent spread over 2^-8 ... 2^8, so that adding the same numbers
/// in another order usually changes the rounded result (which lets the tests see summation order).
func testValue(rank: Int, index: Int, salt: UInt64 = 0) -> Float {
    var state = UInt64(truncatingIfNeeded: rank) &* 0x9E37_79B9_7F4A_7C15
        ^ UInt64(truncatingIfNeeded: index) &* 0xBF58_476D_1CE4_E5B9 ^ salt
    // splitmix64 finalizer
    state = (state ^ (state >> 30)) &* 0xBF58_476D_1CE4_E5B9
    state = (state ^ (state >> 27)) &* 0x94D0_49BB_1331_11EB
    state ^= state >> 31
    let sign = UInt32(state & 1) << 31
    let exponent = UInt32(127 - 8 + Int((state >> 1) % 17)) << 23
    let mantissa = UInt32((state >> 8) & 0x7F_FFFF)
    return Float(bitPattern: sign | exponent | mantissa)
}

/// The sum over ranks 0, 1, ..., worldSize-1 of testValue, added in that order with Float32 rounding.
func rankOrderSum(worldSize: Int, index: Int, salt: UInt64 = 0) -> Float {
    var sum = testValue(rank: 0, index: index, salt: salt)
    for rank in 1 ..< worldSize {
        sum += testValue(rank: rank, index: index, salt: salt)
    }
    return sum
}

/// A heap Float buffer owned by one simulated rank for the length of a test closure.
final class FloatArena {
    let buffer: UnsafeMutableBufferPointer<Float>
    init(count: Int, fill: (Int) -> Float) {
        buffer = .allocate(capacity: count)
        for index in 0 ..< count { buffer[index] = fill(index) }
    }
    deinit { buffer.deallocate() }
    var values: [Float] { Array(buffer) }
}
