import ArgumentParser
import Distributed
import Foundation
import Startup
import Synchronization
import Training

/// `bert-dist-dev soak`: the driver of the fault and signal tests (Tests/EndToEndTests,
/// benchmarks/cluster_faults.sh). Every rank runs gradient-synchroniser steps in a loop, so that a
/// test can kill a rank, cut a cable, freeze a host or signal mpirun in the middle of collectives
/// and time how the job ends. With --collective-timeout every rank runs a PeerWatchdog, as the
/// trainer does; when it trips it prints its line and the process exits 3.
///
/// Lines on stdout, each written at once (tests read them as they come):
///   soak: rank R pid P host H soaking          once per rank, when its loop starts
///   soak: rank R received signal S at T        SIGTERM, SIGINT or SIGUSR1 arrived (T: Unix time)
///   soak: rank R alive X s after the signal    every 0.1 s after that, while the loop runs
///   soak: rank R stopping after the current step   --stop-on-signal: some rank got a signal
///   soak: rank R done                          a normal end (exit 0)
/// Leaving the loop is a collective decision (a rank that left alone would leave its peers
/// waiting in the next step's transfers forever): the pattern the trainer uses for preemption.
struct SoakCommand: ParsableCommand, LaunchFacts {
    static let configuration = CommandConfiguration(
        commandName: "soak",
        abstract: "Fault-test driver: gradient-synchroniser steps in a loop, under mpirun or launch/train (BERT_DIST_SUBCOMMAND=soak).",
        discussion: """
            Examples:
              mpirun -n 4 bert-dist-dev soak --seconds 90
              BERT_DIST_BIN=.build/debug/bert-dist-dev BERT_DIST_SUBCOMMAND=soak launch/train -n 2 --collective-timeout 4 --stop-on-signal
            """)

    @Option(help: "How long to run, in seconds.")
    var seconds = 600.0

    @Option(help: "Run a peer watchdog with this timeout in seconds (as train's option); it exits 3 when it trips.")
    var collectiveTimeout: Double?

    @Flag(help: "A signal on any rank stops every rank after the current step, exit 0 (without it the ranks report signals and run on).")
    var stopOnSignal = false

    @Option(help: "The interface peers reach this rank on (default: OMPI_MCA_btl_tcp_if_include, as launch/train sets it from cluster.conf).")
    var interface: String?

    @Option(name: .customLong("rank0-pause"), help: "After 2 s rank 0 spends this many seconds outside any collective while the others wait in one (a long checkpoint write).")
    var rankZeroPause = 0.0

    @Option(help: "First let the watchdog run this many seconds while the main thread sleeps, and print the heap allocations the process made meanwhile (needs benchmarks/malloc_counter.c preloaded).")
    var idleAllocations: Double?

    var launchFacts: [(key: String, value: String)] { collectiveTimeout.map { [("collective_timeout", "\($0)")] } ?? [] }

    func validate() throws {
        if !(seconds >= 0) { throw ValidationError("--seconds must not be negative") }
        if let collectiveTimeout, !(collectiveTimeout > 0) { throw ValidationError("--collective-timeout must be positive") }
        if idleAllocations != nil && collectiveTimeout == nil { throw ValidationError("--idle-allocations measures the watchdog: give --collective-timeout") }
    }

    func run() throws {
        for signalNumber in [SIGTERM, SIGINT, SIGUSR1] {
            signal(signalNumber) { number in receivedSignal.store(number, ordering: .relaxed) }
        }
        let command = self
        let status = RankRunner.run(simulatedRanks: nil) { communicator, _ in try command.soak(communicator) }
        if status != 0 { throw ExitCode(status) }
    }

    private func soak(_ communicator: any Communicator) throws {
        let rank = communicator.rank, environment = ProcessEnvironment.current, host = environment.hostName
        let watchdog = try collectiveTimeout.map { timeout in
            try PeerWatchdog.start(communicator: communicator, timeoutSeconds: timeout, hostName: host,
                                   interfaces: interface.map { $0.split(separator: ",").map(String.init) } ?? environment.mpiNetworkInterfaces,
                                   response: .printAndExit(status: 3))
        }
        watchdog?.setNote("newest complete checkpoint: none (soak)")
        if let idleAllocations { try countIdleAllocations(seconds: idleAllocations, communicator) }
        let arena = UnsafeMutableBufferPointer<Float>.allocate(capacity: 1 << 18)
        defer { arena.deallocate() }
        arena.initialize(repeating: 0)
        let synchronizer = try GradientSynchronizer(communicator: communicator, gradients: arena, bucketFloats: 1 << 14, shardOptimizer: false)
        say("soak: rank \(rank) pid \(getpid()) host \(host) soaking")
        let start = Date.timeIntervalSinceReferenceDate
        var paused = rankZeroPause == 0
        var signalSeenAt: Double?, lastReport = 0.0
        while true {
            try synchronizer.finish()
            let now = Date.timeIntervalSinceReferenceDate
            if !paused && now - start >= 2 {
                paused = true
                if rank == 0 {
                    say("soak: rank 0 pausing \(rankZeroPause) s outside collectives")
                    Thread.sleep(forTimeInterval: rankZeroPause)
                }
            }
            let signalNumber = receivedSignal.load(ordering: .relaxed)
            if signalNumber != 0 && signalSeenAt == nil {
                signalSeenAt = now
                say(String(format: "soak: rank %d received signal %d at %.3f", rank, signalNumber, Date().timeIntervalSince1970))
            }
            let decisions = try communicator.allReduce([now - start >= seconds ? 1 : 0, stopOnSignal && signalNumber != 0 ? 1 : 0], .max)
            if decisions[1] != 0 { say("soak: rank \(rank) stopping after the current step") }
            if decisions[0] != 0 || decisions[1] != 0 { break }
            if let signalSeenAt, now - lastReport >= 0.1 {
                lastReport = now
                say(String(format: "soak: rank %d alive %.1f s after the signal", rank, now - signalSeenAt))
            }
            usleep(1000)
        }
        try communicator.barrier()
        watchdog?.stop()
        say("soak: rank \(rank) done")
    }

    /// The watchdog alone (heartbeats sent and received, silence checked) while this thread sleeps:
    /// its steady state should allocate nothing.
    private func countIdleAllocations(seconds: Double, _ communicator: any Communicator) throws {
        guard let counters = AllocationCounters() else {
            throw ValidationError("--idle-allocations needs benchmarks/malloc_counter.c preloaded (LD_PRELOAD)")
        }
        try communicator.barrier()
        Thread.sleep(forTimeInterval: 0.5)  // past the first heartbeats
        let before = counters.read()
        counters.trace(true)
        Thread.sleep(forTimeInterval: seconds)
        counters.trace(false)
        let allocations = counters.read()[0] - before[0]  // (before the line's own string is allocated)
        say("soak: rank \(communicator.rank) allocations while idle: \(allocations)")
        try communicator.barrier()
    }
}

/// One line on stdout, written at once (unbuffered: tests read it as it happens).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// The last signal number received by the soak loop (written in the signal handler; atomics are
/// async-signal-safe).
private let receivedSignal = Atomic<Int32>(0)
