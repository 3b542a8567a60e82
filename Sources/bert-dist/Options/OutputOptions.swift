import ArgumentParser

/// --json: machine-readable output (eval, predict, bench).
struct OutputOptions: ParsableArguments {
    @Flag(help: "Print JSON (one object; for predict one object per line) instead of text.")
    var json = false
}
