import API
import Foundation
import Hummingbird
import NIOCore
import Query
import Rollups

/// `GET|POST /query`: InfluxQL answered from the rollups (open buckets ∪ SQLite) in InfluxDB 1.x's JSON shape, so
/// Grafana's stock InfluxDB data source (and the `influx` CLI) work against metricsd. What is supported and how it
/// differs from InfluxDB: docs/influxql.md.
enum InfluxQL {
    static func handle(_ request: Request, _ context: MetricsdRequestContext, _ state: HTTPState) async -> Response {
        let limits = state.configuration.query
        // Form encoding, in the URL and (POST) in the body, whose values win (Go's `Request.FormValue`).
        var form = Form(request.uri.query ?? "")
        if request.method == .post {
            var request = request
            // Percent-encoding can triple a query's bytes.
            let limit = limits.maxQuerySize.bytes * 3 + 4096
            do {
                let body = try await request.collectBody(upTo: limit)
                var bodyForm = Form(String(buffer: body))
                bodyForm.add(form)
                form = bodyForm
            } catch {
                return HTTPRoutes.error(
                    .contentTooLarge, "the query form is longer than \(limit) bytes ([query] max_query_size)")
            }
        }
        let parameters: InfluxQLParameters
        do {
            parameters = try InfluxQLParameters(
                form, maxStatements: limits.maxStatements, maxDepth: limits.maxNestingDepth,
                maxSize: limits.maxQuerySize.bytes)
        } catch {
            if error.message.contains("[query]") { state.stats.queriesLimited.add(1) }
            return HTTPRoutes.error(.badRequest, error.message)
        }
        return await HTTPRoutes.runQuery(context, state) { budget throws in
            try answer(parameters, state, budget)
        }
    }

    /// Every statement's result, in InfluxDB's JSON shape. Rows past `[query] max_row_limit` (over all statements)
    /// are cut and the statement marked `"partial": true`, as InfluxDB does; a limit that stops a statement
    /// (series, buckets, rows being built, the timeout) fails the whole request, naming the limit.
    static func answer(_ parameters: InfluxQLParameters, _ state: HTTPState, _ budget: QueryBudget) throws
        -> Response
    {
        var results: [[String: Any]] = []
        // Room for the answer up front (about 24 bytes a value), so writing it does not move it as it grows.
        var estimate = 256
        var rowsLeft = state.configuration.query.maxRowLimit
        for (k, statement) in parameters.statements.enumerated() {
            var result: [String: Any] = ["statement_id": k]
            do {
                try budget.check()
                let (series, partial) = try execute(
                    statement, state: state, epochScale: parameters.epochScale, database: parameters.database,
                    budget: budget, rowsLeft: &rowsLeft)
                if !series.isEmpty { result["series"] = series }
                if partial { result["partial"] = true }
                for case let typed as SelectSeries in series {
                    estimate += 128 + typed.times.count * 24 * typed.columns.count
                }
            } catch let error as QueryError {
                result["error"] = error.message
            }
            results.append(result)
        }
        var json = JSONText()
        json.bytes.reserveCapacity(estimate)
        json.value(["results": results])
        json.raw("\n")
        return Response(
            status: .ok, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: json.bytes)))
    }

    /// The series of one statement (typed ``SelectSeries`` for SELECT, dictionaries for SHOW) and whether it was cut
    /// at the row limit; `rowsLeft` is what the answer may still hold.
    static func execute(
        _ statement: Statement, state: HTTPState, epochScale: Int64?, database: String?, budget: QueryBudget,
        rowsLeft: inout Int
    ) throws -> (series: [Any], partial: Bool) {
        var partial = false
        /// One SHOW answer series, its values paged and counted against the rows left.
        func page(_ name: String?, _ columns: [String], _ values: [[Any]], _ paging: Paging) -> [String: Any]? {
            var kept = paging.apply(values)
            if kept.count > rowsLeft {
                kept = Array(kept.prefix(rowsLeft))
                partial = true
            }
            rowsLeft -= kept.count
            guard !kept.isEmpty else { return nil }
            var out: [String: Any] = ["columns": columns, "values": kept]
            if let name { out["name"] = name }
            return out
        }
        switch statement {
        case .showDatabases:
            let names = Set([state.configuration.influx.database, database ?? "metricsd", "metricsd"]).sorted()
            return ([["name": "databases", "columns": ["name"], "values": names.map { [$0] }]], false)
        case .showRetentionPolicies:
            let policies: [String: Any] = [
                "columns": ["name", "duration", "shardGroupDuration", "replicaN", "default"],
                "values": [["autogen", "0s", "168h0m0s", 1, true]],
            ]
            return ([policies], false)
        case .showMeasurements(let regex, let paging):
            let re = try regex.map(compile)
            var names = Set<String>()
            for s in series(state) {
                try budget.check()
                if re == nil || matches(re!, s.series.measurement) { names.insert(s.series.measurement) }
            }
            let out = page("measurements", ["name"], names.sorted().map { [$0] }, paging)
            return (out.map { [$0] } ?? [], partial)
        case .showTagKeys(let from, let paging):
            var keys: [String: Set<String>] = [:]
            for s in series(state) where from == nil || s.series.measurement == from {
                for t in s.series.tags { keys[s.series.measurement, default: []].insert(t.key) }
            }
            try budget.check()
            let out = keys.keys.sorted().compactMap { m in
                page(m, ["tagKey"], keys[m]!.sorted().map { [$0] }, paging)
            }
            return (out, partial)
        case .showFieldKeys(let from, let paging):
            var fields: [String: [String: FieldKind]] = [:]
            for s in state.engine.allSeries() where from == nil || s.series.measurement == from {
                for f in s.fields { fields[s.series.measurement, default: [:]][f.name] = f.kind }
            }
            try budget.check()
            let out = fields.keys.sorted().compactMap { m in
                let kinds = fields[m]!
                return page(
                    m, ["fieldKey", "fieldType"],
                    kinds.keys.sorted().map { [$0, kinds[$0] == .numeric ? "float" : kinds[$0]!.name] }, paging)
            }
            return (out, partial)
        case .showTagValues(let from, let keys, let keyRegex, let condition, let paging):
            let re = try keyRegex.map(compile)
            let filter = try condition.map { (e: Expr) throws(QueryError) in try TagFilter(e) }
            var values: [String: Set<[String]>] = [:]
            for s in series(state) where from == nil || s.series.measurement == from {
                try budget.check()
                if let filter, !filter.matches(s.series) { continue }
                for t in s.series.tags where keys.contains(t.key) || (re.map { matches($0, t.key) } ?? false) {
                    values[s.series.measurement, default: []].insert([t.key, t.value])
                }
            }
            let out = values.keys.sorted().compactMap { m in
                page(m, ["key", "value"], values[m]!.sorted { $0.lexicographicallyPrecedes($1) }, paging)
            }
            return (out, partial)
        case .showSeries(let from, let condition, let paging):
            var keys = Set<String>()
            let filter = try condition.map { (e: Expr) throws(QueryError) in try TagFilter(e) }
            for s in series(state) where from == nil || s.series.measurement == from {
                try budget.check()
                if let filter, !filter.matches(s.series) { continue }
                keys.insert(
                    ([s.series.measurement] + s.series.tags.map { "\($0.key)=\($0.value)" }).joined(separator: ","))
            }
            let out = page(nil, ["key"], keys.sorted().map { [$0] }, paging)
            return (out.map { [$0] } ?? [], partial)
        case .select(let select):
            return try SelectExecution(select: select, state: state, epochScale: epochScale, budget: budget)
                .run(rowsLeft: &rowsLeft)
        }
    }

    /// Every series metricsd knows: in memory and stored.
    static func series(_ state: HTTPState) -> [(series: SeriesInfo, fields: [(name: String, kind: FieldKind)])] {
        var seen = Set<SeriesInfo>()
        var out: [(series: SeriesInfo, fields: [(name: String, kind: FieldKind)])] = []
        for s in state.engine.allSeries() where seen.insert(s.series).inserted { out.append(s) }
        for s in (try? state.store.store.allSeries()) ?? [] where seen.insert(s).inserted { out.append((s, [])) }
        return out
    }

    /// Regexes from queries are untrusted: RE2 matches in linear time (and speaks InfluxDB's Go syntax).
    static func compile(_ pattern: String) throws(QueryError) -> RE2Regex { try RE2Regex(pattern) }

    static func matches(_ re: RE2Regex, _ s: String) -> Bool { re.matches(s) }

}

/// A tag condition (=, !=, =~, !~, AND, OR), compiled once per statement (regexes included) and then tested against
/// each series; a tag the series does not have compares as the empty string.
indirect enum TagFilter {
    case and(TagFilter, TagFilter)
    case or(TagFilter, TagFilter)
    case equal(key: String, value: String, negated: Bool)
    case regex(key: String, TagPattern, negated: Bool)

    init(_ e: Expr) throws(QueryError) {
        switch e {
        case .binary("AND", let a, let b): self = .and(try TagFilter(a), try TagFilter(b))
        case .binary("OR", let a, let b): self = .or(try TagFilter(a), try TagFilter(b))
        case .binary(let op, .field(let key), let rhs):
            switch (op, rhs) {
            case ("=", .string(let s)), ("=", .field(let s)): self = .equal(key: key, value: s, negated: false)
            case ("!=", .string(let s)), ("!=", .field(let s)): self = .equal(key: key, value: s, negated: true)
            case ("=~", .regex(let r)): self = .regex(key: key, try TagPattern(r), negated: false)
            case ("!~", .regex(let r)): self = .regex(key: key, try TagPattern(r), negated: true)
            default: throw QueryError("unsupported condition on tag \(key): metricsd filters tags with =, !=, =~, !~")
            }
        default: throw QueryError("unsupported condition: metricsd filters on time and tags only")
        }
    }

    func matches(_ series: SeriesInfo) -> Bool {
        switch self {
        case .and(let a, let b): a.matches(series) && b.matches(series)
        case .or(let a, let b): a.matches(series) || b.matches(series)
        case .equal(let key, let value, let negated): ((series.tag(key) ?? "") == value) != negated
        case .regex(let key, let pattern, let negated): pattern.matches(series.tag(key) ?? "") != negated
        }
    }
}

/// A regex tag condition, tested once per distinct tag value of a statement. Grafana writes a multi-value
/// variable as `/^(a|b|c)$/` with each value's metacharacters escaped: such a pattern — `^`, literals joined by
/// `|` (in one group or none), `$` — is answered by set membership without the regex engine, which matters when a
/// measurement has thousands of hosts. Any other pattern goes to RE2 (``RE2Regex``: linear time, whatever the
/// pattern).
final class TagPattern {
    let regex: RE2Regex
    /// The values an anchored alternation of literals matches, or `nil` for any other pattern.
    let literals: Set<String>?
    private var seen: [String: Bool] = [:]

    init(_ pattern: String) throws(QueryError) {
        regex = try InfluxQL.compile(pattern)
        literals = Self.literalAlternatives(pattern).map(Set.init)
    }

    func matches(_ value: String) -> Bool {
        if let literals { return literals.contains(value) }
        if let known = seen[value] { return known }
        let found = InfluxQL.matches(regex, value)
        seen[value] = found
        return found
    }

    /// `^lit$`, `^(lit|lit|…)$` (also `(?:`) → the literals, unescaped; `nil` when the pattern is anything else.
    static func literalAlternatives(_ pattern: String) -> [String]? {
        // Whether the last character is itself (not escaped by an odd run of backslashes before it).
        func lastIsUnescaped(_ chars: [Unicode.Scalar]) -> Bool {
            var slashes = 0
            while slashes < chars.count - 1 && chars[chars.count - 2 - slashes] == "\\" { slashes += 1 }
            return slashes % 2 == 0
        }
        var chars = Array(pattern.unicodeScalars)
        guard chars.count >= 2, chars.first == "^", chars.last == "$", lastIsUnescaped(chars) else { return nil }
        chars = Array(chars[1..<(chars.count - 1)])
        // `^a|b$` is `(^a)|(b$)`: alternatives count only inside the group.
        var grouped = false
        if chars.count >= 2, chars.first == "(", chars.last == ")", lastIsUnescaped(chars) {
            chars = Array(chars[1..<(chars.count - 1)])
            if chars.starts(with: ["?", ":"]) { chars.removeFirst(2) }
            grouped = true
        }
        var out: [String] = []
        var current = String.UnicodeScalarView()
        var k = 0
        while k < chars.count {
            let c = chars[k]
            if c == "\\" {
                // An escaped punctuation character is itself; `\d`, `\w`, … are classes, not literals.
                guard k + 1 < chars.count, !chars[k + 1].properties.isAlphabetic,
                    !("0"..."9").contains(chars[k + 1])
                else { return nil }
                current.append(chars[k + 1])
                k += 2
                continue
            }
            if c == "|" {
                guard grouped else { return nil }
                out.append(String(current))
                current = String.UnicodeScalarView()
            } else if ".^$*+?()[]{}".unicodeScalars.contains(c) {
                return nil
            } else {
                current.append(c)
            }
            k += 1
        }
        out.append(String(current))
        return out
    }
}
