import Rollups

/// `SHOW …` statements over the catalogs: series, tag keys and values, fields with their types.
struct Show {
    let data: QueryData
    let catalog: Catalog
    let budget: QueryBudget

    func run(_ statement: Statement) throws -> [ResultSeries] {
        func rows(_ name: String?, _ columns: [String], _ values: [[ResultValue]], _ paging: Paging) -> ResultSeries? {
            let kept = paging.apply(values)
            guard !kept.isEmpty else { return nil }
            return ResultSeries(name: name, columns: columns, times: nil, values: kept.flatMap { $0 })
        }
        switch statement {
        case .showDatabases:
            let names = Set(data.databases).sorted()
            return [ResultSeries(name: "databases", columns: ["name"], times: nil, values: names.map { .string($0) })]
        case .showRetentionPolicies:
            return [
                ResultSeries(
                    name: nil, columns: ["name", "duration", "shardGroupDuration", "replicaN", "default"], times: nil,
                    values: [.string("autogen"), .string("0s"), .string("168h0m0s"), .integer(1), .boolean(true)])
            ]
        case .showMeasurements(let regex, let condition, let paging):
            let re = try regex.map { r throws(QueryError) in try RE2Regex(r) }
            let filter = try condition.map { e throws(QueryError) in try TagFilter(Self.withoutTime(e)) }
            var names = Set<String>()
            if filter == nil {
                for m in catalog.measurements() where re?.matches(m) ?? true { names.insert(m) }
            } else {
                for s in catalog.series() where !names.contains(s.measurement) {
                    try budget.check()
                    guard re?.matches(s.measurement) ?? true else { continue }
                    if filter?.matches(s) ?? true { names.insert(s.measurement) }
                }
            }
            return rows("measurements", ["name"], names.sorted().map { [.string($0)] }, paging).map { [$0] } ?? []
        case .showTagKeys(let from, let condition, let paging):
            let measurements = try from.map { s throws(QueryError) in Set(try catalog.resolve(s)) }
            let filter = try condition.map { e throws(QueryError) in try TagFilter(Self.withoutTime(e)) }
            var keys: [String: Set<String>] = [:]
            for s in catalog.series() where measurements?.contains(s.measurement) ?? true {
                try budget.check()
                if let filter, !filter.matches(s) { continue }
                for t in s.tags { keys[s.measurement, default: []].insert(t.key) }
            }
            return keys.keys.sorted().compactMap { m in
                rows(m, ["tagKey"], keys[m]!.sorted().map { [.string($0)] }, paging)
            }
        case .showFieldKeys(let from, let paging):
            let measurements = try from.map { s throws(QueryError) in Set(try catalog.resolve(s)) }
            let fields = catalog.fields()
            return fields.keys.sorted().compactMap { m in
                guard measurements?.contains(m) ?? true else { return nil }
                let types = fields[m]!
                return rows(
                    m, ["fieldKey", "fieldType"],
                    types.keys.sorted().map { [.string($0), .string(types[$0]!.rawValue)] },
                    paging)
            }
        case .showTagValues(let from, let keys, let keyRegex, let condition, let paging):
            let measurements = try from.map { s throws(QueryError) in Set(try catalog.resolve(s)) }
            let re = try keyRegex.map { r throws(QueryError) in try RE2Regex(r) }
            let filter = try condition.map { e throws(QueryError) in try TagFilter(Self.withoutTime(e)) }
            var values: [String: Set<[String]>] = [:]
            for s in catalog.series() where measurements?.contains(s.measurement) ?? true {
                try budget.check()
                if let filter, !filter.matches(s) { continue }
                for t in s.tags where keys.contains(t.key) || (re?.matches(t.key) ?? false) {
                    values[s.measurement, default: []].insert([t.key, t.value])
                }
            }
            return values.keys.sorted().compactMap { m in
                rows(
                    m, ["key", "value"],
                    values[m]!.sorted { $0.lexicographicallyPrecedes($1) }.map { $0.map { .string($0) } }, paging)
            }
        case .showSeries(let from, let condition, let paging):
            let measurements = try from.map { s throws(QueryError) in Set(try catalog.resolve(s)) }
            let filter = try condition.map { e throws(QueryError) in try TagFilter(Self.withoutTime(e)) }
            var keys = Set<String>()
            for s in catalog.series() where measurements?.contains(s.measurement) ?? true {
                try budget.check()
                if let filter, !filter.matches(s) { continue }
                keys.insert(([s.measurement] + s.tags.map { "\($0.key)=\($0.value)" }).joined(separator: ","))
            }
            return rows(nil, ["key"], keys.sorted().map { [.string($0)] }, paging).map { [$0] } ?? []
        case .select: return []
        }
    }

    /// A SHOW condition without its time terms (metadata is not kept per time range).
    static func withoutTime(_ e: Expr) -> Expr {
        switch e {
        case .binary("AND", let a, let b):
            let (x, y) = (withoutTime(a), withoutTime(b))
            if case .boolean(true) = x { return y }
            if case .boolean(true) = y { return x }
            return .binary("AND", x, y)
        case .binary(_, .field(let name), _) where name.lowercased() == "time": return .boolean(true)
        default: return e
        }
    }
}
