import Foundation
import Storage

/// Rank 0's reports: a progress bar on a terminal, plain periodic lines otherwise, a final
/// summary, and TensorBoard scalars. Other ranks get a reporter that prints nothing.
final class Reporter {
    let enabled: Bool
    let isTerminal: Bool
    let totalSteps: Int
    let logEvery: Int
    private let tensorBoard: TensorBoardWriter?
    private let started = Date()
    private var stepsSinceLog = 0
    private var lossSinceLog = 0.0, correctSinceLog = 0.0, examplesSinceLog = 0.0, lossDenominatorSinceLog = 0.0
    private var tokensSinceLog = 0.0
    private var lastLogTime = Date()
    private var barShown = false
    private var firstStep: Int?

    /// More classes than this get no per-class TensorBoard scalars (a chart per class stops
    /// being readable long before).
    static let perClassScalarLimit = 50

    /// Where whole lines go (stdout of rank 0 in the CLI; collected in tests).
    private let output: (String) -> Void
    /// Whether the step lines show the training accuracy (not for regression).
    var reportsAccuracy = true

    init(enabled: Bool, totalSteps: Int, logEvery: Int, progress: ProgressMode, tensorBoardDirectory: URL?,
         output: @escaping (String) -> Void) throws {
        self.enabled = enabled
        self.output = output
        self.totalSteps = totalSteps
        self.logEvery = max(1, logEvery)
        isTerminal = progress == .bar
        tensorBoard = enabled ? try tensorBoardDirectory.map { try TensorBoardWriter(directory: $0) } : nil
    }

    /// A line that is not the progress bar (notes, evaluation results).
    func say(_ line: String) {
        guard enabled else { return }
        if barShown { print("\r\u{1B}[2K", terminator: "") }
        output(line)
        barShown = false
        fflush(nil)
    }

    func step(_ step: Int, outcome: Replica.Outcome, stepSeconds: Double) throws {
        guard enabled else { return }
        if firstStep == nil { firstStep = step }
        stepsSinceLog += 1
        lossSinceLog += outcome.lossSum
        lossDenominatorSinceLog += outcome.lossDenominator
        correctSinceLog += outcome.correct
        examplesSinceLog += outcome.examples
        tokensSinceLog += outcome.tokens
        let stepNumber = step + 1
        let loss = outcome.lossDenominator > 0 ? outcome.lossSum / outcome.lossDenominator : 0
        let tokensPerSecond = stepSeconds > 0 ? outcome.tokens / stepSeconds : 0
        if let tensorBoard {
            var scalars: [TensorBoardEvent.Scalar] = [
                .init(tag: "train/lr", value: Float(outcome.learningRate)),
                .init(tag: "train/tokens_per_s", value: Float(tokensPerSecond)),
            ]
            if !outcome.skipped {
                scalars.append(.init(tag: "train/loss", value: Float(loss)))
                scalars.append(.init(tag: "train/grad_norm", value: Float(outcome.gradientNorm)))
            }
            try tensorBoard.addScalars(scalars, step: stepNumber)
        }
        let due = stepNumber % logEvery == 0 || stepNumber == totalSteps
        if isTerminal {
            drawBar(stepNumber: stepNumber, outcome: outcome)
            if due { resetWindow() }
        } else if due {
            let elapsed = Date().timeIntervalSince(lastLogTime)
            let accuracy = reportsAccuracy ? String(format: "  accuracy %.4f", correctSinceLog / max(examplesSinceLog, 1)) : ""
            let line = String(format: "step %d/%d  loss %.4f%@  lr %.3g  grad_norm %.3f  tokens/s %.0f  elapsed %@  eta %@",
                              stepNumber, totalSteps, windowLoss, accuracy,
                              outcome.learningRate, outcome.gradientNorm, tokensSinceLog / max(elapsed, 1e-9),
                              formatDuration(Date().timeIntervalSince(started)), eta(stepNumber))
            output(line)
            fflush(nil)
            resetWindow()
        }
    }

    /// The mean loss of the steps since the last line.
    private var windowLoss: Double { lossDenominatorSinceLog > 0 ? lossSinceLog / lossDenominatorSinceLog : 0 }

    private func resetWindow() {
        stepsSinceLog = 0
        lossSinceLog = 0; correctSinceLog = 0; examplesSinceLog = 0; tokensSinceLog = 0; lossDenominatorSinceLog = 0
        lastLogTime = Date()
    }

    private func drawBar(stepNumber: Int, outcome: Replica.Outcome) {
        let width = 24
        let filled = totalSteps > 0 ? min(width, width * stepNumber / totalSteps) : 0
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        let elapsed = Date().timeIntervalSince(lastLogTime)
        let accuracy = reportsAccuracy ? String(format: " acc %.3f", correctSinceLog / max(examplesSinceLog, 1)) : ""
        let line = String(format: "\r\u{1B}[2K%d/%d %@ loss %.4f%@ lr %.2e %.0f tok/s eta %@",
                          stepNumber, totalSteps, bar, windowLoss, accuracy, outcome.learningRate,
                          tokensSinceLog / max(elapsed, 1e-9), eta(stepNumber))
        print(line, terminator: "")
        barShown = true
        fflush(nil)
    }

    /// An evaluation's line, and its TensorBoard scalars: eval/<metric> for each of the task's
    /// metrics (eval/loss, eval/accuracy, eval/f1_macro, ...; a correlation that is not a number
    /// is left out), and per class or label, named by the labels (up to `perClassScalarLimit`):
    /// eval/f1/<label>.
    func evaluation(_ metrics: any TaskMetrics, step: Int, isBest: Bool = false) throws {
        guard enabled else { return }
        say("eval at step \(step): \(metricsLine(metrics))  (\(metrics.count) examples)\(isBest ? "  best so far" : "")")
        let scores: [ClassScores]
        switch metrics {
        case let metrics as ClassificationMetrics: scores = metrics.perClass
        case let metrics as MultiLabelMetrics: scores = metrics.perLabel
        default: scores = []
        }
        let perClass = scores.count <= Self.perClassScalarLimit
            ? scores.map { TensorBoardEvent.Scalar(tag: "eval/f1/\($0.label)", value: Float($0.f1)) } : []
        let overall = metrics.scalars.filter(\.value.isFinite).map { TensorBoardEvent.Scalar(tag: "eval/\($0.name)", value: Float($0.value)) }
        try tensorBoard?.addScalars(overall + perClass, step: step)
    }

    /// TensorBoard scalars of `step` that are not the step's own (a restart's report).
    func scalars(_ values: [(tag: String, value: Double)], step: Int) throws {
        try tensorBoard?.addScalars(values.map { TensorBoardEvent.Scalar(tag: $0.tag, value: Float($0.value)) }, step: step)
    }

    func finish() {
        if barShown && enabled { print(""); barShown = false }
        try? tensorBoard?.flush()
        tensorBoard?.close()
    }

    private func eta(_ stepNumber: Int) -> String {
        guard let firstStep, stepNumber > firstStep + 1 else { return "--:--" }
        let perStep = Date().timeIntervalSince(started) / Double(stepNumber - firstStep)
        return formatDuration(perStep * Double(totalSteps - stepNumber))
    }
}

/// 75 s -> "1:15", 3725 s -> "1:02:05".
public func formatDuration(_ seconds: Double) -> String {
    let total = Int(seconds.rounded())
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60)
    return h > 0 ? String(format: "%d:%02d:%02d", h, m, s) : String(format: "%d:%02d", m, s)
}
