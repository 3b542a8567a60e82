import Foundation
import Testing
import TestSupport

/// Where end-to-end tests find the programs they run, and a small process runner.
///
/// The `bert-dist` binary: SwiftPM builds the `bert-dist` executable before this test target (the
/// target depends on it) into the same products directory as the test runner, e.g.
/// `.build-NAME/x86_64-unknown-linux-gnu/debug/` holds both `bert-dist` and
/// `bert-distPackageTests.xctest`. The runner is found through /proc/self/exe (robust against
/// relative paths and any --scratch-path), then Bundle.main, then argv[0]. `BERT_DIST_BIN`
/// overrides all of them (for testing an installed or release binary).
///
///     let binary = try BinaryLocator.bertDist()
///     let run = try RunningProcess(BinaryLocator.mpirun(), BinaryLocator.mpirunTestOptions + ["-n", "2", binary.path, "train", ...])
///     let status = run.waitForExit(timeoutSeconds: 60)
enum BinaryLocator {
    struct NotFound: Error, CustomStringConvertible {
        var description: String
    }

    /// The bert-dist executable to test.
    static func bertDist() throws -> URL {
        if let override = ProcessInfo.processInfo.environment["BERT_DIST_BIN"], !override.isEmpty {
            let url = URL(fileURLWithPath: override)
            guard FileManager.default.isExecutableFile(atPath: url.path) else {
                throw NotFound(description: "BERT_DIST_BIN=\(override) is not an executable file")
            }
            return url
        }
        var searched: [String] = []
        for directory in productsDirectoryCandidates() {
            let candidate = directory.appendingPathComponent("bert-dist")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            searched.append(directory.path)
        }
        throw NotFound(description: "bert-dist binary not found next to the test runner (searched \(searched.joined(separator: ", "))); "
            + "build it with `swift build` or set BERT_DIST_BIN")
    }

    /// The development tools (bert-dist-dev: bench-comm, soak), built next to bert-dist;
    /// `BERT_DIST_DEV_BIN` overrides.
    static func bertDistDev() throws -> URL {
        let environment = ProcessInfo.processInfo.environment
        let override = environment["BERT_DIST_DEV_BIN"].flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0) }
        let url = try override ?? bertDist().deletingLastPathComponent().appendingPathComponent("bert-dist-dev")
        guard FileManager.default.isExecutableFile(atPath: url.path) else {
            throw NotFound(description: "bert-dist-dev not found at \(url.path); build it with `swift build` or set BERT_DIST_DEV_BIN")
        }
        return url
    }

    /// Directories that may hold the test runner and the products built with it.
    static func productsDirectoryCandidates() -> [URL] {
        var candidates: [URL] = []
        if let runner = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            candidates.append(URL(fileURLWithPath: runner).deletingLastPathComponent())
        }
        // On macOS the runner is inside an .xctest bundle; its parent is the products directory.
        candidates.append(Bundle.main.bundleURL.deletingLastPathComponent())
        candidates.append(Bundle.main.bundleURL)
        if let argument0 = CommandLine.arguments.first {
            candidates.append(URL(fileURLWithPath: argument0).standardizedFileURL.deletingLastPathComponent())
        }
        return candidates
    }

    /// The repository root (this file is Tests/EndToEndTests/BinaryLocator.swift).
    static var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// An executable found on PATH (mpirun, bash, ...).
    static func onPath(_ name: String) throws -> URL {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = URL(fileURLWithPath: String(directory)).appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        throw NotFound(description: "\(name) not found on PATH (\(path))")
    }

    static func mpirun() throws -> URL { try onPath("mpirun") }

    /// mpirun options every test needs here: tests run as root in CI containers, and ask for more
    /// ranks than the 2 cores.
    static let mpirunTestOptions = ["--allow-run-as-root", "--oversubscribe"]

    /// Starts `binary` with `arguments`: under mpirun with `ranks` ranks, or alone when nil.
    static func start(_ binary: URL, ranks: Int?, _ arguments: [String], input: String? = nil) throws -> RunningProcess {
        guard let ranks else { return try RunningProcess(binary, arguments, standardInput: input) }
        return try RunningProcess(mpirun(), mpirunTestOptions + ["-n", "\(ranks)", binary.path] + arguments, standardInput: input)
    }

    /// Runs a helper script (Tests/Cluster/*.sh) to completion; its stdout, or an error naming it
    /// with its stderr.
    static func runScript(_ script: URL, _ arguments: [String], timeoutSeconds: Double) throws -> String {
        let process = try RunningProcess(script, arguments)
        let status = process.waitForExit(timeoutSeconds: timeoutSeconds)
        guard status == 0 else {
            throw NotFound(description: "\(script.lastPathComponent) \(arguments.joined(separator: " ")) failed (status \(status.map(String.init) ?? "timeout")): \(process.standardError)")
        }
        return process.standardOutput
    }

    /// Runs `binary` to completion (at most 180 s) and expects exit status `expected`.
    @discardableResult
    static func run(_ binary: URL, ranks: Int?, _ arguments: [String], input: String? = nil, status expected: Int32 = 0,
                    sourceLocation: SourceLocation = #_sourceLocation) throws -> RunningProcess {
        let process = try start(binary, ranks: ranks, arguments, input: input)
        let status = process.waitForExit(timeoutSeconds: 180)
        #expect(status == expected, "\(arguments.joined(separator: " "))\nstdout: \(process.standardOutput)\nstderr: \(process.standardError)",
                sourceLocation: sourceLocation)
        return process
    }
}

/// A child process whose stdout and stderr are collected as they arrive, so a test can wait for a
/// line, signal the process, and time its exit.
///
/// Why not Foundation.Process: Swift Testing runs tests on worker threads that block most signals,
/// and a child started by Process inherits that mask. mpirun started that way never acts on the
/// SIGTERM or SIGUSR1 a test sends it (the signal stays pending). This runner uses posix_spawn with
/// an empty signal mask and default dispositions, as a shell would start the program.
/// @unchecked Sendable: the collected output is guarded by `lock`; the pid is immutable.
final class RunningProcess: @unchecked Sendable {
    let processIdentifier: pid_t
    private let lock = NSCondition()
    private var output = Data()
    private var errorOutput = Data()
    private var openStreams = 2
    private var exitStatus: Int32? = nil

    struct SpawnError: Error, CustomStringConvertible {
        var description: String
    }

    /// `standardInput`: text the process reads on stdin (else /dev/null).
    init(_ executable: URL, _ arguments: [String], environment: [String: String]? = nil, standardInput: String? = nil) throws {
        var inputPath = "/dev/null"
        if let standardInput {
            inputPath = scratchURL("stdin-\(UUID().uuidString)").path
            try standardInput.write(toFile: inputPath, atomically: true, encoding: .utf8)
        }
        var outputPipe: [Int32] = [0, 0], errorPipe: [Int32] = [0, 0]
        guard pipe(&outputPipe) == 0, pipe(&errorPipe) == 0 else {
            throw SpawnError(description: "pipe failed: errno \(errno)")
        }
        // Close-on-exec, so that processes other tests start meanwhile do not hold our pipes open.
        for descriptor in outputPipe + errorPipe { _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, inputPath, O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outputPipe[1], 1)  // dup2 clears O_CLOEXEC on 1 and 2
        posix_spawn_file_actions_adddup2(&actions, errorPipe[1], 2)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        var defaultSignals = sigset_t()
        sigemptyset(&defaultSignals)
        for signalNumber in [SIGHUP, SIGINT, SIGQUIT, SIGPIPE, SIGTERM, SIGUSR1, SIGUSR2, SIGCHLD] {
            sigaddset(&defaultSignals, signalNumber)
        }
        posix_spawnattr_setsigdefault(&attributes, &defaultSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let environment = environment ?? ProcessInfo.processInfo.environment
        let argumentStrings = [executable.path] + arguments
        let environmentStrings = environment.map { "\($0.key)=\($0.value)" }
        var argv: [UnsafeMutablePointer<CChar>?] = argumentStrings.map { strdup($0) } + [nil]
        var envp: [UnsafeMutablePointer<CChar>?] = environmentStrings.map { strdup($0) } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable.path, &actions, &attributes, &argv, &envp)
        close(outputPipe[1])
        close(errorPipe[1])
        guard result == 0 else {
            close(outputPipe[0])
            close(errorPipe[0])
            throw SpawnError(description: "cannot start \(executable.path): \(String(cString: strerror(result)))")
        }
        processIdentifier = pid
        collect(outputPipe[0], isError: false)
        collect(errorPipe[0], isError: true)
    }

    private func collect(_ descriptor: Int32, isError: Bool) {
        let thread = Thread { [self] in
            let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
            while true {
                let chunk = handle.availableData
                lock.lock()
                if chunk.isEmpty {
                    openStreams -= 1
                    lock.broadcast()
                    lock.unlock()
                    return
                }
                if isError { errorOutput.append(chunk) } else { output.append(chunk) }
                lock.broadcast()
                lock.unlock()
            }
        }
        thread.start()
    }

    var standardOutput: String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: output, as: UTF8.self)
    }

    var standardError: String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: errorOutput, as: UTF8.self)
    }

    /// Waits until `condition` holds for stdout (true) or the timeout passes (false).
    func waitForOutput(timeoutSeconds: Double, until condition: (String) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        lock.lock()
        defer { lock.unlock() }
        while !condition(String(decoding: output, as: UTF8.self)) {
            if openStreams == 0 || !lock.wait(until: deadline) { return condition(String(decoding: output, as: UTF8.self)) }
        }
        return true
    }

    // Waiting without holding a thread of the test runner. Swift Testing runs tests on the
    // cooperative pool (a thread per core); a test that blocks while it waits holds one, and a few
    // long waits side by side starve the other tests of the run past their time limits. A test
    // that suspends instead may get a thread back late, though, so what must happen at once (react
    // to a line, time an exit) runs on a thread of its own: `act(whenOutput:...)`, `onThreadOfItsOwn`.

    /// On a thread of its own: waits until stdout satisfies `condition` (at most `appearWithin` s),
    /// runs `action` (which returns the moment to time from, e.g. that of a fault), then waits
    /// until the process exits (at most `exitWithin` s). Returns that moment and when the process
    /// exited (nil: the output never came, or the process did not exit).
    func act(whenOutput condition: @escaping @Sendable (String) -> Bool, appearsWithin appearWithin: Double,
             _ action: @escaping @Sendable () -> Date, thenExitWithin exitWithin: Double) async -> (actedAt: Date?, exitedAt: Date?) {
        await onThreadOfItsOwn { [self] in
            guard waitForOutput(timeoutSeconds: appearWithin, until: condition) else { return (nil, nil) }
            let actedAt = action()
            let deadline = Date().addingTimeInterval(exitWithin)
            while isRunning && Date() < deadline { usleep(20_000) }
            return (actedAt, isRunning ? nil : Date())
        }
    }

    /// `waitForExit`, polling between suspensions (a process still running after the timeout, or
    /// when the test is cancelled, e.g. past its time limit, is ended as there).
    func exitStatus(timeoutSeconds: Double) async -> Int32? {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while poll() == nil && Date() < deadline && !Task.isCancelled { try? await Task.sleep(nanoseconds: 10_000_000) }
        guard let status = poll() else { return waitForExit(timeoutSeconds: 0) }
        let drainDeadline = Date().addingTimeInterval(5)
        while hasOpenStreams && Date() < drainDeadline && !Task.isCancelled { try? await Task.sleep(nanoseconds: 10_000_000) }
        return status
    }

    private var hasOpenStreams: Bool {
        lock.lock()
        defer { lock.unlock() }
        return openStreams > 0
    }

    /// Reaps the process if it has exited; its status as a shell reports it (128 + signal number
    /// when killed by a signal).
    private func poll() -> Int32? {
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        guard waitpid(processIdentifier, &status, WNOHANG) == processIdentifier else { return nil }
        let signalNumber = status & 0x7F
        exitStatus = signalNumber == 0 ? (status >> 8) & 0xFF : 128 + signalNumber
        return exitStatus
    }

    var isRunning: Bool { poll() == nil }

    /// The exit status, or nil if the process is still running after the timeout (it is then
    /// ended: SIGTERM, and SIGKILL 5 s later).
    func waitForExit(timeoutSeconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while poll() == nil && Date() < deadline { usleep(10_000) }
        guard let status = poll() else {
            kill(processIdentifier, SIGTERM)
            let killDeadline = Date().addingTimeInterval(5)
            while poll() == nil && Date() < killDeadline { usleep(10_000) }
            if poll() == nil { kill(processIdentifier, SIGKILL) }
            while poll() == nil { usleep(10_000) }
            return nil
        }
        // Let the readers drain what the process (and its children) wrote.
        lock.lock()
        let drainDeadline = Date().addingTimeInterval(5)
        while openStreams > 0 && lock.wait(until: drainDeadline) {}
        lock.unlock()
        return status
    }
}

/// Runs `body` on a thread of its own and hands its result to the awaiting test (see
/// RunningProcess.act). `body` returns what the test then checks; it records no issues itself.
func onThreadOfItsOwn<Value: Sendable>(_ body: @escaping @Sendable () -> Value) async -> Value {
    await withCheckedContinuation { continuation in
        Thread { continuation.resume(returning: body()) }.start()
    }
}
