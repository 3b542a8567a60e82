import ArgumentParser

/// --json: machine-readable output (eval, predict, bench).
public struct OutputOptions: ParsableArguments, Sendable {
    @Flag(help: "Print JSON (one object; for predict one object per line) instead of text.")
    public var json = false

    public init() {}
}
