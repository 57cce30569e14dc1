import LineProtocol
import Rollups

/// One `SELECT`: the time range and conditions from `WHERE`, the windows of `GROUP BY time(d)` (one window
/// without it), groups by tags, each selected expression computed from the merged cells of a window — or, for raw
/// selects and what needs single points, from the points the cells keep (``FieldRollup/exactLimit`` a bucket).
/// Semantics and the differences from InfluxDB: docs/influxql.md.
struct SelectExecution {
    let select: SelectStatement
    let data: QueryData
    let catalog: Catalog
    let budget: QueryBudget
    let now: Int64
    let zone: TimeZoneRule?
    /// Points in `[from, to)`; `nil`: unbounded.
    let from: Int64?
    let to: Int64?
    /// WHERE without its time terms.
    let residual: Expr?

    static let hour: Int64 = 3_600_000_000_000
    /// The most points a window of one field keeps exactly while merging (beyond: the sketch).
    static let windowExactLimit = 4_096
    /// The longest GROUP BY time() interval answered (arithmetic on window bounds stays far inside Int64).
    static let maxInterval: Int64 = 10_000 * 86_400_000_000_000

    init(_ select: SelectStatement, data: QueryData, catalog: Catalog, budget: QueryBudget, now: Int64)
        throws(QueryError)
    {
        self.select = select
        self.data = data
        self.catalog = catalog
        self.budget = budget
        self.now = now
        let (from, to, residual) = try Self.split(select.condition, now: now)
        self.from = from
        self.to = to
        self.residual = residual
        if let name = select.timeZone {
            guard let zone = TimeZoneRule(name) else { throw QueryError("unable to find time zone \(name)") }
            self.zone = zone
        } else {
            zone = nil
        }
    }

    mutating func run() throws -> [ResultSeries] {
        var out: [ResultSeries] = []
        for m in try catalog.resolve(select.sources) {
            out += try measurement(m)
        }
        return out
    }

    // MARK: - One measurement

    func measurement(_ m: String) throws -> [ResultSeries] {
        let fieldTypes = catalog.fields(of: m)
        let catalog = self.catalog
        var compiler = Compiler(
            fieldTypes: fieldTypes, tagKeys: { catalog.tagKeys(of: m) }, interval: select.interval)
        let list = try compiler.expand(select.fields)
        guard !list.isEmpty else {
            if select.fields.contains(where: { $0.expr == .wildcard }) { return [] }
            throw QueryError("at least 1 non-time field must be queried")
        }
        let terms = list.map(\.term)
        let fields = compiler.fields
        let aggregate = terms.contains { $0.isAggregate }
        if aggregate, terms.contains(where: { $0.isRaw && !Self.isRawInsideTransform($0) }) {
            throw QueryError("mixing aggregate and non-aggregate queries is not supported")
        }
        if !aggregate, select.interval != nil {
            throw QueryError("GROUP BY requires at least one aggregate function")
        }
        // Fields no series has: InfluxDB answers nothing for them (no series when none is known).
        if fields.allSatisfy({ fieldTypes[$0] == nil }) { return [] }
        // WHERE: tag conditions choose series; conditions on fields filter points.
        let (tagCondition, pointCondition) = Self.classify(residual, fields: fieldTypes)
        let tagFilter = try tagCondition.map { e throws(QueryError) in try TagFilter(e) }
        let points = try pointCondition.map { e throws(QueryError) in try PointCondition(e, fields: fieldTypes) }
        let plan = Plan(
            measurement: m, fields: fields, fieldTypes: fields.map { fieldTypes[$0] }, columns: list.map(\.column),
            terms: terms, tagFilter: tagFilter, pointCondition: points)
        if !aggregate { return try raw(plan) }
        return try aggregated(plan)
    }

    static func isRawInsideTransform(_ t: Term) -> Bool {
        if case .transform(_, .rawField) = t { return true }
        return false
    }

    struct Plan {
        var measurement: String
        var fields: [String]
        var fieldTypes: [FieldType?]
        var columns: [String]
        var terms: [Term]
        var tagFilter: TagFilter?
        var pointCondition: PointCondition?

        var needsPoints: Bool {
            var needs = pointCondition != nil
            for t in terms { t.visitFunctions { f, fn in if fn.needsPoints { needs = true } } }
            return needs
        }

        /// Whether the statement needs more than summaries: points, sketches, strings.
        var needsRollups: Bool {
            var needs = needsPoints
            for t in terms {
                t.visitFunctions { f, fn in
                    if fieldTypes[f] == .string { needs = true }
                    if case .distinct = fn { needs = true }
                }
            }
            return needs
        }

        var needsSketch: Bool {
            var needs = false
            for t in terms {
                t.visitFunctions { _, fn in
                    switch fn {
                    case .median, .percentile, .countDistinct: needs = true
                    default: break
                    }
                }
            }
            return needs
        }
    }

    // MARK: - The range and its windows

    /// The range of points read, its windows, and which windows are answered (transformations read one window
    /// before the range).
    struct Range {
        var pointFrom: Int64
        var pointTo: Int64
        var grid: WindowGrid
        /// Windows before this one are read but not answered.
        var firstAnswered: Int
        /// Where the stored tiers switch from hours to minutes (the first whole hour kept per minute).
        var boundary: Int64
        /// Whether the lower bound was given (else fill starts at each group's first window).
        var bounded: Bool
    }

    func range(extendBefore: Bool) throws -> Range {
        let width = data.bucketWidth
        let boundary = (now - data.retention1m) / Self.hour * Self.hour + Self.hour
        // The oldest data kept, and the newest a point may be.
        let oldest = now - data.retention1h - 2 * Self.hour
        let newest = now + data.maxFuture + 2 * width
        var pointFrom = Swift.max(from ?? oldest, oldest)
        // Without an upper bound: now with GROUP BY time (as InfluxDB), everything without.
        var pointTo = Swift.min(to ?? (select.interval != nil ? now + 1 : newest), newest)
        if let from, from > newest { pointFrom = newest }
        if let to, to < oldest { pointTo = oldest }
        var grid = WindowGrid()
        var firstAnswered = 0
        if let d = select.interval, d > Self.maxInterval {
            throw QueryError("GROUP BY time(): an interval longer than 10,000 days is not answered")
        }
        // Without a lower bound, windows start at the oldest minute kept (retention_1m): InfluxDB starts each
        // series' windows at its first point, and fill starts there too (``rows``).
        if from == nil, select.interval != nil {
            pointFrom = Swift.max(pointFrom, (now - data.retention1m) / Self.hour * Self.hour + Self.hour)
        }
        guard let d = select.interval else {
            grid.segments = [.init(start: from ?? 0, step: .max, count: 1, base: 0)]
            return Range(
                pointFrom: pointFrom, pointTo: Swift.max(pointFrom, pointTo), grid: grid, firstAnswered: 0,
                boundary: boundary, bounded: from != nil)
        }
        guard pointFrom < pointTo else {
            return Range(
                pointFrom: pointFrom, pointTo: pointFrom, grid: grid, firstAnswered: 0, boundary: boundary,
                bounded: from != nil)
        }
        // Windows from the one holding the range's start to the one holding its end (inclusive).
        var lower = window(pointFrom, d)
        let last = window(pointTo - 1, d)
        if extendBefore {
            let before = window(lower - 1, d)
            pointFrom = before
            lower = before
            firstAnswered = 1
        }
        // Where the range reaches past retention_1m, hours: windows of d when d is whole hours, else of the next
        // whole number of hours; minutes (d) from the first window at or after the boundary.
        var minuteStart = lower
        if lower < boundary {
            let h = (d + Self.hour - 1) / Self.hour * Self.hour
            let hourStart = Self.floor(lower, h)
            let hourEnd = Swift.min(boundary, last + d)
            let count = Int((hourEnd - hourStart + h - 1) / h)
            try checkWindows(count)
            grid.append(start: hourStart, step: h, count: count)
            minuteStart = Swift.max(hourStart + Int64(count) * h, lower)
            if d % Self.hour != 0 { minuteStart = window(minuteStart + d - 1, d) }
            if extendBefore { firstAnswered = Swift.min(1, count) }
        }
        if minuteStart <= last {
            if zone == nil {
                let count = Int((last - minuteStart) / d) + 1
                try checkWindows(grid.count + count)
                grid.append(start: minuteStart, step: d, count: count)
            } else {
                // With a zone a window's width changes where its offset does: one window at a time.
                var t = minuteStart
                var k = 0
                while t <= last {
                    let next = window(t, d, end: true)
                    grid.append(start: t, step: next - t, count: 1)
                    t = next
                    k += 1
                    if k % 1024 == 0 { try checkWindows(grid.count) }
                }
                try checkWindows(grid.count)
            }
        }
        return Range(
            pointFrom: pointFrom, pointTo: pointTo, grid: grid, firstAnswered: firstAnswered, boundary: boundary,
            bounded: from != nil)
    }

    func checkWindows(_ count: Int) throws {
        guard count <= data.maxSelectBuckets else {
            throw QueryLimitExceeded(
                "max-select-buckets limit exceeded: (\(count)/\(data.maxSelectBuckets)) ([query] max_select_buckets): widen GROUP BY time() or narrow the time range"
            )
        }
    }

    /// The start (or end) of the window of `d` holding `t`: InfluxDB's `Window`, with the statement's zone and
    /// GROUP BY offset.
    func window(_ t: Int64, _ d: Int64, end: Bool = false) -> Int64 {
        let offset = ((select.offset % d) + d) % d
        let t = t - offset
        let zoneOffset = zone?.offset(at: t) ?? 0
        var dt = (t + zoneOffset) % d
        if dt < 0 { dt += d }
        var start = t - dt
        if let zone {
            let o = zoneOffset - zone.offset(at: start)
            if o != 0 && abs(o) < d { start += o }
        }
        if end {
            var e = t + (d - dt)
            if let zone {
                let o = zoneOffset - zone.offset(at: e)
                if o != 0 && abs(o) < d { e += o }
            }
            return e + offset
        }
        return start + offset
    }

    static func floor(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b < 0 ? q - 1 : q) * b
    }

    // MARK: - Reading

    /// Every cell of the plan's fields in `[from, to)` (points), from the open buckets, stored minutes and, before
    /// `boundary`, stored hours. `body` gets the bucket start, its width, series, field index and cell.
    /// `only`, when given, narrows the read to those series (by id).
    func visit(
        _ plan: Plan, from: Int64, to: Int64, boundary: Int64, sketches: Bool, only: Set<UInt64>? = nil,
        _ body: (Int64, Int64, SeriesInfo, Int, consuming FieldRollup) -> Void
    ) throws {
        try readTiers(plan, from: from, to: to, boundary: boundary, sketches: sketches, only: only) {
            source, read, accept, bucket in
            try source.visitCells(read, series: accept) { start, series, f, cell in body(start, bucket, series, f, cell)
            }
        }
    }

    /// ``visit(_:from:to:boundary:sketches:_:)`` of each cell's summary (what needs no points, quantiles or
    /// strings): the summaries come as the sources give them, not wrapped or copied on the way.
    func visitSummaries(
        _ plan: Plan, from: Int64, to: Int64, boundary: Int64,
        _ body: (Int64, Int64, SeriesInfo, Int, FieldSummary) -> Void
    ) throws {
        try readTiers(plan, from: from, to: to, boundary: boundary, sketches: false) { source, read, accept, bucket in
            try source.visitSummaries(read, series: accept) { start, series, f, cell in
                body(start, bucket, series, f, cell)
            }
        }
    }

    /// The reads of `[from, to)`: stored hours before `boundary`, then the open buckets and stored minutes; `tier`
    /// reads one (the source, the read, the series filter, the source's bucket width).
    private func readTiers(
        _ plan: Plan, from: Int64, to: Int64, boundary: Int64, sketches: Bool, only: Set<UInt64>? = nil,
        _ tier: (any CellSource, CellRead, ((SeriesInfo) -> Bool)?, Int64) throws -> Void
    ) throws {
        let width = data.bucketWidth
        guard from < to else { return }
        var accept: ((SeriesInfo) -> Bool)? = plan.tagFilter.map { filter in { filter.matches($0) } }
        if let only {
            let filter = accept
            accept = { series in only.contains(series.id) && (filter?(series) ?? true) }
        }
        var read = CellRead(
            measurement: plan.measurement, fields: plan.fields, from: Self.floor(from, width), to: to,
            sketches: sketches)
        // The series a condition takes are remembered by its text: a read narrowed to some series has none.
        read.condition = plan.tagFilter == nil || only != nil ? nil : residual.map { String(describing: $0) }
        read.shouldStop = budget.shouldStop
        do {
            if read.from < boundary {
                var hours = read
                hours.from = Self.floor(read.from, Self.hour)
                hours.to = Swift.min(boundary, read.to)
                try tier(data.hours, hours, accept, Self.hour)
            }
            if read.to > boundary {
                var minutes = read
                minutes.from = Swift.max(read.from, boundary)
                try tier(data.open, minutes, accept, width)
                try tier(data.minutes, minutes, accept, width)
            }
        } catch let stop as QueryStopped {
            throw stop
        } catch {
            if let stop = budget.stopReason { throw stop }
            throw ReadFailure(message: "reading stored rollups failed: \(error)")
        }
        if let stop = budget.stopReason { throw stop }
    }

    // MARK: - Conditions

    /// Splits `WHERE` into the time range `[from, to)` and the rest. Time may appear only in `AND`s.
    static func split(_ e: Expr?, now: Int64) throws(QueryError) -> (Int64?, Int64?, Expr?) {
        guard let e else { return (nil, nil, nil) }
        if case .binary("AND", let a, let b) = e {
            let (fa, ta, ca) = try split(a, now: now)
            let (fb, tb, cb) = try split(b, now: now)
            let from = [fa, fb].compactMap { $0 }.max()
            let to = [ta, tb].compactMap { $0 }.min()
            let condition: Expr? = ca.flatMap { x in cb.map { .binary("AND", x, $0) } ?? x } ?? cb
            return (from, to, condition)
        }
        if case .binary(let op, .field(let name), let rhs) = e, name.lowercased() == "time" {
            let t = try instant(rhs, now: now)
            let next = t == .max ? t : t + 1
            switch op {
            case ">=": return (t, nil, nil)
            case ">": return (next, nil, nil)
            case "<=": return (nil, next, nil)
            case "<": return (nil, t, nil)
            case "=": return (t, next, nil)
            default: throw QueryError("invalid time comparison operator: \(op)")
            }
        }
        if containsTime(e) { throw QueryError("invalid time condition: time conditions must be joined with AND") }
        return (nil, nil, e)
    }

    static func containsTime(_ e: Expr) -> Bool {
        switch e {
        case .field(let n): n.lowercased() == "time"
        case .binary(_, let a, let b): containsTime(a) || containsTime(b)
        default: false
        }
    }

    /// A time literal: `1700000000000ms`, a bare integer (nanoseconds), `now() - 6h`, or an RFC 3339 string.
    static func instant(_ e: Expr, now: Int64) throws(QueryError) -> Int64 {
        switch e {
        case .duration(let d): return d
        case .integer(let n): return n
        case .number(let n):
            guard let t = Int64(exactly: n.rounded(.towardZero)) else {
                throw QueryError("time \(n) is out of range (a time is at most 9223372036854775806 nanoseconds)")
            }
            return t
        case .now: return now
        case .string(let s):
            guard let t = RFC3339Time.parse(s) else { throw QueryError("invalid time \(s)") }
            return t
        case .binary(let op, let a, let b) where op == "+" || op == "-":
            let x = try instant(a, now: now)
            let y = try instant(b, now: now)
            let (t, overflow) = op == "+" ? x.addingReportingOverflow(y) : x.subtractingReportingOverflow(y)
            guard !overflow else { throw QueryError("time expression \(e) is out of range") }
            return t
        default: throw QueryError("invalid time expression \(e)")
        }
    }

    /// The conjuncts of WHERE that name only tags (they choose series), and the rest (they filter points).
    static func classify(_ e: Expr?, fields: [String: FieldType]) -> (tags: Expr?, points: Expr?) {
        guard let e else { return (nil, nil) }
        var conjuncts: [Expr] = []
        func flatten(_ e: Expr) {
            if case .binary("AND", let a, let b) = e {
                flatten(a)
                flatten(b)
            } else {
                conjuncts.append(e)
            }
        }
        flatten(e)
        let named = conjuncts.map { namesField($0, fields) }
        if !named.contains(true) { return (e, nil) }
        if !named.contains(false) { return (nil, e) }
        // Each side joined balanced again: a chain of thousands of terms stays shallow for what walks it.
        func joined(_ terms: ArraySlice<Expr>) -> Expr {
            if terms.count == 1 { return terms[terms.startIndex] }
            let middle = terms.startIndex + terms.count / 2
            return .binary("AND", joined(terms[..<middle]), joined(terms[middle...]))
        }
        let tags = zip(conjuncts, named).filter { !$0.1 }.map(\.0)
        let points = zip(conjuncts, named).filter { $0.1 }.map(\.0)
        return (joined(tags[...]), joined(points[...]))
    }

    static func namesField(_ e: Expr, _ fields: [String: FieldType]) -> Bool {
        switch e {
        case .field(let f): fields[f] != nil
        case .binary(_, let a, let b): namesField(a, fields) || namesField(b, fields)
        default: false
        }
    }
}

/// RFC 3339 times in conditions (`'2026-11-20T00:00:00Z'`, also `'2026-11-20 00:00:00'`).
enum RFC3339Time {
    static func parse(_ s: String) -> Int64? {
        if let t = RFC3339.nanoseconds(s) { return t }
        var t = ""
        for c in s { t.append(c == " " ? "T" : c) }
        return RFC3339.nanoseconds(t + "Z") ?? RFC3339.nanoseconds(t + "T00:00:00Z")
    }
}
