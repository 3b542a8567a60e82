import CCPU
import Foundation
import Synchronization

// Parallel work is described by small job structs rather than closures: handing a closure to
// other threads needs an escaping copy (withoutActuallyEscaping), which Swift allocates on the
// heap at every call — a job struct is passed by pointer and allocates nothing.

/// Work for a team: member `member` of `members` does its share.
protocol TeamJob {
    func run(member: Int, of members: Int)
}

/// Work over `0..<count` split into contiguous ranges; `chunk` tells which per-thread scratch
/// the range may use. `run` must only write to the part of the output its range owns.
protocol ChunkJob {
    func run(chunk: Int, range: Range<Int>)
}

/// Work made of items of uneven cost (e.g. attention of sequences of different lengths),
/// handed out one at a time; `worker` tells which per-thread scratch to use.
protocol ItemJob {
    func run(item: Int, worker: Int)
}

extension Compute {
    /// Runs `job` over `0..<count` split into at most `threads` contiguous chunks of at least
    /// `minimumChunk` items. Runs inline when one chunk is enough (small work is not worth a
    /// thread hop).
    @inline(__always)
    func parallelChunks<Job: ChunkJob>(_ count: Int, minimumChunk: Int, _ job: Job) {
        let chunks = min(threads, max(1, count / max(minimumChunk, 1)))
        if chunks <= 1 {
            job.run(chunk: 0, range: 0..<count)
            return
        }
        team.run(members: chunks, Chunks(job: job, count: count))
    }

    /// Like `parallelChunks`, but splits `0..<count` at multiples of `granule` (e.g. 16 columns,
    /// so vector kernels see whole vectors).
    @inline(__always)
    func parallelGranules<Job: ChunkJob>(_ count: Int, granule: Int, minimumChunk: Int, _ job: Job) {
        parallelChunks((count + granule - 1) / granule, minimumChunk: max(1, minimumChunk / granule),
                       Granules(job: job, count: count, granule: granule))
    }

    /// Runs `job` for every item of `0..<count`, handing items out one at a time to whichever
    /// team member is free; `worker` < maximumWorkers.
    func parallelItems<Job: ItemJob>(_ count: Int, maximumWorkers: Int, _ job: Job) {
        let members = min(maximumWorkers, count, team.size)
        if members <= 1 {
            for item in 0..<count { job.run(item: item, worker: 0) }
            return
        }
        team.nextItem.store(0, ordering: .relaxed)
        team.run(members: members, Items(job: job, count: count, team: team))
    }

    /// Runs `job` on `members` members of the team (inline when one is enough).
    @inline(__always)
    func teamRun<Job: TeamJob>(members: Int, _ job: Job) {
        if members <= 1 {
            job.run(member: 0, of: 1)
        } else {
            team.run(members: members, job)
        }
    }
}

private struct Chunks<Inner: ChunkJob>: TeamJob {
    let job: Inner, count: Int
    func run(member: Int, of members: Int) {
        job.run(chunk: member, range: (count * member / members)..<(count * (member + 1) / members))
    }
}

private struct Granules<Inner: ChunkJob>: ChunkJob {
    let job: Inner, count: Int, granule: Int
    func run(chunk: Int, range: Range<Int>) {
        job.run(chunk: chunk, range: (range.lowerBound * granule)..<min(count, range.upperBound * granule))
    }
}

private struct Items<Inner: ItemJob>: TeamJob {
    let job: Inner, count: Int
    unowned(unsafe) let team: WorkerTeam
    func run(member: Int, of members: Int) {
        while true {
            let item = team.nextItem.wrappingAdd(1, ordering: .relaxed).oldValue
            if item >= count { break }
            job.run(item: item, worker: member)
        }
    }
}

/// A fixed team of threads for one rank (llm.c uses OpenMP; this is the same idea in a few
/// lines): the caller is member 0 and `size - 1` parked threads are the others. `run`
/// hands one job to members 0 ..< n and returns when all have finished it. Between jobs the
/// members spin briefly (jobs follow each other within microseconds during a step) and then
/// sleep on a condition variable, so an idle rank costs no CPU.
///
/// Each rank's `Compute` owns one team, so in-process simulated ranks never share one; inside a
/// job, nested parallel calls run inline.
/// @unchecked Sendable: the job pointer is written by the caller before the generation counter
/// is published (release) and read by members after they observe it (acquire); the caller
/// waits for every member before the job (a local of `run`) goes out of scope.
final class WorkerTeam: @unchecked Sendable {
    let size: Int
    private let generation = Atomic<Int>(0)
    private let remaining = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    let nextItem = Atomic<Int>(0)
    /// The job while one runs: where it is (a local of `run`) and its type.
    private nonisolated(unsafe) var jobPointer: UnsafeRawPointer?
    private nonisolated(unsafe) var jobType: (any TeamJob.Type)?
    private nonisolated(unsafe) var jobMembers = 0
    private nonisolated(unsafe) var running = false
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var threads: [pthread_t] = []

    /// Spin this long (nanoseconds) for the next job before sleeping.
    static let spinNanoseconds: UInt64 = 200_000

    init(size: Int) {
        self.size = max(1, size)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
        for member in 1..<self.size {
            let context = Unmanaged.passRetained(MemberContext(team: self, member: member)).toOpaque()
            var thread = pthread_t()
            let status = pthread_create(&thread, nil, { raw in
                let context = Unmanaged<MemberContext>.fromOpaque(raw!).takeRetainedValue()
                context.team.memberLoop(context.member)
                return nil
            }, context)
            precondition(status == 0, "cannot start a kernel thread (pthread_create: \(status))")
            threads.append(thread)
        }
    }

    /// Stops and joins the members.
    func shutDown() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        pthread_mutex_lock(mutex)
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
        for thread in threads { pthread_join(thread, nil) }
        threads.removeAll()
    }

    deinit {
        pthread_mutex_destroy(mutex)
        pthread_cond_destroy(condition)
        mutex.deallocate()
        condition.deallocate()
    }

    private final class MemberContext {
        let team: WorkerTeam, member: Int
        init(team: WorkerTeam, member: Int) { self.team = team; self.member = member }
    }

    /// Runs `job` on members 0 ..< members (the caller is member 0) and waits for all.
    func run<Job: TeamJob>(members requested: Int, _ job: Job) {
        let members = min(requested, size)
        if members <= 1 || running {
            // One member, or a nested call from inside a job: run inline.
            for member in 0..<max(members, 1) { job.run(member: member, of: max(members, 1)) }
            return
        }
        withUnsafePointer(to: job) { pointer in
            running = true
            jobPointer = UnsafeRawPointer(pointer)
            jobType = Job.self
            jobMembers = members
            remaining.store(size - 1, ordering: .relaxed)
            generation.add(1, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                pthread_mutex_lock(mutex)
                pthread_cond_broadcast(condition)
                pthread_mutex_unlock(mutex)
            }
            job.run(member: 0, of: members)
            // Wait for the others; yield the core after a while in case a member is not
            // running (more threads than cores: other ranks or processes on the node).
            var spins = 0
            while remaining.load(ordering: .acquiring) > 0 {
                spins += 1
                if spins < 4096 { bd_cpu_relax() } else { sched_yield() }
            }
            jobPointer = nil
            jobType = nil
            running = false
        }
    }

    private static func invoke<Job: TeamJob>(_ type: Job.Type, _ pointer: UnsafeRawPointer, member: Int, of members: Int) {
        pointer.assumingMemoryBound(to: Job.self).pointee.run(member: member, of: members)
    }

    private func memberLoop(_ member: Int) {
        var seen = 0
        while true {
            var spins = 0
            var spinStart: UInt64 = 0
            while generation.load(ordering: .acquiring) == seen {
                bd_cpu_relax()
                spins += 1
                if spins & 255 != 0 { continue }
                let now = DispatchTime.now().uptimeNanoseconds
                if spinStart == 0 { spinStart = now; continue }
                if now - spinStart < WorkerTeam.spinNanoseconds { continue }
                // Sleep until the next job (the generation is re-checked under the mutex after
                // announcing ourselves, so a job published in between is not missed).
                sleepers.add(1, ordering: .sequentiallyConsistent)
                pthread_mutex_lock(mutex)
                while generation.load(ordering: .sequentiallyConsistent) == seen {
                    pthread_cond_wait(condition, mutex)
                }
                pthread_mutex_unlock(mutex)
                sleepers.subtract(1, ordering: .sequentiallyConsistent)
                spins = 0
                spinStart = 0
            }
            seen = generation.load(ordering: .acquiring)
            if stopping.load(ordering: .acquiring) { return }
            if member < jobMembers, let jobPointer, let jobType {
                WorkerTeam.invoke(jobType, jobPointer, member: member, of: jobMembers)
            }
            remaining.subtract(1, ordering: .releasing)
        }
    }
}
