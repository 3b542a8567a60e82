import Foundation
import Model
import Options
import Storage

/// Which evaluation holds the best model so far and when a run stops early, as Hugging Face's
/// Trainer (`metric_for_best_model`, `greater_is_better`) and its EarlyStoppingCallback decide:
/// an evaluation is the new best when its metric is better than the best so far (any amount);
/// it resets the patience counter only when it is better by more than the threshold, else the
/// counter grows, and the run stops when it reaches the patience. A metric that is not a number
/// (a correlation of constant predictions) is never better. The state travels in every
/// checkpoint (trainer_state.pb), so a resumed run goes on counting.
struct BestModelTracker: Equatable {
    /// The metric's name as evaluation reports it (without HF's "eval_" prefix).
    let metric: String
    let greaterIsBetter: Bool
    let patience: Int?
    let threshold: Double
    private(set) var best: TrainerState.BestMetric?
    private(set) var evaluationsWithoutImprovement = 0

    /// `--metric-for-best-model` and the early-stopping options for `task`: the name must be one
    /// of the task's metrics (checked before the first step).
    init(_ options: BestModelOptions, task: TaskLoss) throws {
        let name = options.metricForBestModel
        metric = name.hasPrefix("eval_") ? String(name.dropFirst(5)) : name
        guard task.metricNames.contains(metric) else {
            throw TrainingError.invalidInput("--metric-for-best-model \(name) is not a metric of this task; evaluation reports \(task.metricNames.joined(separator: ", "))")
        }
        greaterIsBetter = options.greaterIsBetter ?? metricGreaterIsBetter(metric)
        patience = options.earlyStoppingPatience
        threshold = options.earlyStoppingThreshold
    }

    /// Continues from a checkpoint's state when it followed the same metric the same way.
    /// Returns a note when it did not (the best starts afresh).
    mutating func resume(from state: TrainerState) -> String? {
        guard let recorded = state.bestMetric else { return nil }
        guard recorded.name == metric && recorded.greaterIsBetter == greaterIsBetter else {
            return "the checkpoint's best model was chosen by \(recorded.name) (\(recorded.greaterIsBetter ? "higher" : "lower") is better); this run follows \(metric) (\(greaterIsBetter ? "higher" : "lower") is better) from here on"
        }
        best = recorded
        evaluationsWithoutImprovement = state.evaluationsWithoutImprovement
        return nil
    }

    /// Records the evaluation at `step`; true when it is the best so far.
    mutating func record(_ metrics: any TaskMetrics, step: Int) -> Bool {
        let value = metrics.metric(named: metric) ?? .nan
        let isBetter = value.isFinite && (best.map { greaterIsBetter ? value > $0.value : value < $0.value } ?? true)
        let isImprovement = isBetter && (best.map { abs(value - $0.value) > threshold } ?? true)
        evaluationsWithoutImprovement = isImprovement ? 0 : evaluationsWithoutImprovement + 1
        if isBetter { best = .init(name: metric, value: value, step: step, greaterIsBetter: greaterIsBetter) }
        return isBetter
    }

    /// The patience is used up.
    var shouldStop: Bool { patience.map { evaluationsWithoutImprovement >= $0 } ?? false }

    /// Why the run stops (when `shouldStop`).
    var stopReason: String {
        let bestText = best.map { String(format: "best %.4f at step %d", $0.value, $0.step) } ?? "no evaluation gave a number"
        return "stopped early: \(evaluationsWithoutImprovement) evaluation\(evaluationsWithoutImprovement == 1 ? "" : "s") in a row without an improvement of eval \(metric) larger than \(threshold) (--early-stopping-patience \(patience ?? 0); \(bestText))"
    }
}

/// One line of an evaluation's numbers: the task's metrics, the loss last, e.g.
/// "accuracy 0.9000  f1_macro 0.8950  f1_micro 0.9000  mcc 0.8700  loss 0.3100".
public func metricsLine(_ metrics: any TaskMetrics) -> String {
    let ordered = metrics.scalars.filter { $0.name != "loss" } + metrics.scalars.filter { $0.name == "loss" }
    return ordered.map { $0.value.isFinite ? String(format: "%@ %.4f", $0.name, $0.value) : "\($0.name) nan" }.joined(separator: "  ")
}
