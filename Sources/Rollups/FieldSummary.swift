/// What a ``FieldRollup`` answers without its points, sketches and string bytes: every aggregate but quantiles,
/// modes and distinct counts, in a plain value (no arrays, nothing reference-counted) that is cheap to copy, merge
/// and keep.
///
/// Queries that compute none of those read stored rows into summaries, and keep decoded summaries between
/// refreshes (`SQLiteStore`'s summary blocks); for a numeric field the summary is the ``NumericAggregate`` (with
/// the times of its minimum and maximum), for a boolean its true count and first and last values, for a string or
/// distinct field its count and times.
public struct FieldSummary: Sendable, Equatable {
    public private(set) var kind: FieldKind
    /// Numeric fields: every value was an integer.
    public private(set) var isInteger = true
    public private(set) var firstBool = false
    public private(set) var lastBool = false
    /// Values seen (every kind).
    public private(set) var count: Int64 = 0
    public private(set) var trueCount: Int64 = 0
    /// A numeric field's aggregate; other kinds keep their first and last times in its `firstTime` and
    /// `lastTime`. So a summary is 128 bytes, which the compiler copies inline: at 160 each copy on the way from a
    /// stored row to a query's window was a call to `memmove` (15 % of a 1,000-series query's profile).
    private var aggregate = NumericAggregate()

    /// The numeric aggregate (empty for other kinds).
    public var numeric: NumericAggregate { kind == .numeric ? aggregate : NumericAggregate() }

    /// The first value's time (booleans and strings; numeric fields keep theirs in ``numeric``).
    public private(set) var firstTime: Int64 {
        get { kind == .numeric ? .max : aggregate.firstTime }
        set { if kind != .numeric { aggregate.firstTime = newValue } }
    }

    /// The last value's time (booleans, strings and distinct counts; numeric fields keep theirs in ``numeric``).
    public private(set) var lastTime: Int64 {
        get { kind == .numeric ? .min : aggregate.lastTime }
        set { if kind != .numeric { aggregate.lastTime = newValue } }
    }

    /// An empty summary (``count`` 0): no values, merges as nothing.
    public init(kind: FieldKind = .numeric) {
        self.kind = kind
    }

    /// The summary of `rollup`.
    public init(_ rollup: borrowing FieldRollup) {
        kind = rollup.kind
        isInteger = rollup.isInteger
        count = rollup.count
        trueCount = rollup.trueCount
        firstBool = rollup.firstBool
        lastBool = rollup.lastBool
        if kind == .numeric {
            aggregate = rollup.numeric
        } else {
            aggregate.firstTime = rollup.firstTime
            aggregate.lastTime = rollup.lastTime
        }
    }

    /// Reads the summary of a rollup written by ``FieldRollup/write(to:base:)`` with the same `base` (format
    /// `version`). `r` is left inside the rollup when its kind carries more (string bytes, points, a distinct
    /// sketch): the caller moves on by the rollup's length. A numeric rollup's quantile sketch is checked and
    /// stepped over (nothing is allocated).
    public init?(reading r: inout ByteReader, base: Int64, version: UInt8 = FieldRollup.formatVersion) {
        guard let flags = r.u8(), let kind = FieldKind(rawValue: flags & 0x3F), let count = r.varint() else {
            return nil
        }
        if version < 3 && flags > 3 { return nil }
        self.kind = kind
        self.count = Int64(bitPattern: count)
        let exact = flags & FieldRollup.exactFlag != 0
        switch kind {
        case .numeric:
            guard let numeric = NumericAggregate(reading: &r, base: base, version: version) else { return nil }
            aggregate = numeric
            isInteger = version >= 3 && flags & FieldRollup.integerFlag != 0
            if exact {
                // The points (at most a bucket's few): stepped over, so a numeric rollup is read to its end.
                guard count <= 4_096 else { return nil }
                for _ in 0..<count {
                    guard r.zigzag() != nil, r.number() != nil else { return nil }
                }
            } else {
                guard QuantileSketch.skip(reading: &r) else { return nil }
            }
        case .boolean:
            guard let t = r.varint() else { return nil }
            trueCount = Int64(bitPattern: t)
            if version >= 3 {
                guard let first = r.zigzag(), let firstValue = r.u8(), let last = r.zigzag(), let lastValue = r.u8()
                else { return nil }
                firstTime = base &+ first
                firstBool = firstValue != 0
                lastTime = firstTime &+ last
                lastBool = lastValue != 0
            } else {
                guard let time = r.zigzag(), let b = r.u8() else { return nil }
                lastTime = base &+ time
                lastBool = b != 0
                firstTime = lastTime
                firstBool = lastBool
            }
        case .string:
            guard let time = r.zigzag() else { return nil }
            if version >= 3 {
                firstTime = base &+ time
                guard let n = r.varint(), n <= 1 << 24, r.take(Int(n)) != nil, let last = r.zigzag() else {
                    return nil
                }
                lastTime = firstTime &+ last
            } else {
                lastTime = base &+ time
                firstTime = lastTime
            }
        case .distinct:
            guard let time = r.zigzag() else { return nil }
            lastTime = base &+ time
        }
    }

    /// When its first and last values came (`nil` for distinct counts, which keep only the last).
    public var valueTimes: (first: Int64, last: Int64)? {
        switch kind {
        case .numeric, .boolean, .string: (aggregate.firstTime, aggregate.lastTime)
        case .distinct: nil
        }
    }

    /// The time the next field of a stored row is written relative to (``FieldRollup/timeAnchor``).
    public var timeAnchor: Int64 {
        switch kind {
        case .numeric, .boolean, .string: aggregate.firstTime
        case .distinct: aggregate.lastTime
        }
    }

    /// Merges `other` (same series and field) into `self`, as ``FieldRollup/merge(_:exactLimit:)`` does. An empty
    /// summary takes `other` whole; one of another kind is ignored.
    public mutating func merge(_ other: FieldSummary) {
        guard other.count > 0 else { return }
        guard count > 0 else {
            self = other
            return
        }
        guard other.kind == kind else { return }
        count &+= other.count
        switch kind {
        case .numeric:
            aggregate.merge(other.aggregate)
            isInteger = isInteger && other.isInteger
        case .boolean:
            trueCount &+= other.trueCount
            if other.firstTime < firstTime || (other.firstTime == firstTime && !other.firstBool && firstBool) {
                firstTime = other.firstTime
                firstBool = other.firstBool
            }
            if other.lastTime > lastTime || (other.lastTime == lastTime && other.lastBool && !lastBool) {
                lastTime = other.lastTime
                lastBool = other.lastBool
            }
        case .string, .distinct:
            if other.firstTime < firstTime { firstTime = other.firstTime }
            if other.lastTime > lastTime { lastTime = other.lastTime }
        }
    }

    /// The value of aggregate `agg`, as ``FieldRollup/value(of:)`` gives it; `nil` for quantiles and distinct
    /// counts (a summary does not keep their sketches), and when the aggregate does not apply.
    public func value(of agg: Aggregate) -> Double? {
        guard count > 0 else { return nil }
        switch (kind, agg) {
        case (_, .count): return Double(count)
        case (.numeric, .quantile), (.numeric, .distinct): return nil
        case (.numeric, _): return aggregate.value(of: agg)
        case (.boolean, .last): return lastBool ? 1 : 0
        case (.boolean, .first): return firstBool ? 1 : 0
        case (.boolean, .sum): return Double(trueCount)
        case (.boolean, .mean): return Double(trueCount) / Double(count)
        default: return nil
        }
    }

    /// Whether a summary answers `agg` as the full rollup does (everything but quantiles and distinct counts).
    public static func answers(_ agg: Aggregate) -> Bool {
        switch agg {
        case .quantile, .distinct: false
        default: true
        }
    }
}
