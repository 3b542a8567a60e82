import ArgumentParser

/// --max-seq-len: how texts are cut (train, eval, predict, tokenize).
struct SequenceOptions: ParsableArguments {
    @Option(help: "Longest tokenised text, [CLS] and [SEP] included; longer ones are truncated (default: 128, or the model's max_position_embeddings when smaller).")
    var maxSeqLen: Int?

    func validate() throws {
        if let maxSeqLen, maxSeqLen < 2 { throw ValidationError("--max-seq-len must leave room for [CLS] and [SEP] (at least 2)") }
    }
}

/// How labelled data files are read (train, eval).
struct DataOptions: ParsableArguments {
    @OptionGroup var sequence: SequenceOptions

    @Flag(help: "Skip malformed data rows (and report how many) instead of stopping.")
    var skipBadRows = false
}
