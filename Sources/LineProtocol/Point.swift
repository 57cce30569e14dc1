/// An owned field value (strings are copied). Used off the hot path: tests, the CLI, forwarding.
public enum Value: Hashable, Sendable {
    case float(Double)
    case integer(Int64)
    case unsigned(UInt64)
    case boolean(Bool)
    case string(String)

    /// Bit-exact equality for floats (so `-0.0` and `0.0` differ), ordinary equality otherwise.
    public func isIdentical(to other: Value) -> Bool {
        if case .float(let a) = self, case .float(let b) = other { return a.bitPattern == b.bitPattern }
        return self == other
    }
}

/// An owned point: measurement, tags sorted by key, fields in order, and an optional timestamp in nanoseconds.
public struct Point: Hashable, Sendable {
    public var measurement: String
    public var tags: [(key: String, value: String)]
    public var fields: [(key: String, value: Value)]
    public var timestamp: Int64?

    public init(
        measurement: String,
        tags: [(key: String, value: String)] = [],
        fields: [(key: String, value: Value)],
        timestamp: Int64? = nil
    ) {
        self.measurement = measurement
        self.tags = tags
        self.fields = fields
        self.timestamp = timestamp
    }

    public static func == (lhs: Point, rhs: Point) -> Bool {
        lhs.measurement == rhs.measurement && lhs.timestamp == rhs.timestamp
            && lhs.tags.elementsEqual(rhs.tags, by: { $0.key == $1.key && $0.value == $1.value })
            && lhs.fields.elementsEqual(rhs.fields, by: { $0.key == $1.key && $0.value.isIdentical(to: $1.value) })
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(measurement)
        hasher.combine(timestamp)
        for t in tags {
            hasher.combine(t.key)
            hasher.combine(t.value)
        }
        for f in fields { hasher.combine(f.key) }
    }
}

extension LineDecoder {
    /// Copies the last decoded line into an owned ``Point``. Allocates; not for the hot path.
    public func makePoint() -> Point {
        Point(
            measurement: String(decoding: measurement, as: UTF8.self),
            tags: tags.map { (String(decoding: $0.key, as: UTF8.self), String(decoding: $0.value, as: UTF8.self)) },
            fields: fields.map { field in
                let value: Value =
                    switch field.value {
                    case .float(let v): .float(v)
                    case .integer(let v): .integer(v)
                    case .unsigned(let v): .unsigned(v)
                    case .boolean(let v): .boolean(v)
                    case .string(let s): .string(String(decoding: s, as: UTF8.self))
                    }
                return (String(decoding: field.key, as: UTF8.self), value)
            },
            timestamp: timestamp
        )
    }
}
