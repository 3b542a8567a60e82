/// The input of one forward/backward: B sequences concatenated without padding.
/// Sequence s occupies tokens `sequenceStarts[s] ..< sequenceStarts[s + 1]`. Reused from step to
/// step (`removeAll` keeps capacity), so filling it allocates nothing after warm-up.
///
/// The targets depend on the task (see `TaskLoss`): single-label batches fill `labels` (one class
/// id per sequence), multi-label batches `targets` (K floats per sequence, 1 for a positive
/// label), regression batches `targets` (one value per sequence). A batch holds one kind.
public struct PackedBatch: Sendable {
    public var tokenIds: [Int32] = []         // (T)
    public var tokenTypeIds: [Int32] = []     // (T)
    public var sequenceStarts: [Int] = [0]    // (B + 1)
    /// Single-label: the class id of each sequence.
    public var labels: [Int32] = []           // (B), empty for the other tasks
    /// Multi-label: (B, K) 0/1 per label; regression: (B) values. Empty for single-label.
    public var targets: [Float] = []
    /// The global index of each sequence's example in its data set: keys the dropout masks, so a
    /// sample gets the same mask on whichever rank or micro-batch it lands.
    public var sampleIndices: [Int] = []      // (B)

    public init() {}

    public var sequenceCount: Int { sampleIndices.count }
    public var tokenCount: Int { tokenIds.count }
    public func length(of sequence: Int) -> Int { sequenceStarts[sequence + 1] - sequenceStarts[sequence] }

    public mutating func removeAll() {
        tokenIds.removeAll(keepingCapacity: true)
        tokenTypeIds.removeAll(keepingCapacity: true)
        sequenceStarts.removeAll(keepingCapacity: true)
        sequenceStarts.append(0)
        labels.removeAll(keepingCapacity: true)
        targets.removeAll(keepingCapacity: true)
        sampleIndices.removeAll(keepingCapacity: true)
    }

    /// Room for `sequences` sequences of `tokens` tokens in all, with `targetsPerSequence` float
    /// targets each (K multi-label, 1 regression, 0 single-label).
    public mutating func reserve(tokens: Int, sequences: Int, targetsPerSequence: Int = 0) {
        tokenIds.reserveCapacity(tokens)
        tokenTypeIds.reserveCapacity(tokens)
        sequenceStarts.reserveCapacity(sequences + 1)
        labels.reserveCapacity(sequences)
        targets.reserveCapacity(sequences * targetsPerSequence)
        sampleIndices.reserveCapacity(sequences)
    }

    /// Appends one single-label sequence (already `[CLS] ... [SEP]`); token types default to segment 0.
    public mutating func append<Tokens: Collection>(tokens: Tokens, tokenTypes: Tokens? = nil,
                                                     label: Int32, sampleIndex: Int) where Tokens.Element == Int32 {
        appendSequence(tokens: tokens, tokenTypes: tokenTypes, sampleIndex: sampleIndex)
        labels.append(label)
    }

    /// Appends one sequence with float targets: K per sequence for multi-label (0 or 1 per
    /// label), one value for regression.
    public mutating func append<Tokens: Collection, Targets: Collection>(
        tokens: Tokens, tokenTypes: Tokens? = nil, targets sequenceTargets: Targets, sampleIndex: Int
    ) where Tokens.Element == Int32, Targets.Element == Float {
        appendSequence(tokens: tokens, tokenTypes: tokenTypes, sampleIndex: sampleIndex)
        targets.append(contentsOf: sequenceTargets)
    }

    /// Appends one multi-label sequence whose positive labels are `positiveLabels` (ids < labelCount):
    /// its targets are the multi-hot row of K = `labelCount` floats.
    public mutating func append<Tokens: Collection, Positives: Collection>(
        tokens: Tokens, tokenTypes: Tokens? = nil, positiveLabels: Positives, labelCount: Int, sampleIndex: Int
    ) where Tokens.Element == Int32, Positives.Element == Int32 {
        appendSequence(tokens: tokens, tokenTypes: tokenTypes, sampleIndex: sampleIndex)
        let rowStart = targets.count
        for _ in 0..<labelCount { targets.append(0) }
        for label in positiveLabels {
            precondition(label >= 0 && Int(label) < labelCount, "positive label \(label) outside 0..<\(labelCount)")
            targets[rowStart + Int(label)] = 1
        }
    }

    /// Appends one sequence without a target (prediction: the model computes no loss).
    public mutating func append<Tokens: Collection>(tokens: Tokens, tokenTypes: Tokens? = nil, sampleIndex: Int)
    where Tokens.Element == Int32 {
        appendSequence(tokens: tokens, tokenTypes: tokenTypes, sampleIndex: sampleIndex)
    }

    /// Whether the batch holds targets (labels or float targets): without them forward computes no loss.
    public var hasTargets: Bool { !labels.isEmpty || !targets.isEmpty }

    /// Appends one regression sequence with target `value`.
    public mutating func append<Tokens: Collection>(tokens: Tokens, tokenTypes: Tokens? = nil,
                                                     value: Float, sampleIndex: Int) where Tokens.Element == Int32 {
        appendSequence(tokens: tokens, tokenTypes: tokenTypes, sampleIndex: sampleIndex)
        targets.append(value)
    }

    /// The tokens, token types and sample index of a sequence (its targets are the caller's).
    private mutating func appendSequence<Tokens: Collection>(tokens: Tokens, tokenTypes: Tokens?,
                                                             sampleIndex: Int) where Tokens.Element == Int32 {
        tokenIds.append(contentsOf: tokens)
        if let tokenTypes {
            precondition(tokenTypes.count == tokens.count)
            tokenTypeIds.append(contentsOf: tokenTypes)
        } else {
            for _ in 0..<tokens.count { tokenTypeIds.append(0) }
        }
        sequenceStarts.append(tokenIds.count)
        sampleIndices.append(sampleIndex)
    }
}
