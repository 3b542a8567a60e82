import Foundation
import Testing
import TestSupport

/// The acceptance run: the real MiniLM on 8 ranks (oversubscribed on this 2-core machine)
/// for 20 steps, with evaluation, to the end, with one report stream.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct MiniLMEndToEndTests {
    @Test func eightRanksTwentyStepsWithOneReportStream() throws {
        let model = BinaryLocator.repositoryRoot.appendingPathComponent("models/minilm")
        try #require(FileManager.default.fileExists(atPath: model.appendingPathComponent("model.safetensors").path),
                     "MiniLM not found at \(model.path): run launch/setup")
        let root = scratchURL("minilm-e2e-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        // News-like rows from ordinary words of MiniLM's vocabulary, each class its own words.
        let vocabulary = try String(contentsOf: model.appendingPathComponent("vocab.txt"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        let words = vocabulary[2000..<6000].filter { $0.allSatisfy(\.isLetter) && $0.count > 3 }
        var state: UInt64 = 5
        func next(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
        func rows(_ count: Int) -> String {
            (0..<count).map { _ -> String in
                let label = next(4)
                let text = (0..<(8 + next(30))).map { _ in words[(label * words.count / 4) + next(words.count / 4)] }
                return "\"\(label + 1)\",\"\(text.prefix(5).joined(separator: " "))\",\"\(text.dropFirst(5).joined(separator: " "))\""
            }.joined(separator: "\n") + "\n"
        }
        let train = root.appendingPathComponent("train.csv"), test = root.appendingPathComponent("test.csv")
        try rows(256).write(to: train, atomically: true, encoding: .utf8)
        try rows(64).write(to: test, atomically: true, encoding: .utf8)

        let output = root.appendingPathComponent("run")
        let process = try RunningProcess(try BinaryLocator.mpirun(), BinaryLocator.mpirunTestOptions + [
            "-n", "8", try BinaryLocator.bertDist().path, "train", "--model", model.path, "--train", train.path,
            "--eval", test.path, "--output", output.path, "--max-steps", "20", "--log-every", "1"])
        let status = process.waitForExit(timeoutSeconds: 540)
        #expect(status == 0, "\(process.standardOutput)\n\(process.standardError)")
        let stepLines = process.standardOutput.split(separator: "\n").filter { $0.hasPrefix("step ") }
        #expect(stepLines.count == 20, "one report stream: \(process.standardOutput)")
        #expect(process.standardOutput.contains("eval at step 20") && process.standardOutput.contains("over 8 rank(s)"))
        #expect(process.standardError.isEmpty, "other ranks print nothing but errors: \(process.standardError)")
        #expect(FileManager.default.fileExists(atPath: output.appendingPathComponent("checkpoint-20/trainer_state.pb").path))
    }
}
