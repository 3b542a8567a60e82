/// A micro-batch padded like Hugging Face's `DataCollatorWithPadding` (padding="longest"): every
/// sequence is padded with [PAD] at the end to the longest sequence of the batch (capped at
/// `maxLength`); attention mask 1 for real tokens, 0 for padding; token types 0, and 1 from the
/// second segment of a text pair on (padding 0). The model itself runs on packed sequences; this
/// form serves padding statistics and comparisons with HF.
public struct PaddedBatch: Sendable, Equatable {
    public let batchSize: Int
    public let sequenceLength: Int
    public private(set) var inputIds: [Int32]       // (batchSize, sequenceLength)
    public private(set) var attentionMask: [Int32]  // (batchSize, sequenceLength)
    public private(set) var tokenTypeIds: [Int32]   // (batchSize, sequenceLength)
    public private(set) var labels: [Int32]         // (batchSize)
    /// Tokens that are not padding.
    public let realTokenCount: Int

    public var paddingTokenCount: Int { batchSize * sequenceLength - realTokenCount }

    /// `secondSegmentStarts[i]`: where the second text of sequence i starts (its length, or nil
    /// for all, when they are single texts).
    public init(sequences: [[Int32]], labels: [Int32], secondSegmentStarts: [Int]? = nil, paddingTokenId: Int32,
                maxLength: Int) {
        precondition(sequences.count == labels.count && (secondSegmentStarts?.count ?? sequences.count) == sequences.count)
        self.init(count: sequences.count, paddingTokenId: paddingTokenId, maxLength: maxLength,
                  length: { sequences[$0].count }, label: { labels[$0] },
                  secondSegmentStart: { secondSegmentStarts?[$0] ?? sequences[$0].count },
                  copy: { index, destination in
                      for (position, id) in sequences[index].prefix(destination.count).enumerated() {
                          destination[destination.startIndex + position] = id
                      }
                  })
    }

    /// The examples `examples` (indices into `dataset`), in that order.
    public init<Examples: Collection>(dataset: TokenizedDataset, examples: Examples, paddingTokenId: Int32,
                                      maxLength: Int) where Examples.Element == Int32 {
        let indices = examples.map { Int($0) }
        self.init(count: indices.count, paddingTokenId: paddingTokenId, maxLength: maxLength,
                  length: { dataset.length(at: indices[$0]) }, label: { dataset.label(at: indices[$0]) },
                  secondSegmentStart: { dataset.secondSegmentStart(at: indices[$0]) },
                  copy: { index, destination in
                      let tokens = dataset.tokens(at: indices[index])
                      for position in 0..<min(tokens.count, destination.count) {
                          destination[destination.startIndex + position] = tokens[position]
                      }
                  })
    }

    private init(count: Int, paddingTokenId: Int32, maxLength: Int, length: (Int) -> Int, label: (Int) -> Int32,
                 secondSegmentStart: (Int) -> Int, copy: (Int, inout ArraySlice<Int32>) -> Void) {
        batchSize = count
        var longest = 0
        for index in 0..<count { longest = max(longest, length(index)) }
        sequenceLength = min(longest, maxLength)
        inputIds = [Int32](repeating: paddingTokenId, count: count * sequenceLength)
        attentionMask = [Int32](repeating: 0, count: count * sequenceLength)
        tokenTypeIds = [Int32](repeating: 0, count: count * sequenceLength)
        labels = (0..<count).map(label)
        var real = 0
        for index in 0..<count {
            let rowStart = index * sequenceLength
            let used = min(length(index), sequenceLength)
            copy(index, &inputIds[rowStart..<(rowStart + used)])
            for position in rowStart..<(rowStart + used) { attentionMask[position] = 1 }
            for position in min(secondSegmentStart(index), used)..<used { tokenTypeIds[rowStart + position] = 1 }
            real += used
        }
        realTokenCount = real
    }
}
