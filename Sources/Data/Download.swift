import Foundation
import Storage
import Synchronization

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A file to fetch: where from, and the SHA-256 it must have.
public struct DownloadSource: Sendable, Equatable {
    public let fileName: String
    public let url: URL
    public let sha256: String   // lowercase hex
    public let byteCount: Int?  // for progress before the server says

    public init(fileName: String, url: URL, sha256: String, byteCount: Int? = nil) {
        self.fileName = fileName
        self.url = url
        self.sha256 = sha256.lowercased()
        self.byteCount = byteCount
    }
}

public enum AGNews {
    /// The files the Hugging Face `datasets` ag_news loader downloads, with the checksums its
    /// dataset_infos.json publishes.
    public static let sources: [DownloadSource] = [
        DownloadSource(fileName: "train.csv",
                       url: URL(string: "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/train.csv")!,
                       sha256: "76a0a2d2f92b286371fe4d4044640910a04a803fdd2538e0f3f29a5c6f6b672e", byteCount: 29_470_338),
        DownloadSource(fileName: "test.csv",
                       url: URL(string: "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/test.csv")!,
                       sha256: "521465c2428ed7f02f8d6db6ffdd4b5447c1c701962353eb2c40d548c3c85699", byteCount: 1_857_427),
    ]

    /// The same files under another base URL (a mirror, or a test server), with other checksums
    /// when given.
    public static func sources(baseURL: URL, sha256: [String: String] = [:]) -> [DownloadSource] {
        sources.map { source in
            DownloadSource(fileName: source.fileName, url: baseURL.appendingPathComponent(source.fileName),
                           sha256: sha256[source.fileName] ?? source.sha256,
                           byteCount: sha256[source.fileName] == nil ? source.byteCount : nil)
        }
    }
}

/// What happened to one file.
public enum DownloadEvent: Sendable {
    case alreadyPresent(fileName: String)                          // verified, not downloaded
    case replacing(fileName: String, reason: String)               // present but wrong
    case progress(fileName: String, receivedBytes: Int, totalBytes: Int?)
    case saved(fileName: String, byteCount: Int)
}

/// Downloads each source into `directory` unless a file with the right SHA-256 is already
/// there. Each file is streamed into a temporary file, its SHA-256 checked, and only then
/// renamed into place, so a failed or wrong download never leaves a partial or bad file (nor
/// touches an existing one). Network failures give one line saying where to get the files and
/// where to put them.
public func downloadFiles(_ sources: [DownloadSource], into directory: URL, timeoutSeconds: Double = 30,
                          events: @escaping @Sendable (DownloadEvent) -> Void = { _ in }) throws {
    do {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    } catch {
        throw DataError("\(directory.path): cannot create the output folder (\(describeFileError(error)))")
    }
    for source in sources {
        let destination = directory.appendingPathComponent(source.fileName)
        if FileManager.default.fileExists(atPath: destination.path) {
            let digest = try? SHA256.hash(fileAt: destination)
            if digest?.hex == source.sha256 {
                events(.alreadyPresent(fileName: source.fileName))
                continue
            }
            events(.replacing(fileName: source.fileName, reason: digest == nil ? "unreadable" : "SHA-256 \(digest!.hex) is not the expected \(source.sha256)"))
        }
        do {
            try download(source, to: destination, timeoutSeconds: timeoutSeconds, events: events)
        } catch let failure as NetworkFailure {
            let where_ = sources.map(\.url.absoluteString).joined(separator: " and ")
            throw DataError("cannot download \(source.fileName) from \(source.url.host ?? source.url.absoluteString) (\(failure.reason)); without network, fetch \(where_) elsewhere and put \(sources.map(\.fileName).joined(separator: " and ")) in \(directory.path): this command then only verifies their SHA-256")
        }
    }
}

/// A connection-level failure (no DNS, refused, timed out): the offline case.
struct NetworkFailure: Error {
    let reason: String
}

private func download(_ source: DownloadSource, to destination: URL, timeoutSeconds: Double,
                      events: @escaping @Sendable (DownloadEvent) -> Void) throws {
    let writer: AtomicFileWriter
    do {
        writer = try AtomicFileWriter(destination: destination)
    } catch {
        throw DataError("\(destination.path): cannot write (\(error))")
    }
    let delegate = DownloadDelegate(source: source, writer: writer, events: events)
    let configuration = URLSessionConfiguration.ephemeral
    configuration.timeoutIntervalForRequest = timeoutSeconds
    configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
    let session = URLSession(configuration: configuration, delegate: delegate, delegateQueue: nil)
    defer { session.finishTasksAndInvalidate() }
    session.dataTask(with: URLRequest(url: source.url)).resume()
    delegate.finished.wait()
    let outcome = delegate.state.withLock { $0 }
    if let failure = outcome.failure {
        writer.abandon()
        throw failure
    }
    let digest = outcome.hasher.finalize()
    guard digest.hex == source.sha256 else {
        writer.abandon()
        throw DataError("\(source.url.absoluteString): checksum mismatch: the download (\(outcome.received) bytes) has SHA-256 \(digest.hex), expected \(source.sha256); nothing was saved")
    }
    do {
        _ = try writer.commit()
    } catch {
        writer.abandon()
        throw DataError("\(destination.path): cannot save the download (\(error))")
    }
    events(.saved(fileName: source.fileName, byteCount: outcome.received))
}

/// URLSession callbacks: write each chunk to the temporary file and hash it. Callbacks arrive
/// one at a time on the session's serial queue; the state is behind a mutex anyway because the
/// waiting thread reads it at the end (hence @unchecked Sendable for the NSObject subclass).
private final class DownloadDelegate: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    struct State {
        var hasher = SHA256()
        var received = 0
        var expected: Int?
        var failure: Error?
        var lastReported = 0
    }

    let source: DownloadSource
    let writer: AtomicFileWriter
    let events: @Sendable (DownloadEvent) -> Void
    let state = Mutex(State())
    let finished = DispatchSemaphore(value: 0)

    init(source: DownloadSource, writer: AtomicFileWriter, events: @escaping @Sendable (DownloadEvent) -> Void) {
        self.source = source
        self.writer = writer
        self.events = events
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
        if let http = response as? HTTPURLResponse, http.statusCode != 200 {
            state.withLock {
                $0.failure = DataError("\(source.url.absoluteString): the server answered HTTP \(http.statusCode) (\(HTTPURLResponse.localizedString(forStatusCode: http.statusCode)))")
            }
            completionHandler(.cancel)
            return
        }
        let length = response.expectedContentLength
        state.withLock { $0.expected = length > 0 ? Int(length) : source.byteCount }
        events(.progress(fileName: source.fileName, receivedBytes: 0, totalBytes: state.withLock { $0.expected }))
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        let report: (Int, Int?)? = state.withLock { state in
            guard state.failure == nil else { return nil }
            do {
                try data.withUnsafeBytes { bytes in
                    state.hasher.update(bytes)
                    try writer.write(bytes)
                }
            } catch {
                state.failure = error
                dataTask.cancel()
                return nil
            }
            state.received += data.count
            // Progress about every 1% (and at least every 256 KiB when the size is unknown).
            let step = max((state.expected ?? 0) / 100, 256 * 1024)
            if state.received - state.lastReported >= step {
                state.lastReported = state.received
                return (state.received, state.expected)
            }
            return nil
        }
        if let (received, expected) = report {
            events(.progress(fileName: source.fileName, receivedBytes: received, totalBytes: expected))
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        state.withLock { state in
            if state.failure == nil, let error {
                state.failure = classify(error)
            }
        }
        finished.signal()
    }

    private func classify(_ error: Error) -> Error {
        let nsError = error as NSError
        if nsError.domain == NSURLErrorDomain {
            let offline: [Int: String] = [
                NSURLErrorCannotFindHost: "cannot resolve the host name",
                NSURLErrorDNSLookupFailed: "DNS lookup failed",
                NSURLErrorCannotConnectToHost: "cannot connect to the server",
                NSURLErrorNotConnectedToInternet: "not connected to the internet",
                NSURLErrorTimedOut: "timed out",
                NSURLErrorNetworkConnectionLost: "the connection was lost",
                NSURLErrorSecureConnectionFailed: "TLS connection failed",
            ]
            if let reason = offline[nsError.code] {
                return NetworkFailure(reason: reason)
            }
        }
        return DataError("\(source.url.absoluteString): download failed (\(nsError.localizedDescription))")
    }
}
