import Foundation

/// An error from the Storage module: always names the file and says what went wrong.
public struct StorageError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: Sendable, Equatable {
        /// The disk (or quota) is full: ENOSPC / EDQUOT.
        case diskFull
        /// Any other failing system call (open, read, write, fsync, rename, ...).
        case io
        /// The file exists but its contents do not parse (truncated, garbage, wrong schema).
        case malformed
    }

    public let kind: Kind
    /// The file the error is about.
    public let path: String
    public let description: String

    public init(kind: Kind, path: String, description: String) {
        self.kind = kind
        self.path = path
        self.description = oneLine(description)
    }

    /// An error for a failed system call, built from `errno` at the call site.
    static func systemCall(_ operation: String, path: String, errorNumber: Int32) -> StorageError {
        let reason = String(cString: strerror(errorNumber))
        if errorNumber == ENOSPC || errorNumber == EDQUOT {
            return StorageError(
                kind: .diskFull, path: path,
                description: "\(operation) '\(path)' failed: the disk is full (\(reason)); free space or write elsewhere")
        }
        return StorageError(kind: .io, path: path, description: "\(operation) '\(path)' failed: \(reason)")
    }
}
