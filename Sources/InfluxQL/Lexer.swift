/// A token of InfluxQL.
public enum Token: Equatable, Sendable {
    case identifier(String)  // bare or "double-quoted"
    case keyword(String)  // upper-cased
    case string(String)  // 'single-quoted'
    case number(Double)
    case integer(Int64)
    /// A duration literal in nanoseconds (`5m`, `1700000000000ms`).
    case duration(Int64)
    case regex(String)
    case op(String)  // = != <> =~ !~ < <= > >= + - * / ( ) , ; .
    case end
}

/// Why a query cannot be read: InfluxDB's wording where it has one, with the offset.
public struct QueryError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

struct Lexer {
    static let keywords: Set<String> = [
        "SELECT", "FROM", "WHERE", "GROUP", "BY", "FILL", "ORDER", "LIMIT", "SLIMIT", "OFFSET", "SOFFSET", "AS", "AND",
        "OR", "SHOW", "DATABASES", "RETENTION", "POLICIES", "ON", "MEASUREMENTS", "MEASUREMENT", "TAG", "KEYS",
        "VALUES", "KEY", "FIELD", "SERIES", "WITH", "IN", "ASC", "DESC", "TZ",
    ]
    static let units: [(String, Int64)] = [
        ("ns", 1), ("u", 1_000), ("µ", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000),
        ("h", 3_600_000_000_000), ("d", 86_400_000_000_000), ("w", 604_800_000_000_000),
    ]

    let text: [Character]
    var i = 0
    /// A `/` starts a regex only where an operand is expected (after =~, !~, WITH MEASUREMENT =~, `(`, `,`).
    var previous: Token = .end

    init(_ text: String) { self.text = Array(text) }

    mutating func tokens() throws(QueryError) -> [Token] {
        var out: [Token] = []
        while true {
            let t = try next()
            out.append(t)
            previous = t
            if t == .end { return out }
        }
    }

    mutating func next() throws(QueryError) -> Token {
        while i < text.count, text[i].isWhitespace { i += 1 }
        guard i < text.count else { return .end }
        let c = text[i]
        if c == "\"" { return .identifier(try quoted("\"")) }
        if c == "'" { return .string(try quoted("'")) }
        // A `/` starts a regex where an operand is expected: after =~ and !~, FROM, and a `.`, `,` or `(` (where a
        // division cannot be: `"autogen"./^cpu/`, `FROM /a/, /b/`).
        if c == "/",
            [.op("=~"), .op("!~"), .keyword("FROM"), .op("."), .op(","), .op("(")].contains(previous)
        {
            i += 1
            var s = ""
            while i < text.count, text[i] != "/" {
                if text[i] == "\\", i + 1 < text.count, text[i + 1] == "/" {
                    s.append("/")
                    i += 2
                    continue
                }
                s.append(text[i])
                i += 1
            }
            guard i < text.count else { throw QueryError("unterminated regex") }
            i += 1
            return .regex(s)
        }
        if c.isNumber || (c == "." && i + 1 < text.count && text[i + 1].isNumber) { return try number() }
        if c.isLetter || c == "_" {
            var s = ""
            while i < text.count, text[i].isLetter || text[i].isNumber || text[i] == "_" {
                s.append(text[i])
                i += 1
            }
            let upper = s.uppercased()
            return Self.keywords.contains(upper) ? .keyword(upper) : .identifier(s)
        }
        for op in ["=~", "!~", "!=", "<>", "<=", ">=", "::"] where matches(op) {
            i += 2
            return .op(op == "<>" ? "!=" : op)
        }
        if "=<>+-*/(),;.".contains(c) {
            i += 1
            return .op(String(c))
        }
        throw QueryError("found \(c), expected a statement at char \(i + 1)")
    }

    func matches(_ s: String) -> Bool {
        let chars = Array(s)
        guard i + chars.count <= text.count else { return false }
        return Array(text[i..<(i + chars.count)]) == chars
    }

    mutating func quoted(_ q: Character) throws(QueryError) -> String {
        i += 1
        var s = ""
        while i < text.count, text[i] != q {
            if text[i] == "\\", i + 1 < text.count {
                s.append(text[i + 1])
                i += 2
                continue
            }
            s.append(text[i])
            i += 1
        }
        guard i < text.count else { throw QueryError("unterminated quoted \(q == "'" ? "string" : "identifier")") }
        i += 1
        return s
    }

    mutating func number() throws(QueryError) -> Token {
        var s = ""
        while i < text.count, text[i].isNumber || text[i] == "." || ((text[i] == "e" || text[i] == "E") && !s.isEmpty) {
            // An exponent only when digits follow ("5m" is a duration, "1e3" a number).
            if text[i] == "e" || text[i] == "E" {
                guard i + 1 < text.count, text[i + 1].isNumber || text[i + 1] == "-" || text[i + 1] == "+" else {
                    break
                }
                s.append(text[i])
                i += 1
                s.append(text[i])
                i += 1
                continue
            }
            s.append(text[i])
            i += 1
        }
        // A unit right after the digits makes a duration.
        if let integer = Int64(s) {
            for (unit, scale) in Self.units.sorted(by: { $0.0.count > $1.0.count }) where matchesUnit(unit) {
                i += unit.count
                let (v, overflow) = integer.multipliedReportingOverflow(by: scale)
                guard !overflow else { throw QueryError("duration \(s)\(unit) is out of range") }
                return .duration(v)
            }
            return .integer(integer)
        }
        guard let d = Double(s) else { throw QueryError("invalid number \(s)") }
        return .number(d)
    }

    func matchesUnit(_ unit: String) -> Bool {
        guard matches(unit) else { return false }
        let after = i + unit.count
        return after >= text.count || !(text[after].isLetter || text[after].isNumber || text[after] == "_")
    }
}
