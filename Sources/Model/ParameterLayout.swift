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

/// Declares parameter tensors in arena order: each declaration records the tensor's HF name,
/// shape and offset (64-byte aligned, from an ArenaPlanner) and returns the offset.
struct ParameterPlanner {
    private(set) var arena = ArenaPlanner()
    private(set) var tensors: [ParameterTensor] = []

    mutating func tensor(_ name: String, _ shape: [Int]) -> Int { stacked([name], shape) }

    /// Tensors of one `shape` stored back to back, so together they are one matrix stacked
    /// along the first dimension; returns the first one's offset.
    mutating func stacked(_ names: [String], _ shape: [Int]) -> Int {
        let count = shape.reduce(1, *)
        let offset = arena.take(stacked: names.count, of: count)
        for (i, name) in names.enumerated() {
            tensors.append(ParameterTensor(name: name, shape: shape, offset: offset + i * count))
        }
        return offset
    }
}

// The parameters of BertForSequenceClassification, declared once per part: each `init(_:)`
// below is the only place that names, shapes and orders that part's tensors. A `Slot` is an
// offset while planning (`Int`) and a pointer into an arena once mapped (the views the model
// computes with, `ParameterLayout.views(in:)`).

/// `bert.embeddings`.
struct EmbeddingParameters<Slot> {
    var wordTable, positionTable, tokenTypeTable: Slot   // (V, C), (P, C), (types, C)
    var normWeight, normBias: Slot                       // (C)

    func map<T>(_ f: (Slot) -> T) -> EmbeddingParameters<T> {
        EmbeddingParameters<T>(wordTable: f(wordTable), positionTable: f(positionTable), tokenTypeTable: f(tokenTypeTable),
                               normWeight: f(normWeight), normBias: f(normBias))
    }
}

extension EmbeddingParameters<Int> {
    init(_ p: inout ParameterPlanner, config: BertConfig) {
        let C = config.hiddenSize, prefix = "bert.embeddings."
        wordTable = p.tensor(prefix + "word_embeddings.weight", [config.vocabSize, C])
        positionTable = p.tensor(prefix + "position_embeddings.weight", [config.maxPositionEmbeddings, C])
        tokenTypeTable = p.tensor(prefix + "token_type_embeddings.weight", [config.typeVocabSize, C])
        normWeight = p.tensor(prefix + "LayerNorm.weight", [C])
        normBias = p.tensor(prefix + "LayerNorm.bias", [C])
    }
}

/// `bert.encoder.layer.N`.
struct EncoderLayerParameters<Slot> {
    var qkvWeight, qkvBias: Slot                           // (3C, C), (3C): query, key, value stacked
    var attentionOutputWeight, attentionOutputBias: Slot   // (C, C), (C)
    var attentionNormWeight, attentionNormBias: Slot       // (C)
    var intermediateWeight, intermediateBias: Slot         // (I, C), (I)
    var outputWeight, outputBias: Slot                     // (C, I), (C)
    var outputNormWeight, outputNormBias: Slot             // (C)

    func map<T>(_ f: (Slot) -> T) -> EncoderLayerParameters<T> {
        EncoderLayerParameters<T>(
            qkvWeight: f(qkvWeight), qkvBias: f(qkvBias),
            attentionOutputWeight: f(attentionOutputWeight), attentionOutputBias: f(attentionOutputBias),
            attentionNormWeight: f(attentionNormWeight), attentionNormBias: f(attentionNormBias),
            intermediateWeight: f(intermediateWeight), intermediateBias: f(intermediateBias),
            outputWeight: f(outputWeight), outputBias: f(outputBias),
            outputNormWeight: f(outputNormWeight), outputNormBias: f(outputNormBias))
    }
}

extension EncoderLayerParameters<Int> {
    init(_ p: inout ParameterPlanner, layer: Int, config: BertConfig) {
        let C = config.hiddenSize, I = config.intermediateSize, prefix = "bert.encoder.layer.\(layer)."
        // No padding between query, key and value: one (3C, C) matrix and one (3C) bias, so one
        // GEMM computes all three projections.
        let parts = ["query", "key", "value"]
        qkvWeight = p.stacked(parts.map { prefix + "attention.self.\($0).weight" }, [C, C])
        qkvBias = p.stacked(parts.map { prefix + "attention.self.\($0).bias" }, [C])
        attentionOutputWeight = p.tensor(prefix + "attention.output.dense.weight", [C, C])
        attentionOutputBias = p.tensor(prefix + "attention.output.dense.bias", [C])
        attentionNormWeight = p.tensor(prefix + "attention.output.LayerNorm.weight", [C])
        attentionNormBias = p.tensor(prefix + "attention.output.LayerNorm.bias", [C])
        intermediateWeight = p.tensor(prefix + "intermediate.dense.weight", [I, C])
        intermediateBias = p.tensor(prefix + "intermediate.dense.bias", [I])
        outputWeight = p.tensor(prefix + "output.dense.weight", [C, I])
        outputBias = p.tensor(prefix + "output.dense.bias", [C])
        outputNormWeight = p.tensor(prefix + "output.LayerNorm.weight", [C])
        outputNormBias = p.tensor(prefix + "output.LayerNorm.bias", [C])
    }
}

/// `bert.pooler` and `classifier`.
struct HeadParameters<Slot> {
    var poolerWeight, poolerBias: Slot           // (C, C), (C)
    var classifierWeight, classifierBias: Slot   // (K, C), (K)

    func map<T>(_ f: (Slot) -> T) -> HeadParameters<T> {
        HeadParameters<T>(poolerWeight: f(poolerWeight), poolerBias: f(poolerBias),
                          classifierWeight: f(classifierWeight), classifierBias: f(classifierBias))
    }
}

extension HeadParameters<Int> {
    init(_ p: inout ParameterPlanner, config: BertConfig, labelCount: Int) {
        let C = config.hiddenSize
        poolerWeight = p.tensor("bert.pooler.dense.weight", [C, C])
        poolerBias = p.tensor("bert.pooler.dense.bias", [C])
        classifierWeight = p.tensor("classifier.weight", [labelCount, C])
        classifierBias = p.tensor("classifier.bias", [labelCount])
    }
}

/// The whole model's parameters: offsets (`ModelParameters<Int>`) or views into one arena.
struct ModelParameters<Slot> {
    var embeddings: EmbeddingParameters<Slot>
    var layers: [EncoderLayerParameters<Slot>]
    var head: HeadParameters<Slot>

    func map<T>(_ f: (Slot) -> T) -> ModelParameters<T> {
        ModelParameters<T>(embeddings: embeddings.map(f), layers: layers.map { $0.map(f) }, head: head.map(f))
    }
}

extension EmbeddingParameters: Sendable where Slot: Sendable {}
extension EncoderLayerParameters: Sendable where Slot: Sendable {}
extension HeadParameters: Sendable where Slot: Sendable {}
extension ModelParameters: Sendable where Slot: Sendable {}

/// The table of (name, shape, offset) of every parameter of BertForSequenceClassification,
/// derived from the declarations above. Order: embeddings, layer 0 ... layer N-1, pooler,
/// classifier — so backward, which runs from the classifier down, finishes the arena from its
/// end towards offset 0, and gradient buckets at the end of the arena can be sent while the
/// lower layers still compute.
public struct ParameterLayout: Sendable {
    public let tensors: [ParameterTensor]
    public let totalCount: Int
    /// Arena offset where each encoder layer's parameters start; `layerStarts[layerCount]` is the
    /// pooler's start. Backward reports these as "everything from here up is final".
    public let layerStarts: [Int]
    /// Every tensor's offset, by part (see `views(in:)`).
    let offsets: ModelParameters<Int>
    private let indexByName: [String: Int]

    public init(config: BertConfig, labelCount: Int) {
        var planner = ParameterPlanner()
        let embeddings = EmbeddingParameters(&planner, config: config)
        var layers: [EncoderLayerParameters<Int>] = []
        var layerStarts: [Int] = []
        for l in 0..<config.layerCount {
            layerStarts.append(planner.arena.count)
            layers.append(EncoderLayerParameters(&planner, layer: l, config: config))
        }
        layerStarts.append(planner.arena.count)
        let head = HeadParameters(&planner, config: config, labelCount: labelCount)
        offsets = ModelParameters(embeddings: embeddings, layers: layers, head: head)
        tensors = planner.tensors
        totalCount = planner.arena.count
        self.layerStarts = layerStarts
        var index: [String: Int] = [:]
        for (i, t) in tensors.enumerated() { index[t.name] = i }
        indexByName = index
    }

    /// Pointers to every tensor in `arena` (parameters, gradients, ...).
    func views(in arena: FloatArena) -> ModelParameters<UnsafeMutablePointer<Float>> {
        precondition(arena.count == totalCount, "an arena of \(arena.count) floats for a layout of \(totalCount)")
        return offsets.map { arena.base + $0 }
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
