import Data
import Distributed
import Foundation
@testable import Model
import Storage
import Testing
@testable import Training

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

// A file fuzzer run in-process: each case writes one mutated file into a scratch copy of a
// fixture folder and calls a loader on it. The loader must succeed or throw one of the
// project's errors with a one-line message; a crash, trap or abort ends the test process, and
// the report written on the way out names the case and the folder holding its files; a case
// that runs longer than `caseSecondsLimit` is reported and ends the process (a hang must not
// stall CI).

/// SplitMix64: a deterministic stream, so that a case is reproduced from its target and number.
struct FuzzRandom {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    /// Uniform in 0..<bound (bound > 0).
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }

    mutating func chance(_ probability: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < probability }

    mutating func pick<T>(_ choices: [T]) -> T { choices[below(choices.count)] }
}

/// A command line's refusal as bert-dist prints it after `error: ` (CommandLineEntry).
struct CommandLineRefusal: Error, CustomStringConvertible {
    let line: String
    var description: String { line }
}

/// One way of damaging a file: the new bytes and a short description of what was done, or nil
/// when it does not apply to these bytes (the runner then damages them byte-wise).
struct Mutation: Sendable {
    let name: String
    let apply: @Sendable (inout FuzzRandom, [UInt8]) -> (bytes: [UInt8], detail: String)?
}

/// A loader and the files it reads: `files` are written into a scratch folder (`fixtureFolder`
/// names it, so that a checkpoint fixture is named `checkpoint-N`), one of `mutated` is damaged
/// per case, `afterMutation` may adjust the folder (e.g. recompute a checkpoint's checksums so
/// that the damage reaches the readers behind them), and `load` reads the folder. To fuzz a new
/// loader (a tokenizer, an encoder family), add a target in FuzzTargets.swift.
struct FuzzTarget {
    let name: String
    let fixtureFolder: String
    /// Every file of the fixture: name -> original bytes.
    let files: [String: [UInt8]]
    /// The files to damage and the mutations that make sense for each.
    let mutated: [(file: String, mutations: [Mutation])]
    var afterMutation: ((URL, inout FuzzRandom) throws -> String?)? = nil
    /// Reads the folder; `variant` (the case number) may choose among the ways it is read.
    let load: (_ folder: URL, _ variant: Int) throws -> Void
}

/// What a run of one target did.
struct FuzzTally: CustomStringConvertible {
    var target = ""
    var cases = 0
    var loaded = 0
    var errors: [String: Int] = [:]
    /// Cases that crashed or hung (only counted in a child process per case: BERT_DIST_FUZZ_FORK).
    var crashed: [String] = []
    var seconds = 0.0
    var description: String {
        "\(target): \(cases) cases in \(String(format: "%.1f", seconds)) s, \(loaded) loaded, \(crashed.count) crashed or hung, errors "
            + errors.keys.sorted().map { "\($0) \(errors[$0]!)" }.joined(separator: ", ")
    }
}

enum FuzzRunner {
    /// A case taking longer than this ends the test process with a report (the tiny fixtures
    /// load in milliseconds; the margin is for a loaded CI machine).
    static let caseSecondsLimit: Double = 60

    /// Cases per target: `count`, times BERT_DIST_FUZZ_SCALE when set (the out-of-suite campaign).
    static func scaled(_ count: Int) -> Int {
        let scale = ProcessInfo.processInfo.environment["BERT_DIST_FUZZ_SCALE"].flatMap { Int($0) } ?? 1
        return count * max(scale, 1)
    }

    /// The campaign's seed: BERT_DIST_FUZZ_SEED when set, else 1 (the suite's cases). Another
    /// seed gives other cases, so a campaign can go beyond the ones already run.
    static var seed: UInt64 {
        ProcessInfo.processInfo.environment["BERT_DIST_FUZZ_SEED"].flatMap { UInt64($0) } ?? 1
    }

    /// Runs `count` cases of `target` (case i uses the stream seeded by `seed`, the target's name
    /// and i) and records an issue for every error that is not a one-line project error.
    @discardableResult
    static func run(_ target: FuzzTarget, cases count: Int, seed: UInt64 = seed) throws -> FuzzTally {
        let folder = try scratchFolder(for: target)
        defer { try? FileManager.default.removeItem(at: folder.deletingLastPathComponent()) }
        var tally = FuzzTally(target: target.name)
        let started = Date()
        for index in 0..<count {
            var random = FuzzRandom(seed: seed &* 0x1000_0000_01b3 ^ target.name.hashValueStable ^ UInt64(index) &* 0x9e37_79b9)
            let (file, mutations) = random.pick(target.mutated)
            let original = target.files[file]!
            var mutation = random.pick(mutations)
            var result = mutation.apply(&random, original)
            if result == nil {
                mutation = random.pick(ByteMutations.all)
                result = mutation.apply(&random, original)
            }
            let (bytes, detail) = result!
            try writeScratch(bytes, to: folder.appendingPathComponent(file))
            var description = "\(target.name) #\(index)\(seed == 1 ? "" : " (seed \(seed))"): \(file): \(mutation.name) \(detail)"
            if let adjust = target.afterMutation, let note = try adjust(folder, &random) { description += "; \(note)" }
            if let dump = ProcessInfo.processInfo.environment["BERT_DIST_FUZZ_DUMP"] {
                // For a campaign through the built binary: keep the case's files, run nothing.
                let copy = URL(fileURLWithPath: dump).appendingPathComponent("\(target.name.filter { $0.isLetter || $0.isNumber })-\(index)")
                try FileManager.default.createDirectory(at: copy, withIntermediateDirectories: true)
                try FileManager.default.copyItem(at: folder, to: copy.appendingPathComponent(target.fixtureFolder))
                try Data((description + "\n").utf8).write(to: copy.appendingPathComponent("case.txt"))
                tally.cases += 1
            } else {
                try check(target, folder: folder, variant: index, case: description, tally: &tally)
            }
            // Back to the fixture for the next case.
            for name in target.files.keys { try writeScratch(target.files[name]!, to: folder.appendingPathComponent(name)) }
        }
        tally.seconds = Date().timeIntervalSince(started)
        return tally
    }

    /// Runs one prepared case: `folder` already holds its files.
    static func check(_ target: FuzzTarget, folder: URL, variant: Int, case description: String, tally: inout FuzzTally) throws {
        tally.cases += 1
        if ProcessInfo.processInfo.environment["BERT_DIST_FUZZ_FORK"] != nil {
            return checkInChild(target, folder: folder, variant: variant, case: description, tally: &tally)
        }
        FuzzActivity.begin("\(description) (files in \(folder.path))")
        defer { FuzzActivity.end() }
        do {
            try target.load(folder, variant)
            tally.loaded += 1
        } catch {
            tally.errors[String(describing: type(of: error)), default: 0] += 1
            if let problem = problemWith(error) {
                Issue.record("\(description): \(problem)")
            }
        }
    }

    /// The out-of-suite campaign (BERT_DIST_FUZZ_FORK set): the case runs in a forked child, so
    /// that a crash or a hang is counted and the run goes on. The child only runs the loader
    /// (single-threaded, as a bert-dist rank 0 reads its files) and reports by exit status.
    static func checkInChild(_ target: FuzzTarget, folder: URL, variant: Int, case description: String, tally: inout FuzzTally) {
        let child = fork()
        if child == 0 {
            var status: Int32 = 0
            do { try target.load(folder, variant) } catch {
                status = 1
                if let problem = problemWith(error) {
                    let line = "fuzz: \(description): \(problem)\n"
                    _ = line.withCString { write(2, $0, strlen($0)) }
                    status = 2
                }
                if status == 1 { status = error is ModelError ? 10 : error is DataError ? 11 : error is StorageError ? 12 : error is CheckpointError ? 13 : 14 }
            }
            _exit(status)
        }
        var waited = 0.0, status: Int32 = 0
        while waitpid(child, &status, WNOHANG) == 0 {
            usleep(10_000)
            waited += 0.01
            if waited > caseSecondsLimit {
                kill(child, SIGKILL)
                waitpid(child, &status, 0)
                tally.crashed.append("hung: \(description)")
                return
            }
        }
        let signalNumber = status & 0x7f
        if signalNumber != 0 {
            tally.crashed.append("signal \(signalNumber): \(description)")
            return
        }
        let code = (status >> 8) & 0xff
        switch code {
        case 0: tally.loaded += 1
        case 2: tally.errors["bad message", default: 0] += 1; Issue.record("\(description): a bad error message (see the log)")
        case 10: tally.errors["ModelError", default: 0] += 1
        case 11: tally.errors["DataError", default: 0] += 1
        case 12: tally.errors["StorageError", default: 0] += 1
        case 13: tally.errors["CheckpointError", default: 0] += 1
        default: tally.errors["other", default: 0] += 1
        }
    }

    /// Why `error` is not an acceptable answer to a bad file, or nil when it is: one of the
    /// project's error types, one non-empty line of reasonable length.
    static func problemWith(_ error: Error) -> String? {
        // A collective phase's failure: the failing rank's error, or "a peer rank failed" on the others.
        if let agreed = error as? AgreedFailure { return agreed.error.flatMap(problemWith) }
        let known = error is ModelError || error is DataError || error is StorageError || error is CheckpointError || error is TrainingError
            || error is CommunicationError || error is CommandLineRefusal
        let text = "\(error)"
        if !known { return "\(type(of: error)) is not one of the project's errors: \(text.prefix(300))" }
        if text.isEmpty { return "empty error message" }
        if text.contains("\n") || text.contains("\r") { return "the message is not one line: \(text.debugDescription.prefix(300))" }
        if text.utf8.count > 2000 { return "a message of \(text.utf8.count) bytes: \(text.prefix(300))..." }
        return nil
    }

    /// A fresh folder `TMP/fuzz-UUID/<fixtureFolder>` holding the target's files.
    static func scratchFolder(for target: FuzzTarget) throws -> URL {
        let folder = scratchURL("fuzz-\(UUID().uuidString)")
            .appendingPathComponent(target.fixtureFolder)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for (name, bytes) in target.files { try writeScratch(bytes, to: folder.appendingPathComponent(name)) }
        return folder
    }
}

/// Writes a scratch file (replacing it) without the fsync of `Data.write`: a run writes thousands.
func writeScratch(_ bytes: [UInt8], to url: URL) throws {
    let descriptor = open(url.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard descriptor >= 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: url.path]) }
    defer { close(descriptor) }
    let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
    guard written == bytes.count else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: url.path]) }
}

/// The case being run, for the crash report (a signal handler writes it out, so it lives in a
/// fixed C buffer) and the hang watchdog.
enum FuzzActivity {
    private static let capacity = 8192
    nonisolated(unsafe) private static let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: capacity)
    nonisolated(unsafe) private static var length = 0
    nonisolated(unsafe) private static var startedAt: Double = 0
    private static let lock = NSLock()
    nonisolated(unsafe) private static var installed = false

    static func begin(_ description: String) {
        installOnce()
        let text = Array("fuzz case: \(description)\n".utf8.prefix(capacity - 1))
        lock.lock()
        length = 0
        for (index, byte) in text.enumerated() { buffer[index] = CChar(bitPattern: byte) }
        length = text.count
        startedAt = now()
        lock.unlock()
    }

    static func end() {
        lock.lock()
        length = 0
        startedAt = 0
        lock.unlock()
    }

    private static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    /// Called from the signal handler: the description, if a case is running.
    fileprivate static func writeReport(_ prefix: StaticString) {
        guard length > 0 else { return }
        _ = write(2, prefix.utf8Start, prefix.utf8CodeUnitCount)
        _ = write(2, buffer, length)
    }

    private static func installOnce() {
        lock.lock()
        defer { lock.unlock() }
        guard !installed else { return }
        installed = true
        // Traps (SIGILL, SIGTRAP), aborts, bad memory accesses: name the case, then die as before.
        for signalNumber in [SIGILL, SIGTRAP, SIGABRT, SIGSEGV, SIGBUS, SIGFPE] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { signalNumber in
                FuzzActivity.writeReport("\nA crash (trap, abort or bad access) while the fuzzer ran this case:\n")
                signal(signalNumber, SIG_DFL)
                raise(signalNumber)
            }
            action.sa_flags = 0
            sigaction(signalNumber, &action, nil)
        }
        // The watchdog: a case running past the limit is a hang; report it and end the process.
        let watchdog = Thread {
            while true {
                usleep(250_000)
                lock.lock()
                let overdue = startedAt > 0 && now() - startedAt > FuzzRunner.caseSecondsLimit
                lock.unlock()
                if overdue {
                    writeReport("\nThe fuzzer hung: this case ran longer than its limit:\n")
                    _exit(70)
                }
            }
        }
        watchdog.start()
    }
}
