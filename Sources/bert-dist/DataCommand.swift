import ArgumentParser
import Data
import Foundation
import Startup
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `bert-dist data`: prepare data sets. One subcommand so far: `ag-news`.
struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Download data sets.",
        subcommands: [AGNewsDataCommand.self])
}

/// `bert-dist data ag-news --output DIR`: train.csv and test.csv from where the Hugging Face
/// `datasets` ag_news loader takes them, SHA-256 verified, written atomically; files already
/// present with the right checksum are not downloaded again.
struct AGNewsDataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ag-news",
        abstract: "Download AG News (train.csv, test.csv) into a folder, verifying their SHA-256.",
        discussion: """
            Source: \(AGNews.sources.map(\.url.absoluteString).joined(separator: " and ")) \
            (the files Hugging Face datasets' ag_news loader uses, with its published checksums). \
            Offline, copy the two files into the folder yourself: this command then only verifies them.

            Example:
              bert-dist data ag-news --output data/ag_news
            """)

    @Option(help: "Folder to put train.csv and test.csv in (created if needed).")
    var output: String

    @Option(help: "Download from this URL instead (a mirror holding train.csv and test.csv; the checksums stay the published ones). Also BERT_DIST_AG_NEWS_BASE_URL.")
    var mirror: String?

    @Option(help: "Seconds without data before a download is given up.")
    var timeoutSeconds: Double = 30

    func validate() throws {
        guard timeoutSeconds > 0, timeoutSeconds.isFinite else { throw ValidationError("--timeout-seconds must be a positive number of seconds") }
    }

    func run() throws {
        if ProcessEnvironment.current.isNonZeroRank { return }  // rank 0 alone downloads
        var sources = AGNews.sources
        if let base = mirror ?? ProcessEnvironment.current.variables["BERT_DIST_AG_NEWS_BASE_URL"] {
            guard let url = URL(string: base), url.scheme != nil else {
                throw ValidationError("--mirror: '\(base)' is not a URL")
            }
            sources = AGNews.sources(baseURL: url)
        }
        let directory = URL(fileURLWithPath: output)
        let progress = ProgressPrinter(isTerminal: isatty(STDERR_FILENO) == 1)
        do {
            try downloadFiles(sources, into: directory, timeoutSeconds: timeoutSeconds) { progress.show($0) }
        } catch {
            progress.endLine()  // the error line starts on a line of its own
            throw error
        }
        let sizes = sources.map { source -> String in
            let size = (try? FileManager.default.attributesOfItem(atPath: directory.appendingPathComponent(source.fileName).path)[.size] as? Int) ?? 0
            return "\(source.fileName) (\(formatMegabytes(size)))"
        }
        print("AG News is in \(directory.path): \(sizes.joined(separator: ", ")), SHA-256 verified")
    }
}

/// Progress on stderr: one updating line on a terminal, a line per 10% otherwise.
private final class ProgressPrinter: Sendable {
    let isTerminal: Bool
    private let lastDecile = Mutex<[String: Int]>([:])

    init(isTerminal: Bool) {
        self.isTerminal = isTerminal
    }

    func show(_ event: DownloadEvent) {
        switch event {
        case .alreadyPresent(let name):
            write("\(name): already present, SHA-256 verified\n")
        case .replacing(let name, let reason):
            write("\(name): present but wrong (\(reason)); downloading again\n")
        case .progress(let name, let received, let total):
            let amount = total.map { "\(formatMegabytes(received)) / \(formatMegabytes($0)) (\(received * 100 / max($0, 1))%)" }
                ?? formatMegabytes(received)
            if isTerminal {
                write("\r\(name): \(amount)\u{1B}[K")
            } else {
                let decile = total.map { received * 10 / max($0, 1) } ?? received / (1 << 22)
                let isNew = lastDecile.withLock { last -> Bool in
                    if last[name] == decile { return false }
                    last[name] = decile
                    return true
                }
                if isNew { write("\(name): \(amount)\n") }
            }
        case .saved(let name, let count):
            write("\(isTerminal ? "\r" : "")\(name): saved \(formatMegabytes(count)), SHA-256 verified\(isTerminal ? "\u{1B}[K" : "")\n")
        }
    }

    func endLine() {
        if isTerminal { write("\n") }
    }

    private func write(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}

private func formatMegabytes(_ bytes: Int) -> String {
    bytes < 1_000_000 ? String(format: "%.1f kB", Double(bytes) / 1e3) : String(format: "%.1f MB", Double(bytes) / 1e6)
}
