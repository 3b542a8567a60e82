/// Rank 0's watch for stragglers: a data-parallel step is as slow as its slowest rank, so a host
/// whose ranks compute markedly longer than the others makes every rank wait. Each step's
/// collective carries every rank's compute seconds (data, forward, backward) and wait seconds;
/// over a window of steps this compares each host's median compute time with the median over
/// all ranks and names the hosts that are slower by more than `slowerBy` (and by at least
/// `minimumSeconds`, so that noise on tiny steps is not reported).
struct StragglerMonitor {
    /// The host of every rank, indexed by rank.
    let hosts: [String]
    let window: Int
    var slowerBy = 1.5
    var minimumSeconds = 0.02
    /// (window, ranks) compute and wait seconds of the steps of the current window.
    private var compute: [Double], wait: [Double]
    private var filled = 0
    private var firstStep = 0

    init(hosts: [String], window: Int) {
        self.hosts = hosts
        self.window = max(1, window)
        compute = [Double](repeating: 0, count: self.window * hosts.count)
        wait = compute
    }

    /// A host markedly slower than the median, with its figures.
    struct Straggler: Equatable {
        var host: String
        var ranks: [Int]
        var computeSeconds: Double, medianComputeSeconds: Double, othersWaitSeconds: Double
    }

    /// Records step `step`'s times (`seconds(rank)`); at the end of a window returns a report
    /// line naming the stragglers, if any (nil otherwise).
    mutating func record(step: Int, seconds: (Int) -> (compute: Double, wait: Double)) -> String? {
        let ranks = hosts.count
        if filled == 0 { firstStep = step }
        for rank in 0..<ranks {
            let times = seconds(rank)
            compute[filled * ranks + rank] = times.compute
            wait[filled * ranks + rank] = times.wait
        }
        filled += 1
        guard filled == window else { return nil }
        filled = 0
        let found = stragglers()
        guard !found.isEmpty else { return nil }
        let named = found.map { s in
            // (With two ranks the median is the other rank's time, and one rank waits.)
            String(format: "%@ (rank%@ %@) computes %.3f s per step against a median of %.3f s; %@ %.3f s for it",
                   s.host, s.ranks.count > 1 ? "s" : "", s.ranks.map(String.init).joined(separator: ","),
                   s.computeSeconds, s.medianComputeSeconds, ranks - s.ranks.count == 1 ? "the other rank waits" : "the other ranks wait",
                   s.othersWaitSeconds)
        }
        return "warning: straggler over steps \(firstStep)-\(step): " + named.joined(separator: "; ")
    }

    /// The stragglers of the window just completed.
    func stragglers() -> [Straggler] {
        let ranks = hosts.count
        guard ranks > 1 else { return [] }
        let rankCompute = (0..<ranks).map { rank in lowerMedian((0..<window).map { compute[$0 * ranks + rank] }) }
        let rankWait = (0..<ranks).map { rank in lowerMedian((0..<window).map { wait[$0 * ranks + rank] }) }
        let median = lowerMedian(rankCompute)
        // Ranks grouped by host; on a single host every rank is judged alone.
        let distinct = orderedUnique(hosts)
        let groups: [(host: String, ranks: [Int])] = distinct.count > 1
            ? distinct.map { host in (host, hosts.indices.filter { hosts[$0] == host }) }
            : hosts.indices.map { (hosts[$0], [$0]) }
        var found: [Straggler] = []
        for group in groups {
            let slowest = group.ranks.map { rankCompute[$0] }.max() ?? 0
            guard slowest > median * slowerBy && slowest - median >= minimumSeconds else { continue }
            let others = hosts.indices.filter { !group.ranks.contains($0) }.map { rankWait[$0] }
            found.append(Straggler(host: group.host, ranks: group.ranks, computeSeconds: slowest, medianComputeSeconds: median,
                                   othersWaitSeconds: lowerMedian(others)))
        }
        return found
    }

    /// The median, taking the lower middle of an even count (with two ranks: the faster one).
    private func lowerMedian(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return 0 }
        return values.sorted()[(values.count - 1) / 2]
    }

    private func orderedUnique(_ names: [String]) -> [String] {
        var seen = Set<String>()
        return names.filter { seen.insert($0).inserted }
    }
}
