import Foundation

/// GPT-2's byte-level pre-tokenizer (Hugging Face's `ByteLevel`, which RoBERTa uses): the text is
/// cut into pieces by the regex
///
///     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
///
/// and each byte of a piece becomes one printable character (`byteLevelCharacters`), which is
/// what the BPE vocabulary and merges are written in.
///
/// The regex is matched by hand (`byteLevelPieceEnd`), on UTF-8 bytes. Its character classes are
/// those of the Oniguruma library tokenizers uses, which has Unicode 16.0 tables: a letter or
/// number added to Unicode later (Swift's tables are newer) is "other" there, so the classes
/// here are Swift's general categories of characters that existed in Unicode 16.0 (the test
/// `byteLevelClassesMatchHuggingFace` checks every scalar against tokenizers).
enum ByteLevel {
    /// The character each byte is written as: printable Latin-1 bytes stand for themselves, the
    /// 68 others (controls, space, soft hyphen...) become U+0100... in byte order. (256)
    static let byteLevelCharacters: [UInt32] = {
        var characters = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            let printable = (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte)
            if printable {
                characters[byte] = UInt32(byte)
            } else {
                characters[byte] = next
                next += 1
            }
        }
        return characters
    }()

    // MARK: - Character classes of the regex

    static let other: UInt8 = 0
    static let letter: UInt8 = 1
    static let number: UInt8 = 2
    static let space: UInt8 = 3

    /// Class of every scalar of the Basic Multilingual Plane (the others are computed on use). (65536)
    static let basicPlaneClasses: [UInt8] = (0..<0x10000).map { computeClass(UInt32($0)) }

    @inline(__always)
    static func characterClass(_ value: UInt32) -> UInt8 {
        value < 0x10000 ? basicPlaneClasses[Int(value)] : computeClass(value)
    }

    /// \s is White_Space; \p{L} and \p{N} are the general categories L* and N*, as of Unicode 16.0.
    static func computeClass(_ value: UInt32) -> UInt8 {
        guard let scalar = Unicode.Scalar(value) else { return other }
        let properties = scalar.properties
        if properties.isWhitespace { return space }
        guard let age = properties.age, age.major < 16 || (age.major == 16 && age.minor == 0) else { return other }
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return letter
        case .decimalNumber, .letterNumber, .otherNumber: return number
        default: return other
        }
    }

    // MARK: - The regex

    /// End (exclusive) of the regex match that starts at `start` in `text` (`start < text.count`,
    /// at a scalar boundary). Every character belongs to one alternative, so the matches tile
    /// the text. Invalid UTF-8 bytes count as U+FFFD, one byte each.
    static func pieceEnd(_ text: UnsafeBufferPointer<UInt8>, from start: Int) -> Int {
        let count = text.count
        let first = text[start]
        // 's 't 're 've 'm 'll 'd (ASCII apostrophe, lowercase only)
        if first == 0x27 && start + 1 < count {
            let second = text[start + 1]
            if second == 0x73 || second == 0x74 || second == 0x6D || second == 0x64 { return start + 2 }  // s t m d
            if start + 2 < count {
                let third = text[start + 2]
                if (second == 0x72 && third == 0x65) || (second == 0x76 && third == 0x65) || (second == 0x6C && third == 0x6C) {
                    return start + 3  // re ve ll
                }
            }
        }
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class.
        let runStart = first == 0x20 ? start + 1 : start
        if runStart < count {
            let (value, length) = scalar(text, at: runStart)
            let kind = characterClass(value)
            if kind != space {
                var end = runStart + length
                while end < count {
                    let (next, nextLength) = scalar(text, at: end)
                    if characterClass(next) != kind { break }
                    end += nextLength
                }
                return end
            }
        }
        // `\s+(?!\S)` then `\s+`: a run of whitespace, less its last character when a
        // non-space follows and the run has more than one character.
        var end = start
        var lastStart = start
        while end < count {
            let (value, length) = scalar(text, at: end)
            if characterClass(value) != space { break }
            lastStart = end
            end += length
        }
        if end == start {
            return start + scalar(text, at: start).length  // cannot happen: every class is covered above
        }
        if end < count && lastStart > start { return lastStart }
        return end
    }

    @inline(__always)
    static func scalar(_ text: UnsafeBufferPointer<UInt8>, at index: Int) -> (value: UInt32, length: Int) {
        let byte = text[index]
        if byte < 0x80 { return (UInt32(byte), 1) }
        return decodeUTF8(text, at: index)
    }
}
