import Foundation
import Testing

/// A namespace cluster (Tests/Cluster/cluster.sh) for one test: `hosts` hosts h1 ... hN, each a
/// network namespace with eth1 = 10.77.0.K, its own hostname, cores and local disk. Named
/// `bdt-<pid>-<n>`; clusters of crashed earlier runs (whose test process is gone) are removed when
/// a new one is made. Take it down with `down()` (idempotent; deinit does it too).
///
///     let cluster = try TestCluster(hosts: 2)
///     defer { cluster.down() }
///     let run = try cluster.exec(host: 1, mpirun, ["-n", "2", "--hostfile", try cluster.hostfile().path] + ...)
final class TestCluster: Sendable {
    static let script = BinaryLocator.repositoryRoot.appendingPathComponent("Tests/Cluster/cluster.sh")
    static let prefix = "bdt-"

    /// Why the cluster tests cannot run here, or nil when they can (root, iproute2's ip, unshare).
    static let unavailableReason: String? = {
        if geteuid() != 0 { return "the namespace cluster needs root (network and mount namespaces)" }
        for name in ["ip", "unshare", "taskset"] where tool(name) == nil {
            return "the namespace cluster needs \(name) (iproute2 / util-linux)"
        }
        return nil
    }()

    /// A system tool on PATH or in the sbin folders (which a non-login PATH may lack).
    static func tool(_ name: String) -> URL? {
        if let found = try? BinaryLocator.onPath(name) { return found }
        return ["/usr/sbin", "/sbin"].map { URL(fileURLWithPath: "\($0)/\(name)") }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }
    static var isAvailable: Bool { unavailableReason == nil }

    private static let counter = NSLock()
    nonisolated(unsafe) private static var made = 0

    /// `bdt-<pid>-<n>`: unique in this test process (clusters and test Slurms), recognisable by
    /// `clean bdt-` in the next one.
    static func uniqueName() -> String {
        counter.lock()
        defer { counter.unlock() }
        made += 1
        return "\(prefix)\(getpid())-\(made)"
    }

    let name: String
    let hostCount: Int
    /// The cluster's state folder (outside view): hosts, rsh agent, disks/hK.
    let state: URL
    private let takeDown = OnlyOnce()

    /// `cpus`: a taskset list per host (default: host K on core K-1 modulo the cores).
    init(hosts: Int, cpus: [String]? = nil) throws {
        name = TestCluster.uniqueName()
        hostCount = hosts
        try TestCluster.run(["clean", TestCluster.prefix])
        var arguments = ["up", name, "\(hosts)", "--owner", "\(getpid())"]
        if let cpus { arguments += ["--cpus", cpus.joined(separator: " ")] }
        state = URL(fileURLWithPath: try TestCluster.run(arguments).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    deinit {
        down()
    }

    func down() {
        takeDown { _ = try? TestCluster.run(["down", name]) }
    }

    /// Runs cluster.sh to completion; its stdout, or an error with its stderr.
    @discardableResult
    static func run(_ arguments: [String], timeoutSeconds: Double = 60) throws -> String {
        try BinaryLocator.runScript(script, arguments, timeoutSeconds: timeoutSeconds)
    }

    @discardableResult
    func run(_ arguments: [String]) throws -> String {
        try TestCluster.run(arguments)
    }

    /// Starts `executable arguments` on host `host` (1-based).
    func exec(host: Int, _ executable: URL, _ arguments: [String], environment: [String: String]? = nil) throws -> RunningProcess {
        try RunningProcess(TestCluster.script, ["exec", name, "h\(host)", executable.path] + arguments, environment: environment)
    }

    /// The local-disk path, the same on every host (each sees its own disk there).
    var localDisk: URL { state.appendingPathComponent("local") }

    /// Host `host`'s local disk seen from outside the cluster (where a test puts or inspects files).
    func disk(host: Int) -> URL { state.appendingPathComponent("disks/h\(host)") }

    /// What a user of a cluster without a shared disk has: `workspace`'s model and training file on
    /// h1's disk alone; returns the paths a job names them by (the same on every host), and the
    /// output folder's.
    func putOnHead(_ workspace: TinyWorkspace) throws -> (model: URL, train: URL, output: URL) {
        let head = disk(host: 1)
        try FileManager.default.copyItem(at: workspace.model, to: head.appendingPathComponent("model"))
        try FileManager.default.copyItem(at: workspace.train, to: head.appendingPathComponent("train.csv"))
        return (localDisk.appendingPathComponent("model"), localDisk.appendingPathComponent("train.csv"), localDisk.appendingPathComponent("out"))
    }

    /// launch/train's environment on the first `hosts` hosts, running `binary`.
    func launchEnvironment(binary: URL, hosts: Int? = nil) throws -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment["BERT_DIST_BIN"] = binary.path
        environment["BERT_DIST_CLUSTER_CONF"] = try clusterConf(hosts: hosts).path
        return environment
    }

    /// An Open MPI hostfile of the first `hosts` hosts (one slot per core).
    func hostfile(hosts: Int? = nil) throws -> URL {
        let url = state.appendingPathComponent("hostfile")
        try run(["hostfile", name, "\(hosts ?? hostCount)"]).write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// A cluster.conf for launch/train of the first `hosts` hosts.
    func clusterConf(hosts: Int? = nil) throws -> URL {
        let url = state.appendingPathComponent("cluster.conf")
        try run(["conf", name, "\(hosts ?? hostCount)"]).write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// The options a plain mpirun needs on this cluster.
    func mpirunOptions() throws -> [String] {
        try run(["mpirun-options", name]).split(separator: "\n").map(String.init)
    }

    /// The processes running on a host (zombies excluded), with the program each runs (argv[0]).
    func processes(host: Int) -> [(pid: Int32, program: String)] {
        let pids = ((try? run(["pids", name, "h\(host)"])) ?? "").split(separator: "\n").compactMap { Int32($0) }
        return pids.compactMap { pid in
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
                  !status.contains("State:\tZ"),
                  let commandLine = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !commandLine.isEmpty
            else { return nil }
            let program = String(decoding: commandLine.prefix { $0 != 0 }, as: UTF8.self)
            return (pid, program)
        }
    }

    /// The pids on `host` running `executable`.
    func pids(host: Int, running executable: URL) -> [Int32] {
        processes(host: host).filter { $0.program == executable.path }.map(\.pid)
    }

    /// Waits up to `seconds` until no process on `host` runs `executable` (nil: no process at all);
    /// true if none does.
    func noneRunning(host: Int, _ executable: URL? = nil, within seconds: Double) async -> Bool {
        let running = { self.processes(host: host).contains { executable == nil || $0.program == executable!.path } }
        let deadline = Date().addingTimeInterval(seconds)
        while running() && Date() < deadline && !Task.isCancelled { try? await Task.sleep(nanoseconds: 100_000_000) }
        return !running()
    }

    /// The network namespaces of this cluster that exist.
    func namespaces() -> [String] {
        let listing = TestCluster.tool("ip").flatMap { try? RunningProcess($0, ["netns", "list"]) }.map { run -> String in
            _ = run.waitForExit(timeoutSeconds: 10)
            return run.standardOutput
        } ?? ""
        return listing.split(separator: "\n").map { String($0.split(separator: " ")[0]) }.filter { $0.hasPrefix(name + "-") }
    }
}

/// An action run at most once, by whichever caller comes first, from any thread: the test
/// cluster's and the test Slurm's teardown, asked for by the test (`down()`) and by deinit.
final class OnlyOnce: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false

    func callAsFunction(_ action: () -> Void) {
        lock.lock()
        let first = !done
        done = true
        lock.unlock()
        if first { action() }
    }
}

/// A fault the multi-host tests inflict on one host of a cluster.
enum ClusterFault: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case cutCable = "cut cable", frozenHost = "frozen host", killedRank = "killed rank"
    var testDescription: String { rawValue }

    /// On host `host`: its cable cut, every process frozen, or its processes running `binary` killed.
    func inflict(on cluster: TestCluster, host: Int, binary: URL) {
        switch self {
        case .cutCable: _ = try? TestCluster.run(["cut", cluster.name, "h\(host)"])
        case .frozenHost: _ = try? TestCluster.run(["freeze", cluster.name, "h\(host)"])
        case .killedRank: for pid in cluster.pids(host: host, running: binary) { kill(pid, SIGKILL) }
        }
    }
}

/// A job that a fault should end, as `RunningProcess.act` timed it: expects it to have exited
/// non-zero within the spec's bound, `collectiveTimeout` + 30 s after `actedAt` (the fault).
/// Returns the exit status, the seconds from the fault to the exit and everything it printed.
func expectFailure(_ job: RunningProcess, _ timeline: (actedAt: Date?, exitedAt: Date?), collectiveTimeout: Double,
                   _ scenario: String) async -> (status: Int32?, seconds: Double, output: String) {
    let seconds = timeline.actedAt.map { (timeline.exitedAt ?? Date()).timeIntervalSince($0) } ?? .infinity
    let status = await job.exitStatus(timeoutSeconds: 1)  // (then waits for the output to drain)
    let output = job.standardOutput + job.standardError
    #expect(timeline.actedAt != nil, "\(scenario): the job never reached the point of the fault: \(output)")
    #expect(status != nil && status != 0, "\(scenario): launch/train exited \(String(describing: status)): \(output)")
    #expect(seconds < collectiveTimeout + 30, "\(scenario): the job took \(seconds) s to end")
    return (status, seconds, output)
}
