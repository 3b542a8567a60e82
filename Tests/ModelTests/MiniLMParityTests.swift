import Foundation
import Testing
@testable import Model

/// The real MiniLM-L6-H384 (fetched by the test command's set-up into models/minilm, or
/// BERT_DIST_MINILM) with a seeded classifier head, against PyTorch's logits.
@Suite struct MiniLMParityTests {
    static var modelDirectory: URL {
        if let path = ProcessInfo.processInfo.environment["BERT_DIST_MINILM"] { return URL(fileURLWithPath: path) }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("models/minilm")
    }

    @Test func logitsMatchPyTorch() throws {
        let directory = Self.modelDirectory
        try #require(FileManager.default.fileExists(atPath: directory.appendingPathComponent("model.safetensors").path),
                     "MiniLM not found at \(directory.path): run launch/setup (or set BERT_DIST_MINILM)")
        let reference = try SafeTensorsFile(url: fixtures.appendingPathComponent("minilm_reference.safetensors"))
        let (model, report) = try BertForSequenceClassification.load(modelDirectory: directory, labelCount: 4, seed: 7, compute: Compute(threads: 1))
        #expect(report.initialized == ["classifier.weight", "classifier.bias"])
        #expect(report.ignored.isEmpty)
        // PyTorch's seeded head replaces ours (torch's RNG is not ours).
        try reference.copyFloats("classifier.weight", into: model.parameters[model.layout["classifier.weight"].range])
        try reference.copyFloats("classifier.bias", into: model.parameters[model.layout["classifier.bias"].range])

        let sentences = try reference.record("input_ids").shape[0]
        let batch = try packedBatch(from: reference, labels: Array(repeating: 0, count: sentences))
        try model.forward(batch, dropout: nil)
        expectClose(model.logits, try reference.floats("logits"), relativeTolerance: 1e-5, "MiniLM logits")
    }
}
