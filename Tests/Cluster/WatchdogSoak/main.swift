import Distributed
import Foundation
import Synchronization

/// Set by the signal handler (atomics are async-signal-safe).
let stopRequested = Atomic<Bool>(false)

// watchdog-soak: the test driver of the peer watchdog on the namespace cluster (test-only target).
// Under mpirun (or launch/train with BERT_DIST_BIN pointing here) every rank starts a PeerWatchdog,
// then runs gradient-synchroniser steps for --seconds, so that a test can cut a cable, freeze a
// host or kill a rank in the middle of collectives and time how the job ends.
//
//   watchdog-soak [soak] --collective-timeout SECONDS [--seconds S] [--interface IFACE] [--rank0-pause P]
//
//   soak           ignored (launch/train passes its subcommand first)
//   --collective-timeout   the watchdog's timeout (named as the trainer's option, which launch/train reads)
//   --seconds      how long to run (default 600)
//   --interface    the interface peers reach this rank on (default: OMPI_MCA_btl_tcp_if_include,
//                  which launch/train sets from cluster.conf's network_interface; else all)
//   --rank0-pause  after 2 s rank 0 spends P seconds outside any collective while the others wait
//                  in one (a long checkpoint write): the watchdog must not trip
//   --idle-allocations S   first, with benchmarks/malloc_counter.c preloaded, let the watchdog run
//                  S seconds while the main thread sleeps and print the heap allocations the
//                  process made meanwhile (`watchdog-soak: rank R allocations while idle: N`)
//
// Prints `watchdog-soak: rank R pid P host H soaking` per rank, `watchdog-soak: rank R done` at a
// normal end (exit 0). A tripped watchdog prints its line and exits 3. SIGUSR1 or SIGTERM asks for
// a stop after the current step, decided collectively as the trainer does (which blocks, like the
// trainer, when a peer cannot answer).

func argument(_ name: String) -> String? {
    let arguments = CommandLine.arguments
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
    return arguments[index + 1]
}

func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

func hostName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    gethostname(&buffer, buffer.count)
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func soak() throws {
    guard let timeout = argument("--collective-timeout").flatMap(Double.init) else {
        FileHandle.standardError.write(Data("error: watchdog-soak needs --collective-timeout SECONDS\n".utf8))
        exit(2)
    }
    for signalNumber in [SIGTERM, SIGUSR1] {
        signal(signalNumber) { _ in stopRequested.store(true, ordering: .relaxed) }
    }
    let seconds = argument("--seconds").flatMap(Double.init) ?? 600
    let pause = argument("--rank0-pause").flatMap(Double.init) ?? 0
    let interface = argument("--interface") ?? ProcessInfo.processInfo.environment["OMPI_MCA_btl_tcp_if_include"]
    let communicator = try MPICommunicator()
    let host = hostName()
    let watchdog = try PeerWatchdog.start(communicator: communicator, timeoutSeconds: timeout, hostName: host,
                                          interfaces: interface.map { $0.split(separator: ",").map(String.init) } ?? [],
                                          response: .printAndExit(status: 3))
    watchdog.setNote("newest complete checkpoint: none (watchdog-soak)")
    if let idle = argument("--idle-allocations").flatMap(Double.init) {
        try communicator.barrier()
        Thread.sleep(forTimeInterval: 0.5)  // past the first heartbeats
        guard let program = dlopen(nil, RTLD_NOW), let counter = dlsym(program, "bert_dist_heap_allocations"),
              let tracing = dlsym(program, "bert_dist_allocation_backtraces") else {
            FileHandle.standardError.write(Data("error: --idle-allocations needs benchmarks/malloc_counter.c preloaded\n".utf8))
            exit(2)
        }
        let count = unsafeBitCast(counter, to: (@convention(c) () -> Int).self)
        let trace = unsafeBitCast(tracing, to: (@convention(c) (Int32) -> Void).self)
        let before = count()
        trace(1)
        Thread.sleep(forTimeInterval: idle)
        trace(0)
        let allocations = count() - before
        say("watchdog-soak: rank \(communicator.rank) allocations while idle: \(allocations)")
        try communicator.barrier()
    }
    let arena = UnsafeMutableBufferPointer<Float>.allocate(capacity: 1 << 18)
    defer { arena.deallocate() }
    arena.initialize(repeating: 0)
    let synchronizer = try GradientSynchronizer(communicator: communicator, gradients: arena,
                                                bucketFloats: 1 << 14, shardOptimizer: false)
    say("watchdog-soak: rank \(communicator.rank) pid \(getpid()) host \(host) soaking")
    let start = Date.timeIntervalSinceReferenceDate
    var paused = pause == 0
    while true {
        try synchronizer.finish()
        let elapsed = Date.timeIntervalSinceReferenceDate - start
        if !paused && elapsed >= 2 {
            paused = true
            if communicator.rank == 0 {
                say("watchdog-soak: rank 0 pausing \(pause) s outside collectives")
                Thread.sleep(forTimeInterval: pause)
            }
        }
        // Ending is a collective decision (a rank that left alone would leave the others waiting).
        if try communicator.anyRank(elapsed >= seconds || stopRequested.load(ordering: .relaxed)) { break }
        usleep(1000)
    }
    try communicator.barrier()
    watchdog.stop()
    say("watchdog-soak: rank \(communicator.rank) done")
    try communicator.finalize()
}

do {
    try soak()
} catch {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    exit(1)
}
