import ArgumentParser
import Distributed
import Foundation
import Startup
import Training

/// `bert-dist-dev bench-comm`: developer tool for the communication layer. Runs alone (MPI singleton),
/// under `mpirun -n N`, or (for --check) with N simulated ranks in one process.
///   --check      every collective on awkward sizes, verified bit for bit against sums computed
///                independently in rank order; exits non-zero on any mismatch.
///   (default)    times the bucketed GradientSynchronizer against one plain MPI_Allreduce of the
///                same bytes, for MiniLM- and BERT-base-sized arenas; medians of the slowest rank.
struct BenchCommCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-comm",
        abstract: "Developer tool: verify (--check) or time the gradient communication, alone or under mpirun.",
        discussion: """
            Examples:
              mpirun -n 4 bert-dist-dev bench-comm --check
              bert-dist-dev bench-comm --check --simulate-ranks 8
              mpirun -n 2 bert-dist-dev bench-comm --sizes minilm,bert-base --repetitions 7 --json
            """)

    @Flag(help: "Verify every collective on awkward sizes instead of timing; exit non-zero on any mismatch.")
    var check = false

    @Option(help: "With --check: run N ranks as threads of this process instead of MPI.")
    var simulateRanks: Int?

    @Option(help: "Arena sizes to time: minilm (22.7 M floats), bert-base (109.5 M floats) or a float count.")
    var sizes: String = "minilm,bert-base"

    @Option(help: "Timed repetitions per measurement (after one warm-up); the median is reported.")
    var repetitions: Int = 7

    @Option(help: "Gradient bucket size in MB (10^6 bytes).")
    var bucketMB: Double = 25

    @Option(help: "Largest point-to-point message in MB (10^6 bytes).")
    var messageMB: Double = Double(GradientSynchronizer.defaultMessageFloats) * 4 / 1_000_000

    @Option(help: "Milliseconds between the background progress thread's MPI polls while gradients travel (0: no thread).")
    var progressIntervalMs = 0.5

    @Option(help: "Also time a simulated backward of 12 layers of this many milliseconds each, with and without progress() between layers (0: skip).")
    var overlapLayerMs: Double = 0

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func validate() throws {
        if let simulateRanks, simulateRanks < 1 { throw ValidationError("--simulate-ranks must be at least 1") }
        if simulateRanks != nil && !check { throw ValidationError("--simulate-ranks only applies to --check") }
        if repetitions < 1 { throw ValidationError("--repetitions must be at least 1") }
        if !(progressIntervalMs >= 0) { throw ValidationError("--progress-interval-ms must not be negative") }
        if bucketMB <= 0 || messageMB <= 0 { throw ValidationError("--bucket-mb and --message-mb must be positive") }
        _ = try parsedSizes()
    }

    var bucketFloats: Int { max(1, Int(bucketMB * 1_000_000 / 4)) }
    var messageFloats: Int { max(1, Int(messageMB * 1_000_000 / 4)) }

    func parsedSizes() throws -> [(name: String, floats: Int)] {
        try sizes.split(separator: ",").map { item in
            switch item {
            case "minilm": return ("minilm", 22_714_756)  // MiniLM-L6-H384 with a 4-class head
            case "bert-base": return ("bert-base", 109_485_316)  // bert-base-uncased with a 4-class head
            default:
                guard let floats = Int(item), floats >= 0 else {
                    throw ValidationError("--sizes: '\(item)' is not minilm, bert-base or a float count")
                }
                return (String(item), floats)
            }
        }
    }

    func run() throws {
        let command = self
        let status = RankRunner.run(simulatedRanks: check ? simulateRanks : nil,
                                    progressIntervalSeconds: progressIntervalMs > 0 ? progressIntervalMs / 1000 : nil) { communicator, _ in
            if command.check {
                try command.runChecks(communicator: communicator, mode: command.simulateRanks == nil ? "MPI ranks" : "simulated ranks")
            } else if let mpi = communicator as? MPICommunicator {
                try command.benchmark(communicator: mpi)
            }
        }
        if status != 0 { throw ExitCode(status) }
    }

    /// Every rank runs the checks; rank 0 reports them all (the failures of each rank are
    /// printed by that rank), and a mismatch anywhere fails the command on every rank.
    private func runChecks(communicator: any Communicator, mode: String) throws {
        let outcome = try CommunicationChecks(communicator: communicator).run()
        for failure in outcome.failures { printError(failure) }
        let failureCount = Int(try communicator.allReduce(Double(outcome.failures.count), .sum))
        guard failureCount == 0 else {
            throw AgreedFailure(error: communicator.rank == 0
                ? TrainingError.invalidInput("bench-comm --check: \(failureCount) mismatches on \(communicator.worldSize) \(mode) (listed above)") : nil)
        }
        if communicator.rank == 0 {
            print("bench-comm --check: all \(outcome.checkCount) checks passed on each of \(communicator.worldSize) \(mode)")
            print("bench-comm --check: checksum of a synchronised gradient arena: \(String(outcome.sumChecksum, radix: 16))")
        }
    }

    // MARK: - benchmark

    private func benchmark(communicator: MPICommunicator) throws {
        let rank = communicator.rank
        var results: [[String: Any]] = []
        if rank == 0 && !json {
            print("bench-comm: \(communicator.worldSize) ranks, buckets of \(bucketMB) MB (\(bucketFloats) floats), "
                + "medians over \(repetitions) repetitions of the slowest rank's time")
            print("size        floats       MPI_Allreduce   bucketed (ratio)     sharded+gather (ratio)")
        }
        for (name, floats) in try parsedSizes() {
            let arena = UnsafeMutableBufferPointer<Float>.allocate(capacity: floats)
            defer { arena.deallocate() }
            arena.initialize(repeating: 1e-3)

            let bucketed = try GradientSynchronizer(communicator: communicator, gradients: arena, bucketFloats: bucketFloats,
                                                    messageFloats: messageFloats, shardOptimizer: false)
            let sharded = try GradientSynchronizer(communicator: communicator, gradients: arena, bucketFloats: bucketFloats,
                                                   messageFloats: messageFloats, shardOptimizer: true)
            // Interleaved (one of each per round), so that load from other processes hits all alike.
            let medians = try mediansOfSlowestRank(communicator, [
                { try communicator.allReduceSumInPlace(arena) },
                { try bucketed.finish() },
                {
                    try sharded.finish()
                    try communicator.gatherParameters(arena, layout: sharded.layout)
                },
            ])
            let (plainSeconds, bucketedSeconds, shardedSeconds) = (medians[0], medians[1], medians[2])
            let overlap = overlapLayerMs > 0 ? try measureOverlap(communicator: communicator, synchronizer: bucketed) : [:]
            var result: [String: Any] = [
                "name": name, "floats": floats,
                "allreduce_s_median": plainSeconds, "bucketed_s_median": bucketedSeconds,
                "bucketed_over_allreduce": bucketedSeconds / plainSeconds,
                "sharded_reduce_plus_gather_s_median": shardedSeconds,
                "sharded_over_allreduce": shardedSeconds / plainSeconds,
            ]
            for (key, value) in overlap { result[key] = value }
            results.append(result)
            if rank == 0 && !json {
                let label = name.padding(toLength: 11, withPad: " ", startingAt: 0)
                print(label + String(format: " %-12d %8.4f s      %8.4f s (%.3f)    %8.4f s (%.3f)", floats,
                                     plainSeconds, bucketedSeconds, bucketedSeconds / plainSeconds,
                                     shardedSeconds, shardedSeconds / plainSeconds))
                if !overlap.isEmpty {
                    for key in overlap.keys.sorted() { print(String(format: "    %@: %.4f s", key as NSString, overlap[key]!)) }
                }
            }
        }
        if rank == 0 && json {
            let object: [String: Any] = ["ranks": communicator.worldSize, "bucket_floats": bucketFloats,
                                         "repetitions": repetitions, "results": results]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        }
    }

    /// One warm-up round, then `repetitions` timed rounds of every operation in turn; each run's time
    /// is the slowest rank's. Returns the median per operation.
    private func mediansOfSlowestRank(_ communicator: any Communicator, _ operations: [() throws -> Void]) throws -> [Double] {
        var times = Array(repeating: [Double](), count: operations.count)
        for round in 0 ... repetitions {
            for (index, operation) in operations.enumerated() {
                try communicator.barrier()
                let start = Date.timeIntervalSinceReferenceDate
                try operation()
                let seconds = try communicator.allReduce(Date.timeIntervalSinceReferenceDate - start, .max)
                if round > 0 { times[index].append(seconds) }
            }
        }
        return times.map { runs in
            let sorted = runs.sorted()
            return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
    }

    /// A simulated backward of 12 equal layers, `overlapLayerMs` of arithmetic each, reporting each
    /// layer's gradients ready as it finishes. Returns medians of the whole step and of the wait in
    /// finish(), for: compute only; readiness without progress(); progress() once between layers;
    /// progress() about every millisecond inside the layers (what a kernel-level hook could do).
    private func measureOverlap(communicator: any Communicator, synchronizer: GradientSynchronizer) throws -> [String: Double] {
        let layerCount = 12
        let floats = synchronizer.gradients.count
        let variants = ["compute_only", "no_progress", "progress_between_layers", "progress_every_ms"]
        var waits = Array(repeating: [Double](), count: variants.count)
        let steps = try mediansOfSlowestRank(communicator, variants.enumerated().map { variantIndex, variant in
            {
                for layer in stride(from: layerCount - 1, through: 0, by: -1) {
                    try simulatedLayerCompute(milliseconds: overlapLayerMs,
                                              progressEveryMillisecond: variant == "progress_every_ms" ? synchronizer : nil)
                    if variant == "compute_only" { continue }
                    try synchronizer.gradientsReady(downTo: floats * layer / layerCount)
                    if variant != "no_progress" { try synchronizer.progress() }
                }
                if variant != "compute_only" {
                    try synchronizer.finish()
                    waits[variantIndex].append(synchronizer.lastWaitSeconds)
                }
            }
        })
        var results: [String: Double] = [:]
        for (index, variant) in variants.enumerated() {
            results["overlap_\(variant)_step_s"] = steps[index]
            if !waits[index].isEmpty {
                let sorted = waits[index].sorted()
                results["overlap_\(variant)_finish_wait_s"] = sorted[sorted.count / 2]
            }
        }
        return results
    }

    private func simulatedLayerCompute(milliseconds: Double, progressEveryMillisecond synchronizer: GradientSynchronizer?) throws {
        let end = Date.timeIntervalSinceReferenceDate + milliseconds / 1000
        var nextProgress = Date.timeIntervalSinceReferenceDate + 0.001
        var accumulator: Float = 1
        while Date.timeIntervalSinceReferenceDate < end {
            for index in 0 ..< 10_000 { accumulator = accumulator * 0.999_999 + Float(index & 7) * 1e-9 }
            if let synchronizer, Date.timeIntervalSinceReferenceDate >= nextProgress {
                try synchronizer.progress()
                nextProgress += 0.001
            }
        }
        if accumulator.isNaN { print("") }  // keeps the loop from being optimised away
    }
}
