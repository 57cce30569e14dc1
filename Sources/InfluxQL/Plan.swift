import Rollups

/// A function over the values of one field in a window.
enum Function: Equatable {
    case count, sum, mean, min, max, first, last, stddev, spread, median, mode, countDistinct
    case percentile(Double)
    case integral(unit: Int64)
    /// Selectors that answer several rows a window (alone in their statement).
    case top(Int, tags: [String])
    case bottom(Int, tags: [String])
    case distinct

    var name: String {
        switch self {
        case .count, .countDistinct: "count"
        case .sum: "sum"
        case .mean: "mean"
        case .min: "min"
        case .max: "max"
        case .first: "first"
        case .last: "last"
        case .stddev: "stddev"
        case .spread: "spread"
        case .median: "median"
        case .mode: "mode"
        case .percentile: "percentile"
        case .integral: "integral"
        case .top: "top"
        case .bottom: "bottom"
        case .distinct: "distinct"
        }
    }

    /// Whether it picks one of the window's points (its time is the row's time when it is alone, without
    /// `GROUP BY time`).
    var isSelector: Bool {
        switch self {
        case .min, .max, .first, .last, .percentile, .top, .bottom: true
        default: false
        }
    }

    /// Whether it needs the window's points (kept exactly while few).
    var needsPoints: Bool {
        switch self {
        case .median, .mode, .countDistinct, .percentile, .integral, .top, .bottom, .distinct: true
        default: false
        }
    }

    var multiRow: Bool {
        switch self {
        case .top, .bottom, .distinct: true
        default: false
        }
    }
}

/// A transformation of a column of window values (or raw points), as InfluxDB's stream functions.
enum Transform: Equatable {
    case derivative(unit: Int64?, nonNegative: Bool)
    case difference(nonNegative: Bool)
    case cumulativeSum
    case movingAverage(Int)
    case elapsed(unit: Int64)
    /// A forecast: rows at its own times, alone in the statement (``HoltWinters``).
    case holtWinters(h: Int, m: Int, withFit: Bool)

    var name: String {
        switch self {
        case .derivative(_, let n): n ? "non_negative_derivative" : "derivative"
        case .difference(let n): n ? "non_negative_difference" : "difference"
        case .cumulativeSum: "cumulative_sum"
        case .movingAverage: "moving_average"
        case .elapsed: "elapsed"
        case .holtWinters(_, _, let fit): fit ? "holt_winters_with_fit" : "holt_winters"
        }
    }

    /// Whether it reads the window before the range (InfluxDB extends the range by one interval for these).
    var readsBefore: Bool {
        switch self {
        case .cumulativeSum, .holtWinters: false
        default: true
        }
    }
}

/// A select expression compiled against the statement's fields.
indirect enum Term {
    case constant(ResultValue)
    case aggregate(field: Int, Function)
    case transform(Transform, Term)
    case arithmetic(String, Term, Term)
    case rawField(Int)
    case rawTag(String)

    var isAggregate: Bool {
        switch self {
        case .constant, .rawField, .rawTag: false
        case .aggregate: true
        case .transform(_, let t): t.isAggregate
        case .arithmetic(_, let a, let b): a.isAggregate || b.isAggregate
        }
    }

    var isRaw: Bool {
        switch self {
        case .rawField, .rawTag: true
        case .constant, .aggregate: false
        case .transform(_, let t): t.isRaw
        case .arithmetic(_, let a, let b): a.isRaw || b.isRaw
        }
    }

    func visitFunctions(_ body: (Int, Function) -> Void) {
        switch self {
        case .aggregate(let f, let fn): body(f, fn)
        case .transform(_, let t): t.visitFunctions(body)
        case .arithmetic(_, let a, let b):
            a.visitFunctions(body)
            b.visitFunctions(body)
        default: break
        }
    }

    func visitTransforms(_ body: (Transform) -> Void) {
        switch self {
        case .transform(let t, let inner):
            body(t)
            inner.visitTransforms(body)
        case .arithmetic(_, let a, let b):
            a.visitTransforms(body)
            b.visitTransforms(body)
        default: break
        }
    }

    var rawFields: [Int] {
        switch self {
        case .rawField(let f): [f]
        case .transform(_, let t): t.rawFields
        case .arithmetic(_, let a, let b): a.rawFields + b.rawFields
        default: []
        }
    }
}

/// Compiles SELECT expressions against a measurement's fields and tags, with InfluxDB's checks and messages.
struct Compiler {
    let fieldTypes: [String: FieldType]
    /// The measurement's tag keys, asked only where needed (`*`, a name that is no field).
    let tagKeysOf: () -> Set<String>
    /// GROUP BY time's interval (the default unit of derivative and the like).
    let interval: Int64?
    var fields: [String] = []

    init(fieldTypes: [String: FieldType], tagKeys: @escaping () -> Set<String>, interval: Int64?) {
        self.fieldTypes = fieldTypes
        self.tagKeysOf = tagKeys
        self.interval = interval
    }

    mutating func fieldIndex(_ name: String) -> Int {
        if let k = fields.firstIndex(of: name) { return k }
        fields.append(name)
        return fields.count - 1
    }

    /// The select list with `*` and `/regex/` expanded (raw: every field and tag; in a call: every field the
    /// function takes), each with its column name.
    mutating func expand(_ list: [SelectField]) throws(QueryError) -> [(term: Term, column: String)] {
        var out: [(term: Term, column: String)] = []
        for f in list {
            switch f.expr {
            case .wildcard:
                for name in (Array(fieldTypes.keys) + Array(tagKeysOf())).sorted() {
                    if fieldTypes[name] != nil {
                        out.append((.rawField(fieldIndex(name)), name))
                    } else {
                        out.append((.rawTag(name), name))
                    }
                }
            case .regex(let r):
                let re = try RE2Regex(r)
                for name in fieldTypes.keys.sorted() where re.matches(name) {
                    out.append((.rawField(fieldIndex(name)), name))
                }
            case .call(let name, let args)
            where args.first == .wildcard || { if case .regex = args.first { true } else { false } }():
                var names = fieldTypes.keys.sorted()
                if case .regex(let r) = args.first {
                    let re = try RE2Regex(r)
                    names = names.filter { re.matches($0) }
                }
                for field in names {
                    // A function of `*` takes the fields it can: numbers for mean, sum, …; any for count, first…
                    if Self.numericOnly(name), let t = fieldTypes[field], t == .string || t == .boolean { continue }
                    var args = args
                    args[0] = .field(field)
                    let term = try compile(.call(name, args))
                    out.append((term, f.alias.map { "\($0)_\(field)" } ?? "\(name)_\(field)"))
                }
            default:
                out.append((try compile(f.expr), f.alias ?? Self.columnName(f.expr)))
            }
        }
        // Repeated names get `_1`, `_2` (InfluxDB's rule).
        var seen: [String: Int] = [:]
        for k in out.indices {
            let base = out[k].column
            let n = seen[base, default: 0]
            seen[base] = n + 1
            if n > 0 { out[k].column = "\(base)_\(n)" }
        }
        return out
    }

    static func numericOnly(_ function: String) -> Bool {
        ["mean", "sum", "median", "spread", "stddev", "percentile", "integral", "derivative", "difference"].contains(
            function)
    }

    /// The column InfluxDB names an expression: the outermost function, the field for a raw field, the names of
    /// both sides joined by `_` for arithmetic.
    static func columnName(_ e: Expr) -> String {
        switch e {
        case .field(let f), .tag(let f): return f
        case .call(let n, _): return n
        case .binary(_, let a, let b):
            return [columnName(a), columnName(b)].filter { !$0.isEmpty }.joined(separator: "_")
        default: return ""
        }
    }

    mutating func compile(_ e: Expr) throws(QueryError) -> Term {
        switch e {
        case .number(let n): return .constant(.float(n))
        case .integer(let n): return .constant(.integer(n))
        case .string(let s): return .constant(.string(s))
        case .boolean(let b): return .constant(.boolean(b))
        case .tag(let t): return .rawTag(t)
        case .field(let f):
            if fieldTypes[f] == nil, tagKeysOf().contains(f) { return .rawTag(f) }
            return .rawField(fieldIndex(f))
        case .binary(let op, let a, let b) where ["+", "-", "*", "/", "%"].contains(op):
            return .arithmetic(op, try compile(a), try compile(b))
        case .call(let name, let args): return try call(name, args)
        case .wildcard: throw QueryError("unsupported use of * in an expression")
        default: throw QueryError("invalid expression in SELECT: \(e)")
        }
    }

    func duration(_ e: Expr?, _ function: String) throws(QueryError) -> Int64? {
        guard let e else { return nil }
        guard case .duration(let d) = e else {
            throw QueryError("second argument to \(function) must be a duration, got \(Self.describe(e))")
        }
        return d
    }

    static func describe(_ e: Expr) -> String {
        switch e {
        case .integer: "*influxql.IntegerLiteral"
        case .number: "*influxql.NumberLiteral"
        case .string: "*influxql.StringLiteral"
        case .field: "*influxql.VarRef"
        case .call: "*influxql.Call"
        default: "\(e)"
        }
    }

    mutating func call(_ name: String, _ args: [Expr]) throws(QueryError) -> Term {
        func arity(_ n: ClosedRange<Int>) throws(QueryError) {
            guard n.contains(args.count) else {
                if n.lowerBound == n.upperBound {
                    throw QueryError(
                        "invalid number of arguments for \(name), expected \(n.lowerBound), got \(args.count)")
                }
                throw QueryError(
                    "invalid number of arguments for \(name), expected at least \(n.lowerBound) but no more than \(n.upperBound), got \(args.count)"
                )
            }
        }
        /// The field a function reads: a field, or `"f"::field`.
        func field(_ e: Expr) throws(QueryError) -> Int {
            switch e {
            case .field(let f): return fieldIndex(f)
            case .tag(let t): throw QueryError("\(name)() cannot be applied to the tag \(t)")
            case .call: throw QueryError("expected field argument in \(name)()")
            default: throw QueryError("expected field argument in \(name)()")
            }
        }
        switch name {
        case "count":
            try arity(1...1)
            if case .call("distinct", let inner) = args[0] {
                guard inner.count == 1, case .field(let f) = inner[0] else {
                    throw QueryError("distinct function requires at least one argument")
                }
                return .aggregate(field: fieldIndex(f), .countDistinct)
            }
            return .aggregate(field: try field(args[0]), .count)
        case "sum", "mean", "min", "max", "first", "last", "stddev", "spread", "median", "mode":
            try arity(1...1)
            let f = try field(args[0])
            let fn: Function =
                switch name {
                case "sum": .sum
                case "mean": .mean
                case "min": .min
                case "max": .max
                case "first": .first
                case "last": .last
                case "stddev": .stddev
                case "spread": .spread
                case "median": .median
                default: .mode
                }
            try checkType(fn, f)
            return .aggregate(field: f, fn)
        case "percentile":
            try arity(2...2)
            let f = try field(args[0])
            let p: Double
            switch args[1] {
            case .integer(let n): p = Double(n)
            case .number(let d): p = d
            default: throw QueryError("expected float argument in percentile()")
            }
            try checkType(.percentile(p), f)
            return .aggregate(field: f, .percentile(p))
        case "integral":
            try arity(1...2)
            let f = try field(args[0])
            let unit = try duration(args.count > 1 ? args[1] : nil, name) ?? 1_000_000_000
            try checkType(.integral(unit: unit), f)
            return .aggregate(field: f, .integral(unit: unit))
        case "distinct":
            try arity(1...1)
            return .aggregate(field: try field(args[0]), .distinct)
        case "top", "bottom":
            guard args.count >= 2 else {
                throw QueryError("invalid number of arguments for \(name), expected at least 2, got \(args.count)")
            }
            let f = try field(args[0])
            var tags: [String] = []
            for a in args.dropFirst().dropLast() {
                guard case .field(let t) = a else {
                    throw QueryError("only fields or tags are allowed in \(name)(), found \(a)")
                }
                tags.append(t)
            }
            guard case .integer(let n) = args.last!, n > 0 else {
                throw QueryError("expected integer as last argument in \(name)(), found \(args.last!)")
            }
            try checkType(.top(Int(n), tags: tags), f)
            return .aggregate(field: f, name == "top" ? .top(Int(n), tags: tags) : .bottom(Int(n), tags: tags))
        case "derivative", "non_negative_derivative", "difference", "non_negative_difference", "cumulative_sum",
            "moving_average", "elapsed":
            let transform: Transform
            switch name {
            case "derivative", "non_negative_derivative":
                try arity(1...2)
                transform = .derivative(
                    unit: try duration(args.count > 1 ? args[1] : nil, name),
                    nonNegative: name.hasPrefix("non_negative"))
            case "difference", "non_negative_difference":
                try arity(1...1)
                transform = .difference(nonNegative: name.hasPrefix("non_negative"))
            case "cumulative_sum":
                try arity(1...1)
                transform = .cumulativeSum
            case "moving_average":
                try arity(2...2)
                guard case .integer(let n) = args[1] else {
                    throw QueryError(
                        "second argument for moving_average must be an integer, got \(Self.describe(args[1]))")
                }
                guard n > 1 else { throw QueryError("moving_average window must be greater than 1, got \(n)") }
                transform = .movingAverage(Int(n))
            default:
                try arity(1...2)
                transform = .elapsed(unit: try duration(args.count > 1 ? args[1] : nil, name) ?? 1)
            }
            let inner: Term
            switch args[0] {
            case .call(let n, let a):
                if interval == nil {
                    throw QueryError("\(name) aggregate requires a GROUP BY interval")
                }
                inner = try call(n, a)
                if case .aggregate(_, let fn) = inner, fn.multiRow {
                    throw QueryError("\(name)() does not support \(fn.name)()")
                }
            case .field(let f):
                if interval != nil {
                    throw QueryError("aggregate function required inside the call to \(name)")
                }
                inner = .rawField(fieldIndex(f))
            default: throw QueryError("expected field argument in \(name)()")
            }
            return .transform(transform, inner)
        case "holt_winters", "holt_winters_with_fit":
            guard args.count == 3 else {
                throw QueryError("invalid number of arguments for \(name), expected 3, got \(args.count)")
            }
            guard case .call(let n, let a) = args[0] else {
                throw QueryError("must use aggregate function with \(name)")
            }
            guard interval != nil else { throw QueryError("\(name) aggregate requires a GROUP BY interval") }
            guard case .integer(let h) = args[1], h >= 0 else {
                throw QueryError("expected integer argument as second arg in \(name)")
            }
            guard case .integer(let m) = args[2], m >= 0 else {
                throw QueryError("expected integer argument as third arg in \(name)")
            }
            let inner = try call(n, a)
            return .transform(.holtWinters(h: Int(h), m: Int(m), withFit: name == "holt_winters_with_fit"), inner)
        default:
            throw QueryError("undefined function \(name)()")
        }
    }

    /// InfluxDB's type errors: numeric functions of strings or booleans, min/max of strings.
    func checkType(_ fn: Function, _ f: Int) throws(QueryError) {
        guard let type = fieldTypes[fields[f]] else { return }
        let kind: String
        switch type {
        case .string: kind = "string"
        case .boolean: kind = "boolean"
        default: return
        }
        switch fn {
        case .sum, .mean, .median, .spread, .stddev, .integral, .percentile, .top, .bottom:
            throw QueryError("unsupported \(fn.name) iterator type: *query.\(kind)InterruptIterator")
        case .min where type == .string, .max where type == .string:
            throw QueryError("unsupported \(fn.name) iterator type: *query.\(kind)InterruptIterator")
        default: return
        }
    }
}
