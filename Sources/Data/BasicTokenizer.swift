import Foundation
import Synchronization

/// The options of Hugging Face's `BertNormalizer` (tokenizers) / `BasicTokenizer` (transformers).
public struct NormalizerOptions: Hashable, Sendable, CustomStringConvertible {
    /// Remove NUL, U+FFFD and control/format/private-use characters; turn whitespace into " ".
    public var cleanText: Bool
    /// Put spaces around CJK ideographs so that each becomes a word of its own.
    public var handleChineseChars: Bool
    /// NFD, then drop non-spacing marks. HF's `strip_accents = None` means "same as lowercase".
    public var stripAccents: Bool
    public var lowercase: Bool

    public init(cleanText: Bool = true, handleChineseChars: Bool = true, stripAccents: Bool? = nil,
                lowercase: Bool = true) {
        self.cleanText = cleanText
        self.handleChineseChars = handleChineseChars
        self.stripAccents = stripAccents ?? lowercase
        self.lowercase = lowercase
    }

    public var description: String {
        "lowercase=\(lowercase) strip_accents=\(stripAccents) tokenize_chinese_chars=\(handleChineseChars) clean_text=\(cleanText)"
    }
}

/// How the pre-tokenizer treats one normalized scalar.
enum PieceKind: UInt32 {
    case normal = 0      // part of the current word
    case isolated = 1    // a word of its own (punctuation)
    case whitespace = 2  // ends the current word
}

/// A normalized scalar with its pre-tokenizer kind: value in the low 21 bits, kind above bit 24.
typealias NormalizedScalar = UInt32

@inline(__always) func packScalar(_ value: UInt32, _ kind: PieceKind) -> NormalizedScalar {
    value | (kind.rawValue << 24)
}
@inline(__always) func scalarValue(_ packed: NormalizedScalar) -> UInt32 { packed & 0x1F_FFFF }
@inline(__always) func scalarKind(_ packed: NormalizedScalar) -> UInt32 { packed >> 24 }

/// Kinds of ASCII bytes, for the fast path.
enum ASCIIKind {
    static let word: UInt8 = 0
    static let isolated: UInt8 = 1
    static let whitespace: UInt8 = 2
    static let removed: UInt8 = 3
}

/// What Hugging Face's BERT normalizer and pre-tokenizer (Rust `tokenizers`, which transformers 5's
/// `BertTokenizer` runs) do to each character, one Unicode scalar at a time.
///
/// Every step of that pipeline is a function of one scalar, so the whole pipeline is too:
///   clean text: NUL, U+FFFD and "other" characters (Cc, Cf, Co) are removed, whitespace becomes " ";
///   CJK ideographs get a space on each side;
///   strip accents: NFD, then non-spacing marks (Mn) are dropped;
///   lowercase: the full, context-free lowercase mapping of each scalar;
///   pre-tokenizer: whitespace ends a word, punctuation (ASCII symbols and Unicode P*) is a word.
/// (The only context HF uses is NFD's reordering of adjacent combining marks; after dropping the
/// non-spacing ones, a reorder could only show between two spacing marks with non-zero combining
/// classes next to each other: musical-symbol stems, which no BERT vocabulary contains.)
///
/// Unicode versions: `tokenizers` takes character categories (control, format, punctuation,
/// non-spacing mark) from the unicode_categories crate, frozen at Unicode 8.0, while lowercase
/// and whitespace come from Rust's standard library (Unicode 16). Swift 6.3 carries Unicode 16
/// data plus each scalar's age, so a category test here is "has the category now and existed in
/// 8.0", with the few characters whose category changed since listed explicitly. The test
/// `unicodeTableMatchesHuggingFace` checks every scalar against HF for four option settings.
final class ScalarNormalizer: Sendable {
    let options: NormalizerOptions
    /// Kind of each ASCII byte after normalization (`ASCIIKind`).
    let asciiKinds: [UInt8]        // (128)
    /// Each ASCII byte after lowercasing (when `options.lowercase`).
    let asciiNormalized: [UInt8]   // (128)
    /// Non-ASCII scalar -> its normalized scalars, computed on first use. Guarded by the mutex
    /// because one tokenizer may be shared by threads.
    private let cache = Mutex<[UInt32: [NormalizedScalar]]>([:])

    init(options: NormalizerOptions) {
        self.options = options
        var kinds = [UInt8](repeating: ASCIIKind.word, count: 128)
        var normalized = [UInt8](repeating: 0, count: 128)
        for byte in 0..<128 {
            normalized[byte] = UInt8(byte)
            if options.lowercase && byte >= 0x41 && byte <= 0x5A {
                normalized[byte] = UInt8(byte + 0x20)
            }
            if byte == 0x09 || byte == 0x0A || byte == 0x0D || byte == 0x20 {
                kinds[byte] = ASCIIKind.whitespace
            } else if byte == 0x0B || byte == 0x0C {
                // Control characters for the cleaner (removed), whitespace for the pre-tokenizer.
                kinds[byte] = options.cleanText ? ASCIIKind.removed : ASCIIKind.whitespace
            } else if byte < 0x20 || byte == 0x7F {
                kinds[byte] = options.cleanText ? ASCIIKind.removed : ASCIIKind.word
            } else if isASCIIPunctuation(UInt32(byte)) {
                kinds[byte] = ASCIIKind.isolated
            }
        }
        asciiKinds = kinds
        asciiNormalized = normalized
    }

    /// Copies the normalized scalars of `scalar` into `buffer` and returns how many there are
    /// (at most `buffer.count`; no single scalar expands to more than a handful).
    @inline(__always)
    func normalize(_ scalar: UInt32, into buffer: UnsafeMutableBufferPointer<NormalizedScalar>) -> Int {
        cache.withLock { table -> Int in
            if let known = table[scalar] {
                return copy(known, into: buffer)
            }
            let computed = ScalarNormalizer.compute(scalar, options: options)
            table[scalar] = computed
            return copy(computed, into: buffer)
        }
    }

    @inline(__always)
    private func copy(_ values: [NormalizedScalar], into buffer: UnsafeMutableBufferPointer<NormalizedScalar>) -> Int {
        let count = min(values.count, buffer.count)
        for index in 0..<count {
            buffer[index] = values[index]
        }
        return count
    }

    static func compute(_ value: UInt32, options: NormalizerOptions) -> [NormalizedScalar] {
        guard let scalar = Unicode.Scalar(value) else {
            return []  // not a scalar (surrogate code point): cannot occur in valid UTF-8
        }
        if options.cleanText {
            if value == 0 || value == 0xFFFD || isOtherInUnicode8(scalar) {
                return []
            }
            if isWhitespace(scalar) {
                return [packScalar(0x20, .whitespace)]
            }
        } else if isWhitespace(scalar) {
            return [packScalar(value, .whitespace)]
        }
        var scalars: [UInt32] = [value]
        if scalar.properties.age == nil {
            // Unassigned: no decomposition, no case, no category; only the CJK ranges matter.
        } else if options.stripAccents {
            scalars = canonicalDecomposition(scalar).filter { !isNonspacingMarkInUnicode8($0) }
        }
        if options.lowercase {
            scalars = scalars.flatMap { value -> [UInt32] in
                guard let s = Unicode.Scalar(value) else { return [value] }
                return s.properties.lowercaseMapping.unicodeScalars.map { $0.value }
            }
        }
        if options.handleChineseChars && isChineseCharacter(value) {
            // " c " : the (normalized) ideograph is one word, whatever its characters are.
            return [packScalar(0x20, .whitespace)] + scalars.map { packScalar($0, .normal) }
                + [packScalar(0x20, .whitespace)]
        }
        return scalars.map { value -> NormalizedScalar in
            guard let s = Unicode.Scalar(value) else { return packScalar(value, .normal) }
            if isWhitespace(s) { return packScalar(value, .whitespace) }
            if isBertPunctuation(value) { return packScalar(value, .isolated) }
            return packScalar(value, .normal)
        }
    }
}

// MARK: - Character classes, as HF's tokenizers defines them

/// ASCII symbols HF counts as punctuation although Unicode does not (e.g. "$", "+", "^", "`").
@inline(__always)
func isASCIIPunctuation(_ value: UInt32) -> Bool {
    (value >= 33 && value <= 47) || (value >= 58 && value <= 64) || (value >= 91 && value <= 96)
        || (value >= 123 && value <= 126)
}

/// Rust's `char::is_whitespace`: the White_Space property (tab, newline, return included).
func isWhitespace(_ scalar: Unicode.Scalar) -> Bool {
    scalar.properties.isWhitespace
}

/// The CJK ideograph blocks of the original BERT (not Hangul, Hiragana or Katakana), as Rust's
/// tokenizers lists them: its fifth range starts at U+2B920 where Python's starts at U+2B820.
@inline(__always)
func isChineseCharacter(_ value: UInt32) -> Bool {
    (value >= 0x4E00 && value <= 0x9FFF) || (value >= 0x3400 && value <= 0x4DBF)
        || (value >= 0x20000 && value <= 0x2A6DF) || (value >= 0x2A700 && value <= 0x2B73F)
        || (value >= 0x2B740 && value <= 0x2B81F) || (value >= 0x2B920 && value <= 0x2CEAF)  // sic: 2B920, as in tokenizers
        || (value >= 0xF900 && value <= 0xFAFF) || (value >= 0x2F800 && value <= 0x2FA1F)
}

/// True when the scalar was assigned by Unicode 8.0 (the tables of HF's category tests).
@inline(__always)
func existedInUnicode8(_ scalar: Unicode.Scalar) -> Bool {
    guard let age = scalar.properties.age else { return false }
    return age.major < 8 || (age.major == 8 && age.minor == 0)
}

/// Characters whose general category changed between Unicode 8.0 and 16.0, with their 8.0 one.
private let punctuationInUnicode8ButNotNow: Set<UInt32> = [0x166D, 0x111C9]
private let nonspacingMarkInUnicode8ButNotNow: Set<UInt32> = [0x1734, 0x1171E]
private let nonspacingMarkNowButNotInUnicode8: Set<UInt32> = [0x1885, 0x1886, 0xA9BD, 0x111C9]

/// HF's "control" test (tab, newline and return excepted): categories Cc, Cf, Co in Unicode 8.0.
func isOtherInUnicode8(_ scalar: Unicode.Scalar) -> Bool {
    let value = scalar.value
    if value == 0x09 || value == 0x0A || value == 0x0D { return false }
    switch scalar.properties.generalCategory {
    case .control, .privateUse:
        return true
    case .format:
        return existedInUnicode8(scalar)
    default:
        return false
    }
}

/// HF's punctuation test: the ASCII symbol ranges, or a Unicode P* category in Unicode 8.0.
func isBertPunctuation(_ value: UInt32) -> Bool {
    if value < 0x80 { return isASCIIPunctuation(value) }
    if punctuationInUnicode8ButNotNow.contains(value) { return true }
    guard let scalar = Unicode.Scalar(value) else { return false }
    switch scalar.properties.generalCategory {
    case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
         .initialPunctuation, .finalPunctuation, .otherPunctuation:
        return existedInUnicode8(scalar)
    default:
        return false
    }
}

/// HF's accent test: category Mn in Unicode 8.0.
func isNonspacingMarkInUnicode8(_ value: UInt32) -> Bool {
    if nonspacingMarkInUnicode8ButNotNow.contains(value) { return true }
    if nonspacingMarkNowButNotInUnicode8.contains(value) { return false }
    guard let scalar = Unicode.Scalar(value) else { return false }
    return scalar.properties.generalCategory == .nonspacingMark && existedInUnicode8(scalar)
}

/// NFD of one scalar (Foundation's tables), for scalars HF's normalization tables know: a
/// decomposable character added after Unicode 8.0 (e.g. U+11938) is left alone, as in HF.
func canonicalDecomposition(_ scalar: Unicode.Scalar) -> [UInt32] {
    if scalar.value < 0xC0 || !existedInUnicode8(scalar) { return [scalar.value] }
    return String(Character(scalar)).decomposedStringWithCanonicalMapping.unicodeScalars.map { $0.value }
}
