import Storage

/// Every error the Data module throws: one line that names the file (and line, when there is
/// one), says what is wrong and, where it helps, what to do about it.
public struct DataError: Error, CustomStringConvertible, Equatable, Sendable {
    public let description: String

    public init(_ description: String) {
        // Messages quote the data: a 70 KB field must not make a 70 KB line, nor a line break two lines.
        self.description = errorLine(description)
    }
}
