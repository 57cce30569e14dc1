/// What a ``FieldRollup`` answers without its sketches and string bytes: every aggregate but quantiles and
/// distinct counts, in a plain value (no arrays, nothing reference-counted) that is cheap to copy, merge and keep.
///
/// Queries that compute no quantile and no distinct count read stored rows into summaries, and keep decoded
/// summaries between refreshes (`SQLiteStore`'s summary blocks); for a numeric field the summary is the
/// ``NumericAggregate``, for a boolean its true count and last value, for a string or distinct field its count.
public struct FieldSummary: Sendable, Equatable {
    public private(set) var kind: FieldKind
    /// Values seen (every kind).
    public private(set) var count: Int64 = 0
    public private(set) var trueCount: Int64 = 0
    public private(set) var lastTime: Int64 = .min
    public private(set) var lastBool = false
    public private(set) var numeric = NumericAggregate()

    /// An empty summary (``count`` 0): no values, merges as nothing.
    public init(kind: FieldKind = .numeric) {
        self.kind = kind
    }

    /// The summary of `rollup`.
    public init(_ rollup: FieldRollup) {
        kind = rollup.kind
        count = rollup.count
        trueCount = rollup.trueCount
        lastTime = rollup.lastTime
        lastBool = rollup.lastBool
        numeric = rollup.numeric
    }

    /// Reads the summary of a rollup written by ``FieldRollup/write(to:base:)`` with the same `base`. `r` is left
    /// inside the rollup when its kind carries more (string bytes, a distinct sketch): the caller moves on by the
    /// rollup's length. A numeric rollup's quantile sketch is checked and stepped over (nothing is allocated).
    public init?(reading r: inout ByteReader, base: Int64) {
        guard let kindByte = r.u8(), let kind = FieldKind(rawValue: kindByte), let count = r.varint() else {
            return nil
        }
        self.kind = kind
        self.count = Int64(bitPattern: count)
        switch kind {
        case .numeric:
            guard let numeric = NumericAggregate(reading: &r, base: base), QuantileSketch.skip(reading: &r) else {
                return nil
            }
            self.numeric = numeric
        case .boolean:
            guard let t = r.varint(), let time = r.zigzag(), let b = r.u8() else { return nil }
            trueCount = Int64(bitPattern: t)
            lastTime = base &+ time
            lastBool = b != 0
        case .string, .distinct:
            guard let time = r.zigzag() else { return nil }
            lastTime = base &+ time
        }
    }

    /// The time the next field of a stored row is written relative to (``FieldRollup/timeAnchor``).
    public var timeAnchor: Int64 { kind == .numeric ? numeric.firstTime : lastTime }

    /// Merges `other` (same series and field) into `self`, as ``FieldRollup/merge(_:)`` does. An empty summary
    /// takes `other` whole; one of another kind is ignored.
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
            numeric.merge(other.numeric)
        case .boolean:
            trueCount &+= other.trueCount
            if other.lastTime >= lastTime {
                lastTime = other.lastTime
                lastBool = other.lastBool
            }
        case .string, .distinct:
            if other.lastTime > lastTime { lastTime = other.lastTime }
        }
    }

    /// The value of aggregate `agg`, as ``FieldRollup/value(of:)`` gives it; `nil` for quantiles and distinct
    /// counts (a summary does not keep their sketches), and when the aggregate does not apply.
    public func value(of agg: Aggregate) -> Double? {
        guard count > 0 else { return nil }
        switch (kind, agg) {
        case (_, .count): return Double(count)
        case (.numeric, _): return numeric.value(of: agg)
        case (.boolean, .last): return lastBool ? 1 : 0
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
