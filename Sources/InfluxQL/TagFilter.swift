public import Rollups

/// A tag condition (=, !=, =~, !~, AND, OR), compiled once per statement (regexes included) and then tested against
/// each series; a tag the series does not have compares as the empty string.
public indirect enum TagFilter: Sendable {
    case and(TagFilter, TagFilter)
    case or(TagFilter, TagFilter)
    case equal(key: String, value: String, negated: Bool)
    case regex(key: String, TagPattern, negated: Bool)
    /// A comparison that holds for no series: InfluxDB orders no tag values (`"host" < 'web'` selects nothing).
    case never
    case always

    public init(_ e: Expr) throws(QueryError) {
        switch e {
        case .binary("AND", let a, let b): self = .and(try TagFilter(a), try TagFilter(b))
        case .binary("OR", let a, let b): self = .or(try TagFilter(a), try TagFilter(b))
        case .boolean(let b): self = b ? .always : .never
        case .binary(let op, .field(let key), let rhs), .binary(let op, .tag(let key), let rhs):
            switch (op, rhs) {
            case ("=", .string(let s)), ("=", .field(let s)): self = .equal(key: key, value: s, negated: false)
            case ("!=", .string(let s)), ("!=", .field(let s)): self = .equal(key: key, value: s, negated: true)
            case ("=~", .regex(let r)): self = .regex(key: key, try TagPattern(r), negated: false)
            case ("!~", .regex(let r)): self = .regex(key: key, try TagPattern(r), negated: true)
            case ("<", _), ("<=", _), (">", _), (">=", _), ("=", _), ("!=", _): self = .never
            default: throw QueryError("invalid condition on tag \(key): \(op) \(rhs)")
            }
        case .binary(let op, let lhs, .tag(let key)) where ["=", "!="].contains(op):
            self = try TagFilter(.binary(op, .tag(key), lhs))
        default: throw QueryError("invalid tag condition \(e)")
        }
    }

    public func matches(_ series: SeriesInfo) -> Bool {
        switch self {
        case .and(let a, let b): a.matches(series) && b.matches(series)
        case .or(let a, let b): a.matches(series) || b.matches(series)
        case .equal(let key, let value, let negated): ((series.tag(key) ?? "") == value) != negated
        case .regex(let key, let pattern, let negated): pattern.matches(series.tag(key) ?? "") != negated
        case .never: false
        case .always: true
        }
    }
}

/// A regex tag condition, tested once per distinct tag value of a statement. Grafana writes a multi-value
/// variable as `/^(a|b|c)$/` with each value's metacharacters escaped: such a pattern — `^`, literals joined by
/// `|` (in one group or none), `$` — is answered by set membership without the regex engine, which matters when a
/// measurement has thousands of hosts. Any other pattern goes to RE2 (``RE2Regex``: linear time, whatever the
/// pattern).
public final class TagPattern: @unchecked Sendable {
    let regex: RE2Regex
    /// The values an anchored alternation of literals matches, or `nil` for any other pattern.
    let literals: Set<String>?
    /// Answers already computed (a statement's filter is used on one thread).
    private var seen: [String: Bool] = [:]

    public init(_ pattern: String) throws(QueryError) {
        regex = try RE2Regex(pattern)
        literals = Self.literalAlternatives(pattern).map(Set.init)
    }

    public func matches(_ value: String) -> Bool {
        if let literals { return literals.contains(value) }
        if let known = seen[value] { return known }
        let found = regex.matches(value)
        seen[value] = found
        return found
    }

    /// `^lit$`, `^(lit|lit|…)$` (also `(?:`) → the literals, unescaped; `nil` when the pattern is anything else.
    static func literalAlternatives(_ pattern: String) -> [String]? {
        // Whether the last character is itself (not escaped by an odd run of backslashes before it).
        func lastIsUnescaped(_ chars: [Unicode.Scalar]) -> Bool {
            var slashes = 0
            while slashes < chars.count - 1 && chars[chars.count - 2 - slashes] == "\\" { slashes += 1 }
            return slashes % 2 == 0
        }
        var chars = Array(pattern.unicodeScalars)
        guard chars.count >= 2, chars.first == "^", chars.last == "$", lastIsUnescaped(chars) else { return nil }
        chars = Array(chars[1..<(chars.count - 1)])
        // `^a|b$` is `(^a)|(b$)`: alternatives count only inside the group.
        var grouped = false
        if chars.count >= 2, chars.first == "(", chars.last == ")", lastIsUnescaped(chars) {
            chars = Array(chars[1..<(chars.count - 1)])
            if chars.starts(with: ["?", ":"]) { chars.removeFirst(2) }
            grouped = true
        }
        var out: [String] = []
        var current = String.UnicodeScalarView()
        var k = 0
        while k < chars.count {
            let c = chars[k]
            if c == "\\" {
                // An escaped punctuation character is itself; `\d`, `\w`, … are classes, not literals.
                guard k + 1 < chars.count, !chars[k + 1].properties.isAlphabetic,
                    !("0"..."9").contains(chars[k + 1])
                else { return nil }
                current.append(chars[k + 1])
                k += 2
                continue
            }
            if c == "|" {
                guard grouped else { return nil }
                out.append(String(current))
                current = String.UnicodeScalarView()
            } else if ".^$*+?()[]{}".unicodeScalars.contains(c) {
                return nil
            } else {
                current.append(c)
            }
            k += 1
        }
        out.append(String(current))
        return out
    }
}
