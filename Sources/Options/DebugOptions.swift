import ArgumentParser

/// The single-node debug mode (train).
public struct DebugOptions: ParsableArguments, Sendable {
    @Flag(help: "Single-node debug mode: in-process ranks, NaN/Inf checks of every activation and gradient, per-phase times.")
    public var debug = false
    @Option(help: "With --debug: run the N-rank algorithm in this process (default 1).")
    public var simulateRanks: Int?

    public init() {}

    public func validate() throws {
        if let simulateRanks {
            if !debug { throw ValidationError("--simulate-ranks needs --debug") }
            if simulateRanks < 1 { throw ValidationError("--simulate-ranks must be at least 1") }
        }
    }

    /// In-process ranks to run (nil: MPI ranks, or the plain single process).
    public var inProcessRanks: Int? { debug ? (simulateRanks ?? 1) : nil }
}
