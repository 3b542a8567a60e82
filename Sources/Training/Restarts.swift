import Foundation

// launch/train --max-restarts (docs/cluster.md, "Self-healing jobs") talks with the trainer in two
// directions: lines the ranks print on stderr for it (`launchEvent`, the only output of theirs it
// reads besides Open MPI's), and what it tells a restarted attempt (`RestartRecord`, from the
// environment variable BERT_DIST_RESTART, read by Startup's ProcessEnvironment).

/// One line for launch/train on stderr: "@bert-dist", the event, then key=value fields, separated
/// by tabs (values may hold spaces: paths). launch/train keeps them out of what it shows.
///   lost       the rank that reported lost peers (PeerWatchdog): ranks, hosts, noticed-by, and the
///              emergency checkpoint's facts (step, time, checkpoint, emergency)
///   resumed    rank 0 of a restarted attempt, once resumed: step
///   caught-up  rank 0 of a restarted attempt, back at the step the failed attempt had completed:
///              step, recomputed (steps computed twice), seconds (wall time lost)
public func launchEvent(_ event: String, _ fields: [(key: String, value: String)]) -> String {
    (["@bert-dist", event] + fields.map { "\($0.key)=\($0.value)" }).joined(separator: "\t")
}

/// What launch/train tells attempt k > 1 of a job about the attempt that failed and the restarts
/// before it, so that rank 0 reports the restart (stdout, TensorBoard) and when it is caught up.
/// BERT_DIST_RESTART holds `key=value` words separated by spaces:
///   attempt=2 restarts=3 lost_hosts=h3,h4 last_step=57 last_time=1712345678.125 failed_at=...
///   earlier_recomputed=0 earlier_seconds=0 earlier_hosts_lost=0
/// (`last_step`/`last_time`: the failed attempt's last completed step and when, from its `lost`
/// line; absent when there was none; `failed_at`: when launch/train saw that attempt end.)
public struct RestartRecord: Sendable, Equatable {
    /// This attempt's number (2 for the first restart).
    public var attempt: Int
    /// --max-restarts.
    public var restarts: Int
    /// The hosts the failed attempt lost (dropped for this one).
    public var lostHosts: [String]
    public var lastStep: Int?
    public var lastStepTime: Double?
    public var failedAt: Double
    /// Totals of the restarts before this one.
    public var earlierRecomputed: Int
    public var earlierSeconds: Double
    public var earlierHostsLost: Int

    public init(attempt: Int, restarts: Int, lostHosts: [String] = [], lastStep: Int? = nil, lastStepTime: Double? = nil,
                failedAt: Double, earlierRecomputed: Int = 0, earlierSeconds: Double = 0, earlierHostsLost: Int = 0) {
        self.attempt = attempt
        self.restarts = restarts
        self.lostHosts = lostHosts
        self.lastStep = lastStep
        self.lastStepTime = lastStepTime
        self.failedAt = failedAt
        self.earlierRecomputed = earlierRecomputed
        self.earlierSeconds = earlierSeconds
        self.earlierHostsLost = earlierHostsLost
    }

    /// Parses the variable's value; nil when it is not one launch/train wrote.
    public init?(parsing text: String) {
        var fields: [String: String] = [:]
        for word in text.split(separator: " ") {
            let parts = word.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { fields[parts[0]] = parts[1] }
        }
        guard let attempt = fields["attempt"].flatMap({ Int($0) }), attempt >= 2,
              let restarts = fields["restarts"].flatMap({ Int($0) }),
              let failedAt = fields["failed_at"].flatMap({ Double($0) }) else { return nil }
        self.init(attempt: attempt, restarts: restarts,
                  lostHosts: (fields["lost_hosts"] ?? "").split(separator: ",").map(String.init),
                  lastStep: fields["last_step"].flatMap { Int($0) }, lastStepTime: fields["last_time"].flatMap { Double($0) },
                  failedAt: failedAt, earlierRecomputed: fields["earlier_recomputed"].flatMap { Int($0) } ?? 0,
                  earlierSeconds: fields["earlier_seconds"].flatMap { Double($0) } ?? 0,
                  earlierHostsLost: fields["earlier_hosts_lost"].flatMap { Int($0) } ?? 0)
    }

    /// The step this attempt must reach to be where the failed one was.
    func catchUpStep(resumedAt step: Int) -> Int { max(lastStep ?? step, step) }

    /// When the failed attempt was last at that step (its last completed step's time; without one,
    /// when launch/train saw it end: the time lost is then counted from there).
    var lostSince: Double { lastStepTime ?? failedAt }
}

/// Rank 0's report of a restarted attempt: the line at the resume, and once the failed attempt's
/// last completed step is reached again, the steps computed twice and the wall time lost (stdout,
/// TensorBoard `restart/*` scalars at that step, and the `caught-up` line for launch/train); at
/// the end the totals over every restart of the job (`restart/total_*`).
struct RestartReport {
    let record: RestartRecord
    let resumedStep: Int
    private(set) var caughtUp: (recomputed: Int, seconds: Double)?

    init(record: RestartRecord, resumedStep: Int) {
        self.record = record
        self.resumedStep = resumedStep
    }

    var resumeLine: String {
        let target = record.catchUpStep(resumedAt: resumedStep)
        let lost = record.lostHosts.isEmpty ? "no host lost" : "lost: \(record.lostHosts.joined(separator: ", "))"
        let again = target > resumedStep ? "steps \(resumedStep + 1)-\(target) are computed again" : "no completed step is computed again"
        return "restart \(record.attempt - 1) of \(record.restarts) (attempt \(record.attempt)): resumed at step \(resumedStep) (\(lost)); \(again)"
    }

    /// After the resume and after every step: the report, once `step` is the failed attempt's last
    /// completed step (or beyond).
    mutating func check(step: Int, reporter: Reporter) throws {
        guard caughtUp == nil, step >= record.catchUpStep(resumedAt: resumedStep) else { return }
        let recomputed = max(0, record.catchUpStep(resumedAt: resumedStep) - resumedStep)
        let seconds = max(0, Date().timeIntervalSince1970 - record.lostSince)
        caughtUp = (recomputed, seconds)
        reporter.say(String(format: "restart %d: back at step %d, %.1f s after the failed attempt had completed it (%d step(s) computed again)",
                            record.attempt - 1, step, seconds, recomputed))
        printError(launchEvent("caught-up", [("step", "\(step)"), ("recomputed", "\(recomputed)"), ("seconds", String(format: "%.3f", seconds))]))
        try reporter.scalars([("restart/attempt", Double(record.attempt)), ("restart/hosts_lost", Double(record.lostHosts.count)),
                              ("restart/steps_recomputed", Double(recomputed)), ("restart/seconds_lost", seconds)], step: step)
    }

    /// At the end of the run: the totals over the job's restarts.
    func finish(step: Int, reporter: Reporter) throws {
        let recomputed = record.earlierRecomputed + (caughtUp?.recomputed ?? 0)
        let seconds = record.earlierSeconds + (caughtUp?.seconds ?? 0)
        try reporter.scalars([("restart/total_restarts", Double(record.attempt - 1)),
                              ("restart/total_hosts_lost", Double(record.earlierHostsLost + record.lostHosts.count)),
                              ("restart/total_steps_recomputed", Double(recomputed)), ("restart/total_seconds_lost", seconds)], step: step)
    }
}
