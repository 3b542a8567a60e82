import Foundation

/// SentencePiece's compiled normalization rules (`precompiled_charsmap` of a `.model`'s
/// normalizer_spec, the base64 of tokenizer.json's `Precompiled` normalizer), applied as Hugging
/// Face's tokenizers applies them.
///
/// The charsmap is a little-endian u32 byte count, a darts-clone double array of that many bytes
/// (u32 units: bit 8 = has a value, bits 0-7 and 31 = label, offset in bits 10-31, shifted by 8
/// more when bit 9 is set; a value unit holds an offset in bits 0-30) and then a blob of
/// NUL-terminated UTF-8 replacement strings the values point into. The double array is a
/// minimized graph (common suffixes shared), so it is searched as is, like tokenizers does;
/// reading it checks every node reachable from the root once (every transition inside the
/// array, every value inside the blob at a character start), so a damaged charsmap is an error
/// here, not a crash later.
///
/// Normalizing (tokenizers' `Precompiled::normalize`): the text is cut into extended grapheme
/// clusters. A cluster shorter than 6 bytes is looked up as a whole; "looked up" means the
/// shortest key that prefixes the bytes (stopping at a NUL byte), and when there is one the whole
/// cluster becomes that key's replacement (even when the key covers only the cluster's first
/// character: the rest is dropped, as in tokenizers). Otherwise, each character of the cluster is
/// looked up alone and replaced, or kept.
final class PrecompiledCharsmap: Sendable {
    /// The double array.                                                          (unit count)
    let units: [UInt32]
    /// The replacement strings.
    let blob: [UInt8]
    /// For each ASCII byte as a cluster of its own: its replacement as a blob offset, or -1 (kept). (128)
    let asciiReplacements: [Int32]
    /// Hash of the charsmap's bytes (for the tokenizer fingerprint).
    let contentHash: UInt64
    /// At most how many times longer a text gets: the largest ratio of a replacement's bytes to
    /// its key's, rounded up (a replaced cluster is at least as long as its key). 11 for the
    /// usual nmt_nfkc (U+FDFA, 3 bytes, becomes 33).
    let largestExpansion: Int

    init(_ charsmap: [UInt8], source: String) throws {
        func corrupt(_ why: String) -> DataError {
            DataError("\(source): the precompiled_charsmap of the normalizer is damaged (\(why)); use the tokenizer files the model was published with")
        }
        guard charsmap.count >= 4 else { throw corrupt("\(charsmap.count) bytes, shorter than its 4-byte header") }
        let trieByteCount = Int(UInt32(charsmap[0]) | UInt32(charsmap[1]) << 8 | UInt32(charsmap[2]) << 16 | UInt32(charsmap[3]) << 24)
        let unitCount = trieByteCount / 4
        guard unitCount >= 1, 4 + 4 * unitCount <= charsmap.count else {
            throw corrupt("the trie is said to be \(trieByteCount) bytes, but \(charsmap.count - 4) follow the header")
        }
        var units = [UInt32](repeating: 0, count: unitCount)
        for index in 0..<unitCount {
            let at = 4 + 4 * index
            units[index] = UInt32(charsmap[at]) | UInt32(charsmap[at + 1]) << 8 | UInt32(charsmap[at + 2]) << 16
                | UInt32(charsmap[at + 3]) << 24
        }
        // (tokenizers reads trie_size / 4 units; the strings start right after them.)
        let blob = Array(charsmap[(4 + 4 * unitCount)...])
        guard String(validating: blob, as: UTF8.self) != nil else { throw corrupt("its replacement strings are not UTF-8") }

        // Every node reachable from the root, once each, breadth first: a node's depth is then the
        // shortest key that reaches it (suffixes are shared, so a node can end several keys).
        var depth = [Int32](repeating: -1, count: unitCount)   // -1: not reached yet
        // Bytes from each blob offset to the next NUL (or the end): a replacement's length (held
        // at 2^31 - 1, far over any limit).
        var untilNul = [Int32](repeating: 0, count: blob.count + 1)
        for index in stride(from: blob.count - 1, through: 0, by: -1) {
            untilNul[index] = blob[index] == 0 ? 0 : min(untilNul[index + 1], Int32.max - 1) + 1
        }
        var largestExpansion = 1
        var queue = [PrecompiledCharsmap.offset(units[0])]
        guard queue[0] < unitCount else { throw corrupt("the trie points outside itself") }
        depth[queue[0]] = 0
        var head = 0
        while head < queue.count {
            let position = queue[head]
            head += 1
            for label in 1..<256 {  // a NUL byte ends every search, so label 0 is never followed
                let childIndex = position ^ label
                guard childIndex < unitCount else { throw corrupt("the trie points outside itself") }
                let unit = units[childIndex]
                guard Int(unit & 0x8000_00FF) == label else { continue }
                let next = childIndex ^ PrecompiledCharsmap.offset(unit)
                guard next < unitCount else { throw corrupt("the trie points outside itself") }
                if (unit >> 8) & 1 == 1 {
                    let value = Int(units[next] & 0x7FFF_FFFF)
                    guard value <= blob.count, value == blob.count || (blob[value] & 0xC0) != 0x80 else {
                        throw corrupt("a replacement starts outside the strings or inside a character")
                    }
                    // What a key of this many bytes (or a longer cluster it prefixes) can become.
                    let keyLength = Int(depth[position]) + 1
                    largestExpansion = max(largestExpansion, (Int(untilNul[value]) + keyLength - 1) / keyLength)
                }
                if depth[next] < 0 {
                    depth[next] = depth[position] + 1
                    queue.append(next)
                }
            }
        }
        self.units = units
        self.blob = blob
        self.largestExpansion = largestExpansion
        contentHash = ContentHash64.hash(charsmap, seed: 0x7072_6563_6F6D_7031)  // "precomp1"
        asciiReplacements = (0..<128).map { byte in
            byte == 0 ? -1 : PrecompiledCharsmap.shortestMatch(units, [UInt8(byte)])
        }
    }

    @inline(__always)
    static func offset(_ unit: UInt32) -> Int { Int(unit >> 10) << ((Int(unit) & (1 << 9)) >> 6) }

    /// Blob offset of the replacement of the shortest key that prefixes `bytes` (up to a NUL
    /// byte), or -1 (spm_precompiled's common_prefix_search, first result).
    static func shortestMatch(_ units: UnsafeBufferPointer<UInt32>, _ bytes: UnsafeBufferPointer<UInt8>) -> Int32 {
        var position = offset(units[0])
        for byte in bytes {
            if byte == 0 { return -1 }
            position ^= Int(byte)
            let unit = units[position]
            if Int(unit & 0x8000_00FF) != Int(byte) { return -1 }
            position ^= offset(unit)
            if (unit >> 8) & 1 == 1 { return Int32(units[position] & 0x7FFF_FFFF) }
        }
        return -1
    }

    static func shortestMatch(_ units: [UInt32], _ bytes: [UInt8]) -> Int32 {
        units.withUnsafeBufferPointer { units in bytes.withUnsafeBufferPointer { shortestMatch(units, $0) } }
    }

    /// Appends the NUL-terminated replacement at blob offset `start`.
    @inline(__always)
    private func appendReplacement(_ start: Int32, to output: inout [UInt8]) {
        var end = Int(start)
        while end < blob.count && blob[end] != 0 { end += 1 }
        output.append(contentsOf: blob[Int(start)..<end])
    }

    /// Appends the normalized form of `text` (UTF-8) to `output`.
    func normalize(_ text: UnsafeBufferPointer<UInt8>, appendingTo output: inout [UInt8]) {
        let count = text.count
        var index = 0
        while index < count {
            let byte = text[index]
            // Between two ASCII characters there is always a cluster boundary, except in CR LF.
            if byte < 0x80 && (index + 1 == count || (text[index + 1] < 0x80 && !(byte == 0x0D && text[index + 1] == 0x0A))) {
                let replacement = asciiReplacements[Int(byte)]
                if replacement < 0 {
                    output.append(byte)
                } else {
                    appendReplacement(replacement, to: &output)
                }
                index += 1
                continue
            }
            // A stretch with non-ASCII characters (or CR LF): up to the next boundary between
            // two ASCII characters, cut into clusters by Swift's grapheme breaking.
            var end = index + 1
            while end < count && !(text[end - 1] < 0x80 && text[end] < 0x80 && !(text[end - 1] == 0x0D && text[end] == 0x0A)) {
                end += 1
            }
            normalizeClusters(UnsafeBufferPointer(rebasing: text[index..<end]), appendingTo: &output)
            index = end
        }
    }

    private func normalizeClusters(_ text: UnsafeBufferPointer<UInt8>, appendingTo output: inout [UInt8]) {
        units.withUnsafeBufferPointer { units in normalizeClusters(text, units, appendingTo: &output) }
    }

    private func normalizeClusters(_ text: UnsafeBufferPointer<UInt8>, _ units: UnsafeBufferPointer<UInt32>,
                                   appendingTo output: inout [UInt8]) {
        let string = String(decoding: text, as: UTF8.self)
        for cluster in string {
            var clusterString = String(cluster)  // small clusters are stored inline: no allocation
            let handled = clusterString.withUTF8 { bytes -> Bool in
                if bytes.count < 6 {
                    let replacement = PrecompiledCharsmap.shortestMatch(units, bytes)
                    if replacement >= 0 {
                        appendReplacement(replacement, to: &output)
                        return true
                    }
                }
                return false
            }
            if handled { continue }
            for scalar in cluster.unicodeScalars {
                withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 4) { buffer in
                    let length = writeUTF8(scalar.value, to: buffer.baseAddress!)
                    let bytes = UnsafeBufferPointer(rebasing: buffer[0..<length])
                    let replacement = PrecompiledCharsmap.shortestMatch(units, bytes)
                    if replacement >= 0 {
                        appendReplacement(replacement, to: &output)
                    } else {
                        output.append(contentsOf: bytes)
                    }
                }
            }
        }
    }
}
