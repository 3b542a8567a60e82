import Distributed
import Foundation
import Storage

/// An error every rank knows about: the ranks agreed to stop, the lowest failing rank reports it.
public struct AgreedFailure: Error, CustomStringConvertible {
    /// The error to print on this rank, or nil when another rank reports it.
    public let error: (any Error)?
    public init(error: (any Error)?) { self.error = error }
    public var description: String { error.map { "\($0)" } ?? "a peer rank failed" }
}

/// Runs a phase that may fail on some ranks only (reading files, loading weights), then lets
/// all ranks agree: if any failed, every rank throws `AgreedFailure` and the lowest failing rank
/// carries the error to print — one clean line and a clean exit instead of N copies or a hang.
public func collectively<T>(_ communicator: any Communicator, _ body: () throws -> T) throws -> T {
    let result: Result<T, any Error>
    do { result = .success(try body()) } catch { result = .failure(error) }
    var failed = false
    if case .failure = result { failed = true }
    let failures = try communicator.allGather(failed ? 1 : 0)
    if let first = failures.firstIndex(of: 1) {
        if case .failure(let error) = result, first == communicator.rank { throw AgreedFailure(error: error) }
        throw AgreedFailure(error: nil)
    }
    return try result.get()
}

/// Writes one line to stderr (control characters escaped, see `oneLine`).
public func printError(_ line: String) {
    FileHandle.standardError.write(Data((oneLine(line) + "\n").utf8))
}
