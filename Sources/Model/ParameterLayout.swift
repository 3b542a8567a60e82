/// Where one parameter tensor lives in the flat arenas (parameters, gradients, Adam m and v
/// share this layout).
public struct ParameterTensor: Sendable, Equatable {
    /// The Hugging Face name in `BertForSequenceClassification` (`bert.encoder.layer.0...`,
    /// `classifier.weight`).
    public let name: String
    public let shape: [Int]
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
    public var range: Range<Int> { offset..<(offset + count) }
    /// HF Trainer's parameter groups: no weight decay for biases and LayerNorm weights.
    public var decays: Bool { !(name.hasSuffix(".bias") || name.contains("LayerNorm")) }
}

/// The table of (name, shape, offset) of every parameter of BertForSequenceClassification,
/// described once. Order: embeddings, layer 0 ... layer N-1, pooler, classifier — so backward,
/// which runs from the classifier down, finishes the arena from its end towards offset 0, and
/// gradient buckets at the end of the arena can be sent while the lower layers still compute.
/// Within a layer the query, key and value weights (and biases) are adjacent, so together they
/// are one (3C, C) matrix and one GEMM computes all three projections.
public struct ParameterLayout: Sendable {
    public let tensors: [ParameterTensor]
    public let totalCount: Int
    /// Arena offset where each encoder layer's parameters start; `layerStarts[layerCount]` is the
    /// pooler's start. Backward reports these as "everything from here up is final".
    public let layerStarts: [Int]
    private let indexByName: [String: Int]

    public init(config: BertConfig, labelCount: Int) {
        let C = config.hiddenSize, I = config.intermediateSize
        var tensors: [ParameterTensor] = []
        var offset = 0
        func add(_ name: String, _ shape: [Int], aligned: Bool = true) {
            tensors.append(ParameterTensor(name: name, shape: shape, offset: offset))
            offset += shape.reduce(1, *)
            if aligned { offset = (offset + 15) / 16 * 16 }  // 64-byte aligned tensors
        }
        add("bert.embeddings.word_embeddings.weight", [config.vocabSize, C])
        add("bert.embeddings.position_embeddings.weight", [config.maxPositionEmbeddings, C])
        add("bert.embeddings.token_type_embeddings.weight", [config.typeVocabSize, C])
        add("bert.embeddings.LayerNorm.weight", [C])
        add("bert.embeddings.LayerNorm.bias", [C])
        var layerStarts: [Int] = []
        for l in 0..<config.layerCount {
            layerStarts.append(offset)
            let p = "bert.encoder.layer.\(l)."
            // No padding between query, key and value: they form one (3C, C) matrix and (3C) bias.
            for part in ["query", "key", "value"] { add(p + "attention.self.\(part).weight", [C, C], aligned: part == "value") }
            for part in ["query", "key", "value"] { add(p + "attention.self.\(part).bias", [C], aligned: part == "value") }
            add(p + "attention.output.dense.weight", [C, C])
            add(p + "attention.output.dense.bias", [C])
            add(p + "attention.output.LayerNorm.weight", [C])
            add(p + "attention.output.LayerNorm.bias", [C])
            add(p + "intermediate.dense.weight", [I, C])
            add(p + "intermediate.dense.bias", [I])
            add(p + "output.dense.weight", [C, I])
            add(p + "output.dense.bias", [C])
            add(p + "output.LayerNorm.weight", [C])
            add(p + "output.LayerNorm.bias", [C])
        }
        layerStarts.append(offset)
        add("bert.pooler.dense.weight", [C, C])
        add("bert.pooler.dense.bias", [C])
        add("classifier.weight", [labelCount, C])
        add("classifier.bias", [labelCount])
        self.tensors = tensors
        self.totalCount = offset
        self.layerStarts = layerStarts
        var index: [String: Int] = [:]
        for (i, t) in tensors.enumerated() { index[t.name] = i }
        indexByName = index
    }

    public subscript(name: String) -> ParameterTensor {
        guard let i = indexByName[name] else { preconditionFailure("no parameter named \(name)") }
        return tensors[i]
    }

    public func contains(_ name: String) -> Bool { indexByName[name] != nil }

    /// Identifies the layout (names, shapes, offsets): optimizer state saved as ranges of one
    /// layout is only meaningful to a model with the same fingerprint.
    public var fingerprint: String {
        var text = "bert-layout-v1"
        for t in tensors { text += "|\(t.name):\(t.shape):\(t.offset)" }
        return "bert-layout-v1:" + String(text.hashValueStable, radix: 16)
    }

    /// Offset of each tensor's first element, as a pointer into `arena`.
    public func pointer(_ name: String, in arena: FloatArena) -> UnsafeMutablePointer<Float> {
        arena.base + self[name].offset
    }
}
