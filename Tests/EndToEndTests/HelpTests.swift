import Foundation
import Testing

/// The `--help` of every command of the shipped binary is the text committed in Help/ (written by
/// tools/update_help.sh), docs/commands.md names every option it lists, and the binary holds the
/// user's commands only (the development tools are bert-dist-dev's).
@Suite struct HelpTests {
    let binary: URL
    static let folder = BinaryLocator.repositoryRoot.appendingPathComponent("Tests/EndToEndTests/Help")

    init() throws {
        binary = try BinaryLocator.bertDist()
    }

    /// `bert-dist WORDS --help` at 80 columns.
    func help(_ words: [String]) throws -> String {
        var environment = ProcessInfo.processInfo.environment
        environment["COLUMNS"] = "80"
        let run = try RunningProcess(binary, words + ["--help"], environment: environment)
        #expect(run.waitForExit(timeoutSeconds: 30) == 0, "\(words): \(run.standardError)")
        return run.standardOutput
    }

    /// The names under SUBCOMMANDS: of a help text.
    static func subcommands(_ help: String) -> [String] {
        let lines = help.split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.firstIndex(of: "SUBCOMMANDS:") else { return [] }
        return lines[(start + 1)...].compactMap { line in
            guard line.hasPrefix("  "), !line.hasPrefix("   "), let name = line.split(separator: " ").first else { return nil }
            return name.allSatisfy { $0.isLowercase || $0 == "-" } ? String(name) : nil
        }
    }

    /// The long options under OPTIONS: of a help text (without --help).
    static func options(_ help: String) -> [String] {
        help.split(separator: "\n").compactMap { line -> String? in
            guard let match = line.firstMatch(of: /^  (?:-\w, )?(--[a-z0-9][a-z0-9-]*)/) else { return nil }
            return match.1 == "--help" ? nil : String(match.1)
        }
    }

    /// Every command the binary lists, as the words that name it ([] is the binary itself).
    func commands() throws -> [[String]] {
        var found: [[String]] = [], pending: [[String]] = [[]]
        while let words = pending.popLast() {
            found.append(words)
            pending += Self.subcommands(try help(words)).map { words + [$0] }
        }
        return found.sorted { $0.joined(separator: " ") < $1.joined(separator: " ") }
    }

    static func file(_ words: [String]) -> URL { folder.appendingPathComponent((["bert-dist"] + words).joined(separator: "-") + ".txt") }

    @Test func everyCommandsHelpIsTheCommittedText() throws {
        let commands = try commands()
        let committed = try FileManager.default.contentsOfDirectory(atPath: Self.folder.path).filter { $0.hasSuffix(".txt") }
        #expect(Set(committed) == Set(commands.map { Self.file($0).lastPathComponent }),
                "Help/ holds a text for exactly each command (tools/update_help.sh rewrites them)")
        for words in commands {
            let expected = (try? String(contentsOf: Self.file(words), encoding: .utf8)) ?? ""
            let actual = try help(words)
            #expect(actual == expected, "`bert-dist \(words.joined(separator: " ")) --help` changed: run tools/update_help.sh, then check docs/commands.md")
        }
    }

    @Test func theShippedBinaryHoldsTheUsersCommandsOnly() throws {
        #expect(Set(Self.subcommands(try help([]))) == ["train", "eval", "predict", "merge", "bench", "tokenize", "data"])
        for (words, what) in [(["bench-comm", "--check"], "bench-comm"), (["tokenize", "--model", "m", "--benchmark"], "the tokenizer benchmark"),
                              (["bench", "--model", "m", "--no-gradient-sync"], "the bench without gradients"),
                              (["bench", "--model", "m", "--sgemm-only"], "the sgemm peak")] {
            let run = try RunningProcess(binary, words)
            #expect(run.waitForExit(timeoutSeconds: 30) == 64, "\(what) is bert-dist-dev's: \(run.standardOutput) \(run.standardError)")
        }
    }

    /// docs/commands.md has a section `## bert-dist COMMAND` per command that names each of its options.
    @Test func theCommandReferenceNamesEveryOption() throws {
        let page = try String(contentsOf: BinaryLocator.repositoryRoot.appendingPathComponent("docs/commands.md"), encoding: .utf8)
        var sections: [String: String] = [:]
        for section in page.components(separatedBy: "\n## ").dropFirst() {
            let title = section.prefix { $0 != "\n" }.trimmingCharacters(in: .whitespaces)
            sections[title] = section
        }
        for words in try commands() where !words.isEmpty {
            let title = (["bert-dist"] + words).joined(separator: " ")
            let options = Self.options(try help(words))
            guard let section = sections[title] else {
                #expect(options.isEmpty, "docs/commands.md has no section `## \(title)` for \(options)")
                continue
            }
            let named = Set(section.matches(of: /--[a-z0-9][a-z0-9-]*/).map { String($0.output) })
            for option in options {
                #expect(named.contains(option), "docs/commands.md, `## \(title)`, does not name \(option)")
            }
        }
    }
}
