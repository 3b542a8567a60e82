/// Where one parameter tensor lives in the flat arenas (parameters, gradients, Adam m and v
/// share this layout).
public struct ParameterTensor: Sendable, Equatable {
    /// The Hugging Face name in the family's `<Family>ForSequenceClassification`
    /// (`bert.encoder.layer.0...`, `classifier.weight`).
    public let name: String
    public let shape: [Int]
    public let offset: Int
    /// HF Trainer's parameter groups: no weight decay for biases and LayerNorm parameters
    /// (nn.LayerNorm modules, whatever their names: DistilBERT's `sa_layer_norm`).
    public let decays: Bool
    /// A folder without this tensor gets it initialised like HF (`initialization`) instead of an
    /// error: the classification head's tensors (and DistilBERT's sinusoidal position table).
    public let initializedWhenAbsent: Bool
    /// The head's output layer, whose shape is the label count's: what --ignore-mismatched-sizes
    /// initialises again.
    public let dependsOnLabelCount: Bool
    /// How HF's `_init_weights` initialises it.
    let initialization: ParameterInitialization
    public var count: Int { shape.reduce(1, *) }
    public var range: Range<Int> { offset..<(offset + count) }
}

/// HF's `_init_weights` per kind of tensor.
enum ParameterInitialization: Sendable, Equatable {
    /// normal(0, initializer_range); an nn.Embedding's padding row 0.
    case normal(paddingRow: Int?)
    case zeros, ones
    /// DistilBERT's sinusoidal position table.
    case sinusoidal
}

/// Declares parameter tensors in arena order: each declaration records the tensor's HF name,
/// shape and offset (64-byte aligned, from an ArenaPlanner) and returns the offset. The
/// declarations by module kind (Linear, LayerNorm, Embedding) give each tensor HF's weight
/// decay group and initialisation.
struct ParameterPlanner {
    private(set) var arena = ArenaPlanner()
    private(set) var tensors: [ParameterTensor] = []
    /// Declaring the classification head: its tensors may be absent from a folder.
    var declaringHead = false

    /// Tensors of one `shape` stored back to back, so together they are one matrix stacked
    /// along the first dimension; returns the first one's offset.
    mutating func stacked(_ names: [String], _ shape: [Int], decays: Bool, initialization: ParameterInitialization,
                          dependsOnLabelCount: Bool = false, initializedWhenAbsent: Bool? = nil) -> Int {
        let count = shape.reduce(1, *)
        let offset = arena.take(stacked: names.count, of: count)
        for (i, name) in names.enumerated() {
            tensors.append(ParameterTensor(name: name, shape: shape, offset: offset + i * count, decays: decays,
                                           initializedWhenAbsent: initializedWhenAbsent ?? declaringHead,
                                           dependsOnLabelCount: dependsOnLabelCount, initialization: initialization))
        }
        return offset
    }

    /// nn.Linear modules of `out` x `in` stacked (query, key, value: one (3C, C) matrix and one
    /// (3C) bias): their weights, then their biases; returns both offsets.
    mutating func linear(_ modules: [String], out: Int, in inFeatures: Int,
                         dependsOnLabelCount: Bool = false) -> (weight: Int, bias: Int) {
        (stacked(modules.map { $0 + ".weight" }, [out, inFeatures], decays: true, initialization: .normal(paddingRow: nil),
                 dependsOnLabelCount: dependsOnLabelCount),
         stacked(modules.map { $0 + ".bias" }, [out], decays: false, initialization: .zeros, dependsOnLabelCount: dependsOnLabelCount))
    }

    mutating func linear(_ module: String, out: Int, in inFeatures: Int, dependsOnLabelCount: Bool = false) -> (weight: Int, bias: Int) {
        linear([module], out: out, in: inFeatures, dependsOnLabelCount: dependsOnLabelCount)
    }

    /// An nn.LayerNorm of `width`: weight, bias.
    mutating func layerNorm(_ module: String, _ width: Int) -> (weight: Int, bias: Int) {
        (stacked([module + ".weight"], [width], decays: false, initialization: .ones),
         stacked([module + ".bias"], [width], decays: false, initialization: .zeros))
    }

    /// An nn.Embedding table (rows, width).
    mutating func embedding(_ module: String, rows: Int, width: Int, paddingRow: Int? = nil, sinusoidal: Bool = false) -> Int {
        stacked([module + ".weight"], [rows, width], decays: true,
                initialization: sinusoidal ? .sinusoidal : .normal(paddingRow: paddingRow), initializedWhenAbsent: sinusoidal)
    }
}

// The parameters of a `<Family>ForSequenceClassification`, declared once per part: each
// `init(_:)` below is the only place that shapes and orders that part's tensors, under the
// family's names (EncoderArchitecture). A `Slot` is an offset while planning (`Int`) and a
// pointer into an arena once mapped (the views the model computes with, `ParameterLayout.views(in:)`).

/// The embeddings (`bert.embeddings`, ELECTRA's `embeddings_project`).
struct EmbeddingParameters<Slot> {
    var wordTable, positionTable: Slot                   // (V, E), (P, E)
    var tokenTypeTable: Slot?                            // (types, E); nil: no token types (DistilBERT)
    var normWeight, normBias: Slot                       // (E)
    var projectionWeight, projectionBias: Slot?          // (C, E), (C); nil: E = C

    func map<T>(_ f: (Slot) -> T) -> EmbeddingParameters<T> {
        EmbeddingParameters<T>(wordTable: f(wordTable), positionTable: f(positionTable), tokenTypeTable: tokenTypeTable.map(f),
                               normWeight: f(normWeight), normBias: f(normBias),
                               projectionWeight: projectionWeight.map(f), projectionBias: projectionBias.map(f))
    }
}

extension EmbeddingParameters<Int> {
    init(_ p: inout ParameterPlanner, config: BertConfig, architecture a: EncoderArchitecture) {
        let E = a.embeddingWidth, names = a.names
        wordTable = p.embedding(names.wordEmbeddings, rows: config.vocabSize, width: E, paddingRow: a.wordPaddingRow)
        positionTable = p.embedding(names.positionEmbeddings, rows: config.maxPositionEmbeddings, width: E,
                                    paddingRow: a.positionPaddingRow, sinusoidal: config.sinusoidalPositionEmbeddings)
        tokenTypeTable = names.tokenTypeEmbeddings.map { p.embedding($0, rows: config.typeVocabSize, width: E) }
        (normWeight, normBias) = p.layerNorm(names.embeddingNorm, E)
        if let projection = names.embeddingProjection {
            (projectionWeight, projectionBias) = p.linear(projection, out: config.hiddenSize, in: E)
        } else {
            (projectionWeight, projectionBias) = (nil, nil)
        }
    }
}

/// Encoder layer N (`bert.encoder.layer.N`, `distilbert.transformer.layer.N`).
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
    init(_ p: inout ParameterPlanner, layer: Int, config: BertConfig, architecture a: EncoderArchitecture) {
        let C = config.hiddenSize, I = config.intermediateSize, n = a.names, prefix = n.layerPrefix + "\(layer)."
        // No padding between query, key and value: one (3C, C) matrix and one (3C) bias, so one
        // GEMM computes all three projections.
        (qkvWeight, qkvBias) = p.linear([n.query, n.key, n.value].map { prefix + $0 }, out: C, in: C)
        (attentionOutputWeight, attentionOutputBias) = p.linear(prefix + n.attentionOutput, out: C, in: C)
        (attentionNormWeight, attentionNormBias) = p.layerNorm(prefix + n.attentionNorm, C)
        (intermediateWeight, intermediateBias) = p.linear(prefix + n.intermediate, out: I, in: C)
        (outputWeight, outputBias) = p.linear(prefix + n.output, out: C, in: I)
        (outputNormWeight, outputNormBias) = p.layerNorm(prefix + n.outputNorm, C)
    }
}

/// The classification head: its C x C layer (`bert.pooler.dense`, `pre_classifier`,
/// `classifier.dense`) and its output layer (`classifier`, `classifier.out_proj`).
struct HeadParameters<Slot> {
    var denseWeight, denseBias: Slot             // (C, C), (C)
    var outputWeight, outputBias: Slot           // (K, C), (K)

    func map<T>(_ f: (Slot) -> T) -> HeadParameters<T> {
        HeadParameters<T>(denseWeight: f(denseWeight), denseBias: f(denseBias),
                          outputWeight: f(outputWeight), outputBias: f(outputBias))
    }
}

extension HeadParameters<Int> {
    init(_ p: inout ParameterPlanner, config: BertConfig, architecture a: EncoderArchitecture, labelCount: Int) {
        let C = config.hiddenSize
        p.declaringHead = true
        (denseWeight, denseBias) = p.linear(a.names.headDense, out: C, in: C)
        (outputWeight, outputBias) = p.linear(a.names.headOutput, out: labelCount, in: C, dependsOnLabelCount: true)
        p.declaringHead = false
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

/// The table of (name, shape, offset) of every parameter of the family's
/// `<Family>ForSequenceClassification`, derived from the declarations above. Order: embeddings,
/// layer 0 ... layer N-1, the head (BERT: pooler, classifier) — so backward, which runs from the classifier down, finishes the arena from its
/// end towards offset 0, and gradient buckets at the end of the arena can be sent while the
/// lower layers still compute.
public struct ParameterLayout: Sendable {
    public let tensors: [ParameterTensor]
    public let totalCount: Int
    /// Arena offset where each encoder layer's parameters start; `layerStarts[layerCount]` is the
    /// head's start.
    public let layerStarts: [Int]
    /// What backward reports, in its order, as "every gradient from here up is final": the head's
    /// start, then per layer from the last its feed-forward's start (the intermediate weight: the
    /// feed-forward half is done before the attention half) and the layer's start, then 0. The
    /// gradient sum cuts its buckets there, so most of a layer travels while the rest is computed.
    public let backwardReadyOffsets: [Int]
    /// The structure the names and shapes follow.
    public let architecture: EncoderArchitecture
    /// Every tensor's offset, by part (see `views(in:)`).
    let offsets: ModelParameters<Int>
    private let indexByName: [String: Int]
    private let indexOfWordTable, indexOfPositionTable: Int

    public init(config: BertConfig, labelCount: Int) {
        let architecture = config.architecture
        var planner = ParameterPlanner()
        let embeddings = EmbeddingParameters(&planner, config: config, architecture: architecture)
        var layers: [EncoderLayerParameters<Int>] = []
        var layerStarts: [Int] = []
        for l in 0..<config.layerCount {
            layerStarts.append(planner.arena.count)
            layers.append(EncoderLayerParameters(&planner, layer: l, config: config, architecture: architecture))
        }
        layerStarts.append(planner.arena.count)
        let head = HeadParameters(&planner, config: config, architecture: architecture, labelCount: labelCount)
        self.architecture = architecture
        offsets = ModelParameters(embeddings: embeddings, layers: layers, head: head)
        tensors = planner.tensors
        totalCount = planner.arena.count
        self.layerStarts = layerStarts
        backwardReadyOffsets = [layerStarts[config.layerCount]]
            + layers.indices.reversed().flatMap { [layers[$0].intermediateWeight, layerStarts[$0]] } + [0]
        var index: [String: Int] = [:]
        for (i, t) in tensors.enumerated() { index[t.name] = i }
        indexByName = index
        indexOfWordTable = tensors.firstIndex { $0.offset == embeddings.wordTable }!
        indexOfPositionTable = tensors.firstIndex { $0.offset == embeddings.positionTable }!
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

    /// The word table, (vocabulary, E): backward writes only the rows of the batch's token ids
    /// (the training loop sends those rows alone).
    public var wordTable: ParameterTensor { tensors[indexOfWordTable] }
    /// The position table, (max_position_embeddings, E): backward writes only the rows
    /// `architecture.positions.usedRows(longestSequence:)` of the batch's longest sequence.
    public var positionTable: ParameterTensor { tensors[indexOfPositionTable] }
    /// E: the length of a row of the word and position tables.
    public var embeddingRowLength: Int { architecture.embeddingWidth }

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
