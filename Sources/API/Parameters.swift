public import InfluxQL
import LineProtocol
public import Query
public import Rollups

/// A parameter a route cannot take: the answer is 400 with `{"error": message}`, the message naming the parameter.
public struct ParameterError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Times in parameters: RFC 3339 (`2026-11-28T10:00:00Z`, fractions and offsets allowed) or epoch milliseconds.
public enum TimeText {
    /// Nanoseconds since the epoch; `nil` for anything else, including times that Int64 nanoseconds cannot hold
    /// (before 1677-09-21 or after 2262-04-11).
    public static func parse(_ text: String) -> Int64? {
        if let ms = Int64(text) {
            let (ns, overflow) = ms.multipliedReportingOverflow(by: 1_000_000)
            return overflow ? nil : ns
        }
        return RFC3339.nanoseconds(text)
    }

    /// RFC 3339 in UTC as InfluxDB writes it (``RFC3339/format(_:)``).
    public static func format(_ nanoseconds: Int64) -> String { RFC3339.format(nanoseconds) }
}

extension Form {
    /// A parameter that must be present and not empty.
    func required(_ name: String) throws(ParameterError) -> String {
        guard let v = self[name], !v.isEmpty else { throw ParameterError("parameter '\(name)' is required") }
        return v
    }

    /// A time parameter in nanoseconds, or `nil` when absent.
    func time(_ name: String) throws(ParameterError) -> Int64? {
        guard let text = self[name] else { return nil }
        guard let t = TimeText.parse(text) else {
            throw ParameterError(
                "parameter '\(name)' must be RFC 3339 or epoch milliseconds (years 1678 to 2261), got \"\(text.prefix(64))\""
            )
        }
        return t
    }

    /// A non-negative duration parameter in nanoseconds (`fallback` when absent).
    func duration(_ name: String, _ fallback: String) throws(ParameterError) -> Int64 {
        let text = self[name] ?? fallback
        guard let d = ConfigDuration(parsing: text), d.nanoseconds >= 0 else {
            throw ParameterError(
                "parameter '\(name)' must be a duration such as 30m, 1h or 7d, got \"\(text.prefix(64))\"")
        }
        return d.nanoseconds
    }
}

// MARK: - /api/v1/series

/// `GET /api/v1/series?measurement=&limit=`.
public struct SeriesParameters: Sendable, Equatable {
    public var measurement: String?
    /// How many series to list (default 10,000, at most `maxLimit`).
    public var limit: Int

    public init(_ form: Form, maxLimit: Int) throws(ParameterError) {
        measurement = form["measurement"]
        limit = Swift.min(10_000, maxLimit)
        if let text = form["limit"] {
            guard let n = Int(text), n >= 0, n <= maxLimit else {
                throw ParameterError(
                    "parameter 'limit' must be an integer from 0 to \(maxLimit) ([query] max_row_limit), got \"\(text.prefix(64))\""
                )
            }
            limit = n
        }
    }
}

// MARK: - /api/v1/query

/// `GET /api/v1/query?measurement=&field=&agg=&from=&to=&step=&where=&group_by=`: one field's aggregate per step.
public struct RangeParameters: Sendable, Equatable {
    public var measurement: String
    public var field: String
    public var aggregate: Aggregate
    /// `[from, to)` in nanoseconds; `from` < `to`.
    public var from: Int64
    public var to: Int64
    /// A positive multiple of the bucket width.
    public var step: Int64
    public var filters: [TagPair]
    public var groupBy: [String]

    /// - Parameters:
    ///   - interval: the bucket width (`[rollup] interval`); `step` must be a multiple of it.
    ///   - maxSteps: the most steps in `[from, to)` (`[query] max_select_buckets`).
    public init(_ form: Form, now: Int64, interval: Int64, maxSteps: Int) throws(ParameterError) {
        measurement = try form.required("measurement")
        field = try form.required("field")
        let aggText = form["agg"] ?? "mean"
        guard let aggregate = Aggregate(aggText) else {
            throw ParameterError(
                "parameter 'agg' must be count, sum, min, max, mean, first, last, stddev, spread or p<N>, got \"\(aggText.prefix(64))\""
            )
        }
        self.aggregate = aggregate
        to = try form.time("to") ?? now
        from = try form.time("from") ?? to &- 3_600_000_000_000
        guard from < to else { throw ParameterError("parameter 'from' must be before 'to'") }
        step = interval
        if let text = form["step"] {
            guard let d = ConfigDuration(parsing: text), d.nanoseconds > 0 else {
                throw ParameterError("parameter 'step' must be a duration like 1m or 1h, got \"\(text.prefix(64))\"")
            }
            step = d.nanoseconds
        }
        guard step % interval == 0 else {
            throw ParameterError(
                "parameter 'step' must be a multiple of the bucket width (\(ConfigDuration(nanoseconds: interval)))")
        }
        let span = to.subtractingReportingOverflow(from)
        guard !span.overflow, span.partialValue / step <= Int64(maxSteps) else {
            throw ParameterError(
                "too many steps: widen 'step' or narrow 'from'/'to' (at most \(maxSteps), [query] max_select_buckets)")
        }
        filters = []
        if let text = form["where"], !text.isEmpty {
            for part in text.split(separator: ",") {
                guard let colon = part.firstIndex(of: ":") else {
                    throw ParameterError("parameter 'where' must be tag:value[,tag:value], got \"\(text.prefix(64))\"")
                }
                filters.append(TagPair(String(part[..<colon]), String(part[part.index(after: colon)...])))
            }
        }
        groupBy = form["group_by"].map { $0.split(separator: ",").map(String.init) } ?? []
    }
}

// MARK: - Event analytics

/// `from`/`to` of the analytics routes, in milliseconds (default: the last 7 days).
public struct EventRange: Sendable, Equatable {
    public var from: Int64
    public var to: Int64

    public init(_ form: Form, now: Int64) throws(ParameterError) {
        to = try form.time("to").map { $0 / 1_000_000 } ?? now / 1_000_000
        from = try form.time("from").map { $0 / 1_000_000 } ?? to - 7 * 86_400_000
        guard from < to else { throw ParameterError("parameter 'from' must be before 'to'") }
    }
}

/// Whose events an analytics answer covers: this instance's (`local`, the default) or every instance's, in
/// ClickHouse (`fleet`, with `[events.clickhouse]` set).
public enum Scope: String, Sendable, Equatable {
    case local, fleet

    init(_ form: Form) throws(ParameterError) {
        let text = form["scope"] ?? "local"
        guard let scope = Scope(rawValue: text) else {
            throw ParameterError("parameter 'scope' must be local or fleet, got \"\(text.prefix(64))\"")
        }
        self = scope
    }
}

/// Segments in parameters: `where=country:DE,revenue>=10,plan!=free,ref=~^google` — conditions separated by commas,
/// each `key` then an operator (`:` or `=`, `!=`, `<`, `<=`, `>`, `>=`, `=~`, `!~`) then the value (no commas).
/// Regexes are RE2 (as InfluxQL's), compiled here with its memory bound.
public enum SegmentText {
    public static let maxConditions = 32

    public static func filter(_ text: String, parameter: String) throws(ParameterError) -> EventFilter {
        var conditions: [PropertyCondition] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: true) {
            conditions.append(try condition(String(part), parameter: parameter))
        }
        guard conditions.count <= maxConditions else {
            throw ParameterError("parameter '\(parameter)' has more than \(maxConditions) conditions")
        }
        return EventFilter(conditions)
    }

    static func condition(_ text: String, parameter: String) throws(ParameterError) -> PropertyCondition {
        let bytes = Array(text.utf8)
        var i = 0
        while i < bytes.count {
            let c = bytes[i]
            let next = i + 1 < bytes.count ? bytes[i + 1] : 0
            var op: PropertyCondition.Op?
            var width = 1
            switch c {
            case UInt8(ascii: ":"): op = .equal
            case UInt8(ascii: "="): (op, width) = next == UInt8(ascii: "~") ? (.match, 2) : (.equal, 1)
            case UInt8(ascii: "!") where next == UInt8(ascii: "="): (op, width) = (.notEqual, 2)
            case UInt8(ascii: "!") where next == UInt8(ascii: "~"): (op, width) = (.notMatch, 2)
            case UInt8(ascii: "<"): (op, width) = next == UInt8(ascii: "=") ? (.lessOrEqual, 2) : (.less, 1)
            case UInt8(ascii: ">"): (op, width) = next == UInt8(ascii: "=") ? (.greaterOrEqual, 2) : (.greater, 1)
            default: break
            }
            if let op {
                let key = String(decoding: bytes[..<i], as: UTF8.self)
                let value = String(decoding: bytes[(i + width)...], as: UTF8.self)
                guard !key.isEmpty else {
                    throw ParameterError(
                        "parameter '\(parameter)': condition \"\(text.prefix(64))\" has no property name")
                }
                switch op {
                case .less, .lessOrEqual, .greater, .greaterOrEqual:
                    guard PropertyCondition.jsonNumber(value) != nil else {
                        throw ParameterError(
                            "parameter '\(parameter)': \(op.rawValue) needs a number, got \"\(value.prefix(64))\"")
                    }
                    return PropertyCondition(key: key, op: op, value: value)
                case .match, .notMatch:
                    let regex: RE2Regex
                    do {
                        regex = try RE2Regex(value)
                    } catch {
                        throw ParameterError("parameter '\(parameter)': bad regex \"\(value.prefix(64))\": \(error)")
                    }
                    return PropertyCondition(key: key, op: op, value: value, regex: { regex.matches($0) })
                default:
                    return PropertyCondition(key: key, op: op, value: value)
                }
            }
            i += 1
        }
        throw ParameterError(
            "parameter '\(parameter)': condition \"\(text.prefix(64))\" must be key:value, key!=value, key>=number, key=~regex, …"
        )
    }

    /// `a,b{k>=1,c:x},c`: names and their filters, split at the commas outside braces.
    static func steps(_ text: String) throws(ParameterError) -> [(String, EventFilter)] {
        var out: [(String, EventFilter)] = []
        var depth = 0
        var current = ""
        var parts: [String] = []
        for ch in text {
            if ch == "{" { depth += 1 }
            if ch == "}" { depth -= 1 }
            guard depth >= 0, depth <= 1 else { throw ParameterError("parameter 'steps': unbalanced braces") }
            if ch == "," && depth == 0 {
                parts.append(current)
                current = ""
            } else {
                current.append(ch)
            }
        }
        guard depth == 0 else { throw ParameterError("parameter 'steps': unbalanced braces") }
        parts.append(current)
        for part in parts {
            let p = part.trimming(" ")
            if let open = p.firstIndex(of: "{") {
                guard p.hasSuffix("}") else {
                    throw ParameterError("parameter 'steps': a step's filter must end the step (\"view{country:DE}\")")
                }
                let name = String(p[..<open]).trimming(" ")
                let inner = String(p[p.index(after: open)..<p.index(before: p.endIndex)])
                out.append((name, try filter(inner, parameter: "steps")))
            } else {
                out.append((p, .all))
            }
        }
        return out
    }
}

/// `GET /api/v1/funnel?steps=a,b,c&window=&from=&to=&breakdown=`.
public struct FunnelParameters: Sendable, Equatable {
    public var steps: [String]
    public var range: EventRange
    /// Milliseconds.
    public var window: Int64
    public var breakdown: String?
    public var scope: Scope
    /// `where=`: conditions on every event; `stepFilters[k]`: step k's own (`steps=view,buy{revenue>=10}`).
    public var filter: EventFilter
    public var stepFilters: [EventFilter]

    public init(_ form: Form, now: Int64) throws(ParameterError) {
        scope = try Scope(form)
        let parsed = try SegmentText.steps(try form.required("steps"))
        steps = parsed.map(\.0)
        stepFilters = parsed.map(\.1)
        guard steps.count >= 2, steps.count <= 20, !steps.contains(where: \.isEmpty) else {
            throw ParameterError("parameter 'steps' must name 2 to 20 events, comma-separated")
        }
        for (k, name) in steps.enumerated() {
            if let j = steps.firstIndex(of: name), j < k, stepFilters[j] != stepFilters[k] {
                throw ParameterError(
                    "parameter 'steps': steps \(j + 1) and \(k + 1) are both \"\(name)\" and must have the same filter")
            }
        }
        filter = try SegmentText.filter(form["where"] ?? "", parameter: "where")
        range = try EventRange(form, now: now)
        window = try form.duration("window", "1h") / 1_000_000
        breakdown = form["breakdown"].flatMap { $0.isEmpty ? nil : $0 }
    }
}

/// `GET /api/v1/retention?cohort_event=&return_event=&period=&periods=&from=&to=`.
public struct RetentionParameters: Sendable, Equatable {
    public var cohortEvent: String
    /// `nil`: any event counts as a return (`return_event=any`).
    public var returnEvent: String?
    public var period: RetentionPeriod
    public var periods: Int
    public var range: EventRange
    public var scope: Scope
    public var filter: EventFilter
    /// A property of the cohort event: the same cohorts per value.
    public var breakdown: String?

    public init(_ form: Form, now: Int64) throws(ParameterError) {
        scope = try Scope(form)
        filter = try SegmentText.filter(form["where"] ?? "", parameter: "where")
        breakdown = form["breakdown"].flatMap { $0.isEmpty ? nil : $0 }
        cohortEvent = try form.required("cohort_event")
        let returnText = try form.required("return_event")
        returnEvent = returnText == "any" ? nil : returnText
        let periodText = form["period"] ?? "day"
        guard let period = RetentionPeriod(rawValue: periodText) else {
            throw ParameterError("parameter 'period' must be day or week, got \"\(periodText.prefix(64))\"")
        }
        self.period = period
        let periodsText = form["periods"] ?? "8"
        guard let periods = Int(periodsText), (1...366).contains(periods) else {
            throw ParameterError("parameter 'periods' must be 1 to 366, got \"\(periodsText.prefix(64))\"")
        }
        self.periods = periods
        range = try EventRange(form, now: now)
    }
}

/// `GET /api/v1/experiment?exposure_event=&variant_property=&goal_event=&window=&from=&to=&control=`.
public struct ExperimentParameters: Sendable, Equatable {
    public var exposureEvent: String
    public var variantProperty: String
    public var goalEvent: String
    public var range: EventRange
    /// Milliseconds.
    public var window: Int64
    public var control: String?
    public var scope: Scope
    public var filter: EventFilter

    public init(_ form: Form, now: Int64) throws(ParameterError) {
        scope = try Scope(form)
        filter = try SegmentText.filter(form["where"] ?? "", parameter: "where")
        exposureEvent = try form.required("exposure_event")
        variantProperty = try form.required("variant_property")
        goalEvent = try form.required("goal_event")
        range = try EventRange(form, now: now)
        window = try form.duration("window", "7d") / 1_000_000
        control = form["control"]
    }
}

// MARK: - /query

/// What `GET|POST /query` takes: `q` (InfluxQL, `;`-separated statements), `epoch`, `db`.
public struct InfluxQLParameters: Sendable, Equatable {
    public var statements: [Statement]
    /// Nanoseconds per unit of `epoch=` (times as integers), `nil` for RFC 3339 times.
    public var epochScale: Int64?
    public var database: String?

    /// - Parameters:
    ///   - maxStatements: `[query] max_statements`.
    ///   - maxDepth: `[query] max_nesting_depth`.
    ///   - maxSize: the longest `q`, in bytes (`[query] max_query_size`).
    public init(_ form: Form, maxStatements: Int, maxDepth: Int, maxSize: Int) throws(ParameterError) {
        guard let text = form["q"], !text.isEmpty else { throw ParameterError("missing required parameter \"q\"") }
        guard text.utf8.count <= maxSize else {
            throw ParameterError(
                "query is \(text.utf8.count) bytes long, more than \(maxSize) ([query] max_query_size)")
        }
        if let epoch = form["epoch"] {
            guard let scale = Self.epochScale(epoch) else {
                throw ParameterError("epoch must be one of ns, u, µ, ms, s, m, h")
            }
            epochScale = scale
        }
        database = form["db"]
        do {
            statements = try Parser.parse(text, maxDepth: maxDepth)
        } catch {
            throw ParameterError("error parsing query: \(error.message)")
        }
        guard statements.count <= maxStatements else {
            throw ParameterError(
                "too many statements: \(statements.count) in one request (at most \(maxStatements), [query] max_statements)"
            )
        }
    }

    public static func epochScale(_ epoch: String) -> Int64? {
        switch epoch {
        case "ns", "n": 1
        case "u", "µ": 1_000
        case "ms": 1_000_000
        case "s": 1_000_000_000
        case "m": 60_000_000_000
        case "h": 3_600_000_000_000
        default: nil
        }
    }
}
