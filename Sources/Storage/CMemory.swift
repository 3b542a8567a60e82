import CProto
import Foundation

/// C memory handed to protobuf-c structs while a message is packed: every string and array is
/// allocated here with malloc and freed together by `freeAll()` once the bytes are out.
///
/// Use as `let memory = CMemory(); defer { memory.freeAll() }`.
final class CMemory {
    private var allocations: [UnsafeMutableRawPointer] = []

    /// A NUL-terminated copy of `string`.
    func string(_ string: String) -> UnsafeMutablePointer<CChar> {
        let copy = strdup(string)!
        allocations.append(UnsafeMutableRawPointer(copy))
        return copy
    }

    /// Uninitialised room for `count` values of `T` (at least one, so the pointer is never null).
    func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let raw = malloc(MemoryLayout<T>.stride * max(count, 1))!
        allocations.append(raw)
        return raw.bindMemory(to: T.self, capacity: max(count, 1))
    }

    /// A copy of `bytes` as protobuf-c binary data.
    func binary(_ bytes: [UInt8]) -> ProtobufCBinaryData {
        let data = allocate(UInt8.self, count: bytes.count)
        bytes.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { data.update(from: base, count: bytes.count) }
        }
        return ProtobufCBinaryData(len: bytes.count, data: data)
    }

    func freeAll() {
        for allocation in allocations { free(allocation) }
        allocations.removeAll()
    }
}
