import Foundation
import Synchronization

/// SIGTERM, SIGINT and SIGUSR1 (what launch/train forwards through mpirun, which would kill
/// the ranks on a SIGTERM of its own) do not kill a training run: they set a flag read after
/// each step; the ranks agree (one collective) to stop together, write a checkpoint and exit 0.
/// A second signal while stopping ends the process at once, as users expect from Ctrl-C.
public enum StopSignal {
    private static let count = Atomic<Int>(0)

    public static var requested: Bool { count.load(ordering: .relaxed) > 0 }

    public static func install() {
        for signalNumber in [SIGTERM, SIGINT, SIGUSR1] {
            signal(signalNumber) { received in
                let previous = StopSignal.count.add(1, ordering: .relaxed).oldValue
                if previous > 0 {
                    signal(received, SIG_DFL)
                    raise(received)
                }
            }
        }
    }
}
