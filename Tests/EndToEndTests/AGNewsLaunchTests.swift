import Foundation
import Testing
import TestSupport

/// launch/ag-news on a machine without internet: the download fails (a local port nothing
/// listens on stands for the AG News server), the script says so in one line and trains on
/// the sample in examples/ag_news_sample. A short run (2 steps), not the whole job.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct AGNewsLaunchTests {
    /// A TCP port of 127.0.0.1 that refuses connections: bound, then closed.
    static func closedPort() throws -> UInt16 {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) == 0 && getsockname(descriptor, $0, &length) == 0 }
        }
        try #require(bound)
        return UInt16(bigEndian: address.sin_port)
    }

    @Test func offlineItSaysSoAndTrainsOnTheShippedSample() throws {
        let repository = BinaryLocator.repositoryRoot
        try #require(FileManager.default.fileExists(atPath: repository.appendingPathComponent("models/minilm/model.safetensors").path),
                     "MiniLM not found in models/minilm: run launch/setup")
        let root = scratchURL("ag-news-offline-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        var environment = ProcessInfo.processInfo.environment
        environment["BERT_DIST_BIN"] = try BinaryLocator.bertDist().path
        environment["BERT_DIST_AG_NEWS_BASE_URL"] = "http://127.0.0.1:\(try Self.closedPort())/data"
        environment["AG_NEWS_DIR"] = root.appendingPathComponent("data").path
        environment["AG_NEWS_OUTPUT"] = root.appendingPathComponent("run").path
        environment["XDG_CACHE_HOME"] = root.appendingPathComponent("cache").path
        environment["RANKS"] = "1"
        let process = try RunningProcess(repository.appendingPathComponent("launch/ag-news"),
                                         ["--max-steps", "2", "--batch-size", "8", "--threads", "1"], environment: environment)
        let status = process.waitForExit(timeoutSeconds: 300)
        let output = process.standardOutput + process.standardError
        #expect(status == 0, "\(output)")
        let notes = output.split(separator: "\n").filter { $0.contains("could not be downloaded") || $0.contains("error:") }
        #expect(notes.count == 1 && notes[0].hasPrefix("launch/ag-news: AG News could not be downloaded (cannot download train.csv")
                && notes[0].hasSuffix("training on the sample in examples/ag_news_sample instead (300 train, 100 test rows)"), "\(output)")
        #expect(process.standardOutput.contains("training minilm: 300 examples, 2 steps"), "\(process.standardOutput)")
        #expect(process.standardOutput.contains("eval at step 2: accuracy") && process.standardOutput.contains("(100 examples)"))
        #expect(FileManager.default.fileExists(atPath: root.appendingPathComponent("run/checkpoint-2/trainer_state.pb").path))
    }
}
