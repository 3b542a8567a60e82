import Foundation

/// A user's own data sets for the tiny model (words w5 ... w98 of TinyWorkspace's vocabulary),
/// one per format: examples of class k draw most words from the k-th part of the vocabulary,
/// so a few epochs learn them.
struct OwnDataFiles {
    let folder: URL

    /// A header CSV `id,review,sentiment` with the string labels neg/pos (quoted texts).
    var reviews: URL { folder.appendingPathComponent("reviews.csv") }
    var reviewsTest: URL { folder.appendingPathComponent("reviews_test.csv") }
    /// JSON Lines `{"text", "label", "id"}` with 7 string labels.
    var emotions: URL { folder.appendingPathComponent("emotions.jsonl") }
    var emotionsTest: URL { folder.appendingPathComponent("emotions_test.jsonl") }
    /// A TSV `sentence1<TAB>sentence2<TAB>label`: "same" when both texts draw from one part of
    /// the vocabulary, else "different" (learnable only from the pair).
    var pairs: URL { folder.appendingPathComponent("pairs.tsv") }
    var pairsTest: URL { folder.appendingPathComponent("pairs_test.tsv") }

    static let emotionNames = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]

    init(in folder: URL) throws {
        self.folder = folder
        var random = Generator(state: 11)
        for (url, count) in [(reviews, 96), (reviewsTest, 32)] {
            var lines = ["id,review,sentiment"]
            for id in 0..<count {
                let label = random.next(2)
                lines.append("\(id),\"\(random.words(class: label, of: 2, count: 3 + random.next(10)))\",\(["neg", "pos"][label])")
            }
            try write(lines, to: url)
        }
        for (url, count) in [(emotions, 140), (emotionsTest, 42)] {
            var lines: [String] = []
            for id in 0..<count {
                let label = random.next(7)
                lines.append("{\"text\": \"\(random.words(class: label, of: 7, count: 3 + random.next(10)))\", \"label\": \"\(Self.emotionNames[label])\", \"id\": \(id)}")
            }
            try write(lines, to: url)
        }
        for (url, count) in [(pairs, 96), (pairsTest, 32)] {
            var lines = ["sentence1\tsentence2\tlabel"]
            for _ in 0..<count {
                let first = random.next(4), same = random.next(2) == 0
                let second = same ? first : (first + 1 + random.next(3)) % 4
                lines.append("\(random.words(class: first, of: 4, count: 3 + random.next(6)))\t\(random.words(class: second, of: 4, count: 3 + random.next(6)))\t\(same ? "same" : "different")")
            }
            try write(lines, to: url)
        }
    }

    private func write(_ lines: [String], to url: URL) throws {
        try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
    }

    /// The texts of a data file's rows (for predict), and for a TSV of pairs "A<TAB>B".
    static func texts(of url: URL) throws -> [String] {
        let lines = try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map(String.init)
        switch url.pathExtension {
        case "jsonl":
            return try lines.map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }.map { $0["text"] as! String }
        case "tsv":
            return lines.dropFirst().map { $0.split(separator: "\t").prefix(2).joined(separator: "\t") }
        default:  // the reviews CSV: id,"text",label
            return lines.dropFirst().map { line in String(line.split(separator: "\"")[1]) }
        }
    }

    struct Generator {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
        /// `count` words, most of them from part `class` of `of` parts of w5 ... w98.
        mutating func words(class label: Int, of parts: Int, count: Int) -> String {
            let size = 94 / parts
            return (0..<count).map { _ in "w\(next(4) == 0 ? 5 + next(94) : 5 + size * label + next(size))" }.joined(separator: " ")
        }
    }
}
