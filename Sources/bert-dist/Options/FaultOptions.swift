import ArgumentParser

/// How a distributed job notices a peer that stopped answering (train, eval, bench).
struct FaultOptions: ParsableArguments {
    @Option(help: "End the job when a peer rank has been silent this long, in seconds (heartbeats on their own thread: a long checkpoint write or a slow step is not silence).")
    var collectiveTimeout = 600.0

    func validate() throws {
        if !(collectiveTimeout > 0) || !collectiveTimeout.isFinite { throw ValidationError("--collective-timeout must be a positive number of seconds") }
    }
}
