/// A recursive-descent parser for the InfluxQL subset in docs/influxql.md: tokens → ``Statement``s.
public struct Parser {
    var tokens: [Token]
    var i = 0

    /// Parses `;`-separated statements.
    public static func parse(_ text: String) throws(QueryError) -> [Statement] {
        var lexer = Lexer(text)
        var p = Parser(tokens: try lexer.tokens())
        var out: [Statement] = []
        while true {
            while p.accept(.op(";")) {}
            if p.peek == .end { break }
            out.append(try p.statement())
            if p.peek != .end && p.peek != .op(";") { throw p.unexpected("; or end of query") }
        }
        guard !out.isEmpty else { throw QueryError("found EOF, expected SELECT, SHOW at line 1, char 1") }
        return out
    }

    var peek: Token { tokens[i] }

    mutating func advance() -> Token {
        defer { if i < tokens.count - 1 { i += 1 } }
        return tokens[i]
    }

    mutating func accept(_ t: Token) -> Bool {
        if peek == t {
            i += 1
            return true
        }
        return false
    }

    mutating func expect(_ t: Token, _ what: String) throws(QueryError) {
        guard accept(t) else { throw unexpected(what) }
    }

    func unexpected(_ what: String) -> QueryError {
        QueryError("found \(Self.describe(peek)), expected \(what)")
    }

    static func describe(_ t: Token) -> String {
        switch t {
        case .identifier(let s): s
        case .keyword(let s): s
        case .string(let s): "'\(s)'"
        case .number(let d): "\(d)"
        case .integer(let n): "\(n)"
        case .duration(let d): "\(d)ns"
        case .regex(let r): "/\(r)/"
        case .op(let o): o
        case .end: "EOF"
        }
    }

    mutating func identifier(_ what: String) throws(QueryError) -> String {
        switch peek {
        case .identifier(let s):
            _ = advance()
            return s
        case .keyword(let k) where !["FROM", "WHERE", "GROUP", "BY", "AND", "OR", "AS", "WITH"].contains(k):
            _ = advance()
            return k.lowercased()
        default: throw unexpected(what)
        }
    }

    /// `"db"."rp"."m"` or `m`: the measurement is the last part.
    mutating func measurement() throws(QueryError) -> String {
        var name = try identifier("measurement")
        while accept(.op(".")) {
            if accept(.op(".")) {}  // db..m
            name = try identifier("measurement")
        }
        return name
    }

    mutating func statement() throws(QueryError) -> Statement {
        switch peek {
        case .keyword("SELECT"): return .select(try select())
        case .keyword("SHOW"): return try show()
        default: throw unexpected("SELECT, SHOW")
        }
    }

    mutating func show() throws(QueryError) -> Statement {
        _ = advance()
        switch advance() {
        case .keyword("DATABASES"): return .showDatabases
        case .keyword("RETENTION"):
            try expect(.keyword("POLICIES"), "POLICIES")
            if accept(.keyword("ON")) { _ = try identifier("database") }
            return .showRetentionPolicies
        case .keyword("MEASUREMENTS"):
            if accept(.keyword("ON")) { _ = try identifier("database") }
            var regex: String?
            if accept(.keyword("WITH")) {
                try expect(.keyword("MEASUREMENT"), "MEASUREMENT")
                if accept(.op("=~")) {
                    guard case .regex(let r) = advance() else { throw unexpected("regex") }
                    regex = r
                } else {
                    try expect(.op("="), "= or =~")
                    regex = "^" + Self.escapeRegex(try identifier("measurement")) + "$"
                }
            }
            try skipLimit()
            return .showMeasurements(regex: regex)
        case .keyword("TAG"):
            switch advance() {
            case .keyword("KEYS"):
                let from = try optionalFrom()
                try skipLimit()
                return .showTagKeys(from: from)
            case .keyword("VALUES"):
                let from = try optionalFrom()
                try expect(.keyword("WITH"), "WITH")
                try expect(.keyword("KEY"), "KEY")
                var keys: [String] = []
                var keyRegex: String?
                if accept(.keyword("IN")) {
                    try expect(.op("("), "(")
                    repeat { keys.append(try identifier("tag key")) } while accept(.op(","))
                    try expect(.op(")"), ")")
                } else if accept(.op("=~")) {
                    guard case .regex(let r) = advance() else { throw unexpected("regex") }
                    keyRegex = r
                } else {
                    try expect(.op("="), "=, =~ or IN")
                    keys = [try identifier("tag key")]
                }
                let condition = accept(.keyword("WHERE")) ? try expression() : nil
                try skipLimit()
                return .showTagValues(from: from, keys: keys, keyRegex: keyRegex, condition: condition)
            default: throw QueryError("found \(Self.describe(tokens[i - 1])), expected KEYS, VALUES")
            }
        case .keyword("FIELD"):
            try expect(.keyword("KEYS"), "KEYS")
            let from = try optionalFrom()
            try skipLimit()
            return .showFieldKeys(from: from)
        case .keyword("SERIES"):
            let from = try optionalFrom()
            let condition = accept(.keyword("WHERE")) ? try expression() : nil
            try skipLimit()
            return .showSeries(from: from, condition: condition)
        case let t:
            throw QueryError(
                "found \(Self.describe(t)), expected DATABASES, RETENTION POLICIES, MEASUREMENTS, TAG KEYS, TAG VALUES, FIELD KEYS, SERIES (metricsd answers only these SHOW statements)"
            )
        }
    }

    mutating func optionalFrom() throws(QueryError) -> String? {
        if accept(.keyword("ON")) { _ = try identifier("database") }
        return accept(.keyword("FROM")) ? try measurement() : nil
    }

    mutating func skipLimit() throws(QueryError) {
        for k in ["LIMIT", "OFFSET"] where accept(.keyword(k)) {
            guard case .integer = advance() else { throw unexpected("integer") }
        }
    }

    static func escapeRegex(_ s: String) -> String {
        var out = ""
        for c in s {
            if "\\^$.|?*+()[]{}".contains(c) { out.append("\\") }
            out.append(c)
        }
        return out
    }

    mutating func select() throws(QueryError) -> SelectStatement {
        _ = advance()
        var s = SelectStatement()
        repeat {
            let expr = try additive()
            var alias: String?
            if accept(.keyword("AS")) { alias = try identifier("alias") }
            s.fields.append(SelectField(expr: expr, alias: alias))
        } while accept(.op(","))
        try expect(.keyword("FROM"), "FROM")
        s.measurement = try measurement()
        if accept(.keyword("WHERE")) { s.condition = try expression() }
        if accept(.keyword("GROUP")) {
            try expect(.keyword("BY"), "BY")
            repeat {
                if case .identifier(let name) = peek, name.lowercased() == "time", tokens[i + 1] == .op("(") {
                    _ = advance()
                    _ = advance()
                    guard case .duration(let d) = advance(), d > 0 else {
                        throw QueryError("time dimension must have a positive duration argument")
                    }
                    s.interval = d
                    if accept(.op(",")) {
                        let negative = accept(.op("-"))
                        guard case .duration(let o) = advance() else { throw unexpected("offset duration") }
                        s.offset = negative ? -o : o
                    }
                    try expect(.op(")"), ")")
                } else if accept(.op("*")) {
                    s.groupByAllTags = true
                } else {
                    s.groupByTags.append(try identifier("tag key"))
                }
            } while accept(.op(","))
        }
        if accept(.keyword("FILL")) {
            try expect(.op("("), "(")
            switch advance() {
            case .identifier(let f) where f.lowercased() == "null": s.fill = .null
            case .identifier(let f) where f.lowercased() == "none": s.fill = .none
            case .identifier(let f) where f.lowercased() == "previous": s.fill = .previous
            case .identifier(let f) where f.lowercased() == "linear": s.fill = .linear
            case .integer(let n): s.fill = .value(Double(n))
            case .number(let d): s.fill = .value(d)
            case .op("-"):
                switch advance() {
                case .integer(let n): s.fill = .value(-Double(n))
                case .number(let d): s.fill = .value(-d)
                default: throw unexpected("number")
                }
            default: throw QueryError("fill must be null, none, previous, linear or a number")
            }
            try expect(.op(")"), ")")
        }
        if accept(.keyword("ORDER")) {
            try expect(.keyword("BY"), "BY")
            guard try identifier("time").lowercased() == "time" else {
                throw QueryError("only ORDER BY time is supported")
            }
            if accept(.keyword("DESC")) { s.descending = true } else { _ = accept(.keyword("ASC")) }
        }
        while true {
            if accept(.keyword("LIMIT")) {
                guard case .integer(let n) = advance() else { throw unexpected("integer") }
                s.limit = Int(n)
            } else if accept(.keyword("SLIMIT")) {
                guard case .integer(let n) = advance() else { throw unexpected("integer") }
                s.slimit = Int(n)
            } else if accept(.keyword("TZ")) {
                throw QueryError("tz() is not supported by metricsd: times are UTC")
            } else {
                break
            }
        }
        return s
    }

    // MARK: - Expressions: OR < AND < comparison < + - < * / < unary, primary

    mutating func expression() throws(QueryError) -> Expr {
        var lhs = try conjunction()
        while accept(.keyword("OR")) { lhs = .binary("OR", lhs, try conjunction()) }
        return lhs
    }

    mutating func conjunction() throws(QueryError) -> Expr {
        var lhs = try comparison()
        while accept(.keyword("AND")) { lhs = .binary("AND", lhs, try comparison()) }
        return lhs
    }

    mutating func comparison() throws(QueryError) -> Expr {
        let lhs = try additive()
        for op in ["=", "!=", "=~", "!~", "<", "<=", ">", ">="] where accept(.op(op)) {
            return .binary(op, lhs, try additive())
        }
        return lhs
    }

    mutating func additive() throws(QueryError) -> Expr {
        var lhs = try multiplicative()
        while true {
            if accept(.op("+")) {
                lhs = .binary("+", lhs, try multiplicative())
            } else if accept(.op("-")) {
                lhs = .binary("-", lhs, try multiplicative())
            } else {
                return lhs
            }
        }
    }

    mutating func multiplicative() throws(QueryError) -> Expr {
        var lhs = try primary()
        while true {
            if accept(.op("*")) {
                lhs = .binary("*", lhs, try primary())
            } else if accept(.op("/")) {
                lhs = .binary("/", lhs, try primary())
            } else {
                return lhs
            }
        }
    }

    mutating func primary() throws(QueryError) -> Expr {
        switch advance() {
        case .op("("):
            let e = try expression()
            try expect(.op(")"), ")")
            return e
        case .op("-"):
            switch advance() {
            case .integer(let n): return .number(-Double(n))
            case .number(let d): return .number(-d)
            case .duration(let d): return .duration(-d)
            default: throw QueryError("found \(Self.describe(tokens[i - 1])), expected a number after -")
            }
        case .op("*"): return .wildcard
        case .integer(let n): return .number(Double(n))
        case .number(let d): return .number(d)
        case .duration(let d): return .duration(d)
        case .string(let s): return .string(s)
        case .regex(let r): return .regex(r)
        case .identifier(let name):
            if peek == .op("(") {
                _ = advance()
                var args: [Expr] = []
                if !accept(.op(")")) {
                    repeat { args.append(try additive()) } while accept(.op(","))
                    try expect(.op(")"), ")")
                }
                if name.lowercased() == "now" { return .now }
                return .call(name.lowercased(), args)
            }
            if case .op("::") = peek { _ = advance() }
            return .field(name)
        case .keyword(let k): return .field(k.lowercased())
        case let t: throw QueryError("found \(Self.describe(t)), expected identifier, string, number, bool")
        }
    }
}
