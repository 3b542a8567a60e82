import Foundation
import Testing
@testable import Model

/// LearningRateSchedule against transformers.get_scheduler, step by step (task_schedules.json).
@Suite struct ScheduleTests {
    struct Case {
        let name: String
        let baseLearningRate: Double
        let total: Int, warmup: Int
        let warmupRatio: Double?
        let kwargs: [String: Double]
        let rates: [Double]
    }

    let cases: [Case] = (try! taskFixture("task_schedules.json")["cases"] as! [[String: Any]]).map {
        Case(name: $0["name"] as! String, baseLearningRate: ($0["base_lr"] as! NSNumber).doubleValue, total: $0["total"] as! Int,
             warmup: $0["warmup_steps"] as! Int, warmupRatio: ($0["warmup_ratio"] as? NSNumber)?.doubleValue,
             kwargs: ($0["kwargs"] as! [String: NSNumber]).mapValues(\.doubleValue), rates: doubles($0["lr"]))
    }

    func schedule(_ shape: LearningRateSchedule.Shape, _ c: Case) -> LearningRateSchedule {
        LearningRateSchedule(shape: shape, baseLearningRate: c.baseLearningRate, warmupSteps: c.warmup, totalSteps: c.total,
                             cosineCycles: c.kwargs["num_cycles"] ?? 0.5, polynomialEndLearningRate: c.kwargs["lr_end"] ?? 1e-7,
                             polynomialPower: c.kwargs["power"] ?? 1)
    }

    func expectRates(_ schedule: LearningRateSchedule, _ rates: [Double], _ what: String) {
        var worst = 0.0
        for (step, expected) in rates.enumerated() {
            let rate = schedule.learningRate(atStep: step)
            worst = max(worst, abs(rate - expected))
            #expect(abs(rate - expected) <= 1e-15 * schedule.baseLearningRate, "\(what) step \(step): \(rate) vs HF \(expected)")
        }
        #expect(worst <= 1e-15 * schedule.baseLearningRate)
    }

    @Test func everyShapeMatchesTransformersStepByStep() throws {
        #expect(cases.count == 212)
        for shape in LearningRateSchedule.Shape.allCases where shape != .constant {
            let shapeCases = cases.filter { $0.name == shape.rawValue }
            #expect(shapeCases.count >= 40, "\(shape)")
            for c in shapeCases {
                expectRates(schedule(shape, c), c.rates, "\(c.name) lr \(c.baseLearningRate) total \(c.total) warmup \(c.warmup) \(c.kwargs)")
            }
        }
    }

    /// HF's `constant` ignores warmup; bert-dist's `constant` warms up when given warmup steps
    /// (its behaviour before the other shapes came), i.e. it is HF's constant_with_warmup then.
    @Test func constantIsHFsConstantWithoutWarmupAndConstantWithWarmupWithIt() throws {
        let constant = cases.filter { $0.name == "constant" }
        #expect(constant.count == 40)
        for c in constant {
            if c.warmup == 0 {
                expectRates(schedule(.constant, c), c.rates, "constant without warmup")
            } else {
                #expect(c.rates.allSatisfy { $0 == c.baseLearningRate })  // HF: warmup ignored
                let withWarmup = cases.first {
                    $0.name == "constant_with_warmup" && $0.baseLearningRate == c.baseLearningRate && $0.total == c.total && $0.warmup == c.warmup
                }!
                expectRates(schedule(.constant, c), withWarmup.rates, "constant with warmup \(c.warmup)")
            }
        }
    }

    @Test func warmupByStepsOrByRatioAsHFTrainer() throws {
        for c in cases {
            if let ratio = c.warmupRatio {
                #expect(LearningRateSchedule.warmupSteps(steps: 0, ratio: ratio, totalSteps: c.total) == c.warmup)
                #expect(LearningRateSchedule.warmupSteps(ratio: ratio, totalSteps: c.total) == c.warmup)
            }
            // Steps given win over a ratio.
            #expect(LearningRateSchedule.warmupSteps(steps: 3, ratio: 0.25, totalSteps: c.total) == 3)
        }
        #expect(LearningRateSchedule.warmupSteps(steps: 0, ratio: 0.1, totalSteps: 1001) == 101)
        #expect(LearningRateSchedule.warmupSteps(steps: 0, ratio: 0, totalSteps: 1001) == 0)
    }

    @Test func shapesKeepTheirOptionNamesAndPolynomialChecksItsEnd() throws {
        #expect(LearningRateSchedule.Shape.allCases.map(\.rawValue) == ["linear", "cosine", "constant", "constant_with_warmup", "polynomial"])
        #expect(LearningRateSchedule(shape: .polynomial, baseLearningRate: 2e-5, warmupSteps: 0, totalSteps: 10).problem == nil)
        #expect(LearningRateSchedule(shape: .polynomial, baseLearningRate: 1e-7, warmupSteps: 0, totalSteps: 10).problem
                == "the polynomial schedule decays to 1e-07: the learning rate (1e-07) must be larger")
        #expect(LearningRateSchedule(shape: .linear, baseLearningRate: 1e-8, warmupSteps: 0, totalSteps: 10).problem == nil)
        // Warmup as long as the run: HF's polynomial divides by zero at step `total`; here it is the end rate.
        let whole = LearningRateSchedule(shape: .polynomial, baseLearningRate: 1e-3, warmupSteps: 5, totalSteps: 5)
        #expect(abs(whole.learningRate(atStep: 5) - 1e-7) < 1e-20)
    }
}
