import ArgumentParser

/// What the process is, rather than the run: threads per rank, the arithmetic of the matrix
/// products, how long a silent peer is waited for (train, eval, bench).
public struct ProcessOptions: ParsableArguments, Sendable {
    @OptionGroup public var threads: ThreadOptions
    @OptionGroup public var precision: PrecisionOptions
    @OptionGroup public var faults: FaultOptions

    public init() {}
}
