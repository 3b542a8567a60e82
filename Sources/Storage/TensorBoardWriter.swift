import CProto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One record of a TensorBoard event file: schema `proto/tensorboard_event.proto`
/// (TensorBoard's `Event` with either `file_version` or a `Summary` of scalar values).
public struct TensorBoardEvent: Equatable, Sendable {
    public struct Scalar: Equatable, Sendable {
        public var tag: String
        public var value: Float
        public init(tag: String, value: Float) {
            self.tag = tag
            self.value = value
        }
    }

    /// Seconds since 1970-01-01 UTC.
    public var wallTime: Double
    public var step: Int
    /// Set in the first record of a file only ("brain.Event:2").
    public var fileVersion: String?
    public var scalars: [Scalar]

    public init(wallTime: Double, step: Int, fileVersion: String? = nil, scalars: [Scalar] = []) {
        self.wallTime = wallTime
        self.step = step
        self.fileVersion = fileVersion
        self.scalars = scalars
    }

    /// The protobuf encoding of the event (one record's payload).
    public func encoded() -> [UInt8] {
        let memory = CMemory()
        defer { memory.freeAll() }
        var event = Bertdist__Tensorboard__Event()
        bertdist__tensorboard__event__init(&event)
        event.wall_time = wallTime
        event.step = Int64(step)
        if let fileVersion {
            event.what_case = BERTDIST__TENSORBOARD__EVENT__WHAT_FILE_VERSION
            event.file_version = memory.string(fileVersion)
        } else if !scalars.isEmpty {
            let values = memory.allocate(Bertdist__Tensorboard__Summary__Value.self, count: scalars.count)
            let valuePointers = memory.allocate(UnsafeMutablePointer<Bertdist__Tensorboard__Summary__Value>?.self,
                                                count: scalars.count)
            for (index, scalar) in scalars.enumerated() {
                bertdist__tensorboard__summary__value__init(values + index)
                values[index].tag = memory.string(scalar.tag)
                values[index].value_case = BERTDIST__TENSORBOARD__SUMMARY__VALUE__VALUE_SIMPLE_VALUE
                values[index].simple_value = scalar.value
                valuePointers[index] = values + index
            }
            let summary = memory.allocate(Bertdist__Tensorboard__Summary.self, count: 1)
            bertdist__tensorboard__summary__init(summary)
            summary.pointee.n_value = scalars.count
            summary.pointee.value = valuePointers
            event.what_case = BERTDIST__TENSORBOARD__EVENT__WHAT_SUMMARY
            event.summary = summary
        }
        let byteCount = bertdist__tensorboard__event__get_packed_size(&event)
        var bytes = [UInt8](repeating: 0, count: byteCount)
        let packedCount = bytes.withUnsafeMutableBufferPointer { buffer in
            bertdist__tensorboard__event__pack(&event, buffer.baseAddress)
        }
        precondition(packedCount == byteCount, "protobuf-c packed \(packedCount) bytes, expected \(byteCount)")
        return bytes
    }

    /// Decodes one record's payload. Values of kinds other than simple scalars are skipped.
    public init(decoding bytes: [UInt8], file: String) throws {
        let unpacked = bytes.withUnsafeBufferPointer { buffer in
            bertdist__tensorboard__event__unpack(nil, buffer.count, buffer.baseAddress)
        }
        guard let unpacked else {
            throw StorageError(kind: .malformed, path: file, description: "\(file): a record is not a valid TensorBoard Event")
        }
        defer { bertdist__tensorboard__event__free_unpacked(unpacked, nil) }
        let event = unpacked.pointee
        var fileVersion: String?
        var scalars: [Scalar] = []
        switch event.what_case {
        case BERTDIST__TENSORBOARD__EVENT__WHAT_FILE_VERSION:
            fileVersion = event.file_version.map { String(cString: $0) } ?? ""
        case BERTDIST__TENSORBOARD__EVENT__WHAT_SUMMARY:
            if let summary = event.summary?.pointee {
                for index in 0..<summary.n_value {
                    guard let value = summary.value[index]?.pointee,
                          value.value_case == BERTDIST__TENSORBOARD__SUMMARY__VALUE__VALUE_SIMPLE_VALUE else { continue }
                    scalars.append(Scalar(tag: value.tag.map { String(cString: $0) } ?? "", value: value.simple_value))
                }
            }
        default:
            break
        }
        self.init(wallTime: event.wall_time, step: Int(event.step), fileVersion: fileVersion, scalars: scalars)
    }
}

/// Writes scalars to a TensorBoard event file `events.out.tfevents.<unix seconds>.<hostname>.<pid>`.
///
/// Each `addScalar` appends one framed record with a single write, so the file is readable by
/// TensorBoard while training runs and a killed process loses nothing already added. `flush()`
/// makes the file durable (fsync). Only rank 0 writes one. Not thread-safe.
public final class TensorBoardWriter {
    public static let fileVersion = "brain.Event:2"

    public let fileURL: URL
    private var descriptor: Int32
    /// Bytes of complete records in the file; a failed write is cut back to this.
    private var fileByteCount = 0

    /// Creates `directory` (and parents) if needed and a new event file in it, whose first record
    /// is the `file_version` event.
    public init(directory: URL) throws {
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw StorageError(kind: .io, path: directory.path,
                               description: "creating the TensorBoard directory '\(directory.path)' failed: \(error.localizedDescription)")
        }
        let seconds = Int(Date().timeIntervalSince1970)
        let baseName = "events.out.tfevents.\(seconds).\(Self.hostName()).\(getpid())"
        // O_EXCL never appends to another writer's file; a second writer in the same second and
        // process gets a numbered suffix (TensorBoard reads any name containing "tfevents").
        var suffix = 0
        while true {
            let name = suffix == 0 ? baseName : "\(baseName).\(suffix)"
            let candidate = directory.appendingPathComponent(name)
            let opened = open(candidate.path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0o644)
            if opened >= 0 {
                fileURL = candidate
                descriptor = opened
                break
            }
            if errno != EEXIST {
                throw StorageError.systemCall("creating the TensorBoard event file", path: candidate.path, errorNumber: errno)
            }
            suffix += 1
        }
        do {
            try writeEvent(TensorBoardEvent(wallTime: Date().timeIntervalSince1970, step: 0, fileVersion: Self.fileVersion))
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    /// Appends one scalar, e.g. `addScalar(tag: "train/loss", value: 0.42, step: 100)`.
    public func addScalar(tag: String, value: Float, step: Int, wallTime: Double = Date().timeIntervalSince1970) throws {
        try writeEvent(TensorBoardEvent(wallTime: wallTime, step: step, scalars: [.init(tag: tag, value: value)]))
    }

    /// Appends one event holding several scalars of the same step.
    public func addScalars(_ scalars: [TensorBoardEvent.Scalar], step: Int,
                           wallTime: Double = Date().timeIntervalSince1970) throws {
        try writeEvent(TensorBoardEvent(wallTime: wallTime, step: step, scalars: scalars))
    }

    /// Makes everything written so far durable on disk.
    public func flush() throws {
        guard descriptor >= 0 else { return }
        if fsync(descriptor) != 0 {
            throw StorageError.systemCall("syncing", path: fileURL.path, errorNumber: errno)
        }
    }

    /// Syncs (best effort) and closes the file; later writes throw. Idempotent.
    public func close() {
        guard descriptor >= 0 else { return }
        _ = fsync(descriptor)
        _ = Glibc.close(descriptor)
        descriptor = -1
    }

    private func writeEvent(_ event: TensorBoardEvent) throws {
        guard descriptor >= 0 else {
            throw StorageError(kind: .io, path: fileURL.path, description: "writing to '\(fileURL.path)' after it was closed")
        }
        let record = TFRecord.frame(event.encoded())
        do {
            try record.withUnsafeBytes { try writeAll(descriptor: descriptor, bytes: $0, path: fileURL.path) }
        } catch {
            // Drop a partly written record so later records still follow a valid one.
            _ = ftruncate(descriptor, off_t(fileByteCount))
            throw error
        }
        fileByteCount += record.count
    }

    private static func hostName() -> String {
        var name = [CChar](repeating: 0, count: 256)
        guard gethostname(&name, name.count - 1) == 0 else { return "localhost" }
        return name.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}
