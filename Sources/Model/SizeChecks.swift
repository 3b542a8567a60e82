import Foundation

// What a model folder may declare, checked before anything is sized from it: a config.json's
// sizes are bounded (so that no arithmetic on them can overflow), and the tensors a layout
// expects are compared with the weight file's header (so that nothing is allocated for weights
// the file does not hold). Generic over the family: each config reader names its own keys and
// each layout lists its own tensors.

/// Upper bounds of the sizes a config.json may declare. Real encoders are far below them
/// (XLM-R's vocabulary has 250002 entries, BERT-large is 1024 wide and 24 layers deep); they
/// exist so that a lying config is an error before any shape is computed. The real bound is the
/// weight file: every tensor of those sizes must be in it (`SafeTensorsFile.resolve`).
public enum SizeLimits {
    /// Vocabulary, width, feed-forward size, positions, token types, labels: at most 2^24 each,
    /// so that a matrix of two has fewer than 2^48 elements.
    public static let dimension = 1 << 24
    /// Encoder layers (the deepest public encoders have 48): with `dimension`, a whole layout
    /// (about 16 tensors per layer) stays below 2^63 elements.
    public static let layers = 1024
}

/// Checks a size read from a config file: positive and at most `limit`; the error names the
/// file and the key.
public func checkSize(_ value: Int, key: String, file: String, limit: Int = SizeLimits.dimension) throws {
    guard value > 0 else { throw ModelError.invalidConfig(file: file, reason: "\(key) must be positive, found \(value)") }
    guard value <= limit else {
        throw ModelError.invalidConfig(file: file, reason: "\(key) \(value) is larger than \(limit), the most bert-dist accepts (corrupt config?)")
    }
}

/// The product of `factors`, or nil when it overflows an Int (or a factor is negative).
public func checkedProduct(_ factors: [Int]) -> Int? {
    var product = 1
    for factor in factors {
        guard factor >= 0 else { return nil }
        let (result, overflow) = product.multipliedReportingOverflow(by: factor)
        if overflow { return nil }
        product = result
    }
    return product
}

/// One tensor a model layout expects in a weight file.
public struct ExpectedTensor {
    /// The model's name for it (errors and reports use it).
    public var name: String
    public var shape: [Int]
    /// The names it may have in the file, tried in order (e.g. with and without `bert.`).
    public var fileNames: [String]
    /// Absent from the file: the caller initialises it (a new classifier head) instead of an error.
    public var initializeWhenAbsent: Bool
    /// Of another shape in the file: the caller initialises it instead (HF's ignore_mismatched_sizes).
    public var initializeWhenMismatched: Bool
    /// Ends the error of a missing tensor, e.g. " (is this a BERT checkpoint matching its config.json?)".
    public var missingHint: String
    /// Ends the error of a shape mismatch, given the file's shape.
    public var mismatchHint: ([Int]) -> String

    public init(name: String, shape: [Int], fileNames: [String]? = nil, initializeWhenAbsent: Bool = false,
                initializeWhenMismatched: Bool = false, missingHint: String = "",
                mismatchHint: @escaping ([Int]) -> String = { _ in "" }) {
        self.name = name
        self.shape = shape
        self.fileNames = fileNames ?? [name]
        self.initializeWhenAbsent = initializeWhenAbsent
        self.initializeWhenMismatched = initializeWhenMismatched
        self.missingHint = missingHint
        self.mismatchHint = mismatchHint
    }
}

/// Where an expected tensor's values come from.
public enum TensorSource {
    /// Copied from this record of the file (same shape, a floating-point dtype).
    case file(SafeTensorsRecord)
    /// Not in the file: initialised.
    case absent
    /// In the file with another shape (this record): initialised instead.
    case mismatched(SafeTensorsRecord)
}

extension SafeTensorsFile {
    /// The source of every expected tensor, each shape compared with the header: the first
    /// tensor missing, of another shape or not floating-point is an error naming the file and
    /// the tensor. Reads only the header, so a caller resolves before it allocates anything.
    public func resolve(_ expected: [ExpectedTensor]) throws -> [TensorSource] {
        try expected.map { tensor in
            guard let record = tensor.fileNames.lazy.compactMap({ self.records[$0] }).first else {
                guard tensor.initializeWhenAbsent else {
                    throw ModelError.tensor(file: path, tensor: tensor.name, reason: "missing\(tensor.missingHint)")
                }
                return .absent
            }
            guard record.shape == tensor.shape else {
                guard tensor.initializeWhenMismatched else {
                    throw ModelError.tensor(file: path, tensor: record.name,
                                           reason: "shape \(record.shape), expected \(tensor.shape)\(tensor.mismatchHint(record.shape))")
                }
                return .mismatched(record)
            }
            guard record.dtype.isFloat else {
                throw ModelError.tensor(file: path, tensor: record.name, reason: "dtype \(record.dtype.rawValue) is not a floating-point type (F32, F16 or BF16)")
            }
            return .file(record)
        }
    }
}
