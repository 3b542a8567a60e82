import Foundation

/// A Unigram (SentencePiece) model as Hugging Face's tokenizers runs it (`models.Unigram`,
/// `encode_optimized`): the best segmentation of a word is the Viterbi path whose piece scores
/// sum highest. At each character every piece that starts there is tried; a character no
/// one-character piece covers becomes the unknown piece, scored the lowest piece score minus 10.
/// Adjacent unknowns are fused into one; with byte fallback an unknown becomes <0xXX> tokens.
///
/// Ties keep the first candidate found: paths are extended from earlier start positions first
/// and, from one position, shorter pieces first; a later candidate must score strictly higher.
final class UnigramModel: Sendable {
    /// Piece and score of each id, as listed.
    let pieces: [(piece: String, score: Double)]
    let unknownId: Int32
    let byteFallback: Bool
    /// Piece bytes -> id; a piece listed twice is found under its later id (and scored with it).
    let trie: ByteTrie
    /// Piece bytes -> id (by bytes, not by Swift's String equality, which would merge
    /// canonically equivalent pieces such as "K" and the Kelvin sign).
    let pieceIds: [[UInt8]: Int32]
    let unknownScore: Double
    /// Id of each byte-fallback piece <0xXX>, or -1.                                (256)
    let byteFallbackIds: [Int32]
    let cache = WordCache()

    init(pieces: [(piece: String, score: Double)], unknownId: Int, byteFallback: Bool, source: String) throws {
        guard !pieces.isEmpty else { throw DataError("\(source): the Unigram model has no pieces") }
        guard unknownId >= 0 && unknownId < pieces.count else {
            throw DataError("\(source): the Unigram model's unk_id \(unknownId) is not one of its \(pieces.count) pieces")
        }
        var minimum = Double.infinity
        var ids: [[UInt8]: Int32] = [:]
        ids.reserveCapacity(pieces.count)
        for (id, entry) in pieces.enumerated() {
            guard entry.score.isFinite else {
                throw DataError("\(source): piece \(id) (\"\(entry.piece.prefix(40))\") has the score \(entry.score); scores must be finite numbers")
            }
            minimum = min(minimum, entry.score)
            ids[Array(entry.piece.utf8)] = Int32(id)
        }
        self.pieces = pieces
        self.unknownId = Int32(unknownId)
        self.byteFallback = byteFallback
        pieceIds = ids
        unknownScore = minimum - 10
        trie = ByteTrie(pieces.enumerated().map { (key: Array($0.element.piece.utf8), value: Int32($0.offset)) })
        byteFallbackIds = (0..<256).map { byte in ids[Array(String(format: "<0x%02X>", byte).utf8)] ?? -1 }
    }

    /// The id of a piece, compared byte by byte.
    func id(of piece: String) -> Int32? { pieceIds[Array(piece.utf8)] }

    /// Appends the ids of one pre-tokenized word (UTF-8).
    func encodeWord(_ word: UnsafeBufferPointer<UInt8>, appendingTo ids: inout [Int32]) {
        if word.isEmpty { return }
        cache.encode(word, appendingTo: &ids) { viterbi(word, appendingTo: &$0) }
    }

    private func viterbi(_ word: UnsafeBufferPointer<UInt8>, appendingTo ids: inout [Int32]) {
        let count = word.count
        let trie = self.trie.view
        withUnsafeTemporaryAllocation(of: Double.self, capacity: count + 1) { bestScore in
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: 2 * (count + 1)) { links in
                let startOf = links.baseAddress!                 // start of the best last piece ending here; -1: none yet
                let idOf = links.baseAddress! + (count + 1)      // its id
                for index in 0...count {
                    bestScore[index] = 0
                    startOf[index] = -1
                    idOf[index] = -1
                }
                pieces.withUnsafeBufferPointer { pieces in
                    var position = 0
                    while position < count {
                        let scoreHere = bestScore[position]
                        let characterLength = ByteLevel.scalar(word, at: position).length
                        var hasSingleCharacterPiece = false
                        var node = trie.rootChildren[Int(word[position])]
                        var end = position + 1
                        while node >= 0 {
                            let id = trie.valueOfNode[Int(node)]
                            if id >= 0 {
                                let candidate = pieces[Int(id)].score + scoreHere
                                if startOf[end] < 0 || candidate > bestScore[end] {
                                    bestScore[end] = candidate
                                    startOf[end] = Int32(position)
                                    idOf[end] = id
                                }
                                if end - position == characterLength { hasSingleCharacterPiece = true }
                            }
                            if end == count { break }
                            node = trie.child(node, word[end])
                            end += 1
                        }
                        if !hasSingleCharacterPiece {
                            let target = min(position + characterLength, count)
                            let candidate = unknownScore + scoreHere
                            if startOf[target] < 0 || candidate > bestScore[target] {
                                bestScore[target] = candidate
                                startOf[target] = Int32(position)
                                idOf[target] = unknownId
                            }
                        }
                        position += characterLength
                    }
                }
                emitPath(word, startOf: startOf, idOf: idOf, appendingTo: &ids)
            }
        }
    }

    /// Appends the ids of the best path, given for each end position the start and id of the
    /// last piece. Runs of unknown pieces become one token (tokenizers' fuse_unk).
    private func emitPath(_ word: UnsafeBufferPointer<UInt8>, startOf: UnsafeMutablePointer<Int32>,
                          idOf: UnsafeMutablePointer<Int32>, appendingTo ids: inout [Int32]) {
        let first = ids.count
        var end = word.count
        var unknownEnd = -1    // end of the run of unknowns being collected, -1: none
        var unknownStart = 0
        func flushUnknown(_ ids: inout [Int32]) {
            if unknownEnd < 0 { return }
            // Reversed afterwards, so the byte-fallback tokens go in backwards.
            let pieceIds = unknownPieceIds(UnsafeBufferPointer(rebasing: word[unknownStart..<unknownEnd]))
            ids.append(contentsOf: pieceIds.reversed())
            unknownEnd = -1
        }
        while end > 0 {
            let start = Int(startOf[end])
            let id = idOf[end]
            if start < 0 { break }  // cannot happen: every character boundary is reached
            if id == unknownId {
                if unknownEnd < 0 { unknownEnd = end }
                unknownStart = start
            } else {
                flushUnknown(&ids)
                ids.append(id)
            }
            end = start
        }
        flushUnknown(&ids)
        ids[first...].reverse()
    }

    /// The ids of a run of unknown characters (or of the unknown piece itself): the piece with
    /// that text if there is one, else byte-fallback pieces when all exist, else the unknown id.
    private func unknownPieceIds(_ text: UnsafeBufferPointer<UInt8>) -> [Int32] {
        if let id = pieceIds[Array(text)] { return [id] }
        if byteFallback && text.allSatisfy({ byteFallbackIds[Int($0)] >= 0 }) {
            return text.map { byteFallbackIds[Int($0)] }
        }
        return [unknownId]
    }
}
