import Distributed
import Foundation

/// A world of one rank: every collective is a copy and nothing travels. `bench
/// --no-gradient-sync` gives each rank's replica one, so that each rank steps with its own
/// gradient: the step without gradient communication (the replicas drift apart).
final class SingleRankCommunicator: Communicator {
    let rank = 0
    let worldSize = 1

    func barrier() {}

    func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) {}

    func allGather(_ contribution: UnsafeRawBufferPointer, into result: UnsafeMutableRawBufferPointer) {
        if contribution.count > 0 { result.baseAddress!.copyMemory(from: contribution.baseAddress!, byteCount: contribution.count) }
    }

    func startSend(bytes: UnsafeRawBufferPointer, to destination: Int, tag: Int) throws -> TransferRequest {
        throw CommunicationError(rank: 0, operation: "startSend", reason: "a world of one rank has no rank \(destination)")
    }

    func startReceive(bytes: UnsafeMutableRawBufferPointer, from source: Int, tag: Int) throws -> TransferRequest {
        throw CommunicationError(rank: 0, operation: "startReceive", reason: "a world of one rank has no rank \(source)")
    }

    func testAll(_ requests: UnsafeMutableBufferPointer<TransferRequest>) -> Bool { true }

    func waitAll(_ requests: UnsafeMutableBufferPointer<TransferRequest>) {}

    func abort(message: String) -> Never {
        FileHandle.standardError.write(Data((message + "\n").utf8))
        exit(1)
    }
}
