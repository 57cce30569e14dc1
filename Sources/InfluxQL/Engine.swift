public import Rollups

/// Where a statement reads from, and the limits it runs within: the open buckets, the stored 1-minute and 1-hour
/// tiers (each a ``CellSource``), and the catalogs that name series and fields. The engine reads through these
/// and nothing else: no HTTP, no NIO, no SQLite.
public struct QueryData: Sendable {
    public var open: any CellSource
    public var minutes: any CellSource
    public var hours: any CellSource
    public var catalogs: [any SeriesCatalog]
    /// `[rollup] interval`, nanoseconds: the width of a bucket of the open and 1-minute tiers.
    public var bucketWidth: Int64
    /// `[storage] retention_1m` and `retention_1h`, nanoseconds.
    public var retention1m: Int64
    public var retention1h: Int64
    /// How far ahead of now a point may be (`[rollup] max_future`), nanoseconds.
    public var maxFuture: Int64
    /// The databases `SHOW DATABASES` names.
    public var databases: [String]
    /// `[query] max_select_buckets`, `max_select_series`, `max_row_limit`.
    public var maxSelectBuckets: Int
    public var maxSelectSeries: Int
    public var maxRowLimit: Int

    public init(
        open: any CellSource, minutes: any CellSource, hours: any CellSource, catalogs: [any SeriesCatalog],
        bucketWidth: Int64, retention1m: Int64, retention1h: Int64, maxFuture: Int64, databases: [String],
        maxSelectBuckets: Int, maxSelectSeries: Int, maxRowLimit: Int
    ) {
        self.open = open
        self.minutes = minutes
        self.hours = hours
        self.catalogs = catalogs
        self.bucketWidth = bucketWidth
        self.retention1m = retention1m
        self.retention1h = retention1h
        self.maxFuture = maxFuture
        self.databases = databases
        self.maxSelectBuckets = maxSelectBuckets
        self.maxSelectSeries = maxSelectSeries
        self.maxRowLimit = maxRowLimit
    }
}

/// Why a read of stored rollups failed (the route answers 500 with it).
public struct ReadFailure: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// InfluxQL over rollups: statements in, InfluxDB-shaped results out (``ResultWriter`` writes them).
public struct Engine: Sendable {
    public let data: QueryData

    public init(_ data: QueryData) { self.data = data }

    /// Every statement's result. An error in a statement is its result (`"error"`), as InfluxDB answers; a limit
    /// that stops the query (timeout, rows being built, series read) throws ``QueryStopped`` or
    /// ``QueryLimitExceeded``, and a failed read ``ReadFailure``. Rows past `max_row_limit` over all statements are
    /// cut and the statement marked partial.
    public func run(_ statements: [Statement], budget: QueryBudget, now: Int64) throws -> [StatementResult] {
        var results: [StatementResult] = []
        var rowsLeft = data.maxRowLimit
        let catalog = Catalog(data.catalogs)
        for (k, statement) in statements.enumerated() {
            var result = StatementResult(statementID: k)
            do {
                try budget.check()
                switch statement {
                case .select(let select):
                    var execution = try SelectExecution(
                        select, data: data, catalog: catalog, budget: budget, now: now)
                    result.series = try execution.run()
                default:
                    result.series = try Show(data: data, catalog: catalog, budget: budget).run(statement)
                }
            } catch let error as QueryError {
                result.error = error.message
            }
            // The answer's row limit: the series that crosses it is cut, and is the last one.
            var kept: [ResultSeries] = []
            for var s in result.series {
                if rowsLeft <= 0 {
                    result.partial = true
                    break
                }
                let n = s.rowCount
                if n > rowsLeft {
                    let width = s.width
                    s.values.removeSubrange((rowsLeft * width)...)
                    s.times?.removeSubrange(rowsLeft...)
                    s.partial = true
                    result.partial = true
                }
                rowsLeft -= Swift.min(n, rowsLeft)
                kept.append(s)
                if s.partial { break }
            }
            result.series = kept
            results.append(result)
        }
        return results
    }
}

/// Every series and field the catalogs know, gathered once per request.
final class Catalog: @unchecked Sendable {
    private let sources: [any SeriesCatalog]
    private var seriesCache: [SeriesInfo]?
    private var fieldCache: [String: [String: FieldType]]?
    private var measurementFields: [String: [String: FieldType]] = [:]
    private var measurementTags: [String: Set<String>] = [:]

    init(_ sources: [any SeriesCatalog]) { self.sources = sources }

    /// Every series, each once.
    func series() -> [SeriesInfo] {
        if let seriesCache { return seriesCache }
        var seen = Set<UInt64>()
        var out: [SeriesInfo] = []
        for source in sources {
            for s in (try? source.catalogSeries()) ?? [] where seen.insert(s.id).inserted { out.append(s) }
        }
        seriesCache = out
        return out
    }

    /// Fields per measurement with their types; a field with several types takes InfluxDB's preferred one.
    func fields() -> [String: [String: FieldType]] {
        if let fieldCache { return fieldCache }
        var out: [String: [String: FieldType]] = [:]
        for source in sources {
            for (m, fields) in (try? source.catalogFields()) ?? [:] {
                for (f, t) in fields {
                    if let known = out[m]?[f], known <= t { continue }
                    out[m, default: [:]][f] = t
                }
            }
        }
        fieldCache = out
        return out
    }

    /// One measurement's fields and types (cached for the request).
    func fields(of measurement: String) -> [String: FieldType] {
        if let fieldCache { return fieldCache[measurement] ?? [:] }
        if let known = measurementFields[measurement] { return known }
        var out: [String: FieldType] = [:]
        for source in sources {
            for (f, t) in (try? source.catalogFields(of: measurement)) ?? [:] {
                if let known = out[f], known <= t { continue }
                out[f] = t
            }
        }
        measurementFields[measurement] = out
        return out
    }

    /// One measurement's tag keys (cached for the request).
    func tagKeys(of measurement: String) -> Set<String> {
        if let known = measurementTags[measurement] { return known }
        var out = Set<String>()
        for source in sources { out.formUnion((try? source.catalogTagKeys(of: measurement)) ?? []) }
        measurementTags[measurement] = out
        return out
    }

    func measurements() -> [String] {
        var names = Set(fields().keys)
        for s in series() { names.insert(s.measurement) }
        return names.sorted()
    }

    /// The measurements `sources` name (a regex: every measurement it matches), sorted, each once.
    func resolve(_ sources: [Source]) throws(QueryError) -> [String] {
        var out = Set<String>()
        for source in sources {
            switch source {
            case .name(let n): out.insert(n)
            case .regex(let r):
                let re = try RE2Regex(r)
                for m in measurements() where re.matches(m) { out.insert(m) }
            }
        }
        return out.sorted()
    }
}
