import Foundation
import Testing
import TestSupport
@testable import Storage

@Suite struct TensorBoardWriterTests {
    /// The events tools/make_storage_fixtures.py wrote into Fixtures/events_reference.tfevents with
    /// TensorBoard's own protos and RecordWriter.
    static let referenceEvents: [TensorBoardEvent] = [
        .init(wallTime: 1_700_000_000.25, step: 0, fileVersion: "brain.Event:2"),
        .init(wallTime: 1_700_000_001.5, step: 1, scalars: [.init(tag: "train/loss", value: 1.375)]),
        .init(wallTime: 1_700_000_002.75, step: 10, scalars: [.init(tag: "train/lr", value: 3.0517578125e-05)]),
        .init(wallTime: 1_700_000_003.0, step: 10,
              scalars: [.init(tag: "eval/accuracy", value: 0.875), .init(tag: "eval/loss", value: 0.4375)]),
        .init(wallTime: 1_700_000_004.125, step: 20,
              scalars: [.init(tag: "train/tokens_per_s", value: 12345.5), .init(tag: "train/grad_norm", value: -0.0)]),
    ]

    private func fixture(_ name: String) throws -> [UInt8] {
        try readFile(fixturesDirectory.appendingPathComponent(name))
    }

    /// Framing matches TensorBoard's RecordWriter byte for byte (empty, short and >255-byte payloads).
    @Test func framingMatchesTensorBoardRecordWriter() throws {
        let payloads: [[UInt8]] = [[], Array("hello tensorboard".utf8), (0..<300).map { UInt8($0 % 256) }]
        #expect(payloads.flatMap { TFRecord.frame($0) } == (try fixture("tfrecords_reference.bin")))
        #expect(try TFRecord.records(in: fixture("tfrecords_reference.bin"), file: "tfrecords_reference.bin") == payloads)
    }

    /// Events encoded with libprotobuf-c and framed by us equal TensorBoard's own file byte for byte.
    @Test func eventsMatchTensorBoardsEncoding() throws {
        let ours = Self.referenceEvents.flatMap { TFRecord.frame($0.encoded()) }
        #expect(ours == (try fixture("events_reference.tfevents")))
        let decoded = try TFRecord.records(in: fixture("events_reference.tfevents"), file: "events_reference.tfevents")
            .map { try TensorBoardEvent(decoding: $0, file: "events_reference.tfevents") }
        #expect(decoded == Self.referenceEvents)
        #expect(decoded[4].scalars[1].value.sign == .minus, "-0.0 keeps its sign")
    }

    @Test func writerFileReadsBackWithValidCRCs() throws {
        let directory = try makeTemporaryDirectory().appendingPathComponent("runs/tb")  // created by the writer
        defer { try? FileManager.default.removeItem(at: directory.deletingLastPathComponent().deletingLastPathComponent()) }
        let before = Date().timeIntervalSince1970
        let writer = try TensorBoardWriter(directory: directory)
        try writer.addScalar(tag: "train/loss", value: 0.693, step: 1, wallTime: 1_700_000_000)
        try writer.addScalar(tag: "train/lr", value: 2e-5, step: 1)
        try writer.addScalars([.init(tag: "eval/accuracy", value: 0.9), .init(tag: "eval/loss", value: 0.31)], step: 50)
        try writer.flush()
        writer.close()
        writer.close()  // idempotent
        #expect(throws: StorageError.self) { try writer.addScalar(tag: "x", value: 1, step: 2) }

        let name = writer.fileURL.lastPathComponent
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        #expect(name.hasPrefix("events.out.tfevents."))
        #expect(parts.count >= 6 && parts.last == "\(getpid())")
        if let seconds = Double(parts[3]) { #expect(abs(seconds - before) < 5) } else { Issue.record("no seconds in \(name)") }
        #expect(writer.fileURL.deletingLastPathComponent().standardizedFileURL.path == directory.standardizedFileURL.path)

        // readAll checks both CRCs of every record.
        let events = try tensorBoardEvents(in: writer.fileURL)
        #expect(events.count == 4)
        #expect(events[0].fileVersion == "brain.Event:2" && events[0].scalars.isEmpty)
        #expect(abs(events[0].wallTime - before) < 5)
        #expect(events[1] == .init(wallTime: 1_700_000_000, step: 1, scalars: [.init(tag: "train/loss", value: 0.693)]))
        #expect(events[2].step == 1 && events[2].scalars == [.init(tag: "train/lr", value: 2e-5)])
        #expect(abs(events[2].wallTime - before) < 5)
        #expect(events[3].step == 50 && events[3].scalars.map(\.tag) == ["eval/accuracy", "eval/loss"])
        #expect(events[3].scalars.map(\.value) == [0.9, 0.31])
    }

    @Test func twoWritersInOneDirectoryGetTwoFiles() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let first = try TensorBoardWriter(directory: directory)
        let second = try TensorBoardWriter(directory: directory)
        #expect(first.fileURL != second.fileURL)
        try first.addScalar(tag: "a", value: 1, step: 1)
        try second.addScalar(tag: "b", value: 2, step: 1)
        first.close()
        second.close()
        #expect(try tensorBoardEvents(in: first.fileURL).last?.scalars == [.init(tag: "a", value: 1)])
        #expect(try tensorBoardEvents(in: second.fileURL).last?.scalars == [.init(tag: "b", value: 2)])
    }

    /// On a full disk addScalar fails with a disk-full error, the file keeps only whole records,
    /// and writing resumes once there is room again.
    @Test(.enabled(if: canMountTmpfs, "needs root with CAP_SYS_ADMIN to mount a small tmpfs"))
    func fullDiskLeavesAValidFile() throws {
        let tmpfs = try TmpfsMount(size: "256k")
        defer { tmpfs.unmount() }
        let directory = tmpfs.folder

        let writer = try TensorBoardWriter(directory: directory)
        // Fill the rest of the filesystem.
        let filler = directory.appendingPathComponent("filler")
        let descriptor = open(filler.path, O_WRONLY | O_CREAT, 0o644)
        try #require(descriptor >= 0)
        let block = [UInt8](repeating: 1, count: 4096)
        while block.withUnsafeBytes({ write(descriptor, $0.baseAddress!, 4096) }) > 0 {}
        close(descriptor)

        // The event file's last page fills up within a few hundred records.
        var written = 0
        var failure: StorageError?
        while failure == nil && written < 10_000 {
            do {
                try writer.addScalar(tag: "train/loss", value: Float(written), step: written)
                written += 1
            } catch let error as StorageError {
                failure = error
            }
        }
        let error = try #require(failure)
        #expect(error.kind == .diskFull && error.description.contains(writer.fileURL.path))
        #expect(try tensorBoardEvents(in: writer.fileURL).count == 1 + written)

        try FileManager.default.removeItem(at: filler)
        try writer.addScalar(tag: "train/loss", value: -1, step: written)
        writer.close()
        let events = try tensorBoardEvents(in: writer.fileURL)
        #expect(events.count == 2 + written)
        #expect(events.last?.scalars == [.init(tag: "train/loss", value: -1)])
    }

    /// Any flipped byte is caught by one of the two CRCs; a truncated file is reported too.
    @Test func damagedRecordsAreReportedWithFileAndOffset() throws {
        let good = try fixture("events_reference.tfevents")
        let firstRecordLength = 12 + Int(good[0]) + 4
        for position in [0, 5, 8, 11, 12, 20, firstRecordLength - 1, firstRecordLength + 3, good.count - 1] {
            var damaged = good
            damaged[position] ^= 0x10
            #expect("byte \(position)") {
                _ = try TFRecord.records(in: damaged, file: "/tb/events.out.tfevents.1")
            } throws: { error in
                let error = error as? StorageError
                return error?.kind == .malformed && error!.description.hasPrefix("/tb/events.out.tfevents.1: TFRecord at byte ")
            }
        }
        #expect(throws: StorageError.self) { _ = try TFRecord.records(in: Array(good.dropLast(3)), file: "f") }
        #expect(throws: StorageError.self) { _ = try TFRecord.records(in: Array(good.prefix(7)), file: "f") }
    }
}
