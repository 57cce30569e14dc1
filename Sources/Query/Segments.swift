/// Segments: conditions on event properties (`where=country:DE,revenue>=10`, and per funnel step), evaluated on
/// the property's text as the index keeps it (a string's text; a number's or a boolean's JSON text).
///
/// - `=` / `!=`: numeric equality when both the property and the value are JSON numbers (`10` = `10.0`), else
///   text equality. `!=` also holds when the event lacks the property.
/// - `<`, `<=`, `>`, `>=`: both must be JSON numbers (a string property holding one, such as `"10"`, counts as
///   its number); an event without the property, or with a non-numeric one, does not match.
/// - `=~` / `!~`: RE2 regular expression, unanchored (as InfluxQL and ClickHouse's `match`); `!~` also holds when
///   the property is absent.
public struct PropertyCondition: Sendable, Equatable, CustomStringConvertible {
    public enum Op: String, Sendable, CaseIterable {
        case equal = "="
        case notEqual = "!="
        case less = "<"
        case lessOrEqual = "<="
        case greater = ">"
        case greaterOrEqual = ">="
        case match = "=~"
        case notMatch = "!~"
    }

    public var key: String
    public var op: Op
    public var value: String
    /// The value as a JSON number, when it is one.
    public let number: Double?
    /// For `=~` and `!~`: whether a text matches (RE2, supplied by the caller: this module does not link it).
    public let regex: (@Sendable (String) -> Bool)?

    public init(key: String, op: Op, value: String, regex: (@Sendable (String) -> Bool)? = nil) {
        self.key = key
        self.op = op
        self.value = value
        self.number = Self.jsonNumber(value)
        self.regex = regex
    }

    public var description: String { "\(key)\(op.rawValue)\(value)" }

    /// The same condition (key, operator, value); the compiled regex follows from the value.
    public static func == (a: Self, b: Self) -> Bool { a.key == b.key && a.op == b.op && a.value == b.value }

    /// Whether a property text (`nil`: the event lacks the property) satisfies the condition.
    public func matches(_ text: String?) -> Bool {
        switch op {
        case .equal: return text.map(equals) ?? false
        case .notEqual: return !(text.map(equals) ?? false)
        case .match: return text.map { regex?($0) ?? false } ?? false
        case .notMatch: return !(text.map { regex?($0) ?? false } ?? false)
        case .less, .lessOrEqual, .greater, .greaterOrEqual:
            guard let text, let x = Self.jsonNumber(text), let v = number else { return false }
            switch op {
            case .less: return x < v
            case .lessOrEqual: return x <= v
            case .greater: return x > v
            default: return x >= v
            }
        }
    }

    private func equals(_ text: String) -> Bool {
        if let v = number, let x = Self.jsonNumber(text) { return x == v }
        return text == value
    }

    /// `text` as a number if it is written as JSON writes one (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`).
    public static func jsonNumber(_ text: String) -> Double? {
        var u = Array(text.utf8)[...]
        func digits() -> Int {
            var n = 0
            while let c = u.first, c >= 0x30, c <= 0x39 {
                u = u.dropFirst()
                n += 1
            }
            return n
        }
        if u.first == 0x2D { u = u.dropFirst() }
        if u.first == 0x30 {
            u = u.dropFirst()
        } else if digits() == 0 {
            return nil
        }
        if u.first == 0x2E {
            u = u.dropFirst()
            guard digits() > 0 else { return nil }
        }
        if u.first == 0x65 || u.first == 0x45 {
            u = u.dropFirst()
            if u.first == 0x2B || u.first == 0x2D { u = u.dropFirst() }
            guard digits() > 0 else { return nil }
        }
        guard u.isEmpty else { return nil }
        return Double(text)
    }
}

/// Conditions that must all hold (an empty filter holds for every event).
public struct EventFilter: Sendable, Equatable {
    public var conditions: [PropertyCondition]

    public init(_ conditions: [PropertyCondition] = []) { self.conditions = conditions }

    public var isEmpty: Bool { conditions.isEmpty }

    /// Both filters' conditions.
    public func and(_ other: EventFilter) -> EventFilter { EventFilter(conditions + other.conditions) }

    public static let all = EventFilter()
}
