import Foundation
import Hummingbird
import NIOCore
import Query
import Rollups

/// `GET|POST /query`: InfluxQL answered from the rollups (open buckets ∪ SQLite) in InfluxDB 1.x's JSON shape, so
/// Grafana's stock InfluxDB data source (and the `influx` CLI) work against metricsd. What is supported and how it
/// differs from InfluxDB: docs/influxql.md.
enum InfluxQL {
    static func handle(_ request: Request, _ state: HTTPState) async -> Response {
        guard HTTPRoutes.authorized(request, state) else {
            return HTTPRoutes.error(.unauthorized, "authorization failed")
        }
        // Form encoding, in the URL and (POST) in the body: '+' is a space, then percent-decoding.
        var parameters = Self.formDecode(request.uri.query ?? "")
        if request.method == .post, let body = try? await request.body.collect(upTo: 1 << 20) {
            parameters.merge(Self.formDecode(String(buffer: body))) { $1 }
        }
        guard let text = parameters["q"], !text.isEmpty else {
            return HTTPRoutes.error(.badRequest, "missing required parameter \"q\"")
        }
        let epoch = parameters["epoch"]
        if let epoch, Self.epochScale(epoch) == nil {
            return HTTPRoutes.error(.badRequest, "epoch must be one of ns, u, µ, ms, s, m, h")
        }
        let statements: [Statement]
        do {
            statements = try Parser.parse(text)
        } catch {
            return HTTPRoutes.error(.badRequest, "error parsing query: \(error.message)")
        }
        var results: [[String: Any]] = []
        // Room for the answer up front (about 24 bytes a value), so writing it does not move it as it grows.
        var estimate = 256
        for (k, statement) in statements.enumerated() {
            var result: [String: Any] = ["statement_id": k]
            do {
                let series = try execute(statement, state: state, epoch: epoch, database: parameters["db"])
                if !series.isEmpty { result["series"] = series }
                for case let typed as SelectSeries in series {
                    estimate += 128 + typed.times.count * 24 * typed.columns.count
                }
            } catch {
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

    /// `application/x-www-form-urlencoded` pairs: `+` is a space, `%XX` a byte; a `%` not followed by two hex
    /// digits is kept as it is, and invalid UTF-8 is repaired (U+FFFD).
    static func formDecode(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        var text = text
        text.withUTF8 { bytes in
            var decoded: [UInt8] = []
            decoded.reserveCapacity(bytes.count)
            func hex(_ b: UInt8) -> UInt8? {
                switch b {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
                default: nil
                }
            }
            func decode(_ part: Slice<UnsafeBufferPointer<UInt8>>) -> String {
                decoded.removeAll(keepingCapacity: true)
                var i = part.startIndex
                while i < part.endIndex {
                    let b = part[i]
                    if b == UInt8(ascii: "+") {
                        decoded.append(0x20)
                    } else if b == UInt8(ascii: "%"), i + 2 < part.endIndex, let high = hex(part[i + 1]),
                        let low = hex(part[i + 2])
                    {
                        decoded.append(high << 4 | low)
                        i += 2
                    } else {
                        decoded.append(b)
                    }
                    i += 1
                }
                return String(decoding: decoded, as: UTF8.self)
            }
            for pair in bytes.split(separator: UInt8(ascii: "&")) {
                if let eq = pair.firstIndex(of: UInt8(ascii: "=")) {
                    out[decode(pair[pair.startIndex..<eq])] = decode(pair[(eq + 1)..<pair.endIndex])
                } else {
                    out[decode(pair)] = ""
                }
            }
        }
        return out
    }

    static func epochScale(_ epoch: String) -> Int64? {
        [
            "ns": 1, "n": 1, "u": 1_000, "µ": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
            "h": 3_600_000_000_000,
        ][epoch]
    }

    /// The series of one statement: typed ``SelectSeries`` for SELECT, dictionaries for SHOW.
    static func execute(_ statement: Statement, state: HTTPState, epoch: String?, database: String?) throws(QueryError)
        -> [Any]
    {
        switch statement {
        case .showDatabases:
            let names = Set([state.configuration.influx.database, database ?? "metricsd", "metricsd"]).sorted()
            return [["name": "databases", "columns": ["name"], "values": names.map { [$0] }]]
        case .showRetentionPolicies:
            return [
                [
                    "columns": ["name", "duration", "shardGroupDuration", "replicaN", "default"],
                    "values": [["autogen", "0s", "168h0m0s", 1, true]],
                ]
            ]
        case .showMeasurements(let regex):
            let re = try regex.map(compile)
            let names = Set(series(state).map(\.series.measurement)).filter { re == nil || matches(re!, $0) }.sorted()
            return names.isEmpty ? [] : [["name": "measurements", "columns": ["name"], "values": names.map { [$0] }]]
        case .showTagKeys(let from):
            var keys: [String: Set<String>] = [:]
            for s in series(state) where from == nil || s.series.measurement == from {
                for t in s.series.tags { keys[s.series.measurement, default: []].insert(t.key) }
            }
            return keys.keys.sorted().map { m in
                ["name": m, "columns": ["tagKey"], "values": keys[m]!.sorted().map { [$0] }]
            }
        case .showFieldKeys(let from):
            var fields: [String: [String: FieldKind]] = [:]
            for s in state.engine.allSeries() where from == nil || s.series.measurement == from {
                for f in s.fields { fields[s.series.measurement, default: [:]][f.name] = f.kind }
            }
            return fields.keys.sorted().map { m in
                [
                    "name": m, "columns": ["fieldKey", "fieldType"],
                    "values": fields[m]!.keys.sorted().map {
                        [$0, fields[m]![$0] == .numeric ? "float" : fields[m]![$0]!.name]
                    },
                ]
            }
        case .showTagValues(let from, let keys, let keyRegex, let condition):
            let re = try keyRegex.map(compile)
            let filter = try condition.map { (e: Expr) throws(QueryError) in try TagFilter(e) }
            var values: [String: Set<[String]>] = [:]
            for s in series(state) where from == nil || s.series.measurement == from {
                if let filter, !filter.matches(s.series) { continue }
                for t in s.series.tags where keys.contains(t.key) || (re.map { matches($0, t.key) } ?? false) {
                    values[s.series.measurement, default: []].insert([t.key, t.value])
                }
            }
            return values.keys.sorted().map { m in
                [
                    "name": m, "columns": ["key", "value"],
                    "values": values[m]!.sorted { $0.lexicographicallyPrecedes($1) },
                ]
            }
        case .showSeries(let from, let condition):
            var keys = Set<String>()
            let filter = try condition.map { (e: Expr) throws(QueryError) in try TagFilter(e) }
            for s in series(state) where from == nil || s.series.measurement == from {
                if let filter, !filter.matches(s.series) { continue }
                keys.insert(
                    ([s.series.measurement] + s.series.tags.map { "\($0.key)=\($0.value)" }).joined(separator: ","))
            }
            return keys.isEmpty ? [] : [["columns": ["key"], "values": keys.sorted().map { [$0] }]]
        case .select(let select):
            return try SelectExecution(select: select, state: state, epoch: epoch).run()
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

    static func compile(_ pattern: String) throws(QueryError) -> NSRegularExpression {
        do {
            return try NSRegularExpression(pattern: pattern)
        } catch {
            throw QueryError("invalid regex /\(pattern)/")
        }
    }

    static func matches(_ re: NSRegularExpression, _ s: String) -> Bool {
        re.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil
    }

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
/// measurement has thousands of hosts. Any other pattern goes to `NSRegularExpression`.
final class TagPattern {
    let regex: NSRegularExpression
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
