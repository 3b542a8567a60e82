import Foundation

/// What loading a Hugging Face folder did besides copying tensors.
public struct LoadReport: Sendable {
    /// Tensors absent from the file and initialised like HF (the head: classifier, pooler, ...).
    public var initialized: [String] = []
    /// Classifier tensors of the file whose shape is another label count's, initialised like HF
    /// instead (`ignoreMismatchedSizes`): "classifier.weight: [4, 32] in the file, [2, 32] here".
    public var reinitialized: [String] = []
    /// Floating-point tensors in the file that the model does not use (MLM/NSP heads, ...).
    public var ignored: [String] = []
    public init() {}
}

extension BertForSequenceClassification {
    /// Loads `DIR/config.json` and `DIR/model.safetensors` of any family (HF names with or without
    /// the family's base prefix, `bert.`, `roberta.`, ...). A head missing from the file is initialised like HF,
    /// normal(0, initializer_range) weights and zero bias, from `seed`. `labelCount` nil means
    /// "as the checkpoint's classifier/id2label says". A classifier in the file with another
    /// label count than `labelCount` is an error, unless `ignoreMismatchedSizes` (HF's
    /// `from_pretrained(..., ignore_mismatched_sizes=True)`): it is then initialised like a missing one.
    /// The model computes on `compute`.
    /// `forwardOnly`: a model for eval/predict (see init).
    public static func load(modelDirectory: URL, labelCount: Int?, seed: UInt64, ignoreMismatchedSizes: Bool = false,
                            compute: Compute, forwardOnly: Bool = false) throws -> (BertForSequenceClassification, LoadReport) {
        let config = try BertConfig.load(modelDirectory: modelDirectory)
        let file = try weightsFile(modelDirectory: modelDirectory)
        let configPath = modelDirectory.appendingPathComponent("config.json").path
        guard let (labels, key, origin) = labelCount.map({ ($0, "the number of labels", configPath) })
                ?? folderLabelCount(config: config, configPath: configPath, weights: file) else {
            throw ModelError.invalidConfig(file: configPath, reason: "no classifier and no id2label: cannot tell the number of labels")
        }
        try checkSize(labels, key: key, file: origin)
        // Every shape is compared with the file's header before the arenas are allocated.
        let layout = ParameterLayout(config: config, labelCount: labels)
        let sources = try file.resolve(expectedTensors(layout, labelCount: labels, ignoreMismatchedSizes: ignoreMismatchedSizes))
        let model = BertForSequenceClassification(config: config, labelCount: labels, compute: compute, forwardOnly: forwardOnly)
        let report = try model.copyWeights(from: file, sources: sources, seed: seed)
        return (model, report)
    }

    /// The label count a model folder's own classifier has: the rows of its classifier.weight,
    /// else the length of config.json's id2label; nil for a BERT without either (no head yet).
    public static func labelCount(modelDirectory: URL) throws -> Int? {
        let configPath = modelDirectory.appendingPathComponent("config.json").path
        guard let (count, key, file) = folderLabelCount(config: try BertConfig.load(modelDirectory: modelDirectory), configPath: configPath,
                                                        weights: try weightsFile(modelDirectory: modelDirectory)) else { return nil }
        try checkSize(count, key: key, file: file)
        return count
    }

    /// The folder's label count, and the key and file it comes from (for errors).
    private static func folderLabelCount(config: BertConfig, configPath: String, weights file: SafeTensorsFile)
        -> (count: Int, key: String, file: String)? {
        let name = config.architecture.labelOutputWeightName
        if let record = file.records[name], record.shape.count == 2 {
            return (record.shape[0], "the number of labels (the rows of \(name))", file.path)
        }
        return config.labelNames.map { ($0.count, "the number of labels (the size of id2label)", configPath) }
    }

    private static func weightsFile(modelDirectory: URL) throws -> SafeTensorsFile {
        let weightsURL = modelDirectory.appendingPathComponent("model.safetensors")
        guard FileManager.default.fileExists(atPath: weightsURL.path) else {
            let hasBin = FileManager.default.fileExists(atPath: modelDirectory.appendingPathComponent("pytorch_model.bin").path)
            throw ModelError.missingFile(path: weightsURL.path, hint: hasBin
                ? "only pytorch_model.bin found; convert it with `model.save_pretrained(dir, safe_serialization=True)`"
                : "expected the weights of a Hugging Face model")
        }
        return try SafeTensorsFile(url: weightsURL)
    }

    /// The tensors of `layout` as a weight file may hold them: HF names with or without the
    /// family's base prefix (`bert.`, `roberta.`, ...); the head may be absent (initialised like
    /// HF), the tensors sized by the label count of another count too with `ignoreMismatchedSizes`.
    static func expectedTensors(_ layout: ParameterLayout, labelCount: Int, ignoreMismatchedSizes: Bool) -> [ExpectedTensor] {
        let prefix = layout.architecture.basePrefix, family = layout.architecture.family.displayName
        return layout.tensors.map { tensor in
            var names = [tensor.name]
            if tensor.name.hasPrefix(prefix) { names.append(String(tensor.name.dropFirst(prefix.count))) }
            let dependsOnLabelCount = tensor.dependsOnLabelCount
            return ExpectedTensor(
                name: tensor.name, shape: tensor.shape, fileNames: names,
                initializeWhenAbsent: tensor.initializedWhenAbsent,
                initializeWhenMismatched: dependsOnLabelCount && ignoreMismatchedSizes,
                missingHint: " (is this a \(family) checkpoint matching its config.json?)",
                mismatchHint: { fileShape in
                    dependsOnLabelCount ? " (the checkpoint was fine-tuned for \(fileShape.first ?? 0) labels, this run needs \(labelCount))"
                                        : " (config.json and model.safetensors do not match)"
                })
        }
    }

    /// Copies every parameter from `file` into the parameter arena (see `load`).
    public func loadWeights(from file: SafeTensorsFile, seed: UInt64, ignoreMismatchedSizes: Bool = false) throws -> LoadReport {
        let expected = Self.expectedTensors(layout, labelCount: labelCount, ignoreMismatchedSizes: ignoreMismatchedSizes)
        return try copyWeights(from: file, sources: file.resolve(expected), seed: seed)
    }

    /// Fills the parameter arena from `sources` (one per layout tensor, from `resolve`).
    func copyWeights(from file: SafeTensorsFile, sources: [TensorSource], seed: UInt64) throws -> LoadReport {
        var report = LoadReport()
        var used = Set<String>()
        for (tensor, source) in zip(layout.tensors, sources) {
            switch source {
            case .file(let record):
                try file.copyFloats(record.name, into: parameters[tensor.range])
                used.insert(record.name)
            case .absent:
                initializeLikeHuggingFace(tensor, seed: seed)
                report.initialized.append(tensor.name)
            case .mismatched(let record):
                initializeLikeHuggingFace(tensor, seed: seed)
                report.reinitialized.append("\(tensor.name): \(record.shape) in the file, \(tensor.shape) here")
                used.insert(record.name)
            }
        }
        report.ignored = file.records.values.filter { !used.contains($0.name) && $0.dtype.isFloat }.map(\.name).sorted()
        return report
    }

    /// HF `_init_weights`: Linear and Embedding weights ~ normal(0, initializer_range) (an
    /// Embedding's padding row 0), biases 0, LayerNorm weights 1, DistilBERT's sinusoidal table.
    private func initializeLikeHuggingFace(_ tensor: ParameterTensor, seed: UInt64) {
        let values = parameters[tensor.range]
        switch tensor.initialization {
        case .zeros: values.update(repeating: 0)
        case .ones: values.update(repeating: 1)
        case .sinusoidal: fillSinusoidal(values, rows: tensor.shape[0], width: tensor.shape[1])
        case .normal(let paddingRow):
            var generator = NormalGenerator(seed: seed, stream: UInt64(tensor.name.hashValueStable))
            for i in 0..<values.count { values[i] = Float(generator.next()) * config.initializerRange }
            let width = tensor.shape.last ?? 0
            if let paddingRow, paddingRow >= 0 && paddingRow < tensor.shape[0] {
                values[(paddingRow * width)..<((paddingRow + 1) * width)].update(repeating: 0)
            }
        }
    }
}

/// Standard normal samples from a counter-based hash (Box-Muller): the same seed gives the
/// same values on every machine and rank.
struct NormalGenerator {
    private let key: UInt64
    private var counter: UInt64 = 0
    private var spare: Double?

    init(seed: UInt64, stream: UInt64) { key = mix64(mix64(seed) ^ stream) }

    mutating func next() -> Double {
        if let s = spare { spare = nil; return s }
        // Two uniforms in (0, 1], from the top 53 bits of two hashes.
        let u1 = (Double(mix64(key ^ counter) >> 11) + 1) / 9_007_199_254_740_992.0
        let u2 = Double(mix64(key ^ (counter + 1)) >> 11) / 9_007_199_254_740_992.0
        counter += 2
        let radius = (-2 * log(u1)).squareRoot()
        spare = radius * sin(2 * Double.pi * u2)
        return radius * cos(2 * Double.pi * u2)
    }
}

extension String {
    /// FNV-1a of the UTF-8 bytes: stable across runs and machines (unlike `hashValue`).
    var hashValueStable: UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in utf8 { h = (h ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return h
    }
}

extension BertForSequenceClassification {
    /// HF `_init_weights` for a model trained from scratch (benchmarks of configs without
    /// weights): Linear and Embedding weights ~ normal(0, initializer_range), the padding rows
    /// of the embeddings 0, LayerNorm weights 1, biases 0 (DistilBERT's sinusoidal table).
    public func initializeRandomly(seed: UInt64) {
        for tensor in layout.tensors { initializeLikeHuggingFace(tensor, seed: seed) }
    }
}

/// transformers' create_sinusoidal_embeddings: row p, column j = sin(p / 10000^(2⌊j/2⌋/width))
/// for even j, cos(...) for odd j (computed in double, as numpy does, then rounded).
func fillSinusoidal(_ values: UnsafeMutableBufferPointer<Float>, rows: Int, width: Int) {
    for p in 0..<rows {
        for j in 0..<width {
            let angle = Double(p) / pow(10000, Double(2 * (j / 2)) / Double(width))
            values[p * width + j] = Float(j % 2 == 0 ? sin(angle) : cos(angle))
        }
    }
}
