import API
import Export
import Foundation
import LineProtocol
import Query
import Rollups

/// One `SELECT`: the time range and tag condition from `WHERE`, windows of `GROUP BY time(d)` (a multiple of the
/// bucket width; one window for the whole range without it), groups by tags, each selected expression computed
/// from the merged rollups of a window (aggregates merge exactly, so a window equals the aggregate of its points).
struct SelectExecution {
    let select: SelectStatement
    let state: HTTPState
    /// Nanoseconds per unit of `epoch=`, `nil` for RFC 3339 times.
    let epochScale: Int64?
    let budget: QueryBudget

    /// The statement's series, and whether they were cut at `rowsLeft` (what the answer may still hold, less what
    /// these hold afterwards).
    ///
    /// Bounded: windows by `[query] max_select_buckets`, series read by `max_select_series`, (group, window)
    /// slots built by `max_row_limit` (over it the statement fails: a cut made while reading would not be the
    /// first rows), rows answered by what the answer may still hold (over it they are cut, `"partial": true`).
    func run(rowsLeft: inout Int) throws -> (series: [Any], partial: Bool) {
        let limits = state.configuration.query
        let interval = state.configuration.rollup.interval.nanoseconds
        let now = nowNanoseconds()
        var (from, to, condition) = try Self.split(select.condition, now: now)
        let tagFilter = try condition.map { (e: Expr) throws(QueryError) in try TagFilter(e) }
        // Without a lower bound: everything still kept per minute (from the first whole hour of retention_1m).
        let hour: Int64 = 3_600_000_000_000
        from = from ?? (Self.floor(now - state.configuration.storage.retention1m.nanoseconds, hour) + hour)
        to = to ?? now + interval
        // Times beyond what InfluxDB represents select nothing there (its MinTime and MaxTime).
        guard var lower = from.map({ Swift.max($0, Self.minTime) }),
            let upper = to.map({ Swift.min($0, Self.maxTime) }),
            lower < upper
        else { return ([], false) }
        if let d = select.interval, d % interval != 0 {
            throw QueryError(
                "GROUP BY time(\(d / 1_000_000_000)s) must be a multiple of the bucket width (\(interval / 1_000_000_000)s)"
            )
        }
        // An offset is the same windows as the offset modulo the interval (InfluxDB normalizes it the same way).
        let offset = select.interval.map { d in ((select.offset % d) + d) % d } ?? 0
        if offset % interval != 0 {
            throw QueryError(
                "GROUP BY time() offset must be a multiple of the bucket width (\(interval / 1_000_000_000)s)")
        }
        // Windows start at multiples of the interval (plus offset), as InfluxDB's.
        if let d = select.interval {
            let shifted = lower.subtractingReportingOverflow(offset)
            let aligned = shifted.overflow ? nil : Self.checkedFloor(shifted.partialValue, d)
            let start = aligned?.addingReportingOverflow(offset)
            guard let start, !start.overflow else {
                throw QueryError("the time range starts too early for GROUP BY time() (out of range)")
            }
            lower = start.partialValue
        }
        let windowCount = try Self.windowCount(
            lower: lower, upper: upper, interval: select.interval, limit: limits.maxSelectBuckets)
        // What the statement needs: the fields it reads, each select expression compiled against them once.
        var fields: [String] = []
        for f in select.fields { try Self.collectFields(f.expr, into: &fields) }
        guard !fields.isEmpty else { throw QueryError("at least 1 non-time field must be queried") }
        let terms = try select.fields.map { f throws(QueryError) in try Term(f.expr, fields: fields) }
        let fieldIndex = Dictionary(uniqueKeysWithValues: fields.enumerated().map { ($1, $0) })
        let readStep = select.interval ?? interval
        let storedStep = readStep % 3_600_000_000_000 == 0 ? readStep : interval
        // Up to `denseWindows` windows a group indexes its slots with an array, beyond with a dictionary; and no
        // more than `denseEntries` array entries in all (groups × windows), so many groups stay small too.
        let denseWindows = 4_096
        let denseEntries = 1 << 24
        // Statements that compute no quantile and no distinct count read summaries (``FieldSummary``), without
        // sketches: plain values, and stored ones remembered decoded between refreshes.
        if terms.allSatisfy(\.summaryAnswers) {
            return try execute(FieldSummary.self, rowsLeft: &rowsLeft) {
                read, accept, body throws(HTTPRoutes.ReadFailure) in
                try HTTPRoutes.visitSummaries(state, read, step: storedStep, series: accept, body)
            }
        }
        return try execute(FieldRollup.self, rowsLeft: &rowsLeft) { read, accept, body throws(HTTPRoutes.ReadFailure) in
            // Cells come in runs of one field: the last one is checked before hashing.
            var lastField: (name: String, index: Int)?
            try HTTPRoutes.visitRollups(state, read, step: storedStep, series: accept) { start, series, field, rollup in
                let f: Int
                if let lastField, lastField.name == field {
                    f = lastField.index
                } else {
                    guard let known = fieldIndex[field] else { return }
                    f = known
                    lastField = (field, known)
                }
                body(start, series, f, rollup)
            }
        }

        /// The statement over cells of type `Cell`, which `visit` reads (with the read, the series filter, and
        /// where each cell goes: bucket start, series, field index, cell).
        func execute<Cell: WindowCell>(
            _: Cell.Type,
            rowsLeft: inout Int,
            visit: (
                SQLiteStore.CellRead, ((SeriesInfo) -> Bool)?, (Int64, SeriesInfo, Int, consuming Cell) -> Void
            ) throws(HTTPRoutes.ReadFailure) -> Void
        ) throws -> (series: [Any], partial: Bool) {
            var windows = WindowAccumulation<Cell>(
                lower: lower, upper: upper, interval: select.interval, windowCount: windowCount, fields: fields.count,
                dense: windowCount <= denseWindows, denseBudget: denseEntries, filter: tagFilter,
                groupByAllTags: select.groupByAllTags, groupKeys: select.groupByTags, budget: budget,
                maxSeries: limits.maxSelectSeries)
            do {
                // One read for every field; the tag condition also picks the series, so other series' stored rows
                // are never decoded, and sketches are decoded only for a quantile.
                let accept: ((SeriesInfo) -> Bool)? = tagFilter.map { filter in { filter.matches($0) } }
                var read = SQLiteStore.CellRead(
                    measurement: select.measurement, fields: fields, from: state.engine.bucketStartOf(lower),
                    to: upper, sketches: terms.contains { $0.needsSketch })
                read.condition = condition.map { String(describing: $0) }
                read.shouldStop = budget.shouldStop
                try visit(read, accept) { start, series, field, cell in windows.add(start, series, field, cell) }
            } catch {
                if let stop = budget.stopReason { throw stop }
                throw QueryError(error.message)
            }
            if let stop = budget.stopReason { throw stop }
            var groupKeys = windows.groupKeys
            if select.groupByAllTags { groupKeys.sort() }
            let columns = ["time"] + Self.columnNames(select.fields)
            var series: [SelectSeries] = []
            var partial = false
            let scale = epochScale
            let width = terms.count
            // One row's values, and the previous row's (fill(previous)), reused from row to row.
            var row = [Double?](repeating: nil, count: width)
            var previous = [Double?](repeating: nil, count: width)
            for group in windows.groups.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
                if let slimit = select.slimit, series.count >= slimit { break }
                try budget.check()
                var values: [Double?] = []
                var times: [Int64] = []
                let rowCount = select.fill == .none ? group.rollups.count / fields.count : windowCount
                values.reserveCapacity(rowCount * width)
                times.reserveCapacity(rowCount)
                for t in 0..<width { previous[t] = nil }
                for window in 0..<windowCount {
                    var empty = true
                    if let base = group.slot(window) {
                        for t in 0..<width {
                            row[t] = terms[t].value(group.rollups, base)
                            if row[t] != nil { empty = false }
                        }
                    } else {
                        for t in 0..<width { row[t] = nil }
                    }
                    if empty && select.interval != nil {
                        switch select.fill {
                        case .none: continue
                        case .null, .linear: break
                        case .value(let v): for t in 0..<width { row[t] = v }
                        case .previous: for t in 0..<width { row[t] = previous[t] }
                        }
                    } else if case .previous = select.fill {
                        for t in 0..<width where row[t] == nil { row[t] = previous[t] }
                    } else if case .value(let v) = select.fill {
                        for t in 0..<width where row[t] == nil { row[t] = v }
                    }
                    for t in 0..<width { previous[t] = row[t] }
                    times.append(lower + Int64(window) * (select.interval ?? 0))
                    values.append(contentsOf: row)
                }
                if case .linear = select.fill { Self.interpolate(&values, width: width) }
                if select.descending {
                    times.reverse()
                    values = Self.reversedRows(values, width: width)
                }
                if let limit = select.limit, limit < times.count {
                    times.removeSubrange(limit...)
                    values.removeSubrange((limit * width)...)
                }
                guard !times.isEmpty else { continue }
                // The answer's row limit: this series is cut there, and is the last one.
                if times.count > rowsLeft {
                    partial = true
                    times.removeSubrange(rowsLeft...)
                    values.removeSubrange((rowsLeft * width)...)
                }
                rowsLeft -= times.count
                if times.isEmpty { break }
                var tags: [(key: String, value: String)]?
                if !groupKeys.isEmpty {
                    if select.groupByAllTags {
                        tags = groupKeys.map { k in (k, group.tags.first { $0.key == k }?.value ?? "") }
                    } else {
                        tags = zip(groupKeys, group.key).map { ($0, $1) }
                    }
                }
                series.append(
                    SelectSeries(
                        name: select.measurement, tags: tags, columns: columns, times: times, epochScale: scale,
                        values: values, partial: partial)
                )
                if partial { break }
            }
            return (series, partial)
        }
    }

    /// A select expression compiled against the statement's field list: aggregates name their field by index.
    indirect enum Term {
        case constant(Double)
        case aggregate(field: Int, Aggregate)
        case arithmetic(Character, Term, Term)

        init(_ e: Expr, fields: [String]) throws(QueryError) {
            switch e {
            case .number(let n): self = .constant(n)
            case .integer(let n): self = .constant(Double(n))
            case .field(let f): self = .aggregate(field: fields.firstIndex(of: f)!, .mean)  // a raw field: the mean
            case .call(let name, let args):
                let (f, aggregate) = try SelectExecution.target(name, args)
                self = .aggregate(field: fields.firstIndex(of: f)!, aggregate)
            case .binary(let op, let a, let b) where op.count == 1 && "+-*/".contains(op):
                self = .arithmetic(Character(op), try Term(a, fields: fields), try Term(b, fields: fields))
            default: throw QueryError("unsupported expression in SELECT")
            }
        }

        /// Whether a ``FieldSummary`` answers this term as the full rollup does.
        var summaryAnswers: Bool {
            switch self {
            case .constant: true
            case .aggregate(_, let a): FieldSummary.answers(a)
            case .arithmetic(_, let a, let b): a.summaryAnswers && b.summaryAnswers
            }
        }

        var needsSketch: Bool {
            switch self {
            case .constant: false
            case .aggregate(_, let a):
                if case .quantile = a { true } else { false }
            case .arithmetic(_, let a, let b): a.needsSketch || b.needsSketch
            }
        }

        /// The value for the window whose rollups start at `base` (`nil`: no data, or undefined).
        func value<Cell: WindowCell>(_ rollups: [Cell?], _ base: Int) -> Double? {
            switch self {
            case .constant(let n): return n
            case .aggregate(let f, let a): return rollups[base + f]?.value(of: a)
            case .arithmetic(let op, let a, let b):
                guard let x = a.value(rollups, base), let y = b.value(rollups, base) else { return nil }
                switch op {
                case "+": return x + y
                case "-": return x - y
                case "*": return x * y
                default: return y == 0 ? nil : x / y
                }
            }
        }
    }

    static func floor(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b < 0 ? q - 1 : q) * b
    }

    /// ``floor(_:_:)``, `nil` where the multiple below `a` is not representable.
    static func checkedFloor(_ a: Int64, _ b: Int64) -> Int64? {
        let q = a / b
        let (m, overflow) = (a % b < 0 ? q - 1 : q).multipliedReportingOverflow(by: b)
        return overflow ? nil : m
    }

    /// InfluxDB's bounds for a time (influxql's MinTime and MaxTime).
    static let minTime = Int64.min + 2
    static let maxTime = Int64.max - 1

    /// Windows of `interval` from `lower` (aligned) to `upper`; one without an interval. More than `limit` is an
    /// error naming the limit.
    static func windowCount(lower: Int64, upper: Int64, interval: Int64?, limit: Int) throws(QueryLimitExceeded)
        -> Int
    {
        guard let d = interval else { return 1 }
        let span = upper.subtractingReportingOverflow(lower)
        let count = span.overflow ? Int64.max : span.partialValue / d + (span.partialValue % d == 0 ? 0 : 1)
        guard count <= Int64(limit) else {
            throw QueryLimitExceeded(
                "max-select-buckets limit exceeded: (\(count)/\(limit)) ([query] max_select_buckets): widen GROUP BY time() or narrow the time range"
            )
        }
        return Int(count)
    }

    /// Splits `WHERE` into the time range `[from, to)` and the tag condition. Time may appear only in `AND`s.
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
            // The instant after `t` (saturating: nothing is after the largest time).
            let next = t == .max ? t : t + 1
            switch op {
            case ">=": return (t, nil, nil)
            case ">": return (next, nil, nil)
            case "<=": return (nil, next, nil)
            case "<": return (nil, t, nil)
            case "=": return (t, next, nil)
            default: throw QueryError("unsupported time comparison \(op)")
            }
        }
        if containsTime(e) { throw QueryError("time conditions must be joined with AND (not OR)") }
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
    /// Arithmetic that leaves the range of a time is an error, never a wrapped-around or trapped value.
    static func instant(_ e: Expr, now: Int64) throws(QueryError) -> Int64 {
        switch e {
        case .duration(let d): return d
        case .integer(let n): return n
        case .number(let n):
            // Exactly the doubles that convert: NaN, infinities and |n| ≥ 2^63 are out of range.
            guard let t = Int64(exactly: n.rounded(.towardZero)) else {
                throw QueryError("time \(n) is out of range (a time is at most 9223372036854775806 nanoseconds)")
            }
            return t
        case .now: return now
        case .string(let s):
            guard
                let t = RFC3339.nanoseconds(s) ?? RFC3339.nanoseconds(s.replacingOccurrences(of: " ", with: "T") + "Z")
            else { throw QueryError("invalid time \(s)") }
            return t
        case .binary(let op, let a, let b) where op == "+" || op == "-":
            let x = try instant(a, now: now)
            let y = try instant(b, now: now)
            let (t, overflow) = op == "+" ? x.addingReportingOverflow(y) : x.subtractingReportingOverflow(y)
            guard !overflow else { throw QueryError("time expression \(e) is out of range") }
            return t
        default: throw QueryError("invalid time expression")
        }
    }

    static func collectFields(_ e: Expr, into fields: inout [String]) throws(QueryError) {
        switch e {
        case .field(let f):
            if !fields.contains(f) { fields.append(f) }
        case .call(let name, let args):
            let f = try target(name, args).field
            if !fields.contains(f) { fields.append(f) }
        case .binary(let op, let a, let b) where "+-*/".contains(op):
            try collectFields(a, into: &fields)
            try collectFields(b, into: &fields)
        case .number, .integer: break
        case .wildcard: throw QueryError("SELECT * is not supported: name the fields with an aggregate")
        default: throw QueryError("unsupported expression in SELECT")
        }
    }

    /// The field and aggregate of a function call: `agg("f")`, `percentile("f", N)`, or `count(distinct("f"))` on a
    /// distinct-count field (events' `users`).
    static func target(_ name: String, _ args: [Expr]) throws(QueryError) -> (field: String, aggregate: Aggregate) {
        guard let first = args.first else { throw QueryError("\(name)() needs a field") }
        if name == "count", args.count == 1, case .call("distinct", let inner) = first {
            guard inner.count == 1, case .field(let f) = inner[0] else {
                throw QueryError("count(distinct()) needs one field")
            }
            return (f, .distinct)
        }
        if name == "distinct" {
            throw QueryError(
                "distinct() alone is not supported: metricsd keeps distinct-count sketches, use count(distinct(\"field\"))"
            )
        }
        guard case .field(let f) = first else {
            throw QueryError("\(name)(): the first argument must be a field (nested functions are not supported)")
        }
        return (f, try aggregate(name, args))
    }

    static func aggregate(_ name: String, _ args: [Expr]) throws(QueryError) -> Aggregate {
        switch name {
        case "mean": return .mean
        case "sum": return .sum
        case "count": return .count
        case "min": return .min
        case "max": return .max
        case "first": return .first
        case "last": return .last
        case "stddev": return .stddev
        case "spread": return .spread
        case "median": return .quantile(0.5)
        case "percentile":
            let n: Double
            switch args.count == 2 ? args[1] : .wildcard {
            case .number(let d): n = d
            case .integer(let i): n = Double(i)
            default: n = -1
            }
            guard n >= 0, n <= 100 else {
                throw QueryError("percentile() needs a field and a number in 0...100")
            }
            return .quantile(n / 100)
        default:
            throw QueryError(
                "unsupported function \(name)(): metricsd answers mean, sum, count, min, max, first, last, median, percentile, stddev, spread, count(distinct())"
            )
        }
    }

    /// Column names as InfluxDB gives them: the alias, else the function name (`mean`), the field for a raw field,
    /// function names joined by `_` for arithmetic; repeats get `_1`, `_2`.
    static func columnNames(_ fields: [SelectField]) -> [String] {
        func name(_ e: Expr) -> String {
            switch e {
            case .field(let f): f
            case .call(let n, _): n
            case .binary(_, let a, let b): [name(a), name(b)].filter { !$0.isEmpty }.joined(separator: "_")
            default: ""
            }
        }
        var seen: [String: Int] = [:]
        return fields.map { f in
            let base = f.alias ?? name(f.expr)
            let n = seen[base, default: 0]
            seen[base] = n + 1
            return n == 0 ? base : "\(base)_\(n)"
        }
    }

    /// fill(linear): nulls between two values become the straight line between them.
    /// fill(linear): gaps inside each column of rows of `width` values (one flat array) filled on the straight
    /// line between the values around them.
    static func interpolate(_ values: inout [Double?], width: Int) {
        guard width > 0 else { return }
        let rows = values.count / width
        for column in 0..<width {
            var last: Int?
            for k in 0..<rows {
                guard let v = values[k * width + column] else { continue }
                if let l = last, k - l > 1, let lv = values[l * width + column] {
                    for j in (l + 1)..<k { values[j * width + column] = lv + (v - lv) * Double(j - l) / Double(k - l) }
                }
                last = k
            }
        }
    }

    /// Rows of `width` values (one flat array) in reverse order.
    static func reversedRows(_ values: [Double?], width: Int) -> [Double?] {
        guard width > 0 else { return values }
        var out: [Double?] = []
        out.reserveCapacity(values.count)
        var end = values.count
        while end > 0 {
            out.append(contentsOf: values[(end - width)..<end])
            end -= width
        }
        return out
    }
}

/// What a window of a SELECT merges: full rollups (quantiles, distinct counts) or their summaries.
protocol WindowCell {
    mutating func merge(_ other: Self)
    func value(of agg: Aggregate) -> Double?
}

extension FieldRollup: WindowCell {}
extension FieldSummary: WindowCell {}

/// One group of a SELECT (series with the same GROUP BY tags): a slot per (window, field), found through the
/// window's index — an array up to a few thousand windows, a dictionary beyond.
private struct WindowGroup<Cell: WindowCell> {
    var key: [String]
    var tags: [TagPair]
    var dense: [Int32]
    var sparse: [Int: Int] = [:]
    var rollups: [Cell?] = []

    func slot(_ window: Int) -> Int? {
        if dense.isEmpty { return sparse[window] }
        let base = dense[window]
        return base >= 0 ? Int(base) : nil
    }

    mutating func setSlot(_ window: Int, _ base: Int) {
        if dense.isEmpty { sparse[window] = base } else { dense[window] = Int32(base) }
    }
}

/// The windows of every group of a SELECT as its cells arrive: each cell (bucket start, series, field index) is
/// merged into its group's slot for its window and field.
private struct WindowAccumulation<Cell: WindowCell> {
    let lower: Int64
    let upper: Int64
    let interval: Int64?
    let windowCount: Int
    let fields: Int
    let dense: Bool
    /// Dense index entries left (groups beyond it index their windows with a dictionary).
    var denseBudget: Int
    let filter: TagFilter?
    let groupByAllTags: Bool
    /// Counts the slots built (`[query] max_row_limit`) and stops the query at `maxSeries` series read.
    let budget: QueryBudget
    let maxSeries: Int
    /// The GROUP BY tags; with `GROUP BY *`, every tag key seen.
    var groupKeys: [String]
    var groups: [WindowGroup<Cell>] = []
    var groupIndex: [[String]: Int] = [:]
    /// -1: the tag condition rejects the series.
    var groupOfSeries: [UInt64: Int] = [:]
    /// Cells come in runs of one series: the last one is checked before hashing.
    var lastSeries: (id: UInt64, group: Int)?

    init(
        lower: Int64, upper: Int64, interval: Int64?, windowCount: Int, fields: Int, dense: Bool, denseBudget: Int,
        filter: TagFilter?, groupByAllTags: Bool, groupKeys: [String], budget: QueryBudget, maxSeries: Int
    ) {
        self.lower = lower
        self.upper = upper
        self.interval = interval
        self.windowCount = windowCount
        self.fields = fields
        self.dense = dense
        self.denseBudget = denseBudget
        self.budget = budget
        self.maxSeries = maxSeries
        self.filter = filter
        self.groupByAllTags = groupByAllTags
        self.groupKeys = groupKeys
    }

    mutating func add(_ start: Int64, _ series: SeriesInfo, _ f: Int, _ cell: consuming Cell) {
        guard start >= lower, start < upper else { return }
        let g: Int
        if let lastSeries, lastSeries.id == series.id {
            g = lastSeries.group
        } else {
            g = group(of: series)
            lastSeries = (series.id, g)
        }
        guard g >= 0 else { return }
        let window = interval.map { Int((start - lower) / $0) } ?? 0
        let base: Int
        if let known = groups[g].slot(window) {
            base = known
        } else {
            base = groups[g].rollups.count
            groups[g].setSlot(window, base)
            for _ in 0..<fields { groups[g].rollups.append(nil) }
            budget.addRows(1)
        }
        if groups[g].rollups[base + f] == nil {
            groups[g].rollups[base + f] = consume cell
        } else {
            groups[g].rollups[base + f]!.merge(cell)
        }
    }

    private mutating func group(of series: SeriesInfo) -> Int {
        if let known = groupOfSeries[series.id] { return known }
        if groupOfSeries.count >= maxSeries {
            budget.exceed(
                "max-select-series limit exceeded: (more than \(maxSeries)/\(maxSeries)) ([query] max_select_series): narrow the WHERE condition"
            )
            return -1
        }
        let g: Int
        if let filter, !filter.matches(series) {
            g = -1
        } else {
            let key =
                groupByAllTags
                ? series.tags.map { "\($0.key)\u{0}\($0.value)" } : groupKeys.map { series.tag($0) ?? "" }
            if let existing = groupIndex[key] {
                g = existing
            } else {
                g = groups.count
                groupIndex[key] = g
                let indexed = dense && denseBudget >= windowCount
                if indexed { denseBudget -= windowCount }
                groups.append(
                    WindowGroup(
                        key: key, tags: series.tags,
                        dense: indexed ? Array(repeating: Int32(-1), count: windowCount) : []))
            }
            if groupByAllTags {
                for t in series.tags where !groupKeys.contains(t.key) { groupKeys.append(t.key) }
            }
        }
        groupOfSeries[series.id] = g
        return g
    }
}
