import CProto
import Foundation

/// The manifest of a checkpoint folder, `trainer_state.pb`: schema `proto/trainer_state.proto`
/// (message `bertdist.TrainerState`), encoded and decoded with libprotobuf-c.
///
/// Written last into a checkpoint folder; it lists the size and SHA-256 of every other file.
public struct TrainerState: Equatable, Sendable {
    /// The `format_version` this code writes and the only one it reads.
    public static let currentFormatVersion = 1
    /// The file name inside a checkpoint folder.
    public static let fileName = "trainer_state.pb"
    /// Value of the `end_marker` field, the last field on the wire: its absence means a truncated file.
    static let endMarker: UInt32 = 0x6265_7274  // "bert"

    /// A contiguous range of the flat parameter arena, in floats: `start ..< start + count`.
    public struct ShardRange: Equatable, Sendable {
        public var rank: Int
        public var start: Int
        public var count: Int
        public init(rank: Int, start: Int, count: Int) {
            self.rank = rank
            self.start = start
            self.count = count
        }
    }

    public struct OptimizerSettings: Equatable, Sendable {
        /// "adamw" or "adam".
        public var kind: String
        /// Peak learning rate (--lr).
        public var learningRate: Double
        public var beta1: Double
        public var beta2: Double
        public var epsilon: Double
        public var weightDecay: Double
        /// Clipping threshold on the global gradient L2 norm; 0 means no clipping.
        public var maxGradNorm: Double
        /// Learning-rate schedule, e.g. "linear".
        public var schedule: String
        public init(kind: String = "adamw", learningRate: Double = 2e-5, beta1: Double = 0.9, beta2: Double = 0.999,
                    epsilon: Double = 1e-8, weightDecay: Double = 0, maxGradNorm: Double = 1, schedule: String = "linear") {
            self.kind = kind
            self.learningRate = learningRate
            self.beta1 = beta1
            self.beta2 = beta2
            self.epsilon = epsilon
            self.weightDecay = weightDecay
            self.maxGradNorm = maxGradNorm
            self.schedule = schedule
        }
    }

    public struct Metric: Equatable, Sendable {
        public var name: String
        public var value: Double
        /// Step at which the value was measured.
        public var step: Int
        public init(name: String, value: Double, step: Int) {
            self.name = name
            self.value = value
            self.step = step
        }
    }

    /// The best evaluation of a run so far (--metric-for-best-model) and where its model is.
    public struct BestMetric: Equatable, Sendable {
        public var name: String
        public var value: Double
        /// The step of the checkpoint holding that model (OUTPUT/best names it).
        public var step: Int
        public var greaterIsBetter: Bool
        public init(name: String, value: Double, step: Int, greaterIsBetter: Bool) {
            self.name = name
            self.value = value
            self.step = step
            self.greaterIsBetter = greaterIsBetter
        }
    }

    public struct FileChecksum: Equatable, Sendable {
        /// Name relative to the checkpoint folder, e.g. "model.safetensors".
        public var name: String
        public var sizeBytes: Int
        public var sha256: SHA256Digest
        public init(name: String, sizeBytes: Int, sha256: SHA256Digest) {
            self.name = name
            self.sizeBytes = sizeBytes
            self.sha256 = sha256
        }
    }

    public var formatVersion: Int
    // Progress.
    /// Optimizer steps completed.
    public var step: Int
    /// Epoch (0-based) the next sample is drawn from.
    public var epoch: Int
    /// Samples of that epoch's order already consumed by all ranks together.
    public var samplesConsumedInEpoch: Int
    public var totalSteps: Int
    public var warmupSteps: Int
    public var seed: Int
    // Distribution.
    public var worldSize: Int
    public var shardOptimizer: Bool
    /// Floats in the flat parameter arena.
    public var parameterCount: Int
    /// One range per rank when `shardOptimizer`, else one range covering the whole arena.
    public var optimizerShards: [ShardRange]
    // Optimizer and schedule.
    public var optimizer: OptimizerSettings
    /// Learning rate the schedule gave the last step taken.
    public var currentLearningRate: Double
    // Batching.
    public var globalBatchSize: Int
    public var microBatchSize: Int
    public var maxSequenceLength: Int
    public var trainDataFingerprint: String
    public var recentMetrics: [Metric]
    /// Every other file of the checkpoint folder.
    public var files: [FileChecksum]
    public var createdUnixSeconds: Double
    public var bertDistVersion: String
    /// Adam updates applied (bias correction); below `step` when non-finite steps were skipped.
    public var optimizerStep: Int
    /// Fingerprint of the flat parameter layout the optimizer files are ranges of.
    public var parameterLayout: String
    /// The best evaluation so far (nil before the first one, or without evaluation).
    public var bestMetric: BestMetric?
    /// Evaluations in a row without an improvement larger than --early-stopping-threshold.
    public var evaluationsWithoutImprovement: Int

    public init(
        formatVersion: Int = TrainerState.currentFormatVersion,
        step: Int = 0, epoch: Int = 0, samplesConsumedInEpoch: Int = 0,
        totalSteps: Int = 0, warmupSteps: Int = 0, seed: Int = 0,
        worldSize: Int = 1, shardOptimizer: Bool = false, parameterCount: Int = 0,
        optimizerShards: [ShardRange] = [],
        optimizer: OptimizerSettings = OptimizerSettings(), currentLearningRate: Double = 0,
        globalBatchSize: Int = 0, microBatchSize: Int = 0, maxSequenceLength: Int = 0,
        trainDataFingerprint: String = "", recentMetrics: [Metric] = [], files: [FileChecksum] = [],
        createdUnixSeconds: Double = 0, bertDistVersion: String = "",
        optimizerStep: Int = 0, parameterLayout: String = "",
        bestMetric: BestMetric? = nil, evaluationsWithoutImprovement: Int = 0
    ) {
        self.formatVersion = formatVersion
        self.step = step
        self.epoch = epoch
        self.samplesConsumedInEpoch = samplesConsumedInEpoch
        self.totalSteps = totalSteps
        self.warmupSteps = warmupSteps
        self.seed = seed
        self.worldSize = worldSize
        self.shardOptimizer = shardOptimizer
        self.parameterCount = parameterCount
        self.optimizerShards = optimizerShards
        self.optimizer = optimizer
        self.currentLearningRate = currentLearningRate
        self.globalBatchSize = globalBatchSize
        self.microBatchSize = microBatchSize
        self.maxSequenceLength = maxSequenceLength
        self.trainDataFingerprint = trainDataFingerprint
        self.recentMetrics = recentMetrics
        self.files = files
        self.createdUnixSeconds = createdUnixSeconds
        self.bertDistVersion = bertDistVersion
        self.optimizerStep = optimizerStep
        self.parameterLayout = parameterLayout
        self.bestMetric = bestMetric
        self.evaluationsWithoutImprovement = evaluationsWithoutImprovement
    }

    // MARK: - Encoding

    /// The protobuf encoding (what goes into `trainer_state.pb`).
    public func encoded() -> [UInt8] { encoded(includingSelfChecksum: true) }

    func encoded(includingSelfChecksum: Bool) -> [UInt8] {
        let memory = CMemory()
        defer { memory.freeAll() }

        var message = Bertdist__TrainerState()
        bertdist__trainer_state__init(&message)
        message.format_version = Int32(clamping: formatVersion)
        message.step = Int64(step)
        message.epoch = Int64(epoch)
        message.samples_consumed_in_epoch = Int64(samplesConsumedInEpoch)
        message.total_steps = Int64(totalSteps)
        message.warmup_steps = Int64(warmupSteps)
        message.seed = Int64(seed)
        message.world_size = Int32(clamping: worldSize)
        message.shard_optimizer = shardOptimizer ? 1 : 0
        message.parameter_count = Int64(parameterCount)

        let shards = memory.allocate(Bertdist__ShardRange.self, count: optimizerShards.count)
        let shardPointers = memory.allocate(UnsafeMutablePointer<Bertdist__ShardRange>?.self, count: optimizerShards.count)
        for (index, range) in optimizerShards.enumerated() {
            bertdist__shard_range__init(shards + index)
            shards[index].rank = Int32(clamping: range.rank)
            shards[index].start = Int64(range.start)
            shards[index].count = Int64(range.count)
            shardPointers[index] = shards + index
        }
        message.n_optimizer_shards = optimizerShards.count
        message.optimizer_shards = shardPointers

        let settings = memory.allocate(Bertdist__OptimizerSettings.self, count: 1)
        bertdist__optimizer_settings__init(settings)
        settings.pointee.kind = memory.string(optimizer.kind)
        settings.pointee.learning_rate = optimizer.learningRate
        settings.pointee.beta1 = optimizer.beta1
        settings.pointee.beta2 = optimizer.beta2
        settings.pointee.epsilon = optimizer.epsilon
        settings.pointee.weight_decay = optimizer.weightDecay
        settings.pointee.max_grad_norm = optimizer.maxGradNorm
        settings.pointee.schedule = memory.string(optimizer.schedule)
        message.optimizer = settings
        message.current_learning_rate = currentLearningRate

        message.global_batch_size = Int64(globalBatchSize)
        message.micro_batch_size = Int64(microBatchSize)
        message.max_sequence_length = Int64(maxSequenceLength)
        message.train_data_fingerprint = memory.string(trainDataFingerprint)

        let metrics = memory.allocate(Bertdist__Metric.self, count: recentMetrics.count)
        let metricPointers = memory.allocate(UnsafeMutablePointer<Bertdist__Metric>?.self, count: recentMetrics.count)
        for (index, metric) in recentMetrics.enumerated() {
            bertdist__metric__init(metrics + index)
            metrics[index].name = memory.string(metric.name)
            metrics[index].value = metric.value
            metrics[index].step = Int64(metric.step)
            metricPointers[index] = metrics + index
        }
        message.n_recent_metrics = recentMetrics.count
        message.recent_metrics = metricPointers

        let checksums = memory.allocate(Bertdist__FileChecksum.self, count: files.count)
        let checksumPointers = memory.allocate(UnsafeMutablePointer<Bertdist__FileChecksum>?.self, count: files.count)
        for (index, file) in files.enumerated() {
            bertdist__file_checksum__init(checksums + index)
            checksums[index].name = memory.string(file.name)
            checksums[index].size_bytes = Int64(file.sizeBytes)
            checksums[index].sha256 = memory.binary(file.sha256.bytes)
            checksumPointers[index] = checksums + index
        }
        message.n_files = files.count
        message.files = checksumPointers

        message.created_unix_seconds = createdUnixSeconds
        message.bert_dist_version = memory.string(bertDistVersion)
        message.optimizer_step = Int64(optimizerStep)
        message.parameter_layout = memory.string(parameterLayout)
        if let bestMetric {
            message.best_metric_name = memory.string(bestMetric.name)
            message.best_metric = bestMetric.value
            message.best_step = Int64(bestMetric.step)
            message.greater_is_better = bestMetric.greaterIsBetter ? 1 : 0
        }
        message.evaluations_without_improvement = Int64(evaluationsWithoutImprovement)
        message.end_marker = Self.endMarker

        func pack() -> [UInt8] {
            let byteCount = bertdist__trainer_state__get_packed_size(&message)
            var bytes = [UInt8](repeating: 0, count: byteCount)
            let packedCount = bytes.withUnsafeMutableBufferPointer { buffer in
                bertdist__trainer_state__pack(&message, buffer.baseAddress)
            }
            precondition(packedCount == byteCount, "protobuf-c packed \(packedCount) bytes, expected \(byteCount)")
            return bytes
        }
        guard includingSelfChecksum else { return pack() }
        // state_sha256: the SHA-256 of the encoding without it.
        message.state_sha256 = memory.binary(SHA256.hash(pack()).bytes)
        return pack()
    }

    // MARK: - Decoding

    /// Decodes `trainer_state.pb` bytes. `file` names the file in errors. Throws a `.malformed`
    /// `StorageError` for bytes that are not a complete TrainerState of a known format version.
    public init(decoding bytes: [UInt8], file: String) throws {
        func malformed(_ reason: String) -> StorageError {
            StorageError(kind: .malformed, path: file, description: "\(file): invalid \(TrainerState.fileName): \(reason)")
        }
        let unpacked = bytes.withUnsafeBufferPointer { buffer in
            bertdist__trainer_state__unpack(nil, buffer.count, buffer.baseAddress)
        }
        guard let unpacked else { throw malformed("protobuf decoding failed, the file is truncated or corrupted") }
        defer { bertdist__trainer_state__free_unpacked(unpacked, nil) }
        let message = unpacked.pointee

        guard message.end_marker == Self.endMarker else { throw malformed("end marker missing, the file was cut short") }
        guard Int(message.format_version) == Self.currentFormatVersion else {
            throw malformed("format version \(message.format_version) is not supported (this bert-dist reads version \(Self.currentFormatVersion))")
        }
        guard let settings = message.optimizer?.pointee else { throw malformed("optimizer settings missing") }

        var optimizerShards: [ShardRange] = []
        for index in 0..<message.n_optimizer_shards {
            guard let range = message.optimizer_shards[index]?.pointee else { throw malformed("empty shard range") }
            optimizerShards.append(ShardRange(rank: Int(range.rank), start: Int(range.start), count: Int(range.count)))
        }
        var recentMetrics: [Metric] = []
        for index in 0..<message.n_recent_metrics {
            guard let metric = message.recent_metrics[index]?.pointee else { throw malformed("empty metric") }
            recentMetrics.append(Metric(name: Self.string(metric.name), value: metric.value, step: Int(metric.step)))
        }
        var files: [FileChecksum] = []
        for index in 0..<message.n_files {
            guard let checksum = message.files[index]?.pointee else { throw malformed("empty file checksum") }
            let name = Self.string(checksum.name)
            guard checksum.sha256.len == 32, let digestBytes = checksum.sha256.data else {
                throw malformed("the SHA-256 of \(quotedName(name)) has \(checksum.sha256.len) bytes, not 32")
            }
            files.append(FileChecksum(name: name, sizeBytes: Int(checksum.size_bytes),
                                      sha256: SHA256Digest(bytes: Array(UnsafeBufferPointer(start: digestBytes, count: 32)))))
        }

        self.init(
            formatVersion: Int(message.format_version),
            step: Int(message.step), epoch: Int(message.epoch),
            samplesConsumedInEpoch: Int(message.samples_consumed_in_epoch),
            totalSteps: Int(message.total_steps), warmupSteps: Int(message.warmup_steps), seed: Int(message.seed),
            worldSize: Int(message.world_size), shardOptimizer: message.shard_optimizer != 0,
            parameterCount: Int(message.parameter_count), optimizerShards: optimizerShards,
            optimizer: OptimizerSettings(
                kind: Self.string(settings.kind), learningRate: settings.learning_rate,
                beta1: settings.beta1, beta2: settings.beta2, epsilon: settings.epsilon,
                weightDecay: settings.weight_decay, maxGradNorm: settings.max_grad_norm,
                schedule: Self.string(settings.schedule)),
            currentLearningRate: message.current_learning_rate,
            globalBatchSize: Int(message.global_batch_size), microBatchSize: Int(message.micro_batch_size),
            maxSequenceLength: Int(message.max_sequence_length),
            trainDataFingerprint: Self.string(message.train_data_fingerprint),
            recentMetrics: recentMetrics, files: files,
            createdUnixSeconds: message.created_unix_seconds,
            bertDistVersion: Self.string(message.bert_dist_version),
            optimizerStep: Int(message.optimizer_step),
            parameterLayout: Self.string(message.parameter_layout),
            bestMetric: Self.string(message.best_metric_name).isEmpty ? nil
                : BestMetric(name: Self.string(message.best_metric_name), value: message.best_metric, step: Int(message.best_step),
                             greaterIsBetter: message.greater_is_better != 0),
            evaluationsWithoutImprovement: Int(message.evaluations_without_improvement))
        // Required: a damaged byte anywhere in the file (a step number, a checksum) must not pass.
        // Fields are written in number order, so the file ends with state_sha256 (field 99: tag
        // 0x9a 0x06, length 32, digest; 35 bytes) and end_marker (field 100: 6 bytes); the digest
        // covers every other byte, as they are on disk.
        let tail = 35 + 6
        guard message.state_sha256.len == 32, bytes.count >= tail,
              bytes[bytes.count - tail] == 0x9a, bytes[bytes.count - tail + 1] == 0x06, bytes[bytes.count - tail + 2] == 32 else {
            throw malformed("its own SHA-256 (state_sha256) is missing, the file is damaged")
        }
        var digest = SHA256()
        digest.update(Array(bytes[0..<(bytes.count - tail)]))
        digest.update(Array(bytes[(bytes.count - 6)...]))
        guard digest.finalize().bytes == Array(bytes[(bytes.count - tail + 3)..<(bytes.count - 6)]) else {
            throw malformed("its own SHA-256 does not match its contents, the file is corrupted")
        }
        if let problem = implausibility { throw malformed(problem) }
    }

    /// What no bert-dist writes (a file whose checksum was recomputed after an edit): a count
    /// below 0, more updates than steps, an optimizer range outside the parameters, a listed
    /// file outside the folder.
    /// Readers may then use the fields as sizes and indices.
    var implausibility: String? {
        let counts = [("step", step), ("epoch", epoch), ("samples_consumed_in_epoch", samplesConsumedInEpoch),
                      ("total_steps", totalSteps), ("warmup_steps", warmupSteps), ("parameter_count", parameterCount),
                      ("global_batch_size", globalBatchSize), ("micro_batch_size", microBatchSize),
                      ("max_sequence_length", maxSequenceLength), ("optimizer_step", optimizerStep)]
        if let (name, value) = counts.first(where: { $0.1 < 0 }) { return "\(name) is \(value), below 0" }
        guard worldSize >= 1 else { return "world_size is \(worldSize), not a rank count" }
        // Each step updates at most once (a step with a non-finite gradient does not).
        guard optimizerStep <= step else { return "optimizer_step is \(optimizerStep), more than the \(step) steps taken" }
        for range in optimizerShards {
            guard range.rank >= 0 && range.rank < worldSize, range.start >= 0, range.count >= 0,
                  range.start <= parameterCount, range.count <= parameterCount - range.start else {
                return "optimizer range \(range.start) + \(range.count) of rank \(range.rank) is outside the \(parameterCount) parameters of \(worldSize) rank(s)"
            }
        }
        for file in files {
            guard !file.name.isEmpty, !file.name.contains("/"), file.name != ".", file.name != "..", !file.name.contains("\0") else {
                return "lists \(quotedName(file.name)), which is not a file name inside the checkpoint folder"
            }
            guard file.sizeBytes >= 0 else { return "records \(file.sizeBytes) bytes for \(quotedName(file.name))" }
        }
        return nil
    }

    /// Reads and decodes a `trainer_state.pb` file; errors name the file.
    public init(contentsOf url: URL) throws {
        try self.init(decoding: try readFile(url), file: url.path)
    }

    /// Encodes and writes the manifest atomically to `url`; returns the SHA-256 of the written bytes.
    @discardableResult
    public func write(to url: URL) throws -> SHA256Digest {
        try writeFileAtomically(url, bytes: encoded())
    }

    /// A Swift string from a protobuf-c string field (protobuf-c uses an empty C string for "unset").
    private static func string(_ pointer: UnsafeMutablePointer<CChar>?) -> String {
        guard let pointer else { return "" }
        return String(cString: pointer)
    }
}

/// A file name from the manifest as messages show it: quoted, escaped, at most 200 characters.
private func quotedName(_ name: String) -> String {
    String(name.prefix(200)).debugDescription
}
