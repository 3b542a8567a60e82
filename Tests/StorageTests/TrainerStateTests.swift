import Foundation
import Testing
import TestSupport
@testable import Storage

@Suite struct TrainerStateTests {
    /// The values tools/make_storage_fixtures.py encodes into Fixtures/trainer_state_reference.pb
    /// with the Python protobuf runtime (the reference encoder).
    static let referenceState = TrainerState(
        formatVersion: 1, step: 1500, epoch: 2, samplesConsumedInEpoch: 3072,
        totalSteps: 3750, warmupSteps: 375, seed: 42,
        worldSize: 4, shardOptimizer: true, parameterCount: 22_713_604,
        optimizerShards: (0..<4).map { TrainerState.ShardRange(rank: $0, start: $0 * 5_678_401, count: 5_678_401) },
        optimizer: .init(kind: "adamw", learningRate: 2e-5, beta1: 0.9, beta2: 0.999, epsilon: 1e-8,
                         weightDecay: 0.01, maxGradNorm: 1.0, schedule: "linear"),
        currentLearningRate: 1.2e-5,
        globalBatchSize: 32, microBatchSize: 4, maxSequenceLength: 128,
        trainDataFingerprint: "sha256:5d41402abc4b2a76b9719d911017c592",
        recentMetrics: [.init(name: "train/loss", value: 0.3125, step: 1500),
                        .init(name: "eval/accuracy", value: 0.90625, step: 1500)],
        files: [
            // SHA-256 (Python hashlib) of the 11 bytes "model bytes" and of the 2 bytes "{}".
            .init(name: "model.safetensors", sizeBytes: 11,
                  sha256: SHA256Digest(hex: "9cb7487000bc86ac36ce83c4acfabe8878552be99572a6770f65ab1d048a5c48")!),
            .init(name: "config.json", sizeBytes: 2,
                  sha256: SHA256Digest(hex: "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")!),
        ],
        createdUnixSeconds: 1_700_000_123.5, bertDistVersion: "0.1.0")

    private var referenceBytes: [UInt8] {
        get throws { try readFile(fixturesDirectory.appendingPathComponent("trainer_state_reference.pb")) }
    }

    @Test func decodesTheReferenceEncoding() throws {
        let decoded = try TrainerState(decoding: try referenceBytes, file: "trainer_state_reference.pb")
        #expect(decoded == Self.referenceState)
    }

    /// Our libprotobuf-c encoding is byte-for-byte what the Python protobuf runtime produces.
    @Test func encodesLikeTheReferenceEncoder() throws {
        #expect(Self.referenceState.encoded() == (try referenceBytes))
    }

    @Test func roundTripsThroughAFile() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        var state = Self.referenceState
        state.shardOptimizer = false
        state.optimizerShards = [.init(rank: 0, start: 0, count: state.parameterCount)]
        state.optimizer.kind = "adam"
        state.trainDataFingerprint = "ünïcödé ✓"
        state.recentMetrics.append(.init(name: "train/grad_norm", value: -.infinity, step: -1))
        state.seed = -7
        state.optimizerStep = 1498
        state.parameterLayout = "bert-layout-v1:8a3f"
        state.bestMetric = .init(name: "f1_macro", value: 0.8125, step: 1250, greaterIsBetter: true)
        state.evaluationsWithoutImprovement = 2
        let url = directory.appendingPathComponent(TrainerState.fileName)
        let digest = try state.write(to: url)
        #expect(digest == (try SHA256.hash(fileAt: url)))
        #expect(try TrainerState(contentsOf: url) == state)

        // Defaults and empty collections survive too.
        let empty = TrainerState()
        #expect(try TrainerState(decoding: empty.encoded(), file: "x") == empty)
    }

    /// Every proper prefix of a valid file (a truncated write) and garbage give an error naming the file.
    @Test func truncatedOrGarbageBytesAreAClearError() throws {
        let bytes = Self.referenceState.encoded()
        let file = "/out/checkpoint-1500/trainer_state.pb"
        for length in 0..<bytes.count {
            #expect("prefix of \(length) bytes") {
                _ = try TrainerState(decoding: Array(bytes.prefix(length)), file: file)
            } throws: { error in
                let error = error as? StorageError
                return error?.kind == .malformed && error!.description.hasPrefix(file)
            }
        }
        for garbage: [UInt8] in [[0xff, 0xff, 0xff, 0xff], Array("not a protobuf at all".utf8),
                                 pseudoRandomBytes(count: 500, seed: 11), [UInt8](repeating: 0, count: 64)] {
            #expect(throws: StorageError.self) { _ = try TrainerState(decoding: garbage, file: file) }
        }
    }

    @Test func checksumOfTheWrongLengthIsRejected() throws {
        // A third `files` entry (field 19, wire type 2: tag bytes 0x9a 0x01) whose sha256 has 31 bytes.
        var bytes = Self.referenceState.encoded()
        let entry: [UInt8] = [0x0a, 0x01, UInt8(ascii: "x"), 0x1a, 31] + [UInt8](repeating: 7, count: 31)
        bytes += [0x9a, 0x01, UInt8(entry.count)] + entry
        #expect {
            _ = try TrainerState(decoding: bytes, file: "state.pb")
        } throws: { error in
            (error as? StorageError)?.description.contains(#"the SHA-256 of "x" has 31 bytes, not 32"#) == true
        }
    }

    /// The file checks itself: any flipped bit (a step number, a file's checksum) is an error.
    @Test func everyFlippedBitIsDetected() throws {
        let bytes = Self.referenceState.encoded()
        for index in bytes.indices {
            for bit in [0, 3, 7] {
                var damaged = bytes
                damaged[index] ^= UInt8(1 << bit)
                #expect(throws: StorageError.self, "byte \(index) bit \(bit)") {
                    _ = try TrainerState(decoding: damaged, file: "state.pb")
                }
            }
        }
    }

    @Test func unknownFormatVersionIsRejected() throws {
        var state = Self.referenceState
        state.formatVersion = 2
        #expect {
            _ = try TrainerState(decoding: state.encoded(), file: "state.pb")
        } throws: { error in
            (error as? StorageError)?.description.contains("format version 2 is not supported") == true
        }
    }

    @Test func missingFileErrorNamesTheFile() {
        let url = URL(fileURLWithPath: "/nonexistent-storage-test/checkpoint-7/trainer_state.pb")
        #expect {
            _ = try TrainerState(contentsOf: url)
        } throws: { error in
            let error = error as? StorageError
            return error?.kind == .io && error!.description.contains(url.path)
        }
    }
}
