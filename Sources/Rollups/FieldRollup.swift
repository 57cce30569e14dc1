/// What kind of values a field carries. Integers, unsigned integers and floats are all numeric.
public enum FieldKind: UInt8, Sendable, Hashable {
    case numeric = 0
    case boolean = 1
    case string = 2
    /// Distinct values (user ids of events) counted with a ``DistinctSketch``; only metricsd itself writes these.
    case distinct = 3

    public var name: String {
        switch self {
        case .numeric: "numeric"
        case .boolean: "boolean"
        case .string: "string"
        case .distinct: "distinct"
        }
    }
}

/// The rollup of one (series, field, bucket): every aggregate metricsd keeps, mergeable exactly.
///
/// - numeric: ``NumericAggregate`` (count, sum, min, max, first, last, stddev) and a ``QuantileSketch``;
/// - boolean: count, count of `true`, last value by timestamp;
/// - string: count, last value by timestamp (kept as bytes in a buffer that is reused, not reallocated);
/// - distinct: count, last time, and a ``DistinctSketch`` of the values' hashes.
public struct FieldRollup: Sendable {
    public internal(set) var kind: FieldKind
    public internal(set) var numeric = NumericAggregate()
    public internal(set) var sketch = QuantileSketch()
    /// Values seen (every kind).
    public internal(set) var count: Int64 = 0
    public internal(set) var trueCount: Int64 = 0
    public internal(set) var lastTime: Int64 = .min
    public internal(set) var lastBool = false
    public internal(set) var lastBytes: [UInt8] = []
    public internal(set) var distinct = DistinctSketch()

    public init(kind: FieldKind) {
        self.kind = kind
    }

    /// The last string value, for string fields.
    public var lastString: String { String(decoding: lastBytes, as: UTF8.self) }

    public mutating func add(_ value: Double, at time: Int64) {
        count &+= 1
        numeric.add(value, at: time)
        sketch.add(value)
    }

    public mutating func add(_ value: Bool, at time: Int64) {
        count &+= 1
        if value { trueCount &+= 1 }
        if time >= lastTime {
            lastTime = time
            lastBool = value
        }
    }

    public mutating func add(_ bytes: UnsafeBufferPointer<UInt8>, at time: Int64) {
        count &+= 1
        if time >= lastTime {
            lastTime = time
            lastBytes.replaceSubrange(0..<lastBytes.count, with: bytes)
        }
    }

    /// Adds a value of a distinct-count field by its hash (``DistinctSketch/hash(_:)``).
    public mutating func add(distinctHash hash: UInt64, at time: Int64) {
        count &+= 1
        distinct.add(hash: hash)
        if time >= lastTime { lastTime = time }
    }

    /// Merges `other` (same series and field) into `self`. A rollup of another kind is ignored: a field's kind is
    /// fixed when it is first seen, and conflicting values are rejected at ingest.
    public mutating func merge(_ other: FieldRollup) {
        guard other.kind == kind, other.count > 0 else { return }
        count &+= other.count
        switch kind {
        case .numeric:
            numeric.merge(other.numeric)
            sketch.merge(other.sketch)
        case .boolean:
            trueCount &+= other.trueCount
            if other.lastTime >= lastTime {
                lastTime = other.lastTime
                lastBool = other.lastBool
            }
        case .string:
            if other.lastTime >= lastTime {
                lastTime = other.lastTime
                lastBytes = other.lastBytes
            }
        case .distinct:
            distinct.merge(other.distinct)
            if other.lastTime > lastTime { lastTime = other.lastTime }
        }
    }

    /// The value of aggregate `agg` for this rollup, or `nil` when it does not apply or is undefined.
    public func value(of agg: Aggregate) -> Double? {
        guard count > 0 else { return nil }
        switch (kind, agg) {
        case (_, .count): return Double(count)
        case (.numeric, .quantile(let q)): return sketch.quantile(q)
        case (.numeric, _): return numeric.value(of: agg)
        case (.boolean, .last): return lastBool ? 1 : 0
        case (.boolean, .sum): return Double(trueCount)
        case (.boolean, .mean): return Double(trueCount) / Double(count)
        case (.distinct, .distinct): return distinct.estimate.rounded()
        default: return nil
        }
    }
}

/// An aggregate a query can ask for.
public enum Aggregate: Sendable, Hashable, CustomStringConvertible {
    case count, sum, min, max, mean, first, last, stddev, spread
    /// The estimated number of distinct values (distinct-count fields only).
    case distinct
    /// Quantile in 0...1 (`p99` is 0.99, `median` is 0.5).
    case quantile(Double)

    /// Parses `count|sum|min|max|mean|first|last|stddev|spread|median|p<N>` (N in 0...100, e.g. `p99.9`).
    public init?(_ text: String) {
        switch text.lowercased() {
        case "count": self = .count
        case "sum": self = .sum
        case "min": self = .min
        case "max": self = .max
        case "mean", "avg": self = .mean
        case "first": self = .first
        case "last": self = .last
        case "stddev": self = .stddev
        case "spread": self = .spread
        case "distinct": self = .distinct
        case "median": self = .quantile(0.5)
        case let t where t.hasPrefix("p"):
            guard let n = Double(t.dropFirst()), n >= 0, n <= 100 else { return nil }
            self = .quantile(n / 100)
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .count: "count"
        case .sum: "sum"
        case .min: "min"
        case .max: "max"
        case .mean: "mean"
        case .first: "first"
        case .last: "last"
        case .stddev: "stddev"
        case .spread: "spread"
        case .distinct: "distinct"
        case .quantile(let q):
            "p" + String(q * 100).replacingZeroFraction()
        }
    }
}

extension String {
    fileprivate func replacingZeroFraction() -> String {
        hasSuffix(".0") ? String(dropLast(2)) : self
    }
}
