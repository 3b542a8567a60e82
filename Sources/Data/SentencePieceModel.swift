import Foundation

/// What bert-dist reads of a SentencePiece model file (`sentencepiece.bpe.model`, a serialized
/// `ModelProto` of sentencepiece_model.proto), parsed from the protobuf wire format directly:
///
///     ModelProto      1: repeated SentencePiece pieces   2: TrainerSpec   3: NormalizerSpec
///     SentencePiece   1: string piece   2: float score   3: enum type (1 normal, 2 unknown,
///                     3 control, 4 user defined, 5 unused, 6 byte)
///     TrainerSpec     3: enum model_type (1 unigram, 2 BPE, 3 word, 4 char)   35: bool byte_fallback
///                     40: int32 unk_id (default 0)
///     NormalizerSpec  1: string name   2: bytes precompiled_charsmap
///
/// Every other field is skipped by its wire type. Lengths and varints are checked against the
/// bytes left, so a truncated or damaged file is an error, never a read past the end.
struct SentencePieceModel {
    enum PieceType: Int { case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6 }

    var pieces: [(piece: String, score: Float, type: Int)] = []
    var modelType = 1
    var byteFallback = false
    var unknownId = 0
    var normalizerName = ""
    var precompiledCharsmap: [UInt8] = []

    init(url: URL) throws {
        let bytes: [UInt8]
        do {
            bytes = [UInt8](try Data(contentsOf: url))
        } catch {
            throw DataError("\(url.path): cannot read (\(describeFileError(error)))")
        }
        try self.init(bytes: bytes, source: url.path)
    }

    init(bytes: [UInt8], source: String) throws {
        func damaged(_ why: String) -> DataError {
            DataError("\(source): not a readable SentencePiece model (\(why))")
        }
        try bytes.withUnsafeBufferPointer { buffer in
            var model = ProtobufReader(buffer, damaged: damaged)
            while let (field, wireType) = try model.nextField() {
                switch (field, wireType) {
                case (1, 2):
                    var message = try model.message()
                    var piece = "", score: Float = 0, type = 1
                    while let (pieceField, pieceWire) = try message.nextField() {
                        switch (pieceField, pieceWire) {
                        case (1, 2): piece = try message.string("a piece")
                        case (2, 5): score = Float(bitPattern: try message.fixed32())
                        case (3, 0): type = Int(truncatingIfNeeded: try message.varint())
                        default: try message.skip(pieceWire)
                        }
                    }
                    pieces.append((piece, score, type))
                case (2, 2):
                    var trainer = try model.message()
                    while let (trainerField, trainerWire) = try trainer.nextField() {
                        switch (trainerField, trainerWire) {
                        case (3, 0): modelType = Int(truncatingIfNeeded: try trainer.varint())
                        case (35, 0): byteFallback = try trainer.varint() != 0
                        case (40, 0): unknownId = Int(Int32(truncatingIfNeeded: try trainer.varint()))
                        default: try trainer.skip(trainerWire)
                        }
                    }
                case (3, 2):
                    var normalizer = try model.message()
                    while let (normalizerField, normalizerWire) = try normalizer.nextField() {
                        switch (normalizerField, normalizerWire) {
                        case (1, 2): normalizerName = try normalizer.string("the normalizer name")
                        case (2, 2): precompiledCharsmap = Array(try normalizer.lengthDelimited())
                        default: try normalizer.skip(normalizerWire)
                        }
                    }
                default:
                    try model.skip(wireType)
                }
            }
        }
        guard !pieces.isEmpty else { throw damaged("no pieces") }
    }
}

/// A cursor over protobuf wire-format bytes.
struct ProtobufReader {
    let bytes: UnsafeBufferPointer<UInt8>
    var position = 0
    let damaged: (String) -> DataError

    init(_ bytes: UnsafeBufferPointer<UInt8>, damaged: @escaping (String) -> DataError) {
        self.bytes = bytes
        self.damaged = damaged
    }

    mutating func varint() throws -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < bytes.count else { throw damaged("it ends inside a number") }
            guard shift < 64 else { throw damaged("a number is longer than 10 bytes") }
            let byte = bytes[position]
            position += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return value }
            shift += 7
        }
    }

    /// The next field number and wire type, or nil at the end.
    mutating func nextField() throws -> (Int, Int)? {
        if position == bytes.count { return nil }
        let key = try varint()
        let field = key >> 3
        guard field >= 1 && field <= 536_870_911 else { throw damaged("a field number of \(field)") }
        return (Int(field), Int(key & 7))
    }

    mutating func fixed32() throws -> UInt32 {
        guard bytes.count - position >= 4 else { throw damaged("it ends inside a 32-bit value") }
        let value = UInt32(bytes[position]) | UInt32(bytes[position + 1]) << 8 | UInt32(bytes[position + 2]) << 16
            | UInt32(bytes[position + 3]) << 24
        position += 4
        return value
    }

    mutating func lengthDelimited() throws -> UnsafeBufferPointer<UInt8> {
        let length = try varint()
        guard length <= UInt64(bytes.count - position) else {
            throw damaged("a field says it is \(length) bytes long but \(bytes.count - position) are left")
        }
        let slice = UnsafeBufferPointer(rebasing: bytes[position..<(position + Int(length))])
        position += Int(length)
        return slice
    }

    mutating func message() throws -> ProtobufReader {
        ProtobufReader(try lengthDelimited(), damaged: damaged)
    }

    mutating func string(_ what: String) throws -> String {
        let raw = try lengthDelimited()
        guard let string = String(validating: raw, as: UTF8.self) else { throw damaged("\(what) is not valid UTF-8") }
        return string
    }

    mutating func skip(_ wireType: Int) throws {
        switch wireType {
        case 0: _ = try varint()
        case 1:
            guard bytes.count - position >= 8 else { throw damaged("it ends inside a 64-bit value") }
            position += 8
        case 2: _ = try lengthDelimited()
        case 5: _ = try fixed32()
        default: throw damaged("a field of wire type \(wireType), which SentencePiece models do not use")
        }
    }
}
