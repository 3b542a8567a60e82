import ArgumentParser
import Foundation

/// --model: the Hugging Face folder train, bench and tokenize start from.
struct ModelOptions: ParsableArguments {
    @Option(help: "Hugging Face BERT folder (config.json, vocab.txt or tokenizer.json, model.safetensors).")
    var model: String

    var directory: URL { URL(fileURLWithPath: model) }
}

/// --checkpoint: the trained model eval and predict use.
struct CheckpointInputOptions: ParsableArguments {
    @Option(help: "A checkpoint folder (verified first), a merged model folder, or a training output folder (its latest checkpoint).")
    var checkpoint: String

    var folder: URL { URL(fileURLWithPath: checkpoint) }
}
