import Rollups

/// A condition on field values (`WHERE "usage_idle" > 5`, also with tags: `"host" = 'a' OR "x" < 0`), tested on
/// each point the cells keep. A point that lacks a field the condition names compares false, as in InfluxDB.
struct PointCondition {
    let expr: Expr
    /// The fields it names.
    let fields: Set<String>
    let patterns: [String: TagPattern]

    init(_ e: Expr, fields known: [String: FieldType]) throws(QueryError) {
        var names = Set<String>()
        var patterns: [String: TagPattern] = [:]
        func walk(_ e: Expr) throws(QueryError) {
            switch e {
            case .field(let f): if known[f] != nil { names.insert(f) }
            case .binary(_, let a, let b):
                try walk(a)
                try walk(b)
            case .regex(let r): if patterns[r] == nil { patterns[r] = try TagPattern(r) }
            case .string, .number, .integer, .boolean, .tag: break
            default: throw QueryError("invalid condition \(e)")
            }
        }
        try walk(e)
        expr = e
        self.fields = names
        self.patterns = patterns
    }

    /// Whether the point holds: `field` gives a field's value at the point's time (nil: none).
    func matches(_ series: SeriesInfo, _ field: (String) -> ResultValue?) -> Bool {
        truth(expr, series, field)
    }

    private func truth(_ e: Expr, _ series: SeriesInfo, _ field: (String) -> ResultValue?) -> Bool {
        switch e {
        case .binary("AND", let a, let b): return truth(a, series, field) && truth(b, series, field)
        case .binary("OR", let a, let b): return truth(a, series, field) || truth(b, series, field)
        case .binary(let op, let a, .regex(let r)) where op == "=~" || op == "!~":
            guard case .string(let s) = operand(a, series, field), let p = patterns[r] else { return false }
            return p.matches(s) == (op == "=~")
        case .binary(let op, let a, let b):
            let x = operand(a, series, field)
            let y = operand(b, series, field)
            switch (x, y) {
            case (.string(let l), .string(let r)): return Self.compare(op, l, r)
            case (.boolean(let l), .boolean(let r)):
                return op == "=" ? l == r : op == "!=" ? l != r : false
            default:
                guard let l = Self.number(x), let r = Self.number(y) else { return false }
                return Self.compare(op, l, r)
            }
        case .boolean(let b): return b
        default: return false
        }
    }

    static func number(_ v: ResultValue) -> Double? {
        switch v {
        case .float(let d): d
        case .integer(let i): Double(i)
        default: nil
        }
    }

    static func compare<T: Comparable>(_ op: String, _ l: T, _ r: T) -> Bool {
        switch op {
        case "=": l == r
        case "!=": l != r
        case "<": l < r
        case "<=": l <= r
        case ">": l > r
        case ">=": l >= r
        default: false
        }
    }

    private func operand(_ e: Expr, _ series: SeriesInfo, _ field: (String) -> ResultValue?) -> ResultValue {
        switch e {
        case .field(let f):
            if fields.contains(f) { return field(f) ?? .null }
            return .string(series.tag(f) ?? "")
        case .tag(let t): return .string(series.tag(t) ?? "")
        case .string(let s): return .string(s)
        case .number(let d): return .float(d)
        case .integer(let i): return .integer(i)
        case .boolean(let b): return .boolean(b)
        case .binary(let op, let a, let b) where ["+", "-", "*", "/"].contains(op):
            guard let x = Self.number(operand(a, series, field)), let y = Self.number(operand(b, series, field))
            else { return .null }
            switch op {
            case "+": return .float(x + y)
            case "-": return .float(x - y)
            case "*": return .float(x * y)
            default: return y == 0 ? .null : .float(x / y)
            }
        default: return .null
        }
    }
}
