import Distributed
import Foundation
import Synchronization
import Testing

@Suite(.timeLimit(.minutes(1)))
struct InProcessGroupTests {
    @Test(arguments: [1, 2, 3, 8])
    func barrierLetsNoRankLeaveBeforeAllArrive(worldSize: Int) throws {
        let arrivals = Atomic<Int>(0)
        let seenOnLeaving = try InProcessGroup.run(worldSize: worldSize) { communicator in
            var seen: [Int] = []
            for round in 1 ... 5 {
                arrivals.add(1, ordering: .sequentiallyConsistent)
                try communicator.barrier()
                seen.append(arrivals.load(ordering: .sequentiallyConsistent))
                try communicator.barrier()  // nobody starts the next round before everyone has looked
                _ = round
            }
            return seen
        }
        for (rank, seen) in seenOnLeaving.enumerated() {
            #expect(seen == (1 ... 5).map { $0 * worldSize }, "rank \(rank)")
        }
    }

    @Test(arguments: [1, 3, 4])
    func broadcastCopiesTheRootsBytesFromEveryRoot(worldSize: Int) throws {
        let results = try InProcessGroup.run(worldSize: worldSize) { communicator in
            var received: [[UInt8]] = []
            for root in 0 ..< worldSize {
                var bytes = [UInt8](repeating: UInt8(communicator.rank), count: 13)
                if communicator.rank == root {
                    for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: 7 * root + index) }
                }
                try bytes.withUnsafeMutableBytes { try communicator.broadcast($0, root: root) }
                received.append(bytes)
            }
            return received
        }
        for rank in 0 ..< worldSize {
            for root in 0 ..< worldSize {
                #expect(results[rank][root] == (0 ..< 13).map { UInt8(truncatingIfNeeded: 7 * root + $0) })
            }
        }
    }

    @Test(arguments: [1, 2, 5])
    func allGatherOfWordsAndOfByteStringsOfDifferentLengths(worldSize: Int) throws {
        let results = try InProcessGroup.run(worldSize: worldSize) { communicator in
            let rank = communicator.rank
            let words = try communicator.allGather(UInt64(1000 + rank))
            let strings = try communicator.allGather(bytes: Array(repeating: UInt8(65 + rank), count: rank))  // rank 0: empty
            return (words, strings)
        }
        for (words, strings) in results {
            #expect(words == (0 ..< worldSize).map { UInt64(1000 + $0) })
            #expect(strings == (0 ..< worldSize).map { Array(repeating: UInt8(65 + $0), count: $0) })
        }
    }

    @Test(arguments: [1, 3, 8])
    func allReduceSumsInRankOrderAndTakesMaxAndMin(worldSize: Int) throws {
        // Values whose sum depends on the order of addition.
        @Sendable func contribution(_ rank: Int) -> [Double] { [1e16 * Double(rank % 2 == 0 ? 1 : -1) + Double(rank), 0.1 * Double(rank + 1), -Double(rank)] }
        let results = try InProcessGroup.run(worldSize: worldSize) { communicator in
            let values = contribution(communicator.rank)
            return [try communicator.allReduce(values, .sum), try communicator.allReduce(values, .max),
                    try communicator.allReduce(values, .min)]
        }
        var expectedSum = contribution(0)
        for rank in 1 ..< worldSize { for index in 0 ..< 3 { expectedSum[index] += contribution(rank)[index] } }
        let expectedMax = (0 ..< 3).map { index in (0 ..< worldSize).map { contribution($0)[index] }.max()! }
        let expectedMin = (0 ..< 3).map { index in (0 ..< worldSize).map { contribution($0)[index] }.min()! }
        for result in results {
            #expect(result[0].map(\.bitPattern) == expectedSum.map(\.bitPattern))
            #expect(result[1] == expectedMax)
            #expect(result[2] == expectedMin)
        }
    }

    @Test func maxPropagatesNaNAndAnyRankSeesEveryRanksFlag() throws {
        let results = try InProcessGroup.run(worldSize: 4) { communicator in
            let rank = communicator.rank
            let maximum = try communicator.allReduce(rank == 2 ? .nan : Double(rank), .max)
            let minimum = try communicator.allReduce(rank == 0 ? .nan : Double(rank), .min)
            let anyThree = try communicator.anyRank(rank == 3)
            let anyFive = try communicator.anyRank(rank == 5)
            return [maximum.isNaN, minimum.isNaN, anyThree, anyFive]
        }
        for result in results { #expect(result == [true, true, true, false]) }
    }

    @Test func pointToPointTransfersMatchByTagInAnyOrder() throws {
        // Rank 0 sends tag 2 then tag 1; rank 1 receives tag 1 then tag 2.
        let results = try InProcessGroup.run(worldSize: 2) { communicator in
            let first = FloatArena(count: 5) { Float($0) }
            let second = FloatArena(count: 3) { Float(10 + $0) }
            var requests: [TransferRequest] = []
            if communicator.rank == 0 {
                requests.append(try communicator.startSend(UnsafeBufferPointer(second.buffer), to: 1, tag: 2))
                requests.append(try communicator.startSend(UnsafeBufferPointer(first.buffer), to: 1, tag: 1))
                try communicator.waitAll(&requests)
                return [Float]()
            } else {
                let intoFirst = FloatArena(count: 5) { _ in -1 }
                let intoSecond = FloatArena(count: 3) { _ in -1 }
                requests.append(try communicator.startReceive(intoFirst.buffer, from: 0, tag: 1))
                requests.append(try communicator.startReceive(intoSecond.buffer, from: 0, tag: 2))
                try communicator.waitAll(&requests)
                #expect(requests.allSatisfy { $0.isCompleted })
                return intoFirst.values + intoSecond.values
            }
        }
        #expect(results[1] == [0, 1, 2, 3, 4, 10, 11, 12])
    }

    @Test func anErrorInOneRankFailsThePeersInsteadOfHangingThem() throws {
        struct Injected: Error, CustomStringConvertible { var description: String { "injected failure" } }
        let peerErrors = Mutex<[String]>([])
        #expect(throws: Injected.self) {
            _ = try InProcessGroup.run(worldSize: 4) { communicator in
                do {
                    switch communicator.rank {
                    case 1:
                        Thread.sleep(forTimeInterval: 0.05)  // let the others block first
                        throw Injected()
                    case 2:  // blocked in a transfer from the failed rank
                        let buffer = FloatArena(count: 4) { _ in 0 }
                        var requests = [try communicator.startReceive(buffer.buffer, from: 1, tag: 9)]
                        try communicator.waitAll(&requests)
                    default:  // blocked in collectives
                        try communicator.barrier()
                        _ = try communicator.allReduce([1], .sum)
                    }
                } catch let error as CommunicationError {
                    peerErrors.withLock { $0.append(error.description) }
                    throw error
                }
            }
        }
        let messages = peerErrors.withLock { $0 }
        #expect(messages.count == 3)
        for message in messages { #expect(message.contains("rank 1 failed: injected failure"), "\(message)") }
    }

    @Test func aRankThatReturnsEarlyFailsThePeersWaitingForIt() throws {
        let error = #expect(throws: CommunicationError.self) {
            _ = try InProcessGroup.run(worldSize: 3) { communicator in
                if communicator.rank == 0 { return }  // skips the barrier the others wait in
                try communicator.barrier()
            }
        }
        #expect(error?.description.contains("rank 0 has already returned") == true)
    }

    @Test func mismatchedTransferSizesAreAnErrorNotACorruption() throws {
        #expect(throws: CommunicationError.self) {
            _ = try InProcessGroup.run(worldSize: 2) { communicator in
                let buffer = FloatArena(count: communicator.rank == 0 ? 4 : 5) { _ in 1 }
                var requests: [TransferRequest] = []
                if communicator.rank == 0 {
                    requests.append(try communicator.startSend(UnsafeBufferPointer(buffer.buffer), to: 1, tag: 0))
                } else {
                    requests.append(try communicator.startReceive(buffer.buffer, from: 0, tag: 0))
                }
                try communicator.waitAll(&requests)
            }
        }
    }
}
