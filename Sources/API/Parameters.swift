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

/// `GET /api/v1/funnel?steps=a,b,c&window=&from=&to=&breakdown=`.
public struct FunnelParameters: Sendable, Equatable {
    public var steps: [String]
    public var range: EventRange
    /// Milliseconds.
    public var window: Int64
    public var breakdown: String?

    public var scope: Scope

    public init(_ form: Form, now: Int64) throws(ParameterError) {
        scope = try Scope(form)
        steps = try form.required("steps").split(separator: ",").map { String($0).trimming(" ") }
        guard steps.count >= 2, steps.count <= 20, !steps.contains(where: \.isEmpty) else {
            throw ParameterError("parameter 'steps' must name 2 to 20 events, comma-separated")
        }
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

    public init(_ form: Form, now: Int64) throws(ParameterError) {
        scope = try Scope(form)
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

    public init(_ form: Form, now: Int64) throws(ParameterError) {
        scope = try Scope(form)
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
