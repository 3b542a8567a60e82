import ArgumentParser
import Foundation

/// --model: the Hugging Face folder train, bench and tokenize start from.
public struct ModelOptions: ParsableArguments, Sendable {
    @Option(name: .customLong("model"), help: ArgumentHelp("Hugging Face folder of a BERT-family encoder, by config.json's model_type: bert, distilbert, electra, roberta, xlm-roberta or camembert (config.json, model.safetensors, tokenizer.json or the family's vocabulary files).", valueName: "dir"),
            transform: fileURL)
    public var directory: URL

    public init() {}
}

/// --checkpoint: the trained model eval and predict use.
public struct CheckpointInputOptions: ParsableArguments, Sendable {
    @Option(name: .customLong("checkpoint"), help: ArgumentHelp("A checkpoint folder (verified first), a merged model folder, or a training output folder (its latest checkpoint).", valueName: "dir"),
            transform: fileURL)
    public var folder: URL

    public init() {}
}

/// A path on the command line as a file URL (relative to the working directory).
@Sendable func fileURL(_ path: String) -> URL { URL(fileURLWithPath: path) }
