import Foundation

/// A one-node Slurm (Tests/Cluster/slurm.sh) for one test suite: its own munged, slurmctld and
/// slurmd, named `bdt-<pid>-<n>`; Slurms of crashed earlier runs are removed when one is made.
/// `down()` stops the daemons and every job (idempotent; deinit does it too).
final class TestSlurm: Sendable {
    static let script = BinaryLocator.repositoryRoot.appendingPathComponent("Tests/Cluster/slurm.sh")

    /// Why the Slurm tests cannot run here, or nil. launch/test installs the packages
    /// (Tests/Cluster/slurm.sh setup); elsewhere they may be missing.
    static let unavailableReason: String? = {
        if geteuid() != 0 { return "the test Slurm runs slurmctld, slurmd and munged as root" }
        guard let check = try? RunningProcess(script, ["available"]), check.waitForExit(timeoutSeconds: 30) == 0 else {
            return "Slurm is not installed (Tests/Cluster/slurm.sh setup installs slurmctld, slurmd, slurm-client, munge)"
        }
        return nil
    }()
    static var isAvailable: Bool { unavailableReason == nil }

    let name: String
    let state: URL
    private let takeDown = OnlyOnce()

    /// `killWaitSeconds`: Slurm's KillWait (SIGTERM, then SIGKILL this much later).
    init(killWaitSeconds: Int) throws {
        name = TestCluster.uniqueName()
        _ = try TestSlurm.run(["clean", TestCluster.prefix])
        state = URL(fileURLWithPath: try TestSlurm.run(["up", name, "--kill-wait", "\(killWaitSeconds)", "--owner", "\(getpid())"])
            .trimmingCharacters(in: .whitespacesAndNewlines))
    }

    deinit {
        down()
    }

    func down() {
        takeDown { _ = try? TestSlurm.run(["down", name]) }
    }

    /// Runs slurm.sh to completion; its stdout, or an error with its stderr.
    static func run(_ arguments: [String]) throws -> String {
        try BinaryLocator.runScript(script, arguments, timeoutSeconds: 90)
    }

    /// The environment for Slurm's commands (SLURM_CONF) on top of this process's, without the
    /// variables of any allocation the tests themselves might run in.
    func environment(_ extra: [String: String] = [:]) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("SLURM_") }
        environment["SLURM_CONF"] = state.appendingPathComponent("slurm.conf").path
        for (key, value) in extra { environment[key] = value }
        return environment
    }

    /// Runs a Slurm client command (squeue, scontrol, scancel, sbatch ...) to completion; its stdout.
    @discardableResult
    func command(_ name: String, _ arguments: [String]) throws -> String {
        guard let executable = TestCluster.tool(name) else { throw BinaryLocator.NotFound(description: "\(name) not found") }
        let process = try RunningProcess(executable, arguments, environment: environment())
        let status = process.waitForExit(timeoutSeconds: 60)
        guard status == 0 else {
            throw BinaryLocator.NotFound(description: "\(name) \(arguments.joined(separator: " ")) failed (status \(status.map(String.init) ?? "timeout")): \(process.standardError)")
        }
        return process.standardOutput
    }

    /// True while the job is queued or running (squeue still lists it).
    func jobIsListed(_ job: String) -> Bool {
        !((try? command("squeue", ["-h", "-j", job, "-o", "%T"])) ?? "").trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
    }

    /// A field of `scontrol show job` (e.g. JobState, ExitCode, Restarts).
    func jobField(_ job: String, _ field: String) -> String? {
        guard let text = try? command("scontrol", ["show", "job", job]) else { return nil }
        for word in text.split(whereSeparator: { $0 == " " || $0 == "\n" }) where word.hasPrefix(field + "=") {
            return String(word.dropFirst(field.count + 1))
        }
        return nil
    }

    /// Waits until `condition` holds or `seconds` pass; when it was seen to hold (nil: it did not).
    /// Checked on a thread of its own, so that the moment is exact (see RunningProcess.act).
    func wait(seconds: Double, until condition: @escaping @Sendable () -> Bool) async -> Date? {
        await onThreadOfItsOwn {
            let deadline = Date().addingTimeInterval(seconds)
            while !condition() {
                if Date() > deadline { return nil }
                usleep(100_000)
            }
            return Date()
        }
    }
}
