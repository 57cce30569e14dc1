import LineProtocol

/// A value in an answer, typed as InfluxDB types it: integer fields stay integers through sum, min, max, first,
/// last, difference…; strings and booleans are themselves.
public enum ResultValue: Sendable, Equatable {
    case null
    case float(Double)
    case integer(Int64)
    case string(String)
    case boolean(Bool)

    public var double: Double? {
        switch self {
        case .float(let d): d
        case .integer(let i): Double(i)
        case .boolean(let b): b ? 1 : 0
        default: nil
        }
    }

    public var isNull: Bool { if case .null = self { true } else { false } }
}

/// One series of an answer: a name, tags (with GROUP BY), columns and rows. Rows with a time hold it apart
/// (``times``), so it is written as the query asks (epoch in a unit, or RFC 3339 in the statement's zone).
public struct ResultSeries: Sendable {
    public var name: String?
    public var tags: [(key: String, value: String)]?
    public var columns: [String]
    /// The first column's times, when the first column is `time`.
    public var times: [Int64]?
    /// The rows' other values, row after row.
    public var values: [ResultValue]
    /// Cut at the answer's row limit (InfluxDB marks such a series `"partial": true`).
    public var partial = false

    public init(
        name: String?, tags: [(key: String, value: String)]? = nil, columns: [String], times: [Int64]?,
        values: [ResultValue]
    ) {
        self.name = name
        self.tags = tags
        self.columns = columns
        self.times = times
        self.values = values
    }

    /// Values a row (the time excluded).
    public var width: Int { columns.count - (times == nil ? 0 : 1) }

    public var rowCount: Int { times?.count ?? (width == 0 ? 0 : values.count / width) }
}

/// One statement's answer.
public struct StatementResult: Sendable {
    public var statementID: Int
    public var series: [ResultSeries] = []
    public var partial = false
    public var error: String?

    public init(statementID: Int) { self.statementID = statementID }
}

/// How times are written: epoch in a unit (`epoch=ms`: nanoseconds per unit), or RFC 3339 at an offset.
public struct TimeFormat: Sendable {
    public var epochScale: Int64?
    public init(epochScale: Int64?) { self.epochScale = epochScale }
}

/// `{"results":[…]}` as InfluxDB 1.x writes it (key order included: statement_id, series, partial, error).
public enum ResultWriter {
    public static func write(_ results: [StatementResult], format: TimeFormat, zones: [Int: TimeZoneRule] = [:])
        -> [UInt8]
    {
        var json = JSONText()
        var estimate = 64
        for r in results {
            for s in r.series { estimate += 64 + s.values.count * 12 + (s.times?.count ?? 0) * 24 }
        }
        json.bytes.reserveCapacity(estimate)
        json.raw("{\"results\":[")
        for (k, r) in results.enumerated() {
            if k > 0 { json.byte(0x2C) }
            json.raw("{\"statement_id\":")
            json.integer(Int64(r.statementID))
            if !r.series.isEmpty {
                json.raw(",\"series\":[")
                for (j, s) in r.series.enumerated() {
                    if j > 0 { json.byte(0x2C) }
                    write(s, format: format, zone: zones[r.statementID], to: &json)
                }
                json.byte(0x5D)
            }
            if r.partial { json.raw(",\"partial\":true") }
            if let error = r.error {
                json.raw(",\"error\":")
                json.string(error)
            }
            json.byte(0x7D)
        }
        json.raw("]}\n")
        return json.bytes
    }

    static func write(_ s: ResultSeries, format: TimeFormat, zone: TimeZoneRule?, to json: inout JSONText) {
        json.byte(0x7B)
        var comma = false
        if let name = s.name {
            json.raw("\"name\":")
            json.string(name)
            comma = true
        }
        if let tags = s.tags {
            json.raw(comma ? ",\"tags\":{" : "\"tags\":{")
            for (k, t) in tags.sorted(by: { $0.key < $1.key }).enumerated() {
                if k > 0 { json.byte(0x2C) }
                json.string(t.key)
                json.byte(0x3A)
                json.string(t.value)
            }
            json.byte(0x7D)
            comma = true
        }
        json.raw(comma ? ",\"columns\":[" : "\"columns\":[")
        for (k, c) in s.columns.enumerated() {
            if k > 0 { json.byte(0x2C) }
            json.string(c)
        }
        json.raw("],\"values\":[")
        let width = s.width
        for row in 0..<s.rowCount {
            if row > 0 { json.byte(0x2C) }
            json.byte(0x5B)
            var first = true
            if let times = s.times {
                let t = times[row]
                if let scale = format.epochScale {
                    json.integer(t / scale)
                } else if let zone {
                    json.string(zone.format(t))
                } else {
                    json.string(RFC3339.format(t))
                }
                first = false
            }
            for v in s.values[(row * width)..<((row + 1) * width)] {
                if !first { json.byte(0x2C) }
                first = false
                write(v, to: &json)
            }
            json.byte(0x5D)
        }
        json.raw(s.partial ? "],\"partial\":true}" : "]}")
    }

    @inline(__always)
    static func write(_ v: ResultValue, to json: inout JSONText) {
        switch v {
        case .null: json.raw("null")
        case .float(let d): json.number(d)
        case .integer(let i): json.integer(i)
        case .string(let s): json.string(s)
        case .boolean(let b): json.raw(b ? "true" : "false")
        }
    }
}
