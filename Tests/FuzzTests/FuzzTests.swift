import Foundation
import Testing

/// Every loader fed hundreds of damaged files (fixed seeds, so a run is reproducible): each
/// must load or throw a one-line error; a crash or hang ends the run naming the case
/// (FuzzHarness.swift). BERT_DIST_FUZZ_SCALE=N runs N times as many cases (the out-of-suite campaign).
@Suite(.serialized) struct FuzzTests {
    /// The fixtures themselves load: the fuzzer damages files that work.
    @Test(.timeLimit(.minutes(2))) func fixturesLoad() throws {
        for target in try allTargets() {
            let folder = try FuzzRunner.scratchFolder(for: target)
            defer { try? FileManager.default.removeItem(at: folder.deletingLastPathComponent()) }
            #expect(throws: Never.self, "\(target.name)") { try target.load(folder, 1) }
        }
    }

    @Test(.timeLimit(.minutes(3))) func modelFolders() throws {
        report(try FuzzRunner.run(FuzzTargets.predict(), cases: FuzzRunner.scaled(300)))
        report(try FuzzRunner.run(FuzzTargets.train(), cases: FuzzRunner.scaled(100)))
        for family in ["tiny_distilbert", "tiny_electra", "tiny_roberta"] {
            report(try FuzzRunner.run(FuzzTargets.familyModel(family), cases: FuzzRunner.scaled(50)))
        }
    }

    @Test(.timeLimit(.minutes(3))) func checkpoints() throws {
        report(try FuzzRunner.run(FuzzTargets.checkpoint(), cases: FuzzRunner.scaled(200)))
        report(try FuzzRunner.run(FuzzTargets.resume(), cases: FuzzRunner.scaled(100)))
    }

    @Test(.timeLimit(.minutes(3))) func tokenizerFiles() throws {
        for target in try FuzzTargets.tokenizers() { report(try FuzzRunner.run(target, cases: FuzzRunner.scaled(100))) }
    }

    @Test(.timeLimit(.minutes(3))) func dataFiles() throws {
        for target in try FuzzTargets.dataFiles() { report(try FuzzRunner.run(target, cases: FuzzRunner.scaled(100))) }
        report(try FuzzRunner.run(FuzzTargets.tokenCache(), cases: FuzzRunner.scaled(100)))
    }

    @Test(.timeLimit(.minutes(3))) func configFiles() throws {
        report(try FuzzRunner.run(FuzzTargets.trainConfig(), cases: FuzzRunner.scaled(100)))
    }

    func allTargets() throws -> [FuzzTarget] {
        [try FuzzTargets.predict(), try FuzzTargets.train(), try FuzzTargets.familyModel("tiny_distilbert"),
         try FuzzTargets.familyModel("tiny_electra"), try FuzzTargets.familyModel("tiny_roberta"), try FuzzTargets.checkpoint(), try FuzzTargets.resume(), try FuzzTargets.tokenCache(),
         try FuzzTargets.trainConfig()]
            + (try FuzzTargets.tokenizers()) + (try FuzzTargets.dataFiles())
    }

    func report(_ tally: FuzzTally) {
        print("fuzz: \(tally)")
        for crash in tally.crashed { print("fuzz:   \(crash)") }
        #expect(tally.cases > 0)
        #expect(tally.crashed.isEmpty, "\(tally.crashed.count) case(s) crashed or hung")
    }
}
