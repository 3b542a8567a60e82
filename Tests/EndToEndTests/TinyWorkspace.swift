import Foundation
import Model
import TestSupport

/// A throw-away folder with what a user brings: a model folder (the tiny random BERT of the
/// parity tests plus a 99-word vocabulary) and AG News-style CSV files whose classes use
/// different words, so that training visibly learns.
struct TinyWorkspace {
    let root: URL
    var model: URL { root.appendingPathComponent("model") }
    var train: URL { root.appendingPathComponent("train.csv") }
    var test: URL { root.appendingPathComponent("test.csv") }
    func output(_ name: String) -> URL { root.appendingPathComponent(name) }

    init(trainRows: Int = 96, testRows: Int = 40) throws {
        root = scratchURL("e2e-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        let fixture = BinaryLocator.repositoryRoot.appendingPathComponent("Tests/ModelTests/Fixtures/tiny_bert")
        for name in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(at: fixture.appendingPathComponent(name), to: model.appendingPathComponent(name))
        }
        // Ids 0-4 are the special tokens the tiny model was built with; words w5 ... w98 follow.
        let vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (5..<99).map { "w\($0)" }
        try (vocabulary.joined(separator: "\n") + "\n").write(to: model.appendingPathComponent("vocab.txt"), atomically: true, encoding: .utf8)
        try #"{"do_lower_case": true, "tokenizer_class": "BertTokenizer", "model_max_length": 64}"#
            .write(to: model.appendingPathComponent("tokenizer_config.json"), atomically: true, encoding: .utf8)
        try Self.rows(trainRows, seed: 1).write(to: train, atomically: true, encoding: .utf8)
        try Self.rows(testRows, seed: 2).write(to: test, atomically: true, encoding: .utf8)
    }

    /// "class","title","description" rows; class k draws most words from the k-th quarter.
    static func rows(_ count: Int, seed: UInt64) -> String {
        var state = seed
        func next(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
        var lines: [String] = []
        for _ in 0..<count {
            let label = next(4)
            func words(_ n: Int) -> String {
                (0..<n).map { _ in "w\(next(3) == 0 ? 5 + next(94) : 5 + 23 * label + next(23))" }.joined(separator: " ")
            }
            lines.append("\"\(label + 1)\",\"\(words(2 + next(4)))\",\"\(words(3 + next(14)))\"")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    func weights(_ output: URL, step: Int) throws -> [String: [Float]] {
        let file = try SafeTensorsFile(url: output.appendingPathComponent("checkpoint-\(step)/model.safetensors"))
        var all: [String: [Float]] = [:]
        for name in file.records.keys { all[name] = try file.floats(name) }
        return all
    }
}

/// Largest |a - b| / max|b| over all tensors.
func largestRelativeDifference(_ a: [String: [Float]], _ b: [String: [Float]]) -> Float {
    var worst: Float = 0
    for (name, expected) in b {
        guard let actual = a[name], actual.count == expected.count else { return .infinity }
        let scale = max(expected.map(abs).max() ?? 0, 1e-6)
        worst = max(worst, (zip(actual, expected).map { abs($0 - $1) }.max() ?? 0) / scale)
    }
    return worst
}

/// The pids of the direct children of `parent` (mpirun's ranks on this machine).
func childProcesses(of parent: Int32) -> [Int32] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { Int32($0) }.filter { pid in
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 2 && Int32(fields[1]) == parent
    }.sorted()
}
