import Foundation
import TestSupport
import Testing

@testable import Query

/// Hand-computed fixtures for funnels, retention and experiments (edge cases: timestamp ties, events out of order,
/// users at window edges, empty ranges), and property tests against deliberately simple reference
/// implementations on random event sets.
@Suite struct AnalyticsTests {
    static let hour: Int64 = 3_600_000
    static let day: Int64 = 86_400_000
    /// 2026-11-02T00:00:00Z, a Monday.
    static let monday: Int64 = 1_793_577_600_000

    static func close(_ a: Double?, _ b: Double?, _ tolerance: Double = 1e-9) -> Bool {
        guard let a, let b else { return a == nil && b == nil }
        return abs(a - b) <= tolerance
    }

    // MARK: Funnel

    static let funnelRows: [EventRow] = [
        // u1: a tie (cart at the view's millisecond counts), then purchase.
        EventRow(user: "u1", event: "purchase", time: 2_000),  // out of order on purpose
        EventRow(user: "u1", event: "view", time: 1_000),
        EventRow(user: "u1", event: "cart", time: 1_000),
        // u2: cart before view does not count.
        EventRow(user: "u2", event: "cart", time: 500),
        EventRow(user: "u2", event: "view", time: 1_000),
        EventRow(user: "u2", event: "purchase", time: 1_500),
        // u3: cart exactly at the window's end (inclusive), purchase 1 ms after it (outside).
        EventRow(user: "u3", event: "view", time: 1_000),
        EventRow(user: "u3", event: "cart", time: 1_000 + hour),
        EventRow(user: "u3", event: "purchase", time: 1_000 + hour + 1),
        // u4: starts only outside [from, to): before from, and exactly at to.
        EventRow(user: "u4", event: "view", time: -5),
        EventRow(user: "u4", event: "cart", time: 10),
        EventRow(user: "u4", event: "view", time: 10_000_000),
        // u5: the first start goes nowhere within the window, a later one goes all the way.
        EventRow(user: "u5", event: "view", time: 100),
        EventRow(user: "u5", event: "view", time: 5_000_000),
        EventRow(user: "u5", event: "cart", time: 5_000_100),
        EventRow(user: "u5", event: "purchase", time: 5_000_200),
        // u6: purchase before view.
        EventRow(user: "u6", event: "purchase", time: 50),
        EventRow(user: "u6", event: "view", time: 60),
        // Events of other names are ignored.
        EventRow(user: "u7", event: "signup", time: 60),
    ]

    @Test func funnelFixture() {
        let steps = Funnel.compute(
            steps: ["view", "cart", "purchase"], rows: Self.funnelRows, from: 0, to: 10_000_000, window: Self.hour)
        #expect(steps.map(\.users) == [5, 3, 2])
        #expect(steps.map(\.dropoff) == [0, 2, 1])
        #expect(steps.map(\.conversionFromFirst) == [1.0, 0.6, 0.4])
        #expect(Self.close(steps[2].conversionFromPrevious, 2.0 / 3.0))
        #expect(steps[0].medianMsFromFirst == nil)
        #expect(steps[1].medianMsFromFirst == 100)  // u1 0, u5 100, u3 3,600,000
        #expect(steps[2].medianMsFromFirst == 600)  // u1 1,000, u5 200
    }

    @Test func funnelEmptyRangeAndRepeatedSteps() {
        let empty = Funnel.compute(
            steps: ["view", "cart"], rows: Self.funnelRows, from: 20_000_000, to: 30_000_000, window: Self.hour)
        #expect(empty.map(\.users) == [0, 0])
        #expect(empty.map(\.conversionFromFirst) == [0, 0])
        #expect(empty[1].medianMsFromFirst == nil)
        // view → view needs two distinct view events.
        let twice = Funnel.compute(
            steps: ["view", "view"], rows: Self.funnelRows, from: 0, to: 10_000_000, window: Self.hour)
        #expect(twice.map(\.users) == [5, 0])
        let longer = Funnel.compute(
            steps: ["view", "view"], rows: Self.funnelRows, from: 0, to: 10_000_000, window: 10 * Self.hour)
        #expect(longer.map(\.users) == [5, 1])  // only u5 has two views within 10 h (u4 never starts in range)
    }

    @Test func funnelBreakdownByStartProperty() {
        let rows = [
            EventRow(user: "a", event: "view", time: 1, property: "DE"),
            EventRow(user: "a", event: "buy", time: 2),
            EventRow(user: "b", event: "view", time: 1, property: "FR"),
            EventRow(user: "c", event: "view", time: 1),
            EventRow(user: "c", event: "view", time: 3, property: "DE"),
            EventRow(user: "c", event: "buy", time: 2),  // after the unlabelled start only
        ]
        let b = Funnel.breakdown(steps: ["view", "buy"], rows: rows, from: 0, to: 10, window: 100)
        #expect(Set(b.keys) == ["DE", "FR", Funnel.none])
        #expect(b["DE"]?.map(\.users) == [2, 1])
        #expect(b["FR"]?.map(\.users) == [1, 0])
        #expect(b[Funnel.none]?.map(\.users) == [1, 1])
    }

    // MARK: Retention

    static let retentionRows: [EventRow] = {
        let d0 = monday
        return [
            EventRow(user: "u1", event: "signup", time: d0 + 10 * hour),
            EventRow(user: "u1", event: "login", time: d0 + 11 * hour),
            EventRow(user: "u1", event: "login", time: d0 + day + hour),
            EventRow(user: "u1", event: "login", time: d0 + 3 * day),
            EventRow(user: "u2", event: "signup", time: d0 + day - 60_000),  // last minute of the day
            EventRow(user: "u2", event: "login", time: d0 + day),  // first millisecond of the next
            EventRow(user: "u3", event: "login", time: d0 + day + 6 * hour),  // before signup, same day
            EventRow(user: "u3", event: "signup", time: d0 + day + 5 * hour),
            EventRow(user: "u3", event: "signup", time: d0 + 2 * day),  // not the first: ignored
            EventRow(user: "u4", event: "signup", time: d0 - day),  // first signup before `from`
            EventRow(user: "u4", event: "signup", time: d0 + hour),
            EventRow(user: "u4", event: "login", time: d0 + 2 * hour),
            EventRow(user: "u5", event: "login", time: d0),  // no signup at all
        ]
    }()

    @Test func retentionByDay() {
        let cohorts = Retention.compute(
            cohortEvent: "signup", returnEvent: "login", period: .day, periods: 4, rows: Self.retentionRows,
            from: Self.monday, to: Self.monday + 2 * Self.day)
        #expect(cohorts.map(\.start) == [Self.monday, Self.monday + Self.day])
        #expect(cohorts.map(\.size) == [2, 1])
        #expect(cohorts[0].retained == [1, 2, 0, 1])
        #expect(cohorts[0].rates == [0.5, 1.0, 0, 0.5])
        #expect(cohorts[1].retained == [1, 0, 0, 0])
    }

    @Test func retentionByWeekAndAnyEvent() {
        let weeks = Retention.compute(
            cohortEvent: "signup", returnEvent: "login", period: .week, periods: 2, rows: Self.retentionRows,
            from: Self.monday, to: Self.monday + 2 * Self.day)
        #expect(weeks.count == 1)
        #expect(weeks[0].start == Self.monday)
        #expect(weeks[0].size == 3 && weeks[0].retained == [3, 0])
        // `any`: the signup itself counts as activity in period 0.
        let any = Retention.compute(
            cohortEvent: "signup", returnEvent: nil, period: .day, periods: 3, rows: Self.retentionRows,
            from: Self.monday, to: Self.monday + 2 * Self.day)
        #expect(any.map(\.retained) == [[2, 2, 0], [1, 1, 0]])
        // The ISO week of a Sunday starts on the Monday before it.
        #expect(RetentionPeriod.week.start(of: Self.monday + 6 * Self.day + 5) == Self.monday)
        #expect(RetentionPeriod.week.start(of: Self.monday - 1) == Self.monday - 7 * Self.day)
        #expect(RetentionPeriod.day.start(of: -1) == -Self.day)
        let none = Retention.compute(
            cohortEvent: "signup", returnEvent: "login", period: .day, periods: 3, rows: [], from: 0, to: 1)
        #expect(none.isEmpty)
    }

    // MARK: Experiment

    @Test func experimentFixture() throws {
        let week = 7 * Self.day
        let rows = [
            EventRow(user: "a1", event: "exposure", time: 0, property: "A"),
            EventRow(user: "a1", event: "purchase", time: 1_000),
            EventRow(user: "a2", event: "exposure", time: 0, property: "A"),
            EventRow(user: "a2", event: "purchase", time: -1),  // before exposure
            EventRow(user: "a3", event: "exposure", time: 100, property: "A"),
            EventRow(user: "a3", event: "exposure", time: 50, property: "A"),  // out of order: first is 50
            EventRow(user: "a3", event: "purchase", time: 50 + week),  // window end, inclusive
            EventRow(user: "b1", event: "exposure", time: 10, property: "B"),
            EventRow(user: "b1", event: "purchase", time: 10 + week + 1),  // 1 ms late
            EventRow(user: "b2", event: "exposure", time: 10, property: "B"),
            EventRow(user: "b2", event: "purchase", time: 10),  // tie
            EventRow(user: "x1", event: "exposure", time: 0, property: "A"),
            EventRow(user: "x1", event: "exposure", time: 5, property: "B"),  // both variants: excluded
            EventRow(user: "n1", event: "exposure", time: 0),  // no variant: ignored
        ]
        let r = Experiment.compute(
            exposureEvent: "exposure", goalEvent: "purchase", rows: rows, from: 0, to: 1_000, window: week,
            control: nil)
        #expect(r.control == "A")
        #expect(r.excludedUsers == 1)
        #expect(r.variants.map(\.variant) == ["A", "B"])
        #expect(r.variants.map(\.exposed) == [3, 2])
        #expect(r.variants.map(\.converted) == [2, 1])
        let a = r.variants[0]
        let b = r.variants[1]
        #expect(Self.close(a.ci95.0, 0.2076596008020477) && Self.close(a.ci95.1, 0.9385080552796037))
        #expect(Self.close(b.ci95.0, 0.09453120573423074) && Self.close(b.ci95.1, 0.9054687942657693))
        #expect(a.uplift == 0 && a.pValue == nil)
        #expect(Self.close(b.uplift, -0.25))
        #expect(Self.close(b.pValue, 0.7093881150142264))
        // An explicit control; an empty range.
        let flipped = Experiment.compute(
            exposureEvent: "exposure", goalEvent: "purchase", rows: rows, from: 0, to: 1_000, window: week,
            control: "B")
        #expect(flipped.control == "B" && Self.close(flipped.variants[0].uplift, 1.0 / 3.0))
        let empty = Experiment.compute(
            exposureEvent: "exposure", goalEvent: "purchase", rows: rows, from: 5_000, to: 6_000, window: week,
            control: nil)
        #expect(empty.variants.isEmpty && empty.excludedUsers == 0)
    }

    /// Retention of events drops old ones from the index: queries afterwards equal queries over the kept rows.
    @Test func removingOldEventsEqualsIndexingOnlyTheRest() {
        var rng = SplitMix(state: 4242)
        for _ in 0..<20 {
            let rows = Self.randomRows(&rng, names: ["a", "b", "c"])
            var index = EventIndex(rows)
            let cutoff = Int64.random(in: 0...40, using: &rng)
            #expect(index.removeOlder(than: cutoff) == rows.filter { $0.time < cutoff }.count)
            let kept = EventIndex(rows.filter { $0.time >= cutoff })
            #expect(index.count == kept.count)
            let f = { (i: EventIndex) in
                i.funnel(steps: ["a", "b", "c"], from: 0, to: 40, window: 10, breakdown: EventRow.propertyKey)
            }
            #expect(f(index).steps == f(kept).steps && f(index).breakdown == f(kept).breakdown)
            #expect(
                index.retention(cohortEvent: "a", returnEvent: "b", period: .day, periods: 2, from: 0, to: 50)
                    == kept.retention(cohortEvent: "a", returnEvent: "b", period: .day, periods: 2, from: 0, to: 50))
        }
    }

    // MARK: - Properties against reference implementations

    /// Random events for a few users over a short time line, so ties and window edges are common.
    static func randomRows(_ rng: inout SplitMix, names: [String]) -> [EventRow] {
        (0..<Int.random(in: 0...120, using: &rng)).map { _ in
            EventRow(
                user: "u\(Int.random(in: 0..<12, using: &rng))",
                event: names.randomElement(using: &rng)!,
                time: Int64.random(in: 0...40, using: &rng),
                property: Bool.random(using: &rng) ? ["A", "B", "C"].randomElement(using: &rng)! : nil)
        }
    }

    /// The funnel by brute force: every path from every start, as the definition reads.
    static func referenceFunnel(steps: [String], rows: [EventRow], from: Int64, to: Int64, window: Int64)
        -> (users: [Int], medians: [Double?])
    {
        var depthOf: [String: [Int64]] = [:]  // user → times of the best path
        for user in Set(rows.map(\.user)) {
            let mine = rows.enumerated().filter { $0.element.user == user }
            var best: (start: Int64, depth: Int, times: [Int64])?
            for (_, s) in mine where s.event == steps[0] && s.time >= from && s.time < to {
                // All paths from this start: for each k, the smallest t_k over paths reaching k.
                var minTime = Array(repeating: Int64.max, count: steps.count)
                var deepest = 0
                func walk(_ k: Int, _ t: Int64, _ used: Set<Int>) {
                    deepest = max(deepest, k)
                    minTime[k - 1] = min(minTime[k - 1], t)
                    guard k < steps.count else { return }
                    for (i, e) in mine where !used.contains(i) && e.event == steps[k] {
                        if e.time >= t && e.time <= s.time + window { walk(k + 1, e.time, used.union([i])) }
                    }
                }
                let startIndex = mine.first { $0.element == s }!.offset
                walk(1, s.time, [startIndex])
                if best == nil || deepest > best!.depth || (deepest == best!.depth && s.time < best!.start) {
                    best = (s.time, deepest, Array(minTime.prefix(deepest)))
                }
            }
            if let best { depthOf[user] = best.times }
        }
        let users = steps.indices.map { k in depthOf.values.filter { $0.count > k }.count }
        let medians: [Double?] = steps.indices.map { k in
            guard k > 0 else { return nil }
            let d = depthOf.values.filter { $0.count > k }.map { Double($0[k] - $0[0]) }.sorted()
            guard !d.isEmpty else { return nil }
            return d.count % 2 == 1 ? d[d.count / 2] : (d[d.count / 2 - 1] + d[d.count / 2]) / 2
        }
        return (users, medians)
    }

    @Test(arguments: 0..<60)
    func funnelMatchesBruteForce(seed: Int) {
        var rng = SplitMix(state: UInt64(seed) &+ 5)
        let rows = Self.randomRows(&rng, names: ["a", "b", "c", "x"])
        let window = Int64.random(in: 0...20, using: &rng)
        let steps = seed % 5 == 0 ? ["a", "b", "a"] : ["a", "b", "c"]  // some with a repeated step
        let got = Funnel.compute(steps: steps, rows: rows, from: 5, to: 30, window: window)
        let want = Self.referenceFunnel(steps: steps, rows: rows, from: 5, to: 30, window: window)
        #expect(got.map(\.users) == want.users, "seed \(seed)")
        #expect(got.map(\.medianMsFromFirst) == want.medians, "seed \(seed)")
    }

    @Test(arguments: 0..<40)
    func retentionMatchesReference(seed: Int) {
        var rng = SplitMix(state: UInt64(seed) &+ 77)
        // Times spread over ~10 days so periods matter.
        let rows = Self.randomRows(&rng, names: ["signup", "login", "x"]).map {
            var r = $0
            r.time = Self.monday + r.time * 6 * Self.hour
            return r
        }
        let period: RetentionPeriod = seed % 2 == 0 ? .day : .week
        let from = Self.monday + Self.day
        let to = Self.monday + 6 * Self.day
        let returnEvent: String? = seed % 3 == 0 ? nil : "login"
        let got = Retention.compute(
            cohortEvent: "signup", returnEvent: returnEvent, period: period, periods: 4, rows: rows, from: from,
            to: to)
        // Reference: per user, first signup; then for each cohort and period, scan every event.
        var want: [Int64: (size: Int, retained: [Int])] = [:]
        let users = Set(rows.map(\.user))
        for u in users {
            guard let first = rows.filter({ $0.user == u && $0.event == "signup" }).map(\.time).min(),
                first >= from, first < to
            else { continue }
            let step = period == .day ? Self.day : 7 * Self.day
            // Cohort start by counting periods from a known period start (Monday).
            let start = Self.monday + ((first - Self.monday) / step) * step
            var entry = want[start] ?? (0, [0, 0, 0, 0])
            entry.size += 1
            for k in 0..<4 {
                let lo = start + Int64(k) * step
                if rows.contains(where: {
                    $0.user == u && (returnEvent == nil || $0.event == returnEvent) && $0.time >= lo
                        && $0.time < lo + step
                }) {
                    entry.retained[k] += 1
                }
            }
            want[start] = entry
        }
        #expect(got.map(\.start) == want.keys.sorted(), "seed \(seed)")
        for c in got {
            #expect(c.size == want[c.start]?.size && c.retained == want[c.start]?.retained, "seed \(seed)")
        }
    }

    @Test(arguments: 0..<40)
    func experimentMatchesReference(seed: Int) {
        var rng = SplitMix(state: UInt64(seed) &+ 901)
        let rows = Self.randomRows(&rng, names: ["exposure", "goal", "x"])
        let window = Int64.random(in: 0...15, using: &rng)
        let got = Experiment.compute(
            exposureEvent: "exposure", goalEvent: "goal", rows: rows, from: 5, to: 30, window: window, control: nil)
        var exposed: [String: Int] = [:]
        var converted: [String: Int] = [:]
        var excluded = 0
        for u in Set(rows.map(\.user)) {
            let exposures = rows.filter {
                $0.user == u && $0.event == "exposure" && $0.property != nil && $0.time >= 5 && $0.time < 30
            }
            guard let first = exposures.min(by: { $0.time < $1.time }) else { continue }
            if Set(exposures.map(\.property!)).count > 1 {
                excluded += 1
                continue
            }
            exposed[first.property!, default: 0] += 1
            if rows.contains(where: {
                $0.user == u && $0.event == "goal" && $0.time >= first.time && $0.time <= first.time + window
            }) {
                converted[first.property!, default: 0] += 1
            }
        }
        #expect(got.excludedUsers == excluded, "seed \(seed)")
        #expect(got.variants.map(\.variant) == exposed.keys.sorted())
        for v in got.variants {
            #expect(v.exposed == exposed[v.variant] && v.converted == converted[v.variant, default: 0])
            #expect(v.ci95.0 <= v.rate && v.rate <= v.ci95.1)
        }
    }
}

/// The events index under hostile input (issue: step 9).
@Suite struct EventIndexLimitTests {
    /// One user's events newest first (an O(n²) insert before): the index answers as for the same events in order.
    @Test func outOfOrderEventsAnswerAsInOrder() {
        var rows: [EventRow] = []
        for i in 0..<3_000 {
            rows.append(EventRow(user: "u\(i % 3)", event: i % 2 == 0 ? "a" : "b", time: Int64(10_000 - i)))
        }
        let backwards = EventIndex(rows)
        let forwards = EventIndex(rows.sorted { $0.time < $1.time })
        let f = { (i: EventIndex) in i.funnel(steps: ["a", "b"], from: 0, to: 20_000, window: 50).steps }
        #expect(f(backwards) == f(forwards))
        #expect(
            backwards.retention(cohortEvent: "a", returnEvent: nil, period: .day, periods: 2, from: 0, to: 20_000)
                == forwards.retention(cohortEvent: "a", returnEvent: nil, period: .day, periods: 2, from: 0, to: 20_000)
        )
    }

    /// `removeFirst` drops the oldest added (what keeps the index within max_indexed) and counts them.
    @Test func removingTheFirstEventsKeepsTheRest() {
        let rows = (0..<100).map { EventRow(user: "u\($0 % 10)", event: "a", time: Int64($0)) }
        var index = EventIndex(rows)
        #expect(index.removeFirst(40) == 40 && index.dropped == 40 && index.count == 60)
        index.compact()
        #expect(index.oldestTime == 40)
        #expect(index.funnel(steps: ["a", "a"], from: 0, to: 100, window: 1_000).steps[0].users == 10)
    }

    /// A query asked to stop does, with an error (a timeout, or a client that left).
    @Test func aStoppedQueryThrows() {
        let index = EventIndex((0..<5_000).map { EventRow(user: "u\($0)", event: "a", time: Int64($0)) })
        #expect(throws: EventQueryStopped.self) {
            try index.funnel(steps: ["a", "b"], from: 0, to: 10_000, window: 10, stop: { true })
        }
    }
}
