/// An InfluxQL expression (the subset metricsd answers).
public indirect enum Expr: Equatable, Sendable {
    case field(String)
    case call(String, [Expr])  // lower-cased function name
    case number(Double)
    /// An integer literal, kept exact (a time in nanoseconds does not fit a Double's 53 bits).
    case integer(Int64)
    case string(String)
    case regex(String)
    case duration(Int64)
    case now
    case binary(String, Expr, Expr)  // AND OR = != =~ !~ < <= > >= + - * /
    case wildcard
    /// `"name"::tag` (in SELECT, WHERE, GROUP BY): the tag, never a field of the same name.
    case tag(String)
    /// `true` / `false`.
    case boolean(Bool)
}

/// Where a SELECT reads from: a measurement by name, or every measurement a regex matches (`FROM /^cpu/`); the
/// database and retention policy before it are accepted and ignored (metricsd holds one of each).
public enum Source: Equatable, Sendable {
    case name(String)
    case regex(String)
}

public struct SelectField: Equatable, Sendable {
    public var expr: Expr
    public var alias: String?
    public init(expr: Expr, alias: String?) {
        self.expr = expr
        self.alias = alias
    }
}

public enum Fill: Equatable, Sendable {
    case null, none, previous, linear
    case value(Double)
}

public struct SelectStatement: Equatable, Sendable {
    public var fields: [SelectField] = []
    public var sources: [Source] = []
    /// The measurement of a statement with one named source ("" otherwise).
    public var measurement: String {
        get {
            if sources.count == 1, case .name(let n) = sources[0] { return n }
            return ""
        }
        set { sources = [.name(newValue)] }
    }
    public var condition: Expr?
    /// `GROUP BY time(interval, offset)`, nanoseconds.
    public var interval: Int64?
    public var offset: Int64 = 0
    public var groupByTags: [String] = []
    public var groupByAllTags = false
    public var fill: Fill = .null
    public var descending = false
    public var limit: Int?
    public var offsetRows: Int?
    public var slimit: Int?
    public var soffset: Int?
    /// `tz('Europe/Paris')`: the IANA zone windows of a day or more align to.
    public var timeZone: String?
    public init() {}
}

/// `LIMIT` and `OFFSET` of a SHOW statement: applied to the values of each series of its answer, as InfluxDB does.
public struct Paging: Equatable, Sendable {
    public var limit: Int?
    public var offset: Int?
    public init(limit: Int? = nil, offset: Int? = nil) {
        self.limit = limit
        self.offset = offset
    }

    /// `items` with the offset skipped and at most the limit kept.
    public func apply<T>(_ items: [T]) -> [T] {
        let skipped = items.dropFirst(Swift.max(0, offset ?? 0))
        return Array(limit.map { skipped.prefix(Swift.max(0, $0)) } ?? skipped)
    }
}

public enum Statement: Equatable, Sendable {
    case select(SelectStatement)
    case showDatabases
    case showRetentionPolicies
    case showMeasurements(regex: String?, condition: Expr? = nil, paging: Paging = Paging())
    case showTagKeys(from: [Source]?, condition: Expr? = nil, paging: Paging = Paging())
    case showTagValues(
        from: [Source]?, keys: [String], keyRegex: String?, condition: Expr?, paging: Paging = Paging())
    case showFieldKeys(from: [Source]?, paging: Paging = Paging())
    case showSeries(from: [Source]?, condition: Expr?, paging: Paging = Paging())
}

extension Expr: CustomStringConvertible {
    /// The expression as InfluxQL text, fully parenthesized, with names and strings quoted and escaped: two
    /// expressions have the same text only when they are equal (the text keys what a condition selected).
    public var description: String {
        // Names and strings escape their quote and backslashes; a regex only its slashes (the lexer keeps a
        // regex's other escapes as they are).
        func quoted(_ s: String, _ quote: Character) -> String {
            var out = String(quote)
            for c in s {
                if c == quote || (c == "\\" && quote != "/") { out.append("\\") }
                out.append(c)
            }
            out.append(quote)
            return out
        }
        switch self {
        case .field(let name): return quoted(name, "\"")
        case .call(let name, let args): return name + "(" + args.map(\.description).joined(separator: ", ") + ")"
        case .number(let n): return n.description
        case .integer(let n): return String(n)
        case .string(let s): return quoted(s, "'")
        case .regex(let r): return quoted(r, "/")
        case .duration(let d): return "\(d)ns"
        case .now: return "now()"
        case .binary(let op, let a, let b): return "(" + a.description + " " + op + " " + b.description + ")"
        case .wildcard: return "*"
        case .tag(let name): return quoted(name, "\"") + "::tag"
        case .boolean(let b): return b ? "true" : "false"
        }
    }
}
