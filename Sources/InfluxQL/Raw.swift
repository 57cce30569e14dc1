import Rollups

extension SelectExecution {
    /// A select of fields and tags without functions: a row per point (per series and time), from the points the
    /// cells keep; a cell that keeps none (more than ``FieldRollup/exactLimit`` points a bucket) is a clear error.
    func raw(_ plan: Plan) throws -> [ResultSeries] {
        var plan = plan
        // Fields the condition names are read too (a row's condition sees every field of the row).
        if let condition = plan.pointCondition {
            for f in condition.fields.sorted() where !plan.fields.contains(f) {
                plan.fields.append(f)
                plan.fieldTypes.append(catalog.fields(of: plan.measurement)[f])
            }
        }
        let r = try range(extendBefore: false)
        var acc = Accumulator<FieldRollup>(
            windowCount: 1, fields: plan.fields.count, groupByAllTags: select.groupByAllTags,
            groupKeys: select.groupByTags, budget: budget, maxSeries: data.maxSelectSeries)
        var ordinal: [UInt64: Int32] = [:]
        var summarized = false
        var held = 0
        try visit(plan, from: r.pointFrom, to: r.pointTo, boundary: r.boundary, sketches: false) {
            start, bucket, series, f, cell in
            guard start + bucket > r.pointFrom, start < r.pointTo else { return }
            let g = acc.group(of: series)
            guard g >= 0 else { return }
            guard let points = cell.exactPoints else {
                summarized = true
                return
            }
            let s: Int32
            if let known = ordinal[series.id] {
                s = known
            } else {
                s = Int32(acc.groups[g].series.firstIndex(of: series) ?? 0)
                ordinal[series.id] = s
            }
            for p in points where p.time >= r.pointFrom && p.time < r.pointTo {
                acc.groups[g].raw.append(
                    RawPoint(time: p.time, series: s, field: Int32(f), value: Self.value(of: p, in: cell)))
            }
            held += points.count
            if held > 1 << 16 {
                if !budget.takePoints(held) {
                    budget.exceed(
                        "max-row-limit exceeded: the raw points read exceed what a query may hold ([query] max_row_limit): narrow the time range or aggregate"
                    )
                }
                budget.addRows(held)
                held = 0
            }
        }
        if summarized {
            throw QueryError(
                "raw points are kept only while a bucket holds at most \(FieldRollup.exactLimit) of a field; this range has more: select an aggregate with GROUP BY time() (e.g. mean(), last())"
            )
        }
        let selected = plan.terms.flatMap(\.rawFields)
        return try emit(plan, acc) { group in
            var points = group.raw
            points.sort { ($0.time, $0.series, $0.field) < ($1.time, $1.series, $1.field) }
            let width = plan.fields.count
            // Rows: (time, series) with a value per field.
            var rowTimes: [Int64] = []
            var rowSeries: [Int32] = []
            var cells: [ResultValue] = []
            for p in points {
                if rowTimes.last != p.time || rowSeries.last != p.series {
                    rowTimes.append(p.time)
                    rowSeries.append(p.series)
                    cells.append(contentsOf: repeatElement(ResultValue.null, count: width))
                }
                cells[(rowTimes.count - 1) * width + Int(p.field)] = p.value
            }
            var keep = [Bool](repeating: true, count: rowTimes.count)
            for k in rowTimes.indices {
                let row = cells[(k * width)..<((k + 1) * width)]
                if !selected.isEmpty, selected.allSatisfy({ row[row.startIndex + $0].isNull }) { keep[k] = false }
                if let condition = plan.pointCondition, keep[k] {
                    let series = group.series[Int(rowSeries[k])]
                    keep[k] = condition.matches(series) { name in
                        plan.fields.firstIndex(of: name).map { row[row.startIndex + $0] }
                    }
                }
            }
            let columns = plan.terms.map { term in
                rawColumn(term, plan, group, rowTimes, rowSeries, cells, width, keep)
            }
            var times: [Int64] = []
            var values: [ResultValue] = []
            for k in rowTimes.indices where keep[k] && columns.contains(where: { $0.present[k] }) {
                times.append(rowTimes[k])
                for c in columns { values.append(c.values[k]) }
            }
            return (times, values)
        }
    }

    func rawColumn<Cell: WindowCell>(
        _ term: Term, _ plan: Plan, _ group: WindowGroup<Cell>, _ times: [Int64], _ series: [Int32],
        _ cells: [ResultValue],
        _ width: Int, _ keep: [Bool]
    ) -> Column {
        let n = times.count
        var c = Column(count: n)
        switch term {
        case .constant(let v):
            for k in 0..<n { c.values[k] = v }
        case .rawField(let f):
            for k in 0..<n where keep[k] {
                c.values[k] = cells[k * width + f]
                c.present[k] = !c.values[k].isNull
            }
        case .rawTag(let t):
            for k in 0..<n { c.values[k] = group.series[Int(series[k])].tag(t).map(ResultValue.string) ?? .null }
        case .arithmetic(let op, let a, let b):
            let x = rawColumn(a, plan, group, times, series, cells, width, keep)
            let y = rawColumn(b, plan, group, times, series, cells, width, keep)
            for k in 0..<n {
                c.values[k] = Self.arithmetic(op, x.values[k], y.values[k])
                c.present[k] = x.present[k] || y.present[k]
            }
        case .transform(let t, let inner):
            let input = rawColumn(inner, plan, group, times, series, cells, width, keep)
            // Over the rows kept, in time order.
            var masked = input
            for k in 0..<n where !keep[k] { masked.values[k] = .null }
            transform(t, masked, into: &c, starts: times)
        case .aggregate:
            break
        }
        return c
    }
}
