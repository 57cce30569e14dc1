public import LineProtocol

/// Every stored event, in memory, column by column, with each user's events listed together: what the funnel,
/// retention and experiment queries scan. Names, users and property values are interned (an event costs about
/// 30 bytes plus its properties), so a query over a million events touches compact integer arrays instead of
/// strings. SQLite (`events` table) stays the durable copy; the daemon loads this index from it at start-up.
///
/// The semantics of each query are in docs/events.md and on ``Funnel``, ``Retention`` and ``Experiment``.
public struct EventIndex: Sendable {
    private var times: [Int64] = []
    private var names: [Int32] = []
    private var users: [Int32] = []
    /// Properties of event i: `propertyPairs[propertyStart[i] ..< propertyStart[i + 1]]`, key and value ids
    /// interleaved.
    private var propertyStart: [Int32] = [0]
    private var propertyPairs: [Int32] = []
    private var nameIDs: [String: Int32] = [:]
    private var userIDs: [String: Int32] = [:]
    private var keyIDs: [String: Int32] = [:]
    private var valueIDs: [String: Int32] = [:]
    private var valueText: [String] = []
    /// Each user's events (time, name, position in the columns), sorted by time, then position. A query reads a
    /// user's events from one contiguous array instead of chasing positions across the columns (which made the
    /// funnel over a million events spend most of its time waiting on cache misses).
    private var byUser: [[UserEntry]] = []

    /// Every user's entries concatenated, user after user (`flatStart[u] ..< flatStart[u + 1]`): one sequential
    /// array for queries to stream through instead of one heap array per user (a cache miss each). Rebuilt by
    /// ``compact()`` when events were added since; until then queries read `byUser`.
    private var flat: [UserEntry] = []
    private var flatStart: [Int32] = []
    private var flatEvents = -1
    /// Users whose list got an event older than its last (sorted by ``compact()``, not at each insert: one user's
    /// events arriving newest first would otherwise cost a shift of the whole list each).
    private var unsorted: Set<Int32> = []
    /// Events dropped to stay within a size (``removeFirst(_:)``), and the time of the oldest event kept then.
    public private(set) var dropped = 0

    /// Brings the flat copy up to date (linear; the daemon calls it before a query when events came in).
    public mutating func compact() {
        for u in unsorted {
            byUser[Int(u)].sort { ($0.time, $0.position) < ($1.time, $1.position) }
        }
        unsorted = []
        guard flatEvents != times.count else { return }
        flat.removeAll(keepingCapacity: true)
        flat.reserveCapacity(times.count)
        flatStart.removeAll(keepingCapacity: true)
        for entries in byUser {
            flatStart.append(Int32(flat.count))
            flat.append(contentsOf: entries)
        }
        flatStart.append(Int32(flat.count))
        flatEvents = times.count
    }

    /// Calls `body` with each user's entries (non-empty, in time order), from the flat copy when it is current;
    /// asks `stop` every 1,024 users and throws once it says so.
    private func forEachUser(stop: (() -> Bool)?, _ body: (UnsafeBufferPointer<UserEntry>) -> Void)
        throws(EventQueryStopped)
    {
        var stopped = false
        func stopping(_ u: Int) -> Bool {
            if u & 1023 == 0, let stop, stop() { stopped = true }
            return stopped
        }
        if flatEvents == times.count && unsorted.isEmpty {
            flat.withUnsafeBufferPointer { all in
                for u in 0..<(flatStart.count - 1) {
                    if stopping(u) { return }
                    let lo = Int(flatStart[u])
                    let hi = Int(flatStart[u + 1])
                    if lo < hi { body(UnsafeBufferPointer(rebasing: all[lo..<hi])) }
                }
            }
        } else {
            for (u, entries) in byUser.enumerated() where !entries.isEmpty {
                if stopping(u) { break }
                if unsorted.contains(Int32(u)) {
                    entries.sorted { ($0.time, $0.position) < ($1.time, $1.position) }.withUnsafeBufferPointer(body)
                } else {
                    entries.withUnsafeBufferPointer(body)
                }
            }
        }
        if stopped { throw EventQueryStopped() }
    }

    private struct UserEntry {
        var time: Int64
        var name: Int32
        var position: Int32
    }

    /// Appends user `u`'s entry; one older than the list's last leaves the list to be sorted by ``compact()``.
    private mutating func add(_ e: UserEntry, user u: Int32) {
        if let last = byUser[Int(u)].last, last.time > e.time { unsorted.insert(u) }
        byUser[Int(u)].append(e)
    }

    public init() {}

    public var count: Int { times.count }

    private static func intern(_ s: String, _ ids: inout [String: Int32]) -> Int32 {
        if let id = ids[s] { return id }
        let id = Int32(ids.count)
        ids[s] = id
        return id
    }

    public mutating func append(time: Int64, name: String, user: String, properties: [EventProperty]) {
        let position = Int32(times.count)
        let nameID = Self.intern(name, &nameIDs)
        times.append(time)
        names.append(nameID)
        let u = Self.intern(user, &userIDs)
        if Int(u) == byUser.count { byUser.append([]) }
        users.append(u)
        add(UserEntry(time: time, name: nameID, position: position), user: u)
        for p in properties {
            propertyPairs.append(Self.intern(p.key, &keyIDs))
            let value = Self.intern(p.value, &valueIDs)
            if Int(value) == valueText.count { valueText.append(p.value) }  // a new value: keep its text
            propertyPairs.append(value)
        }
        propertyStart.append(Int32(propertyPairs.count))
    }

    /// Drops events older than `cutoff` (milliseconds); returns how many. Rebuilds the columns (linear), so the
    /// daemon calls it once a minute at most.
    @discardableResult
    public mutating func removeOlder(than cutoff: Int64) -> Int {
        guard times.contains(where: { $0 < cutoff }) else { return 0 }
        let times = self.times
        return keep { times[$0] >= cutoff }
    }

    /// Drops the `n` events added first (the oldest, as events mostly arrive in time order): what keeps the index
    /// within `[events] max_indexed`. Linear; counted in ``dropped``.
    @discardableResult
    public mutating func removeFirst(_ n: Int) -> Int {
        guard n > 0 else { return 0 }
        let removed = keep { $0 >= n }
        dropped += removed
        return removed
    }

    /// Keeps the events whose position `predicate` takes; returns how many went.
    private mutating func keep(_ predicate: (Int) -> Bool) -> Int {
        let old = self
        var keep = EventIndex()
        keep.nameIDs = old.nameIDs
        keep.userIDs = old.userIDs
        keep.keyIDs = old.keyIDs
        keep.valueIDs = old.valueIDs
        keep.valueText = old.valueText
        keep.dropped = old.dropped
        keep.byUser = Array(repeating: [], count: old.byUser.count)
        for i in 0..<old.times.count where predicate(i) {
            let position = Int32(keep.times.count)
            keep.times.append(old.times[i])
            keep.names.append(old.names[i])
            keep.users.append(old.users[i])
            keep.add(UserEntry(time: old.times[i], name: old.names[i], position: position), user: old.users[i])
            keep.propertyPairs.append(
                contentsOf: old.propertyPairs[Int(old.propertyStart[i])..<Int(old.propertyStart[i + 1])])
            keep.propertyStart.append(Int32(keep.propertyPairs.count))
        }
        self = keep
        return old.times.count - times.count
    }

    /// The time of the oldest event indexed (milliseconds), `nil` when empty.
    public var oldestTime: Int64? { times.min() }

    /// The value id of property `key` of event `i`, or -1.
    @inline(__always)
    private func property(_ i: Int, _ key: Int32) -> Int32 {
        guard key >= 0 else { return -1 }
        var k = Int(propertyStart[i])
        let end = Int(propertyStart[i + 1])
        while k < end {
            if propertyPairs[k] == key { return propertyPairs[k + 1] }
            k += 2
        }
        return -1
    }

    private func valueName(_ id: Int32) -> String { id < 0 ? Funnel.none : valueText[Int(id)] }

    /// The value id of property `key` for every event (-1 where it has none), made in one sequential pass over the
    /// property columns. A breakdown reads it per start event: one read of one array instead of two reads at
    /// scattered places in two (users' events are spread over the columns, so each was a cache miss).
    private func propertyColumn(_ key: Int32) -> [Int32] {
        guard key >= 0 else { return Array(repeating: -1, count: times.count) }
        return [Int32](unsafeUninitializedCapacity: times.count) { out, initialized in
            propertyStart.withUnsafeBufferPointer { starts in
                propertyPairs.withUnsafeBufferPointer { pairs in
                    for i in 0..<times.count {
                        var value: Int32 = -1
                        var k = Int(starts[i])
                        let end = Int(starts[i + 1])
                        while k < end {
                            if pairs[k] == key {
                                value = pairs[k + 1]
                                break
                            }
                            k += 2
                        }
                        out[i] = value
                    }
                }
            }
            initialized = times.count
        }
    }

    /// A filter compiled against this index: per condition its key and its outcome for every value (evaluated once
    /// per distinct value, not per event).
    struct CompiledFilter {
        var keys: [Int32] = []
        var outcomes: [[Bool]] = []
        var absent: [Bool] = []
    }

    /// `nil` for an empty filter (every event passes).
    func compile(_ filter: EventFilter) -> CompiledFilter? {
        guard !filter.isEmpty else { return nil }
        var c = CompiledFilter()
        for condition in filter.conditions {
            c.keys.append(keyIDs[condition.key] ?? -1)
            c.outcomes.append(valueText.map { condition.matches($0) })
            c.absent.append(condition.matches(nil))
        }
        return c
    }

    @inline(__always)
    func passes(_ filter: CompiledFilter?, _ position: Int32) -> Bool {
        guard let filter else { return true }
        for k in 0..<filter.keys.count {
            let v = property(Int(position), filter.keys[k])
            if !(v < 0 ? filter.absent[k] : filter.outcomes[k][Int(v)]) { return false }
        }
        return true
    }

    // MARK: - Funnel

    /// One event of one user during a query.
    private struct Occurrence {
        var name: Int32
        var time: Int64
        var id: Int32
        var group: Int32
    }

    private struct FunnelTally {
        var users: [Int]
        var durations: [[Int64]]
        init(_ n: Int) {
            users = Array(repeating: 0, count: n)
            durations = Array(repeating: [], count: n)
        }
        mutating func add(_ path: [Int64]) {
            for k in 0..<path.count {
                users[k] += 1
                if k > 0 { durations[k].append(path[k] - path[0]) }
            }
        }
    }

    /// The funnel of ``Funnel/compute(steps:rows:from:to:window:)``, and with `breakdown` the same per value of
    /// that property of the step-1 event.
    public func funnel(steps: [String], from: Int64, to: Int64, window: Int64, breakdown: String? = nil)
        -> (steps: [FunnelStep], breakdown: [String: [FunnelStep]]?)
    {
        try! funnel(steps: steps, from: from, to: to, window: window, breakdown: breakdown, stop: nil)
    }

    /// ``funnel(steps:from:to:window:breakdown:)``, asking `stop` as it goes (it throws once `stop` says so).
    ///
    /// Segments: only events that pass `where` count, and for step k also `stepFilters[k]` (steps of one event name
    /// must have the same filter: the API checks it).
    public func funnel(
        steps: [String], from: Int64, to: Int64, window: Int64, breakdown: String? = nil,
        where filter: EventFilter = .all, stepFilters: [EventFilter] = [], stop: (() -> Bool)?
    ) throws(EventQueryStopped) -> (steps: [FunnelStep], breakdown: [String: [FunnelStep]]?) {
        guard !steps.isEmpty else { return ([], breakdown == nil ? nil : [:]) }
        var filters = [CompiledFilter?](repeating: nil, count: nameIDs.count)
        for (k, name) in steps.enumerated() {
            guard let id = nameIDs[name] else { continue }
            filters[Int(id)] = compile(k < stepFilters.count ? filter.and(stepFilters[k]) : filter)
        }
        let ids = steps.map { nameIDs[$0] ?? -1 }
        let groupKey = breakdown.map { keyIDs[$0] ?? -1 } ?? -1
        let groupOf = breakdown == nil ? [] : propertyColumn(groupKey)
        var overall = FunnelTally(steps.count)
        // Per value id + 1 (0: no value), made on first use.
        var groups = [FunnelTally?](repeating: nil, count: breakdown == nil ? 0 : valueText.count + 1)
        func tally(_ g: Int32, _ body: (inout FunnelTally) -> Void) {
            let slot = Int(g) + 1
            if groups[slot] == nil { groups[slot] = FunnelTally(steps.count) }
            body(&groups[slot]!)
        }
        var mine: [Occurrence] = []
        var lists = Array(repeating: [Int](), count: steps.count)
        var startGroups: [Int32] = []
        var scratch = PathScratch()
        let last = to &+ window
        var wanted = Array(repeating: false, count: nameIDs.count)
        for id in ids where id >= 0 { wanted[Int(id)] = true }
        try forEachUser(stop: stop) { entries in
            mine.removeAll(keepingCapacity: true)
            var entered = false
            var secondSteps = 0
            for e in entries {
                guard e.time >= from, e.time <= last, wanted[Int(e.name)] else { continue }
                guard passes(filters[Int(e.name)], e.position) else { continue }
                if e.name == ids[0] && e.time < to { entered = true }
                if steps.count > 1 && e.name == ids[1] { secondSteps += 1 }
                // Only a start's group matters (breakdown on the step-1 event).
                let group = groupKey >= 0 && e.name == ids[0] ? groupOf[Int(e.position)] : -1
                mine.append(Occurrence(name: e.name, time: e.time, id: e.position, group: group))
            }
            guard entered else { return }  // `mine` is in (time, position) order already
            // Most users never reach step 2: with no step-2 event (other than the start itself, for a repeated
            // step) their path is their first start — under each value of their starts, too.
            let shallow = secondSteps == 0 || (secondSteps == 1 && ids[1] == ids[0])
            if shallow {
                overall.users[0] += 1
                guard breakdown != nil else { return }
                startGroups.removeAll(keepingCapacity: true)
                for o in mine where o.name == ids[0] && o.time < to {
                    if !startGroups.contains(o.group) { startGroups.append(o.group) }
                }
                for g in startGroups { tally(g) { $0.users[0] += 1 } }
                return
            }
            for k in 0..<steps.count { lists[k].removeAll(keepingCapacity: true) }
            for (j, o) in mine.enumerated() {
                for k in 0..<steps.count where o.name == ids[k] { lists[k].append(j) }
            }
            Self.bestPath(mine, lists, from: from, to: to, window: window, group: nil, scratch: &scratch)
            overall.add(scratch.best)
            if breakdown != nil {
                startGroups.removeAll(keepingCapacity: true)
                for j in lists[0] where mine[j].time >= from && mine[j].time < to {
                    if !startGroups.contains(mine[j].group) { startGroups.append(mine[j].group) }
                }
                // Every start under one value (the usual case: a user's country rarely changes): that value's
                // path is the overall path.
                if startGroups.count == 1 {
                    tally(startGroups[0]) { $0.add(scratch.best) }
                    return
                }
                for g in startGroups {
                    Self.bestPath(mine, lists, from: from, to: to, window: window, group: g, scratch: &scratch)
                    tally(g) { $0.add(scratch.best) }
                }
            }
        }
        let result = Self.summarize(steps, overall)
        guard breakdown != nil else { return (result, nil) }
        var out: [String: [FunnelStep]] = [:]
        for (slot, tally) in groups.enumerated() {
            if let tally { out[valueName(Int32(slot) - 1)] = Self.summarize(steps, tally) }
        }
        return (result, out)
    }

    /// The times of a user's best path: the deepest over every start in `[from, to)` (of group `group` when
    /// given), the earliest start among equals, and at each step the earliest unused event at or after the
    /// previous step's time.
    /// Buffers reused from user to user (a query allocates nothing per user in steady state).
    private struct PathScratch {
        var best: [Int64] = []
        var path: [Int64] = []
        var used: [Int32] = []
    }

    private static func bestPath(
        _ mine: [Occurrence], _ lists: [[Int]], from: Int64, to: Int64, window: Int64, group: Int32?,
        scratch s: inout PathScratch
    ) {
        s.best.removeAll(keepingCapacity: true)
        for start in lists[0] {
            let first = mine[start]
            guard first.time >= from, first.time < to else { continue }
            if let group, first.group != group { continue }
            s.path.removeAll(keepingCapacity: true)
            s.used.removeAll(keepingCapacity: true)
            s.path.append(first.time)
            s.used.append(first.id)
            let limit = first.time &+ window
            for k in 1..<lists.count {
                let previous = s.path[k - 1]
                let list = lists[k]
                var lo = 0
                var hi = list.count
                while lo < hi {
                    let mid = (lo + hi) / 2
                    if mine[list[mid]].time < previous { lo = mid + 1 } else { hi = mid }
                }
                while lo < list.count && s.used.contains(mine[list[lo]].id) { lo += 1 }
                guard lo < list.count, mine[list[lo]].time <= limit else { break }
                s.used.append(mine[list[lo]].id)
                s.path.append(mine[list[lo]].time)
            }
            if s.path.count > s.best.count {
                s.best.removeAll(keepingCapacity: true)
                s.best.append(contentsOf: s.path)
            }
            if s.best.count == lists.count { break }
        }
    }

    private static func summarize(_ steps: [String], _ tally: FunnelTally) -> [FunnelStep] {
        let medians = tally.durations.enumerated().map { k, durations -> Double? in
            guard k > 0, !durations.isEmpty else { return nil }
            let d = durations.sorted()
            let mid = d.count / 2
            return d.count % 2 == 1 ? Double(d[mid]) : (Double(d[mid - 1]) + Double(d[mid])) / 2
        }
        return Funnel.steps(steps, users: tally.users, medians: medians)
    }

    // MARK: - Retention

    /// See ``Retention/compute(cohortEvent:returnEvent:period:periods:rows:from:to:)``.
    public func retention(
        cohortEvent: String, returnEvent: String?, period: RetentionPeriod, periods: Int, from: Int64, to: Int64
    ) -> [Cohort] {
        try! retention(
            cohortEvent: cohortEvent, returnEvent: returnEvent, period: period, periods: periods, from: from, to: to,
            stop: nil)
    }

    /// ``retention(cohortEvent:returnEvent:period:periods:from:to:)``, asking `stop` as it goes.
    public func retention(
        cohortEvent: String, returnEvent: String?, period: RetentionPeriod, periods: Int, from: Int64, to: Int64,
        stop: (() -> Bool)?
    ) throws(EventQueryStopped) -> [Cohort] {
        try retention(
            cohortEvent: cohortEvent, returnEvent: returnEvent, period: period, periods: periods, from: from, to: to,
            where: .all, breakdown: nil, stop: stop
        ).cohorts
    }

    /// Retention over the events that pass `where`, and with `breakdown` the same per value of that property of
    /// the user's first cohort event (absent: `"(none)"`; several first events at one millisecond: the smallest
    /// value), each user under one value.
    public func retention(
        cohortEvent: String, returnEvent: String?, period: RetentionPeriod, periods: Int, from: Int64, to: Int64,
        where filter: EventFilter, breakdown: String?, stop: (() -> Bool)?
    ) throws(EventQueryStopped) -> (cohorts: [Cohort], breakdown: [String: [Cohort]]?) {
        guard let cohortID = nameIDs[cohortEvent], periods > 0 else { return ([], breakdown == nil ? nil : [:]) }
        let returnID = returnEvent.map { nameIDs[$0] ?? -1 }
        let length = period.milliseconds
        let compiled = compile(filter)
        let groupOf = breakdown.map { propertyColumn(keyIDs[$0] ?? -1) } ?? []
        struct Tally {
            var sizes: [Int64: Int] = [:]
            var retained: [Int64: [Int]] = [:]
        }
        var overall = Tally()
        var groups: [String: Tally] = [:]
        var hit = Array(repeating: false, count: periods)
        try forEachUser(stop: stop) { entries in
            var first = Int64.max
            var group: String?
            for e in entries where e.name == cohortID && passes(compiled, e.position) {
                if first == Int64.max {
                    first = e.time  // sorted: the first match is the earliest
                    if breakdown == nil { break }
                } else if e.time != first {
                    break
                }
                let text = valueName(groupOf[Int(e.position)])
                if group.map({ text < $0 }) ?? true { group = text }
            }
            guard first >= from, first < to else { return }
            let start = period.start(of: first)
            for k in 0..<periods { hit[k] = false }
            for e in entries {
                if let returnID, e.name != returnID { continue }
                let t = e.time
                guard t >= start, passes(compiled, e.position) else { continue }
                let k = (t - start) / length
                if k < Int64(periods) { hit[Int(k)] = true }
            }
            func add(_ tally: inout Tally) {
                tally.sizes[start, default: 0] += 1
                var row = tally.retained[start] ?? Array(repeating: 0, count: periods)
                for k in 0..<periods where hit[k] { row[k] += 1 }
                tally.retained[start] = row
            }
            add(&overall)
            if let group { add(&groups[group, default: Tally()]) }
        }
        func cohorts(_ t: Tally) -> [Cohort] {
            t.sizes.keys.sorted().map { s in
                let size = t.sizes[s]!
                let row = t.retained[s]!
                return Cohort(start: s, size: size, retained: row, rates: row.map { Double($0) / Double(size) })
            }
        }
        return (cohorts(overall), breakdown == nil ? nil : groups.mapValues(cohorts))
    }

    // MARK: - Experiment

    /// See ``Experiment/compute(exposureEvent:goalEvent:rows:from:to:window:control:)``; the variant is the
    /// exposure event's property `variantProperty`.
    public func experiment(
        exposureEvent: String, variantProperty: String, goalEvent: String, from: Int64, to: Int64, window: Int64,
        control: String?
    ) -> ExperimentResult {
        try! experiment(
            exposureEvent: exposureEvent, variantProperty: variantProperty, goalEvent: goalEvent, from: from, to: to,
            window: window, control: control, stop: nil)
    }

    /// ``experiment(exposureEvent:variantProperty:goalEvent:from:to:window:control:)``, asking `stop` as it goes.
    public func experiment(
        exposureEvent: String, variantProperty: String, goalEvent: String, from: Int64, to: Int64, window: Int64,
        control: String?, where filter: EventFilter = .all, stop: (() -> Bool)?
    ) throws(EventQueryStopped) -> ExperimentResult {
        let compiled = compile(filter)
        let exposureID = nameIDs[exposureEvent] ?? -1
        let goalID = nameIDs[goalEvent] ?? -1
        let key = keyIDs[variantProperty] ?? -1
        var exposed: [Int32: Int] = [:]
        var converted: [Int32: Int] = [:]
        var excluded = 0
        try forEachUser(stop: stop) { entries in
            var firstTime = Int64.max
            var firstID: Int32 = -1
            var variant: Int32 = -1
            var seen: Int32 = -1
            var several = false
            for e in entries where e.name == exposureID && passes(compiled, e.position) {
                let p = e.position
                let t = e.time
                guard t >= from, t < to else { continue }
                let v = property(Int(p), key)
                guard v >= 0 else { continue }  // an exposure without a variant is ignored
                if seen < 0 { seen = v } else if v != seen { several = true }
                if t < firstTime || (t == firstTime && p < firstID) {
                    firstTime = t
                    firstID = p
                    variant = v
                }
            }
            guard variant >= 0 else { return }
            if several {
                excluded += 1
                return
            }
            exposed[variant, default: 0] += 1
            let limit = firstTime &+ window
            if entries.contains(where: {
                $0.name == goalID && $0.time >= firstTime && $0.time <= limit && passes(compiled, $0.position)
            }) {
                converted[variant, default: 0] += 1
            }
        }
        var byName: [String: (exposed: Int, converted: Int)] = [:]
        for (v, n) in exposed { byName[valueText[Int(v)]] = (n, converted[v, default: 0]) }
        return Experiment.results(byName, excluded: excluded, control: control)
    }
}

/// An analytics query stopped before its answer (its `stop` said so: a timeout, or its client left).
public struct EventQueryStopped: Error, Sendable {
    public init() {}
}
