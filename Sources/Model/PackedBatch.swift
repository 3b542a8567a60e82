/// The input of one forward/backward: B sequences concatenated without padding.
/// Sequence s occupies tokens `sequenceStarts[s] ..< sequenceStarts[s + 1]`. Reused from step to
/// step (`removeAll` keeps capacity), so filling it allocates nothing after warm-up.
public struct PackedBatch: Sendable {
    public var tokenIds: [Int32] = []         // (T)
    public var tokenTypeIds: [Int32] = []     // (T)
    public var sequenceStarts: [Int] = [0]    // (B + 1)
    public var labels: [Int32] = []           // (B)
    /// The global index of each sequence's example in its data set: keys the dropout masks, so a
    /// sample gets the same mask on whichever rank or micro-batch it lands.
    public var sampleIndices: [Int] = []      // (B)

    public init() {}

    public var sequenceCount: Int { labels.count }
    public var tokenCount: Int { tokenIds.count }
    public func length(of sequence: Int) -> Int { sequenceStarts[sequence + 1] - sequenceStarts[sequence] }

    public mutating func removeAll() {
        tokenIds.removeAll(keepingCapacity: true)
        tokenTypeIds.removeAll(keepingCapacity: true)
        sequenceStarts.removeAll(keepingCapacity: true)
        sequenceStarts.append(0)
        labels.removeAll(keepingCapacity: true)
        sampleIndices.removeAll(keepingCapacity: true)
    }

    public mutating func reserve(tokens: Int, sequences: Int) {
        tokenIds.reserveCapacity(tokens)
        tokenTypeIds.reserveCapacity(tokens)
        sequenceStarts.reserveCapacity(sequences + 1)
        labels.reserveCapacity(sequences)
        sampleIndices.reserveCapacity(sequences)
    }

    /// Appends one sequence (already `[CLS] ... [SEP]`); token types default to segment 0.
    public mutating func append<Tokens: Collection>(tokens: Tokens, tokenTypes: Tokens? = nil,
                                                     label: Int32, sampleIndex: Int) where Tokens.Element == Int32 {
        tokenIds.append(contentsOf: tokens)
        if let tokenTypes {
            precondition(tokenTypes.count == tokens.count)
            tokenTypeIds.append(contentsOf: tokenTypes)
        } else {
            for _ in 0..<tokens.count { tokenTypeIds.append(0) }
        }
        sequenceStarts.append(tokenIds.count)
        labels.append(label)
        sampleIndices.append(sampleIndex)
    }
}
