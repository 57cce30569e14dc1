import Rollups

/// The groups of a statement as cells arrive: each cell (window, series, field) is merged into its group's slot.
struct Accumulator<Cell: WindowCell> {
    let windowCount: Int
    let fields: Int
    let dense: Bool
    var denseBudget: Int
    let groupByAllTags: Bool
    let budget: QueryBudget
    let maxSeries: Int
    var groupKeys: [String]
    var groups: [WindowGroup<Cell>] = []
    var groupIndex: [[String]: Int] = [:]
    var groupOfSeries: [UInt64: Int] = [:]
    var lastSeries: (id: UInt64, group: Int)?
    /// Whether windows may still keep their points (``QueryBudget/takePoints(_:)``).
    var keepPoints = true

    init(
        windowCount: Int, fields: Int, groupByAllTags: Bool, groupKeys: [String], budget: QueryBudget,
        maxSeries: Int
    ) {
        self.windowCount = windowCount
        self.fields = fields
        self.dense = windowCount <= 4_096
        self.denseBudget = 1 << 24
        self.groupByAllTags = groupByAllTags
        self.groupKeys = groupKeys
        self.budget = budget
        self.maxSeries = maxSeries
    }

    @inline(__always)
    mutating func group(of series: SeriesInfo) -> Int {
        if let lastSeries, lastSeries.id == series.id { return lastSeries.group }
        let g = lookup(series)
        lastSeries = (series.id, g)
        return g
    }

    private mutating func lookup(_ series: SeriesInfo) -> Int {
        if let known = groupOfSeries[series.id] { return known }
        if groupOfSeries.count >= maxSeries {
            budget.exceed(
                "max-select-series limit exceeded: (more than \(maxSeries)/\(maxSeries)) ([query] max_select_series): narrow the WHERE condition"
            )
            return -1
        }
        let key =
            groupByAllTags
            ? series.tags.map { "\($0.key)\u{0}\($0.value)" } : groupKeys.map { series.tag($0) ?? "" }
        let g: Int
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
        groups[g].series.append(series)
        groupOfSeries[series.id] = g
        return g
    }

    /// Merges `cell` into its group's slot of `window` and field `f` (a cell is 160 bytes or more: it is copied
    /// once, where it is kept, and never on the way).
    @inline(__always)
    mutating func add(_ window: Int, _ g: Int, _ f: Int, _ cell: borrowing Cell) {
        guard let base = groups[g].slot(window) else {
            groups[g].setSlot(window, groups[g].cells.count)
            for k in 0..<fields { groups[g].cells.append(k == f ? copy cell : nil) }
            budget.addRows(1)
            return
        }
        if groups[g].cells[base + f] == nil {
            groups[g].cells[base + f] = copy cell
        } else {
            var limit = 0
            // Points kept while merging are the query's to pay for (``QueryBudget/takePoints(_:)``).
            if keepPoints, groups[g].cells[base + f]!.pointCount > 0, cell.pointCount > 0 {
                if budget.takePoints(cell.pointCount) {
                    limit = SelectExecution.windowExactLimit
                } else {
                    keepPoints = false
                }
            }
            groups[g].cells[base + f]!.merge(cell, exactLimit: limit)
        }
    }
}

/// A column of an answer over a group's windows: values, whether a row is answered there, and the selected
/// point's time where a selector has one.
struct Column {
    var values: [ResultValue]
    var present: [Bool]
    var times: [Int64?]

    init(count: Int) {
        values = Array(repeating: .null, count: count)
        present = Array(repeating: false, count: count)
        times = Array(repeating: nil, count: count)
    }
}

extension SelectExecution {
    func aggregated(_ plan: Plan) throws -> [ResultSeries] {
        var extend = false
        var multiRow: Function?
        for t in plan.terms {
            t.visitTransforms { if $0.readsBefore { extend = true } }
            if case .aggregate(_, let fn) = t, fn.multiRow { multiRow = fn }
        }
        if let fn = multiRow, plan.terms.count > 1 {
            throw QueryError("selector function \(fn.name)() cannot be combined with other functions")
        }
        if case .top(_, let tags)? = multiRow, !tags.isEmpty {
            throw QueryError("top() and bottom() with tag arguments are not answered by metricsd (docs/influxql.md)")
        }
        if case .bottom(_, let tags)? = multiRow, !tags.isEmpty {
            throw QueryError("top() and bottom() with tag arguments are not answered by metricsd (docs/influxql.md)")
        }
        let r = try range(extendBefore: extend && select.interval != nil)
        let windows = r.grid.count
        guard windows > 0 else { return [] }
        let width = data.bucketWidth
        let d = select.interval
        // Summaries answer when nothing needs points, sketches or strings and every window holds whole buckets.
        let gridOfBuckets = r.grid.segments.allSatisfy { $0.step % width == 0 && $0.start % width == 0 }
        let summaries = !plan.needsRollups && !plan.needsSketch && (d == nil || gridOfBuckets)
        if summaries {
            var acc = Accumulator<FieldSummary>(
                windowCount: windows, fields: plan.fields.count, groupByAllTags: select.groupByAllTags,
                groupKeys: select.groupByTags, budget: budget, maxSeries: data.maxSelectSeries)
            // Whole buckets as summaries; the buckets the range's ends cut, as cells trimmed to the range.
            let innerFrom = (r.pointFrom + width - 1) / width * width
            // A range that ends after now ends in the open minute: no point is past now but for clock skew, so
            // that minute is read whole with the others (a dashboard's refresh reads its range once, not twice).
            let innerTo = r.pointTo > now ? (r.pointTo + width - 1) / width * width : Self.floor(r.pointTo, width)
            if innerFrom < innerTo {
                try visitSummaries(plan, from: innerFrom, to: innerTo, boundary: r.boundary) {
                    start, bucket, series, f, cell in
                    let g = acc.group(of: series)
                    guard g >= 0, let w = r.grid.index(Swift.max(start, r.pointFrom)) else { return }
                    acc.add(w, g, f, cell)
                }
            }
            for (a, b) in [(r.pointFrom, Swift.min(innerFrom, r.pointTo)), (Swift.max(innerTo, innerFrom), r.pointTo)]
            where a < b && (a % width != 0 || b % width != 0) {
                try cutBucket(plan, from: a, to: b, r, &acc)
            }
            return try answer(plan, acc, r, multiRow: multiRow)
        }
        var acc = Accumulator<FieldRollup>(
            windowCount: windows, fields: plan.fields.count, groupByAllTags: select.groupByAllTags,
            groupKeys: select.groupByTags, budget: budget, maxSeries: data.maxSelectSeries)
        if let condition = plan.pointCondition {
            try conditioned(plan, condition, r, &acc)
            return try answer(plan, acc, r, multiRow: multiRow)
        }
        try visit(
            plan, from: r.pointFrom, to: r.pointTo, boundary: r.boundary, sketches: plan.needsSketch
        ) { start, bucket, series, f, cell in
            guard start + bucket > r.pointFrom, start < r.pointTo else { return }
            let g = acc.group(of: series)
            guard g >= 0 else { return }
            ingest(cell, start: start, bucket: bucket, g: g, f: f, r, series, plan) { w, c in acc.add(w, g, f, c) }
        }
        return try answer(plan, acc, r, multiRow: multiRow)
    }

    /// The cells of a bucket the range's start or end cuts (`[a, b)` inside one bucket), into summaries of their
    /// values in the range. A cell whose values all lie on one side of the cut is answered by its summary (whole,
    /// or not at all); only the cells with values on both sides are read whole and trimmed point by point.
    func cutBucket(_ plan: Plan, from a: Int64, to b: Int64, _ r: Range, _ acc: inout Accumulator<FieldSummary>)
        throws
    {
        struct Key: Hashable {
            var series: UInt64
            var field: Int
        }
        var whole: [(key: Key, series: SeriesInfo, start: Int64, cell: FieldSummary)] = []
        var straddling = Set<Key>()
        try visitSummaries(plan, from: a, to: b, boundary: r.boundary) { start, bucket, series, f, cell in
            guard start + bucket > a, start < b else { return }
            let key = Key(series: series.id, field: f)
            guard let (first, last) = cell.valueTimes, !straddling.contains(key) else {
                straddling.insert(key)
                return
            }
            if last < a || first >= b { return }
            if first >= a && last < b {
                whole.append((key, series, start, cell))
            } else {
                straddling.insert(key)
            }
        }
        for entry in whole where !straddling.contains(entry.key) {
            let g = acc.group(of: entry.series)
            guard g >= 0, let w = r.grid.index(Swift.max(entry.start, r.pointFrom)) else { continue }
            acc.add(w, g, entry.key.field, entry.cell)
        }
        guard !straddling.isEmpty else { return }
        // Without a tag condition the read is narrowed to the straddling series; with one, the series the
        // condition takes are remembered by its text (a narrowed read could not be) and the rest are passed over.
        let only = plan.tagFilter == nil ? Set(straddling.map(\.series)) : nil
        try visit(plan, from: a, to: b, boundary: r.boundary, sketches: false, only: only) {
            start, bucket, series, f, cell in
            guard start + bucket > a, start < b, straddling.contains(Key(series: series.id, field: f)) else { return }
            let g = acc.group(of: series)
            guard g >= 0 else { return }
            ingest(cell, start: start, bucket: bucket, g: g, f: f, r, series, plan) { w, c in
                acc.add(w, g, f, FieldSummary(c))
            }
        }
    }

    /// A field condition: the cells of a series and bucket are joined by time (every field the condition names is
    /// read too), and each point of an aggregated field is kept when the condition holds for its row — the points
    /// the cells keep; a cell that keeps none is a clear error.
    func conditioned(_ plan: Plan, _ condition: PointCondition, _ r: Range, _ acc: inout Accumulator<FieldRollup>)
        throws
    {
        var read = plan
        for name in condition.fields.sorted() where !read.fields.contains(name) {
            read.fields.append(name)
            read.fieldTypes.append(catalog.fields(of: plan.measurement)[name])
        }
        struct Key: Hashable {
            var series: UInt64
            var start: Int64
        }
        var buffered: [Key: (series: SeriesInfo, bucket: Int64, cells: [Int: FieldRollup])] = [:]
        var order: [Key] = []
        try visit(read, from: r.pointFrom, to: r.pointTo, boundary: r.boundary, sketches: false) {
            start, bucket, series, f, cell in
            guard start + bucket > r.pointFrom, start < r.pointTo else { return }
            let key = Key(series: series.id, start: start)
            if buffered[key] == nil {
                buffered[key] = (series, bucket, [:])
                order.append(key)
                // What is buffered counts like the slots it becomes (`[query] max_row_limit`).
                budget.addRows(1)
            }
            if buffered[key]!.cells[f] == nil {
                buffered[key]!.cells[f] = cell
            } else {
                buffered[key]!.cells[f]!.merge(cell, exactLimit: Self.windowExactLimit)
            }
        }
        for key in order {
            try budget.check()
            let entry = buffered[key]!
            var columns: [String: [Int64: ResultValue]] = [:]
            for name in condition.fields {
                guard let f = read.fields.firstIndex(of: name), let cell = entry.cells[f] else { continue }
                guard let points = cell.exactPoints else { throw Self.needsPoints("a field condition") }
                var byTime: [Int64: ResultValue] = [:]
                for p in points { byTime[p.time] = Self.value(of: p, in: cell) }
                columns[name] = byTime
            }
            let g = acc.group(of: entry.series)
            guard g >= 0 else { continue }
            for f in 0..<plan.fields.count {
                guard let cell = entry.cells[f] else { continue }
                guard cell.exactPoints != nil else { throw Self.needsPoints("a field condition") }
                let name = plan.fields[f]
                let keep: (ExactPoint) -> Bool = { p in
                    let own = Self.value(of: p, in: cell)
                    return condition.matches(entry.series) { n in n == name ? own : columns[n]?[p.time] }
                }
                ingest(cell, start: key.start, bucket: entry.bucket, g: g, f: f, r, entry.series, plan, keep: keep) {
                    w, c in acc.add(w, g, f, c)
                }
            }
        }
    }

    /// A cell into its windows: whole when it lies inside the range and one window (or keeps no points: then in
    /// the window of its start, the documented approximation), else point by point (trimmed to the range, split
    /// at window bounds, filtered by the field condition).
    func ingest(
        _ cell: FieldRollup, start: Int64, bucket: Int64, g: Int, f: Int, _ r: Range, _ series: SeriesInfo,
        _ plan: Plan, keep: ((ExactPoint) -> Bool)? = nil, _ add: (Int, FieldRollup) -> Void
    ) {
        let end = start + bucket
        let inside = start >= r.pointFrom && end <= r.pointTo
        let first = r.grid.index(Swift.max(start, r.pointFrom))
        if keep == nil, inside, let first, first == r.grid.index(end - 1) {
            return add(first, cell)
        }
        guard let points = cell.exactPoints else {
            if let first { add(first, cell) }
            return
        }
        var run: [ExactPoint] = []
        var runWindow = -1
        func flush() {
            if !run.isEmpty, runWindow >= 0 { add(runWindow, Self.subset(cell, run)) }
            run.removeAll(keepingCapacity: true)
        }
        for p in points where p.time >= r.pointFrom && p.time < r.pointTo {
            if let keep, !keep(p) { continue }
            guard let w = r.grid.index(p.time) else { continue }
            if w != runWindow {
                flush()
                runWindow = w
            }
            run.append(p)
        }
        flush()
    }

    static func value(of p: ExactPoint, in cell: FieldRollup) -> ResultValue {
        switch cell.kind {
        case .numeric: cell.isInteger ? .integer(Int64(p.value)) : .float(p.value)
        case .boolean: .boolean(p.value != 0)
        case .string: .string(cell.string(of: p))
        case .distinct: .null
        }
    }

    /// The cell of some of `cell`'s points.
    static func subset(_ cell: FieldRollup, _ points: [ExactPoint]) -> FieldRollup {
        if points.count == cell.pointCount { return cell }
        var out = FieldRollup(kind: cell.kind)
        for p in points {
            switch cell.kind {
            case .numeric: out.add(p.value, at: p.time, integer: cell.isInteger)
            case .boolean: out.add(p.value != 0, at: p.time)
            case .string:
                cell.withBytes(of: p) { bytes in Array(bytes).withUnsafeBufferPointer { out.add($0, at: p.time) } }
            case .distinct: break
            }
        }
        return out
    }

    // MARK: - Answers

    func answer<Cell: WindowCell>(_ plan: Plan, _ acc: consuming Accumulator<Cell>, _ r: Range, multiRow: Function?)
        throws
        -> [ResultSeries]
    {
        try emit(plan, acc) { group in try rows(plan, group, r, multiRow: multiRow) }
    }

    /// The groups' series, ordered, paged (LIMIT, OFFSET, SLIMIT, SOFFSET) and reversed for ORDER BY time DESC.
    func emit<Cell: WindowCell>(
        _ plan: Plan, _ acc: consuming Accumulator<Cell>,
        rows: (borrowing WindowGroup<Cell>) throws -> ([Int64], [ResultValue])
    ) throws -> [ResultSeries] {
        if let stop = budget.stopReason { throw stop }
        var groupKeys = acc.groupKeys
        if select.groupByAllTags { groupKeys.sort() }
        // Series in InfluxDB's order: by the group's tag values in the order of their sorted keys.
        let sortedKeys = groupKeys.sorted()
        func key(_ tags: [TagPair], _ key: [String]) -> [String] {
            if select.groupByAllTags { return sortedKeys.map { k in tags.first { $0.key == k }?.value ?? "" } }
            return sortedKeys.map { k in key[groupKeys.firstIndex(of: k)!] }
        }
        // The groups are ordered by index and each is moved out of the accumulator to be answered (a group is a
        // few arrays: copies of a thousand groups showed in a profile).
        let keys = acc.groups.indices.map { key(acc.groups[$0].tags, acc.groups[$0].key) }
        var ordered = Array(acc.groups.indices)
        ordered.sort { keys[$0].lexicographicallyPrecedes(keys[$1]) }
        // ORDER BY time DESC orders the series descending too (InfluxDB's iterators run backwards).
        if select.descending { ordered.reverse() }
        let columns = ["time"] + plan.columns
        var out: [ResultSeries] = []
        var skipped = 0
        var held = 0
        do {
            for index in ordered {
                try budget.check()
                // Past the answer's row limit nothing more is built (``Engine/run`` cuts and marks it partial).
                if held > data.maxRowLimit { break }
                var group = WindowGroup<Cell>(key: [], tags: [], dense: [])
                swap(&group, &acc.groups[index])
                var (times, values) = try rows(group)
                let width = plan.terms.count
                if select.descending {
                    times.reverse()
                    values = Self.reversedRows(values, width: width)
                }
                if let offset = select.offsetRows, offset > 0 {
                    let n = Swift.min(offset, times.count)
                    times.removeFirst(n)
                    values.removeFirst(n * width)
                }
                if let limit = select.limit, limit > 0, limit < times.count {
                    times.removeSubrange(limit...)
                    values.removeSubrange((limit * width)...)
                }
                guard !times.isEmpty else { continue }
                if let soffset = select.soffset, skipped < soffset {
                    skipped += 1
                    continue
                }
                if let slimit = select.slimit, slimit > 0, out.count >= slimit { break }
                var tags: [(key: String, value: String)]?
                if !groupKeys.isEmpty {
                    if select.groupByAllTags {
                        tags = groupKeys.map { k in (k, group.tags.first { $0.key == k }?.value ?? "") }
                    } else {
                        tags = zip(groupKeys, group.key).map { ($0, $1) }
                    }
                }
                held += times.count
                out.append(
                    ResultSeries(name: plan.measurement, tags: tags, columns: columns, times: times, values: values))
            }
        }
        return out
    }

    /// A group's rows: times and values (``Plan/terms`` a row).
    func rows<Cell: WindowCell>(_ plan: Plan, _ whole: WindowGroup<Cell>, _ range: Range, multiRow: Function?)
        throws -> ([Int64], [ResultValue])
    {
        if multiRow == nil, range.bounded, let functions = plainFunctions(plan) {
            return try plainRows(plan, functions, whole, range)
        }
        guard let firstSlot = whole.windows(count: range.grid.count).first else { return ([], []) }
        // Without a lower bound a group's windows start at its first one (InfluxDB fills from the first point):
        // the columns cover those windows only.
        let lo = range.bounded ? 0 : firstSlot
        let group = whole.slice(from: lo)
        var r = range
        r.grid = r.grid.slice(from: lo)
        r.firstAnswered = Swift.max(0, r.firstAnswered - lo)
        let windows = r.grid.count
        let slotted = group.windows(count: windows)
        var times: [Int64] = []
        var values: [ResultValue] = []
        if let fn = multiRow, case .aggregate(let f, _) = plan.terms[0] {
            for w in slotted where w >= r.firstAnswered {
                guard let base = group.slot(w), let cell = group.cells[base + f] else { continue }
                for (t, v) in try Self.multi(fn, cell, fields: plan.fields[f]) {
                    times.append(select.interval == nil && fn == .distinct ? (from ?? 0) : (t ?? r.grid.start(w)))
                    values.append(v)
                }
            }
            return (times, values)
        }
        // Fill runs over every window of the range, or from the group's first one when the range has no start.
        let fillFrom = r.bounded ? 0 : (slotted.first ?? 0)
        if case .transform(.holtWinters(let h, let m, let fit), let inner) = plan.terms[0] {
            guard plan.terms.count == 1 else {
                throw QueryError("holt_winters() cannot be combined with other functions in metricsd")
            }
            // The forecast's length is the client's: bounded as windows are (`[query] max_select_buckets`).
            guard h <= data.maxSelectBuckets else {
                throw QueryLimitExceeded(
                    "max-select-buckets limit exceeded: holt_winters() forecasts \(h) points, more than \(data.maxSelectBuckets) ([query] max_select_buckets)"
                )
            }
            let input = try column(inner, plan, group, r, fillFrom: fillFrom)
            var points: [(time: Int64, value: Double)] = []
            for w in r.firstAnswered..<windows {
                if let v = input.values[w].double { points.append((r.grid.start(w), v)) }
            }
            var model = HoltWinters(h: h, m: m, withFit: fit, interval: select.interval ?? 1)
            for (t, v) in try model.forecast(points, check: { try budget.check() }) {
                times.append(t)
                values.append(.float(v))
            }
            return (times, values)
        }
        let columns = try plan.terms.map { try column($0, plan, group, r, fillFrom: fillFrom) }
        let grouped = select.interval != nil
        // Without GROUP BY time the row's time is the range's start — or, for a selector alone, its point's.
        var selectorTime = false
        if !grouped, plan.terms.count == 1, case .aggregate(_, let fn) = plan.terms[0], fn.isSelector {
            selectorTime = true
        }
        var integralAlone = false
        if !grouped, plan.terms.count == 1, case .aggregate(_, .integral) = plan.terms[0] { integralAlone = true }
        for w in r.firstAnswered..<windows {
            guard columns.contains(where: { $0.present[w] }) else { continue }
            var t: Int64 = grouped ? r.grid.start(w) : (from ?? 0)
            if selectorTime, let pt = columns[0].times[w] { t = pt }
            if integralAlone { t = 0 }
            times.append(t)
            for c in columns { values.append(c.values[w]) }
        }
        return (times, values)
    }

    /// The functions of a statement whose every term is one function of one field's window, answered without
    /// looking at other windows (no transformation, no integral, fill other than `previous` and `linear`): its
    /// rows are built in one pass (``plainRows(_:_:_:_:)``), nothing per window but the values.
    func plainFunctions(_ plan: Plan) -> [(field: Int, function: Function)]? {
        switch select.fill {
        case .previous, .linear: return nil
        default: break
        }
        var out: [(field: Int, function: Function)] = []
        out.reserveCapacity(plan.terms.count)
        for term in plan.terms {
            guard case .aggregate(let f, let fn) = term, !Self.isIntegral(fn), !fn.multiRow else { return nil }
            out.append((f, fn))
        }
        return out
    }

    /// ``rows(_:_:_:multiRow:)`` for plain functions (``plainFunctions(_:)``) over a bounded range: what
    /// ``column(_:_:_:_:_:fillFrom:)``, ``fill(_:_:_:from:integer:)`` and the row loop give, in one pass.
    func plainRows<Cell: WindowCell>(
        _ plan: Plan, _ functions: [(field: Int, function: Function)], _ group: WindowGroup<Cell>, _ r: Range
    ) throws -> ([Int64], [ResultValue]) {
        let grouped = select.interval != nil
        let width = functions.count
        // Without GROUP BY time the row's time is the range's start — or, for a selector alone, its point's.
        let selectorTime = !grouped && width == 1 && functions[0].function.isSelector
        // What fills an empty window of each term (GROUP BY time only), `nil` where the window stays out.
        let fills: [ResultValue?] = functions.map { f, fn in
            guard grouped else { return nil }
            switch select.fill {
            case .none, .previous, .linear: return nil
            case .null: return fn == .count || fn == .countDistinct ? .integer(0) : .null
            case .value(let v):
                let integer = plan.fieldTypes[f] == .integer
                return fn == .count || fn == .countDistinct || (integer && v == v.rounded() && fn != .mean)
                    ? .integer(Int64(v)) : .float(v)
            }
        }
        let filled = fills.contains { $0 != nil }
        let windows = r.grid.count
        var times: [Int64] = []
        var values: [ResultValue] = []
        if !filled {
            times.reserveCapacity(Swift.min(windows, group.cells.count / Swift.max(1, plan.fields.count)))
            values.reserveCapacity(times.capacity * width)
        }
        for w in r.firstAnswered..<windows {
            let base = group.slot(w)
            guard base != nil || filled else { continue }
            var present = false
            var time: Int64?
            for (f, fn) in functions {
                var value = ResultValue.null
                if let base, let cell = group.cells[base + f] {
                    let (v, t) = try Self.apply(fn, cell, field: plan.fields[f])
                    value = v
                    if !v.isNull {
                        present = true
                        time = time ?? t
                    }
                }
                values.append(value)
            }
            if filled {
                // fill(null) and fill(x) answer every window: an empty term takes its fill.
                for k in 0..<width where values[values.count - width + k].isNull {
                    values[values.count - width + k] = fills[k] ?? .null
                }
                present = true
            }
            guard present else {
                values.removeLast(width)
                continue
            }
            var t: Int64 = grouped ? r.grid.start(w) : (from ?? 0)
            if selectorTime, let time { t = time }
            times.append(t)
        }
        return (times, values)
    }

    /// A term over a group's windows.
    func column<Cell: WindowCell>(
        _ term: Term, _ plan: Plan, _ group: WindowGroup<Cell>, _ r: Range, fillFrom: Int
    ) throws -> Column {
        let windows = r.grid.count
        switch term {
        case .constant(let v):
            var c = Column(count: windows)
            for w in 0..<windows { c.values[w] = v }
            return c
        case .rawField, .rawTag:
            return Column(count: windows)
        case .aggregate(let f, let fn):
            var c = Column(count: windows)
            if case .integral(let unit) = fn, select.interval != nil {
                try integral(&c, unit: unit, f, group, r)
            } else {
                for w in group.windows(count: windows) {
                    guard let base = group.slot(w), let cell = group.cells[base + f] else { continue }
                    let (v, t) = try Self.apply(fn, cell, field: plan.fields[f])
                    c.values[w] = v
                    c.times[w] = t
                    c.present[w] = !v.isNull
                }
            }
            // integral() is a stream function in InfluxDB: its windows are not filled.
            if select.interval != nil, !Self.isIntegral(fn) {
                fill(&c, fn, r, from: fillFrom, integer: plan.fieldTypes[f] == .integer)
            }
            return c
        case .transform(let t, let inner):
            let input = try column(inner, plan, group, r, fillFrom: fillFrom)
            var c = Column(count: windows)
            transform(t, input, into: &c, starts: (0..<windows).map { r.grid.start($0) })
            return c
        case .arithmetic(let op, let a, let b):
            let x = try column(a, plan, group, r, fillFrom: fillFrom)
            let y = try column(b, plan, group, r, fillFrom: fillFrom)
            var c = Column(count: windows)
            for w in 0..<windows {
                c.present[w] = x.present[w] || y.present[w]
                c.values[w] = Self.arithmetic(op, x.values[w], y.values[w])
                c.times[w] = x.times[w] ?? y.times[w]
            }
            return c
        }
    }

    static func isIntegral(_ fn: Function) -> Bool {
        if case .integral = fn { return true }
        return false
    }

    /// `fill(…)` over a column's windows from `from`: count answers 0 in an empty window (as InfluxDB does).
    func fill(_ c: inout Column, _ fn: Function, _ r: Range, from: Int, integer: Bool) {
        let windows = c.values.count
        switch select.fill {
        case .none: return
        case .null:
            let zero = fn == .count || fn == .countDistinct
            for w in from..<windows where !c.present[w] {
                c.present[w] = true
                if zero { c.values[w] = .integer(0) }
            }
        case .value(let v):
            let typed: ResultValue =
                fn == .count || fn == .countDistinct || (integer && v == v.rounded() && fn != .mean)
                ? .integer(Int64(v)) : .float(v)
            for w in from..<windows where !c.present[w] {
                c.present[w] = true
                c.values[w] = typed
            }
        case .previous:
            var last: ResultValue = .null
            for w in from..<windows {
                if c.present[w] {
                    last = c.values[w]
                } else {
                    c.present[w] = true
                    c.values[w] = last
                }
            }
        case .linear:
            var previous: Int?
            for w in from..<windows {
                guard c.present[w] else { continue }
                if let p = previous, w - p > 1, let a = c.values[p].double, let b = c.values[w].double {
                    let t0 = r.grid.start(p)
                    let t1 = r.grid.start(w)
                    for k in (p + 1)..<w {
                        let t = r.grid.start(k)
                        // InfluxDB's linear fill: the slope over whole windows.
                        let v = a + (b - a) * Double(t - t0) / Double(t1 - t0)
                        if case .integer = c.values[w], case .integer = c.values[p] {
                            c.values[k] = .integer(Int64(v))
                        } else {
                            c.values[k] = .float(v)
                        }
                    }
                }
                previous = w
            }
            for w in from..<windows { c.present[w] = true }
        }
    }

    /// A transformation over the windows that hold a value, as InfluxDB streams them (nulls skipped).
    func transform(_ t: Transform, _ input: Column, into c: inout Column, starts: [Int64]) {
        let windows = input.values.count
        var previous: (time: Int64, value: ResultValue)?
        var sum: ResultValue = .null
        var ring: [Double] = []
        var ringSum = 0.0
        var ringAt = 0
        let unitDefault = select.interval ?? 1_000_000_000
        for w in 0..<windows {
            let v = input.values[w]
            guard !v.isNull else { continue }
            let time = starts[w]
            switch t {
            case .derivative(let unit, let nonNegative):
                if let p = previous, let a = p.value.double, let b = v.double {
                    let elapsed = Double(time - p.time) / Double(unit ?? unitDefault)
                    let diff = (b - a) / elapsed
                    if !(nonNegative && diff < 0) {
                        c.values[w] = .float(diff)
                        c.present[w] = true
                    }
                }
                previous = (time, v)
            case .difference(let nonNegative):
                if let p = previous {
                    var out: ResultValue = .null
                    if case .integer(let a) = p.value, case .integer(let b) = v {
                        if !(nonNegative && b &- a < 0) { out = .integer(b &- a) }
                    } else if let a = p.value.double, let b = v.double {
                        if !(nonNegative && b - a < 0) { out = .float(b - a) }
                    }
                    if !out.isNull {
                        c.values[w] = out
                        c.present[w] = true
                    }
                }
                previous = (time, v)
            case .cumulativeSum:
                switch (sum, v) {
                case (.null, _): sum = v
                case (.integer(let a), .integer(let b)): sum = .integer(a &+ b)
                default: sum = .float((sum.double ?? 0) + (v.double ?? 0))
                }
                c.values[w] = sum
                c.present[w] = true
            case .movingAverage(let n):
                guard let x = v.double else { continue }
                if ring.count < n {
                    ring.append(x)
                    ringSum += x
                    if ring.count == n {
                        c.values[w] = .float(ringSum / Double(n))
                        c.present[w] = true
                    }
                } else {
                    ringSum += x - ring[ringAt]
                    ring[ringAt] = x
                    ringAt = (ringAt + 1) % n
                    c.values[w] = .float(ringSum / Double(n))
                    c.present[w] = true
                }
            case .holtWinters:
                break
            case .elapsed(let unit):
                if let p = previous {
                    c.values[w] = .integer((time - p.time) / unit)
                    c.present[w] = true
                }
                previous = (time, v)
            }
        }
    }

    /// `integral()` with GROUP BY time, as InfluxDB's reducer streams a group's points: trapezoids between
    /// points, the area up to a window's end interpolated towards the next window's first point.
    func integral<Cell: WindowCell>(
        _ c: inout Column, unit: Int64, _ f: Int, _ group: WindowGroup<Cell>, _ r: Range
    ) throws {
        var points: [ExactPoint] = []
        for w in group.windows(count: r.grid.count) {
            guard let base = group.slot(w), let cell = group.cells[base + f] else { continue }
            guard let p = cell.exactPoints else { throw Self.needsPoints("integral") }
            points += p
        }
        points.sort { $0.time < $1.time }
        var previous: ExactPoint?
        var windowStart: Int64 = 0
        var windowEnd: Int64 = 0
        var sum = 0.0
        func emit() {
            if let w = r.grid.index(windowStart) {
                c.values[w] = .float(sum)
                c.present[w] = true
            }
        }
        for p in points {
            guard var prev = previous else {
                previous = p
                if let w = r.grid.index(p.time) {
                    windowStart = r.grid.start(w)
                    windowEnd = r.grid.end(w)
                }
                continue
            }
            if prev.time == p.time {
                previous = p
                continue
            }
            if p.time >= windowEnd {
                if prev.time != windowEnd {
                    let value =
                        prev.value + (p.value - prev.value) / Double(p.time - prev.time) * Double(windowEnd - prev.time)
                    sum += 0.5 * (value + prev.value) * Double(windowEnd - prev.time) / Double(unit)
                    prev = ExactPoint(time: windowEnd, value: value)
                }
                emit()
                if let w = r.grid.index(p.time) {
                    windowStart = r.grid.start(w)
                    windowEnd = r.grid.end(w)
                }
                sum = 0
            }
            sum += 0.5 * (p.value + prev.value) * Double(p.time - prev.time) / Double(unit)
            previous = p
        }
        if let prev = previous, prev.time != windowStart { emit() }
    }

    static func needsPoints(_ function: String) -> QueryError {
        QueryError(
            "\(function)() needs every value of a window, and a window here holds more than metricsd keeps (\(FieldRollup.exactLimit) a bucket, \(windowExactLimit) a window): narrow GROUP BY time() or the range, or use an aggregate"
        )
    }

    /// A function of one window's cell: its value, and the selected point's time for a selector.
    static func apply<Cell: WindowCell>(_ fn: Function, _ cell: Cell, field: String) throws -> (ResultValue, Int64?) {
        guard cell.count > 0 else { return (.null, nil) }
        let n = cell.numeric
        let integer = cell.kind == .numeric && cell.isInteger
        func typed(_ v: Double) -> ResultValue { integer ? .integer(Int64(v)) : .float(v) }
        switch (cell.kind, fn) {
        case (_, .count): return (.integer(cell.count), nil)
        case (.numeric, .sum): return (typed(n.sum), nil)
        case (.numeric, .mean): return (n.mean.map(ResultValue.float) ?? .null, nil)
        case (.numeric, .min): return (typed(n.min), n.minTime)
        case (.numeric, .max): return (typed(n.max), n.maxTime)
        case (.numeric, .first): return (typed(n.first), n.firstTime)
        case (.numeric, .last): return (typed(n.last), n.lastTime)
        case (.numeric, .stddev): return (n.stddev.map(ResultValue.float) ?? .null, nil)
        case (.numeric, .spread): return (typed(n.max - n.min), nil)
        case (.numeric, .median):
            if let p = cell.exactPoints {
                let v = p.map(\.value).sorted()
                if v.count % 2 == 1 { return (.float(v[v.count / 2]), nil) }
                let lo = v[v.count / 2 - 1]
                let hi = v[v.count / 2]
                return (.float(lo + (hi - lo) / 2), nil)
            }
            return (cell.quantileEstimate(0.5).map(ResultValue.float) ?? .null, nil)
        case (.numeric, .percentile(let q)):
            if let p = cell.exactPoints {
                let sorted = p.sorted { $0.value != $1.value ? $0.value < $1.value : $0.time < $1.time }
                let i = Int((Double(sorted.count) * q / 100 + 0.5).rounded(.down)) - 1
                guard i >= 0, i < sorted.count else { return (.null, nil) }
                return (typed(sorted[i].value), sorted[i].time)
            }
            return (cell.quantileEstimate(q / 100).map(typed) ?? .null, nil)
        case (.numeric, .mode), (.string, .mode):
            guard let p = cell.exactPoints else { throw needsPoints("mode") }
            if cell.kind == .string {
                let values = p.map { (cell.text(of: $0), $0.time) }
                return (.string(mode(values)), nil)
            }
            return (typed(mode(p.map { ($0.value, $0.time) })), nil)
        case (.boolean, .mode): return (.boolean(cell.trueCount * 2 >= cell.count), nil)
        case (.numeric, .integral(let unit)):
            guard let p = cell.exactPoints else { throw needsPoints("integral") }
            var sum = 0.0
            var previous: ExactPoint?
            for x in p.sorted(by: { $0.time < $1.time }) {
                if let prev = previous, prev.time != x.time {
                    sum += 0.5 * (x.value + prev.value) * Double(x.time - prev.time) / Double(unit)
                }
                previous = x
            }
            return (.float(sum), nil)
        case (.distinct, .countDistinct): return (cell.distinctEstimate.map { .integer(Int64($0)) } ?? .null, nil)
        case (_, .countDistinct):
            guard let p = cell.exactPoints else { throw needsPoints("count(distinct())") }
            if cell.kind == .string { return (.integer(Int64(Set(p.map { cell.text(of: $0) }).count)), nil) }
            return (.integer(Int64(Set(p.map(\.value)).count)), nil)
        case (.boolean, .first): return (.boolean(cell.firstBool), cell.firstTime)
        case (.boolean, .last): return (.boolean(cell.lastBool), cell.lastTime)
        case (.boolean, .max): return (.boolean(cell.trueCount > 0), nil)
        case (.boolean, .min): return (.boolean(cell.trueCount == cell.count), nil)
        case (.string, .first): return (cell.firstText.map(ResultValue.string) ?? .null, cell.firstTime)
        case (.string, .last): return (cell.lastText.map(ResultValue.string) ?? .null, cell.lastTime)
        default: return (.null, nil)
        }
    }

    /// InfluxDB's mode: values sorted (stable in time), the longest run; of equal runs the one met first.
    static func mode<T: Comparable>(_ points: [(T, Int64)]) -> T {
        let a = points.sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
        var mostFreq = 0
        var currFreq = 0
        var mostMode = a[0].0
        var mostTime = a[0].1
        var currMode = a[0].0
        var currTime = a[0].1
        for p in a {
            if p.0 != currMode {
                currFreq = 1
                currMode = p.0
                currTime = p.1
                continue
            }
            currFreq += 1
            if mostFreq > currFreq || (mostFreq == currFreq && currTime > mostTime) { continue }
            mostFreq = currFreq
            mostMode = p.0
            mostTime = p.1
        }
        return mostMode
    }

    /// top/bottom (N points, by time) and distinct (each value once, ascending) of a window.
    static func multi<Cell: WindowCell>(_ fn: Function, _ cell: Cell, fields: String) throws -> [(Int64?, ResultValue)]
    {
        guard let p = cell.exactPoints else { throw needsPoints(fn.name) }
        let integer = cell.kind == .numeric && cell.isInteger
        func typed(_ x: ExactPoint) -> ResultValue {
            switch cell.kind {
            case .string: .string(cell.text(of: x))
            case .boolean: .boolean(x.value != 0)
            default: integer ? .integer(Int64(x.value)) : .float(x.value)
            }
        }
        switch fn {
        case .top(let n, _), .bottom(let n, _):
            let top = fn.name == "top"
            let chosen = p.sorted {
                if $0.value != $1.value { return top ? $0.value > $1.value : $0.value < $1.value }
                return $0.time < $1.time
            }.prefix(n).sorted { $0.time < $1.time }
            return chosen.map { ($0.time, typed($0)) }
        default:
            var seen = Set<String>()
            var out: [(ResultValue, Double, String)] = []
            for x in p {
                let v = typed(x)
                let key = "\(v)"
                if seen.insert(key).inserted { out.append((v, x.value, cell.kind == .string ? cell.text(of: x) : "")) }
            }
            out.sort { cell.kind == .string ? $0.2 < $1.2 : $0.1 < $1.1 }
            return out.map { (nil, $0.0) }
        }
    }

    static func arithmetic(_ op: String, _ x: ResultValue, _ y: ResultValue) -> ResultValue {
        if case .integer(let a) = x, case .integer(let b) = y {
            switch op {
            case "+": return .integer(a &+ b)
            case "-": return .integer(a &- b)
            case "*": return .integer(a &* b)
            case "%": return b == 0 ? .null : .integer(a % b)
            default: return b == 0 ? .null : .float(Double(a) / Double(b))
            }
        }
        guard let a = x.double, let b = y.double, !x.isBoolean, !y.isBoolean else { return .null }
        switch op {
        case "+": return .float(a + b)
        case "-": return .float(a - b)
        case "*": return .float(a * b)
        case "%": return b == 0 ? .null : .float(a.truncatingRemainder(dividingBy: b))
        default: return b == 0 ? .null : .float(a / b)
        }
    }

    /// Rows of `width` values (one flat array) in reverse order.
    static func reversedRows(_ values: [ResultValue], width: Int) -> [ResultValue] {
        guard width > 0 else { return values }
        var out: [ResultValue] = []
        out.reserveCapacity(values.count)
        var end = values.count
        while end > 0 {
            out.append(contentsOf: values[(end - width)..<end])
            end -= width
        }
        return out
    }
}

extension ResultValue {
    var isBoolean: Bool { if case .boolean = self { true } else { false } }
}
