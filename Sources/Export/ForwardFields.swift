public import LineProtocol
public import Rollups

/// The aggregates that can be forwarded to InfluxDB, in the order they are written.
public enum ForwardedAggregate: String, Sendable, CaseIterable {
    case count, sum, min, max, mean, stddev, first, last

    /// The field name written for `field`: `<field>_<aggregate>`.
    public func fieldName(for field: String) -> String { "\(field)_\(rawValue)" }
}

/// Builds the point forwarded to InfluxDB for one series-minute: measurement `<measurement><suffix>`, the
/// series' tags, and one field per aggregate (`usage_count` as an integer, the others as floats), stamped with
/// the bucket start. Re-sending the same minute produces the same point key, so InfluxDB overwrites it.
public enum ForwardPointBuilder {
    public static func point(
        measurement: String,
        suffix: String,
        tags: [(key: String, value: String)],
        fields: [(name: String, aggregate: NumericAggregate)],
        aggregates: [ForwardedAggregate],
        bucketStart: Int64
    ) -> Point? {
        var out: [(key: String, value: Value)] = []
        for (name, aggregate) in fields where aggregate.count > 0 {
            for kind in aggregates {
                let value: Value?
                switch kind {
                case .count: value = .integer(aggregate.count)
                case .sum: value = .float(aggregate.sum)
                case .min: value = .float(aggregate.min)
                case .max: value = .float(aggregate.max)
                case .mean: value = aggregate.mean.map(Value.float)
                case .stddev: value = aggregate.stddev.map(Value.float)
                case .first: value = .float(aggregate.first)
                case .last: value = .float(aggregate.last)
                }
                if let value { out.append((kind.fieldName(for: name), value)) }
            }
        }
        guard !out.isEmpty else { return nil }
        return Point(measurement: measurement + suffix, tags: tags, fields: out, timestamp: bucketStart)
    }
}
