import Foundation
import Synchronization
import Testing

@testable import Data

#if canImport(Glibc)
import Glibc
#endif

/// A minimal HTTP/1.1 server on 127.0.0.1 serving fixed files (GET only, one request per
/// connection), counting the requests it answers.
final class LoopbackHTTPServer: Sendable {
    let port: UInt16
    private let listener: Int32
    private let files: [String: [UInt8]]
    let requests = Mutex<[String]>([])
    private let stopped = Mutex(false)

    init(files: [String: [UInt8]]) throws {
        self.files = files
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var reuse: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(descriptor, 16) == 0 else { throw DataError("test server: cannot listen") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        listener = descriptor
        port = UInt16(bigEndian: address.sin_port)
        let thread = Thread { [self] in serve() }
        thread.start()
    }

    var baseURL: URL { URL(string: "http://127.0.0.1:\(port)/data")! }

    private func serve() {
        while true {
            let connection = accept(listener, nil, nil)
            if connection < 0 { return }  // listener closed
            if stopped.withLock({ $0 }) {
                close(connection)
                return
            }
            var request: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while !request.containsHeaderEnd {
                let count = read(connection, &buffer, buffer.count)
                if count <= 0 { break }
                request += buffer[0..<count]
            }
            let line = String(decoding: request.prefix { $0 != 0x0D }, as: UTF8.self)
            let path = line.split(separator: " ").dropFirst().first.map(String.init) ?? "/"
            requests.withLock { $0.append(path) }
            let name = String(path.split(separator: "/").last ?? "")
            var response: [UInt8]
            if let body = files[name] {
                response = Array("HTTP/1.1 200 OK\r\nContent-Length: \(body.count)\r\nContent-Type: text/csv\r\nConnection: close\r\n\r\n".utf8) + body
            } else {
                response = Array("HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found".utf8)
            }
            var sent = 0
            while sent < response.count {
                let count = response[sent...].withUnsafeBytes { write(connection, $0.baseAddress, $0.count) }
                if count <= 0 { break }
                sent += count
            }
            close(connection)
        }
    }

    func stop() {
        stopped.withLock { $0 = true }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }
}

private extension [UInt8] {
    var containsHeaderEnd: Bool {
        guard count >= 4 else { return false }
        for index in 0...(count - 4) where self[index] == 0x0D && self[index + 1] == 0x0A && self[index + 2] == 0x0D && self[index + 3] == 0x0A {
            return true
        }
        return false
    }
}

@Suite(.serialized) struct DownloadTests {
    // Fixture files and their SHA-256 (from `printf '%s' ... | sha256sum`).
    static let train = Array("\"3\",\"Title\",\"Description\"\n\"1\",\"Another\",\"Row\"\n".utf8)
    static let trainSHA256 = "5d21d13d38db957a1beb61bd2dc4b19f5e829aab669a2606b711d7c9a2766a00"
    static let test = Array("\"2\",\"Test\",\"Row\"\n".utf8)
    static let testSHA256 = "2f524a9e56f960945601004ad150bda0033c8b4b97b162dce00e2ccbf1c3eb78"

    static func sources(_ server: LoopbackHTTPServer) -> [DownloadSource] {
        AGNews.sources(baseURL: server.baseURL, sha256: ["train.csv": trainSHA256, "test.csv": testSHA256])
    }

    @Test func downloadsVerifiesAndDoesNotDownloadAgain() throws {
        let server = try LoopbackHTTPServer(files: ["train.csv": Self.train, "test.csv": Self.test])
        defer { server.stop() }
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let events = Mutex<[String]>([])
        try downloadFiles(Self.sources(server), into: folder.url) { event in
            events.withLock {
                switch event {
                case .saved(let name, let count): $0.append("saved \(name) \(count)")
                case .alreadyPresent(let name): $0.append("present \(name)")
                case .replacing(let name, _): $0.append("replacing \(name)")
                case .progress: break
                }
            }
        }
        #expect(events.withLock { $0 } == ["saved train.csv \(Self.train.count)", "saved test.csv \(Self.test.count)"])
        #expect(try [UInt8](Data(contentsOf: folder.url.appendingPathComponent("train.csv"))) == Self.train)
        #expect(try [UInt8](Data(contentsOf: folder.url.appendingPathComponent("test.csv"))) == Self.test)
        #expect(server.requests.withLock { $0 } == ["/data/train.csv", "/data/test.csv"])
        #expect(try LabeledTexts.read(folder.url.appendingPathComponent("train.csv")).count == 2)

        // Second run: both verified in place, no request.
        events.withLock { $0 = [] }
        try downloadFiles(Self.sources(server), into: folder.url) { event in
            if case .alreadyPresent(let name) = event { events.withLock { $0.append("present \(name)") } }
        }
        #expect(events.withLock { $0 } == ["present train.csv", "present test.csv"])
        #expect(server.requests.withLock { $0 }.count == 2)

        // A damaged local file is fetched again.
        try Data("garbage".utf8).write(to: folder.url.appendingPathComponent("test.csv"))
        try downloadFiles(Self.sources(server), into: folder.url)
        #expect(try [UInt8](Data(contentsOf: folder.url.appendingPathComponent("test.csv"))) == Self.test)
        #expect(server.requests.withLock { $0 }.count == 3)
    }

    @Test func checksumMismatchSavesNothing() throws {
        let tampered = Array("\"2\",\"Tampered\",\"Row\"\n".utf8)
        let server = try LoopbackHTTPServer(files: ["train.csv": Self.train, "test.csv": tampered])
        defer { server.stop() }
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let previous = Array("previous content".utf8)
        try Data(previous).write(to: folder.url.appendingPathComponent("test.csv"))
        let message = dataErrorMessage { try downloadFiles(Self.sources(server), into: folder.url) }
        #expect(message.hasPrefix("\(server.baseURL.absoluteString)/test.csv: checksum mismatch: the download (\(tampered.count) bytes) has SHA-256 "))
        #expect(message.hasSuffix("expected \(Self.testSHA256); nothing was saved"))
        #expect(try [UInt8](Data(contentsOf: folder.url.appendingPathComponent("test.csv"))) == previous)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder.url.path).sorted()
        #expect(leftovers == ["test.csv", "train.csv"])  // no temporary file left behind
    }

    @Test func missingFileOnTheServerNamesTheStatus() throws {
        let server = try LoopbackHTTPServer(files: ["train.csv": Self.train])
        defer { server.stop() }
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let message = dataErrorMessage { try downloadFiles(Self.sources(server), into: folder.url) }
        #expect(message == "\(server.baseURL.absoluteString)/test.csv: the server answered HTTP 404 (Not Found)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.url.path) == ["train.csv"])
    }

    @Test func serverDownGivesTheOfflineHint() throws {
        // A port nobody listens on: bind one, then close it.
        let server = try LoopbackHTTPServer(files: [:])
        let base = server.baseURL
        server.stop()
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let sources = AGNews.sources(baseURL: base, sha256: ["train.csv": Self.trainSHA256, "test.csv": Self.testSHA256])
        let message = dataErrorMessage { try downloadFiles(sources, into: folder.url, timeoutSeconds: 5) }
        #expect(message == "cannot download train.csv from 127.0.0.1 (cannot connect to the server); without network, fetch \(base.absoluteString)/train.csv and \(base.absoluteString)/test.csv elsewhere and put train.csv and test.csv in \(folder.url.path): this command then only verifies their SHA-256")
        #expect(!message.contains("\n"))
    }

    @Test func publishedSourcesAreTheHuggingFaceOnes() {
        #expect(AGNews.sources.map(\.url.absoluteString) == [
            "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/train.csv",
            "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/test.csv",
        ])
        #expect(AGNews.sources.allSatisfy { $0.sha256.count == 64 })
    }
}
