import Data
import Distributed
import Foundation
import Options
import Testing
@testable import Training

/// Rank 0 names a host (or, on one host, a rank) whose compute time per step is markedly above
/// the median, with the figures; balanced ranks are never named.
@Suite struct StragglerTests {
    /// `compute[rank]` seconds per step for every step of the window (plus a little noise).
    func report(hosts: [String], compute: [Double], window: Int = 10) -> String? {
        var monitor = StragglerMonitor(hosts: hosts, window: window)
        var line: String?
        for step in 1...window {
            line = monitor.record(step: step) { rank in
                let noise = Double((step * 7 + rank * 3) % 5) * 0.001
                return (compute[rank] + noise, compute.max()! - compute[rank])
            }
        }
        return line
    }

    @Test func theSlowHostIsNamedWithItsTimeAgainstTheMedian() throws {
        let line = try #require(report(hosts: ["node1", "node1", "node2", "node2"], compute: [0.40, 0.41, 0.40, 0.90]))
        #expect(line.contains("node2 (ranks 2,3) computes 0.90"), "\(line)")
        #expect(line.contains("median of 0.40") && line.contains("wait 0.4"), "\(line)")
        #expect(!line.contains("node1"))
    }

    @Test func balancedRanksAndSmallDifferencesAreNotReported() {
        #expect(report(hosts: ["a", "b", "c"], compute: [0.40, 0.42, 0.41]) == nil)
        // Twice as slow, but by less than 20 ms: noise on tiny steps.
        #expect(report(hosts: ["a", "b"], compute: [0.004, 0.009]) == nil)
    }

    @Test func onOneHostTheSlowRankIsNamed() throws {
        let line = try #require(report(hosts: ["box", "box", "box"], compute: [0.1, 0.1, 0.3]))
        #expect(line.contains("box (rank 2) computes 0.30"), "\(line)")
    }

    /// In a real run: rank 1 of 2 is slowed by 0.25 s per step, inside its compute time.
    @Test func aSlowedRankIsNamedDuringTraining() throws {
        let options = tinyOptions(output: temporaryDirectory())
        let data = try syntheticData()
        let log = try InProcessGroupRun.collectingLog(ranks: 2) { communicator, log in
            var setup = try trainingSetup(options, communicator: communicator, data: data)
            // Rank 1 packs its batches slowly: 0.25 s over its 4 examples of each step.
            if communicator.rank == 1 {
                setup = RunSetup(description: setup.description, labels: setup.labels, model: setup.model,
                                 train: SlowExamples(setup.train!, secondsPerExample: 0.25 / 4), eval: setup.eval, root: setup.root)
            }
            let run = try TrainingRun(options: options, runtime: Runtime(), communicator: communicator, setup: setup, log: log)
            run.settings.stragglerWindow = 3
            return try run.run().stepsDone
        }.log
        let lines = log.filter { $0.contains("straggler") }
        #expect(lines.count == 2, "6 steps, windows of 3: \(log)")
        #expect(lines.allSatisfy { $0.contains("(rank 1) computes 0.2") }, "\(lines)")
        #expect(lines.first?.hasPrefix("warning: straggler over steps 1-3: localhost (rank 1)") == true, "\(lines)")
    }
}

/// `examples`, each taking `secondsPerExample` to hand out (a rank that computes slowly).
struct SlowExamples: TokenizedExamples {
    let examples: any TokenizedExamples
    let secondsPerExample: Double

    init(_ examples: any TokenizedExamples, secondsPerExample: Double) {
        self.examples = examples
        self.secondsPerExample = secondsPerExample
    }

    var count: Int { examples.count }
    func tokens(at index: Int) -> UnsafeBufferPointer<Int32> {
        Thread.sleep(forTimeInterval: secondsPerExample)
        return examples.tokens(at: index)
    }
    func secondSegmentStart(at index: Int) -> Int { examples.secondSegmentStart(at: index) }
    func label(at index: Int) -> Int32 { examples.label(at: index) }
    var problemType: ProblemType { examples.problemType }
    var labelSet: LabelSet { examples.labelSet }
    func positiveLabels(at index: Int) -> UnsafeBufferPointer<Int32> { examples.positiveLabels(at: index) }
    func value(at index: Int) -> Float { examples.value(at: index) }
}
