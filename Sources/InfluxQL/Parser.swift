/// A recursive-descent parser for the InfluxQL subset in docs/influxql.md: tokens → ``Statement``s.
public struct Parser {
    var tokens: [Token]
    var i = 0
    /// How deep an expression may nest (parentheses, operators, function calls).
    let maxDepth: Int
    /// Open parentheses and calls around the current token.
    var nesting = 0

    /// Nesting deeper than this is an error (``parse(_:maxDepth:)``).
    public static let defaultMaxDepth = 100

    /// Parses `;`-separated statements. No expression may nest more than `maxDepth` levels.
    public static func parse(_ text: String, maxDepth: Int = defaultMaxDepth) throws(QueryError) -> [Statement] {
        var lexer = Lexer(text)
        var p = Parser(tokens: try lexer.tokens(), maxDepth: maxDepth)
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

    /// `"db"."rp"."m"`, `m`, `/re/` or `"rp"./re/`: the measurement (or regex) is the last part.
    mutating func source() throws(QueryError) -> Source {
        if case .regex(let r) = peek {
            _ = advance()
            return .regex(r)
        }
        var name = try identifier("identifier")
        while accept(.op(".")) {
            if accept(.op(".")) {}  // db..m
            if case .regex(let r) = peek {
                _ = advance()
                return .regex(r)
            }
            name = try identifier("identifier")
        }
        return .name(name)
    }

    /// Sources separated by commas.
    mutating func sources() throws(QueryError) -> [Source] {
        var out = [try source()]
        while accept(.op(",")) { out.append(try source()) }
        return out
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
            let condition = accept(.keyword("WHERE")) ? try expression() : nil
            return .showMeasurements(regex: regex, condition: condition, paging: try paging())
        case .keyword("TAG"):
            switch advance() {
            case .keyword("KEYS"):
                let from = try optionalFrom()
                let condition = accept(.keyword("WHERE")) ? try expression() : nil
                return .showTagKeys(from: from, condition: condition, paging: try paging())
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
                return .showTagValues(
                    from: from, keys: keys, keyRegex: keyRegex, condition: condition, paging: try paging())
            default: throw QueryError("found \(Self.describe(tokens[i - 1])), expected KEYS, VALUES")
            }
        case .keyword("FIELD"):
            try expect(.keyword("KEYS"), "KEYS")
            let from = try optionalFrom()
            return .showFieldKeys(from: from, paging: try paging())
        case .keyword("SERIES"):
            let from = try optionalFrom()
            let condition = accept(.keyword("WHERE")) ? try expression() : nil
            return .showSeries(from: from, condition: condition, paging: try paging())
        case let t:
            throw QueryError(
                "found \(Self.describe(t)), expected DATABASES, RETENTION POLICIES, MEASUREMENTS, TAG KEYS, TAG VALUES, FIELD KEYS, SERIES (metricsd answers only these SHOW statements)"
            )
        }
    }

    mutating func optionalFrom() throws(QueryError) -> [Source]? {
        if accept(.keyword("ON")) { _ = try identifier("database") }
        return accept(.keyword("FROM")) ? try sources() : nil
    }

    /// `[LIMIT n] [OFFSET m]` (either order), non-negative integers.
    mutating func paging() throws(QueryError) -> Paging {
        var paging = Paging()
        while true {
            if accept(.keyword("LIMIT")) {
                guard case .integer(let n) = advance(), n >= 0, n <= Int64(Int32.max) else {
                    throw unexpected("a non-negative integer")
                }
                paging.limit = Int(n)
            } else if accept(.keyword("OFFSET")) {
                guard case .integer(let n) = advance(), n >= 0, n <= Int64(Int32.max) else {
                    throw unexpected("a non-negative integer")
                }
                paging.offset = Int(n)
            } else {
                return paging
            }
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
            s.fields.append(SelectField(expr: expr.expr, alias: alias))
        } while accept(.op(","))
        try expect(.keyword("FROM"), "FROM")
        s.sources = try sources()
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
                    let key = try identifier("tag key")
                    if accept(.op("::")) { _ = try identifier("tag") }
                    s.groupByTags.append(key)
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
            default: throw QueryError("expected number argument in fill()")
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
            } else if accept(.keyword("OFFSET")) {
                guard case .integer(let n) = advance() else { throw unexpected("integer") }
                s.offsetRows = Int(n)
            } else if accept(.keyword("SLIMIT")) {
                guard case .integer(let n) = advance() else { throw unexpected("integer") }
                s.slimit = Int(n)
            } else if accept(.keyword("SOFFSET")) {
                guard case .integer(let n) = advance() else { throw unexpected("integer") }
                s.soffset = Int(n)
            } else if accept(.keyword("TZ")) {
                try expect(.op("("), "(")
                guard case .string(let zone) = advance() else { throw unexpected("string") }
                try expect(.op(")"), ")")
                guard TimeZoneRule(zone) != nil else { throw QueryError("unable to find time zone \(zone)") }
                s.timeZone = zone
            } else {
                break
            }
        }
        return s
    }

    // MARK: - Expressions: OR < AND < comparison < + - < * / < unary, primary
    //
    // Every expression is built with its depth (the longest path from it to a leaf), and none may be deeper than
    // `maxDepth`: whatever reads an expression later walks it recursively, so a query of 20,000 nested
    // parentheses (40 KB) must fail here with an error, not overflow a stack there. Chains of AND and of OR are
    // built balanced (both are associative), so `a AND b AND … ` of thousands of terms stays shallow.

    /// An expression and its depth.
    struct Node {
        var expr: Expr
        var depth: Int
    }

    func deeper(_ depth: Int) throws(QueryError) -> Int {
        guard depth <= maxDepth else {
            throw QueryError("expression nested more than \(maxDepth) deep (limit: [query] max_nesting_depth)")
        }
        return depth
    }

    func binary(_ op: String, _ a: Node, _ b: Node) throws(QueryError) -> Node {
        Node(expr: .binary(op, a.expr, b.expr), depth: try deeper(Swift.max(a.depth, b.depth) + 1))
    }

    /// `terms` joined by `op`: left-deep as InfluxDB's parser builds it (`((a AND b) AND c)`) for chains of up to
    /// 16 terms, a balanced tree of such chains beyond.
    func balanced(_ op: String, _ terms: ArraySlice<Node>) throws(QueryError) -> Node {
        if terms.count <= 16 {
            var node = terms[terms.startIndex]
            for term in terms.dropFirst() { node = try binary(op, node, term) }
            return node
        }
        let middle = terms.startIndex + terms.count / 2
        return try binary(op, try balanced(op, terms[..<middle]), try balanced(op, terms[middle...]))
    }

    mutating func expression() throws(QueryError) -> Expr { try disjunction().expr }

    mutating func disjunction() throws(QueryError) -> Node {
        var terms = [try conjunction()]
        while accept(.keyword("OR")) { terms.append(try conjunction()) }
        return try balanced("OR", terms[...])
    }

    mutating func conjunction() throws(QueryError) -> Node {
        var terms = [try comparison()]
        while accept(.keyword("AND")) { terms.append(try comparison()) }
        return try balanced("AND", terms[...])
    }

    mutating func comparison() throws(QueryError) -> Node {
        let lhs = try additive()
        for op in ["=", "!=", "=~", "!~", "<", "<=", ">", ">="] where accept(.op(op)) {
            return try binary(op, lhs, try additive())
        }
        return lhs
    }

    mutating func additive() throws(QueryError) -> Node {
        var lhs = try multiplicative()
        while true {
            if accept(.op("+")) {
                lhs = try binary("+", lhs, try multiplicative())
            } else if accept(.op("-")) {
                lhs = try binary("-", lhs, try multiplicative())
            } else {
                return lhs
            }
        }
    }

    mutating func multiplicative() throws(QueryError) -> Node {
        var lhs = try primary()
        while true {
            if accept(.op("*")) {
                lhs = try binary("*", lhs, try primary())
            } else if accept(.op("/")) {
                lhs = try binary("/", lhs, try primary())
            } else {
                return lhs
            }
        }
    }

    mutating func primary() throws(QueryError) -> Node {
        func leaf(_ e: Expr) -> Node { Node(expr: e, depth: 0) }
        switch advance() {
        case .op("("):
            // The recursion itself is bounded too: each open parenthesis is a level.
            nesting += 1
            defer { nesting -= 1 }
            _ = try deeper(nesting)
            var e = try disjunction()
            e.depth = try deeper(e.depth + 1)
            try expect(.op(")"), ")")
            return e
        case .op("-"):
            switch advance() {
            case .integer(let n): return leaf(.integer(-n))
            case .number(let d): return leaf(.number(-d))
            case .duration(let d): return leaf(.duration(-d))
            default: throw QueryError("found \(Self.describe(tokens[i - 1])), expected a number after -")
            }
        case .op("*"): return leaf(.wildcard)
        case .integer(let n): return leaf(.integer(n))
        case .number(let d): return leaf(.number(d))
        case .duration(let d): return leaf(.duration(d))
        case .string(let s): return leaf(.string(s))
        case .regex(let r): return leaf(.regex(r))
        case .identifier(let name):
            if peek == .op("(") {
                _ = advance()
                nesting += 1
                defer { nesting -= 1 }
                _ = try deeper(nesting)
                var args: [Expr] = []
                var depth = 0
                if !accept(.op(")")) {
                    repeat {
                        let arg = try additive()
                        args.append(arg.expr)
                        depth = Swift.max(depth, arg.depth)
                    } while accept(.op(","))
                    try expect(.op(")"), ")")
                }
                if name.lowercased() == "now" { return leaf(.now) }
                return Node(expr: .call(name.lowercased(), args), depth: try deeper(depth + 1))
            }
            if accept(.op("::")) {
                let type = try identifier("tag, field").lowercased()
                switch type {
                case "tag": return leaf(.tag(name))
                case "field", "float", "integer", "string", "boolean": return leaf(.field(name))
                default: throw QueryError("found \(type), expected tag, field, float, integer, string, boolean")
                }
            }
            if name == "true" || name == "false" { return leaf(.boolean(name == "true")) }
            return leaf(.field(name))
        case .keyword(let k): return leaf(.field(k.lowercased()))
        case let t: throw QueryError("found \(Self.describe(t)), expected identifier, string, number, bool")
        }
    }
}
