import Storage

/// Errors of a training run that are the user's to fix; `description` is the one line shown.
public enum TrainingError: Error, CustomStringConvertible, Equatable {
    case invalidInput(String)
    case diverged(String)

    /// Messages may quote names from files (labels, tensors): one line (`errorLine`).
    public var description: String {
        switch self {
        case .invalidInput(let message), .diverged(let message): return errorLine(message)
        }
    }
}
