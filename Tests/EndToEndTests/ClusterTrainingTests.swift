import Foundation
import Testing

/// SPEC "Multi-node": only rank 0's host needs the files. On the two-host namespace cluster, with
/// the model, the data and the output on h1's local disk alone: 2-host training with
/// --shard-optimizer and checkpoints, written by rank 0 only; resume on h1 alone to the model an
/// uninterrupted run trains; 2-host eval counting each row once; 2-host bench. (Tiny model.)
@Suite(.serialized, .enabled(if: TestCluster.isAvailable, Comment(rawValue: TestCluster.unavailableReason ?? "")),
       .timeLimit(.minutes(3)))
struct ClusterTrainingTests {
    let binary: URL
    let workspace: TinyWorkspace
    let launcher = BinaryLocator.repositoryRoot.appendingPathComponent("launch/train")

    init() throws {
        binary = try BinaryLocator.bertDist()
        workspace = try TinyWorkspace()
    }

    func trainOptions(model: URL, train: URL, output: URL, steps: Int, _ extra: [String] = []) -> [String] {
        ["--model", model.path, "--train", train.path, "--output", output.path, "--batch-size", "8", "--max-steps", "\(steps)",
         "--lr", "1e-3", "--warmup-ratio", "0.2", "--threads", "1", "--log-every", "2"] + extra
    }

    /// Every regular file under `folder`, relative paths.
    func files(under folder: URL) -> [String] {
        let enumerator = FileManager.default.enumerator(at: folder, includingPropertiesForKeys: [.isRegularFileKey])
        var found: [String] = []
        while let url = enumerator?.nextObject() as? URL {
            if (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true {
                found.append(String(url.path.dropFirst(folder.path.count + 1)))
            }
        }
        return found.sorted()
    }

    @Test func twoHostsWithTheFilesOnTheHeadOnlyTrainResumeAndEvaluate() async throws {
        let cluster = try TestCluster(hosts: 2)
        defer { cluster.down() }
        // What a user of a cluster without a shared disk has: everything on the head's disk.
        let head = cluster.disk(host: 1)
        try FileManager.default.copyItem(at: workspace.model, to: head.appendingPathComponent("model"))
        try FileManager.default.copyItem(at: workspace.train, to: head.appendingPathComponent("train.csv"))
        try FileManager.default.copyItem(at: workspace.test, to: head.appendingPathComponent("test.csv"))
        let local = cluster.localDisk
        let (model, train, test, output) = (local.appendingPathComponent("model"), local.appendingPathComponent("train.csv"),
                                            local.appendingPathComponent("test.csv"), local.appendingPathComponent("out"))
        var environment = ProcessInfo.processInfo.environment
        environment["BERT_DIST_BIN"] = binary.path
        environment["BERT_DIST_CLUSTER_CONF"] = try cluster.clusterConf().path

        let training = try cluster.exec(host: 1, launcher, ["-n", "2"] + trainOptions(model: model, train: train, output: output, steps: 6,
                                                                                      ["--shard-optimizer", "--checkpoint-every", "3"]),
                                        environment: environment)
        let trained = await training.exitStatus(timeoutSeconds: 120) == 0
        let trainingOutput = training.standardOutput + training.standardError
        #expect(trained, "2-host training: \(trainingOutput)")
        guard trained else { return }

        #expect(trainingOutput.contains("over 2 rank(s)") && trainingOutput.contains("done: 6 steps"), "\(trainingOutput)")
        let written = files(under: head.appendingPathComponent("out"))
        for step in [3, 6] {
            for file in ["model.safetensors", "trainer_state.pb", "optimizer-00000-of-00002.safetensors", "optimizer-00001-of-00002.safetensors"] {
                #expect(written.contains("checkpoint-\(step)/\(file)"), "\(written)")
            }
        }
        #expect(files(under: cluster.disk(host: 2)).isEmpty, "rank 1 wrote on its own host: \(files(under: cluster.disk(host: 2)))")

        // Resume on the head alone (1 rank) to step 10; the reference takes the same path (6 steps,
        // then --resume to 10: the schedule follows --max-steps) in one process outside the cluster.
        let resumed = try cluster.exec(host: 1, binary, ["train"] + trainOptions(model: model, train: train, output: output, steps: 10, ["--resume"]))
        #expect(await resumed.exitStatus(timeoutSeconds: 120) == 0, "\(resumed.standardError)")
        #expect(resumed.standardOutput.contains("resumed from checkpoint-6"), "\(resumed.standardOutput)")
        let reference = workspace.output("one-process")
        for (steps, extra) in [(6, [String]()), (10, ["--resume"])] {
            let run = try RunningProcess(binary, ["train"] + trainOptions(model: workspace.model, train: workspace.train,
                                                                         output: reference, steps: steps, extra))
            #expect(await run.exitStatus(timeoutSeconds: 120) == 0, "\(run.standardError)")
        }
        let difference = largestRelativeDifference(try workspace.weights(head.appendingPathComponent("out"), step: 10),
                                                   try workspace.weights(reference, step: 10))
        #expect(difference < 1e-5, "2 hosts, then resumed on 1, vs the same in one process: \(difference)")

        // Evaluation on both hosts counts every row of test.csv once.
        environment["BERT_DIST_SUBCOMMAND"] = "eval"
        let evaluation = try cluster.exec(host: 1, launcher, ["-n", "2", "--checkpoint", output.appendingPathComponent("checkpoint-10").path,
                                                             "--data", test.path, "--json"], environment: environment)
        #expect(await evaluation.exitStatus(timeoutSeconds: 120) == 0, "\(evaluation.standardError)")
        let rows = try String(contentsOf: workspace.test, encoding: .utf8).split(separator: "\n").count
        #expect(evaluation.standardOutput.contains("\"n\":\(rows),"), "\(evaluation.standardOutput)")
        #expect(files(under: cluster.disk(host: 2)).isEmpty)

        // The bench on both hosts, real rows and the model from the head only.
        environment["BERT_DIST_SUBCOMMAND"] = "bench"
        let bench = try cluster.exec(host: 1, launcher, ["-n", "2", "--model", model.path, "--data", train.path, "--batch-size", "8",
                                                        "--seq-len", "32", "--steps", "2", "--threads", "1", "--json"], environment: environment)
        #expect(await bench.exitStatus(timeoutSeconds: 120) == 0, "\(bench.standardError)")
        #expect(bench.standardOutput.contains("\"ranks\":2"), "\(bench.standardOutput)")
        #expect(files(under: cluster.disk(host: 2)).isEmpty)
        print("2 hosts, files on the head only: trained (ZeRO-1, checkpoints by rank 0), resumed on 1 host "
            + "(difference \(difference)), evaluated \(rows) rows on 2 hosts, benched 2 steps on 2 hosts")
    }
}
