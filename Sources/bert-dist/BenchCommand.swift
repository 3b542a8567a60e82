import ArgumentParser
import Foundation
import Training

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "Time training steps.")
    @Option var model: String
    @Option var batchSize = 8
    @Option var seqLen = 128
    @Option var steps = 5
    @Option var threads = 2
    func run() throws {
        try quickBench(modelDirectory: URL(fileURLWithPath: model), batch: batchSize, sequenceLength: seqLen, steps: steps, threads: threads)
    }
}
