import ArgumentParser

/// How a distributed job notices a peer that stopped answering (train, eval, bench).
public struct FaultOptions: ParsableArguments, Sendable {
    @Option(help: "End the job when a peer rank has been silent this long, in seconds (heartbeats on their own thread: a long checkpoint write or a slow step is not silence).")
    public var collectiveTimeout = 600.0

    public init() {}

    public func validate() throws {
        if !(collectiveTimeout > 0) || !collectiveTimeout.isFinite { throw ValidationError("--collective-timeout must be a positive number of seconds") }
    }
}
