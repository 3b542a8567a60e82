/// `text` on one line: line breaks and other control characters (a name or value from a
/// hostile file or config may hold them) written as Swift escapes, e.g. `\n`; tabs kept.
/// Every error message is one line (issue 17): the project's errors apply this (StorageError),
/// most through `errorLine`, which also cuts (DataError, ModelError, CheckpointError, ...), and
/// so does everything printed as an `error:` line and every line rank 0 prints (`rootLog`).
public func oneLine(_ text: String) -> String {
    guard text.unicodeScalars.contains(where: isEscaped) else { return text }
    var result = ""
    for scalar in text.unicodeScalars {
        if isEscaped(scalar) { result += scalar.escaped(asASCII: true) } else { result.unicodeScalars.append(scalar) }
    }
    return result
}

private func isEscaped(_ scalar: Unicode.Scalar) -> Bool {
    (scalar.value < 0x20 && scalar != "\t") || scalar.value == 0x7F || scalar == "\u{85}" || scalar == "\u{2028}" || scalar == "\u{2029}"
}

/// An error message as it is shown: `oneLine`, cut to `limit` characters (a message that
/// quotes a 70 KB value must not be a 70 KB line).
public func errorLine(_ text: String, limit: Int = 1000) -> String {
    let line = oneLine(text)
    return line.count <= limit ? line : line.prefix(limit - 3) + "..."
}
