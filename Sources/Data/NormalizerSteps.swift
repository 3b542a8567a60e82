import Foundation

/// One step of a tokenizer.json normalizer (tokenizers' `normalizers.*`), applied to the UTF-8 of
/// a text (each part between added tokens separately, as tokenizers does).
enum NormalizerStep: Sendable {
    /// SentencePiece's compiled rules (XLM-R, CamemBERT).
    case precompiled(PrecompiledCharsmap)
    /// Every match of the pattern becomes `content`.
    case replace(ReplacePattern, content: [UInt8])
    case unicodeForm(UnicodeForm)
    /// The full lowercase mapping of each character.
    case lowercase
    /// Whitespace removed at the start and/or end.
    case strip(left: Bool, right: Bool)
    /// `content` put in front of a non-empty text.
    case prepend([UInt8])

    enum UnicodeForm: String, Sendable { case nfc = "NFC", nfd = "NFD", nfkc = "NFKC", nfkd = "NFKD" }

    /// Appends the result of this step on `text` to `output`.
    func apply(_ text: UnsafeBufferPointer<UInt8>, appendingTo output: inout [UInt8]) {
        switch self {
        case .precompiled(let charsmap):
            charsmap.normalize(text, appendingTo: &output)
        case .replace(let pattern, let content):
            pattern.replaceAll(in: text, with: content, appendingTo: &output)
        case .unicodeForm(let form):
            let string = String(decoding: text, as: UTF8.self)
            let normalized: String
            switch form {
            case .nfc: normalized = string.precomposedStringWithCanonicalMapping
            case .nfd: normalized = string.decomposedStringWithCanonicalMapping
            case .nfkc: normalized = string.precomposedStringWithCompatibilityMapping
            case .nfkd: normalized = string.decomposedStringWithCompatibilityMapping
            }
            output.append(contentsOf: normalized.utf8)
        case .lowercase:
            var index = 0
            while index < text.count {
                let byte = text[index]
                if byte < 0x80 {
                    output.append(byte >= 0x41 && byte <= 0x5A ? byte + 0x20 : byte)
                    index += 1
                    continue
                }
                let (value, length) = decodeUTF8(text, at: index)
                index += length
                if let scalar = Unicode.Scalar(value) {
                    output.append(contentsOf: scalar.properties.lowercaseMapping.utf8)
                }
            }
        case .strip(let left, let right):
            var start = 0, end = text.count
            if left {
                while start < end {
                    let (value, length) = ByteLevel.scalar(text, at: start)
                    guard isWhitespaceValue(value) else { break }
                    start += length
                }
            }
            if right {
                while end > start {
                    var lead = end - 1
                    while lead > start && (text[lead] & 0xC0) == 0x80 { lead -= 1 }
                    guard isWhitespaceValue(ByteLevel.scalar(text, at: lead).value) else { break }
                    end = lead
                }
            }
            output.append(contentsOf: text[start..<end])
        case .prepend(let content):
            if !text.isEmpty { output.append(contentsOf: content) }
            output.append(contentsOf: text)
        }
    }

    /// At most how many times longer (in UTF-8 bytes) this step makes a non-empty text.
    var expansionFactor: Int {
        switch self {
        case .precompiled(let charsmap): return charsmap.largestExpansion
        case .replace(let pattern, let content): return max(1, (content.count + pattern.shortestMatch - 1) / pattern.shortestMatch)
        // Unicode's maximum expansion in UTF-8 (UAX #15): 3x for NFC and NFD, 11x for NFKC and
        // NFKD; an invalid byte becomes U+FFFD, 3 bytes.
        case .unicodeForm(.nfc), .unicodeForm(.nfd): return 3
        case .unicodeForm: return 11
        case .lowercase: return 3      // İ (2 bytes) lowercases to 3; an invalid byte to U+FFFD
        case .strip: return 1
        case .prepend(let content): return 1 + content.count
        }
    }

    /// The largest `expansionFactor` product a tokenizer's normalizers may have. Real files stay
    /// far below (XLM-R's charsmap: 11; NFKC, Lowercase and that charsmap: 363); a hostile
    /// Sequence of Replace steps would otherwise make each text gigabytes long.
    static let expansionLimit = 1024

    /// `steps`, when all of them together make a text at most `expansionLimit` times longer.
    static func checked(_ steps: [NormalizerStep], source: String) throws -> [NormalizerStep] {
        var product = 1
        for step in steps {
            let (next, overflow) = product.multipliedReportingOverflow(by: step.expansionFactor)
            product = overflow ? Int.max : next
        }
        guard product <= expansionLimit else {
            throw DataError("\(source): the normalizers can make a text up to \(product == Int.max ? "more than 2^63" : String(product)) times longer (bert-dist reads up to \(expansionLimit) times: a longer Replace or Prepend content, or a charsmap replacement, than any tokenizer uses)")
        }
        return steps
    }

    /// What decides this step's output, for the tokenizer fingerprint.
    var fingerprintText: String {
        switch self {
        case .precompiled(let charsmap): return "precompiled \(hex64(charsmap.contentHash))"
        case .replace(let pattern, let content): return "replace \(pattern.source.debugDescription) \(String(decoding: content, as: UTF8.self).debugDescription)"
        case .unicodeForm(let form): return form.rawValue
        case .lowercase: return "lowercase"
        case .strip(let left, let right): return "strip \(left) \(right)"
        case .prepend(let content): return "prepend \(String(decoding: content, as: UTF8.self).debugDescription)"
        }
    }
}

@inline(__always)
func isWhitespaceValue(_ value: UInt32) -> Bool {
    if value < 0x80 { return value == 0x20 || (value >= 0x09 && value <= 0x0D) }
    return Unicode.Scalar(value)?.properties.isWhitespace ?? false
}

/// The patterns of tokenizers' `Replace` normalizer bert-dist understands: a plain string, or a
/// regex made of alternatives `A|B|...`, each an optional `\A`, then either literal characters
/// or one character with `+`, `{n,}` or `{n}`, then an optional `\z`. That covers what the
/// SentencePiece conversions write (` {2,}`, `\A +| +\z`, `\A▁`); anything else is refused when
/// the file is read.
struct ReplacePattern: Sendable {
    struct Alternative: Sendable {
        var atStart: Bool
        var atEnd: Bool
        /// Literal bytes, or (when `repeated`) the bytes of one character repeated.
        var bytes: [UInt8]
        var repeated: Bool
        var minimumCount: Int
        var maximumCount: Int
    }
    let source: String
    let alternatives: [Alternative]
    /// The fewest bytes a match takes (at least 1: every alternative has a character).
    var shortestMatch: Int { alternatives.map { $0.bytes.count * $0.minimumCount }.min() ?? 1 }

    /// A plain string pattern.
    init(literal: String) throws {
        source = literal
        guard !literal.isEmpty else { throw DataError("an empty Replace pattern") }
        alternatives = [Alternative(atStart: false, atEnd: false, bytes: Array(literal.utf8), repeated: false,
                                    minimumCount: 1, maximumCount: 1)]
    }

    /// A regex pattern; throws (with a reason) when it is outside the subset above.
    init(regex: String) throws {
        source = regex
        var alternatives: [Alternative] = []
        for part in regex.split(separator: "|", omittingEmptySubsequences: false) {
            var characters = Array(part.unicodeScalars)
            var alternative = Alternative(atStart: false, atEnd: false, bytes: [], repeated: false, minimumCount: 1, maximumCount: 1)
            if characters.count >= 2 && characters[0] == "\\" && characters[1] == "A" {
                alternative.atStart = true
                characters.removeFirst(2)
            }
            if characters.count >= 2 && characters[characters.count - 2] == "\\" && characters[characters.count - 1] == "z" {
                alternative.atEnd = true
                characters.removeLast(2)
            }
            // Literal characters (a backslash escapes a punctuation character), then maybe a quantifier.
            var literal: [Unicode.Scalar] = []
            var index = 0
            var quantifier: (Int, Int)? = nil
            while index < characters.count {
                let character = characters[index]
                if character == "\\" {
                    guard index + 1 < characters.count, !characters[index + 1].properties.isAlphabetic,
                          !("0"..."9").contains(characters[index + 1]) else {
                        throw DataError("the Replace regex \(regex.debugDescription) uses an escape bert-dist does not support")
                    }
                    literal.append(characters[index + 1])
                    index += 2
                    continue
                }
                if character == "+" || character == "{" {
                    guard quantifier == nil, !literal.isEmpty else {
                        throw DataError("the Replace regex \(regex.debugDescription) is not supported")
                    }
                    if character == "+" {
                        quantifier = (1, Int.max)
                        index += 1
                    } else {
                        guard let close = characters[index...].firstIndex(of: "}") else {
                            throw DataError("the Replace regex \(regex.debugDescription) is not supported")
                        }
                        let inside = String(String.UnicodeScalarView(characters[(index + 1)..<close]))
                        let bounds = inside.split(separator: ",", omittingEmptySubsequences: false)
                        guard (bounds.count == 1 || (bounds.count == 2 && bounds[1].isEmpty)), let low = Int(bounds[0]), low >= 1,
                              low <= 1_000_000 else {
                            throw DataError("the Replace regex \(regex.debugDescription) is not supported (only {n} and {n,} counts)")
                        }
                        quantifier = (low, bounds.count == 1 ? low : Int.max)
                        index = close + 1
                    }
                    guard index == characters.count else {
                        throw DataError("the Replace regex \(regex.debugDescription) is not supported (a count must end the pattern)")
                    }
                    continue
                }
                if "^$.*?()[]{}|".unicodeScalars.contains(character) {
                    throw DataError("the Replace regex \(regex.debugDescription) is not supported (bert-dist reads literal text, one repeated character, \\A and \\z)")
                }
                literal.append(character)
                index += 1
            }
            guard !literal.isEmpty else { throw DataError("the Replace regex \(regex.debugDescription) has an empty alternative") }
            if let (low, high) = quantifier {
                // The count applies to the last character; characters before it are literal.
                let repeatedCharacter = literal.removeLast()
                if !literal.isEmpty {
                    throw DataError("the Replace regex \(regex.debugDescription) is not supported (a count after several characters)")
                }
                alternative.bytes = Array(String(repeatedCharacter).utf8)
                alternative.repeated = true
                alternative.minimumCount = low
                alternative.maximumCount = high
            } else {
                alternative.bytes = Array(String(String.UnicodeScalarView(literal)).utf8)
            }
            alternatives.append(alternative)
        }
        self.alternatives = alternatives
    }

    /// End of the match of `alternative` at `start`, or nil.
    private func match(_ alternative: Alternative, _ text: UnsafeBufferPointer<UInt8>, at start: Int) -> Int? {
        if alternative.atStart && start != 0 { return nil }
        let unit = alternative.bytes
        func matchesUnit(at position: Int) -> Bool {
            if position + unit.count > text.count { return false }
            for offset in 0..<unit.count where text[position + offset] != unit[offset] { return false }
            return true
        }
        var end = start
        if alternative.repeated {
            var repeats = 0
            while repeats < alternative.maximumCount && matchesUnit(at: end) {
                end += unit.count
                repeats += 1
            }
            if repeats < alternative.minimumCount { return nil }
        } else {
            guard matchesUnit(at: start) else { return nil }
            end = start + unit.count
        }
        // (Greedy repeats of one character cannot be shortened to reach the end: what follows
        // the run is not that character.)
        if alternative.atEnd && end != text.count { return nil }
        return end
    }

    /// Appends `text` with every leftmost match (alternatives tried in order) replaced.
    func replaceAll(in text: UnsafeBufferPointer<UInt8>, with content: [UInt8], appendingTo output: inout [UInt8]) {
        var index = 0
        var copiedUpTo = 0
        while index < text.count {
            var matchEnd: Int? = nil
            for alternative in alternatives {
                if let end = match(alternative, text, at: index) {
                    matchEnd = end
                    break
                }
            }
            if let end = matchEnd, end > index {
                output.append(contentsOf: text[copiedUpTo..<index])
                output.append(contentsOf: content)
                index = end
                copiedUpTo = end
            } else {
                index += ByteLevel.scalar(text, at: index).length
            }
        }
        output.append(contentsOf: text[copiedUpTo..<text.count])
    }
}
