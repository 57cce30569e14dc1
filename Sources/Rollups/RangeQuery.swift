/// A range query over rollups: one field of one measurement, an aggregate, a time range `[from, to)` and a step,
/// optional tag equality filters and grouping by tags.
public struct RangeQuery: Sendable, Hashable {
    public var measurement: String
    public var field: String
    public var aggregate: Aggregate
    /// Nanoseconds since the epoch.
    public var from: Int64
    public var to: Int64
    /// Step in nanoseconds: a multiple of the bucket width.
    public var step: Int64
    /// Every filter must match (tag key = value).
    public var filters: [TagPair]
    /// Tag keys to group by; no grouping merges every matching series into one.
    public var groupBy: [String]

    public init(
        measurement: String,
        field: String,
        aggregate: Aggregate,
        from: Int64,
        to: Int64,
        step: Int64,
        filters: [TagPair] = [],
        groupBy: [String] = []
    ) {
        self.measurement = measurement
        self.field = field
        self.aggregate = aggregate
        self.from = from
        self.to = to
        self.step = step
        self.filters = filters
        self.groupBy = groupBy
    }
}

/// The answer: one group per distinct value of the group-by tags, each a time-sorted list of
/// `(step start, value)` for the non-empty steps.
public struct RangeResult: Sendable, Equatable {
    public struct Group: Sendable, Equatable {
        public var tags: [TagPair]
        public var points: [Point]
    }

    public struct Point: Sendable, Equatable {
        public var start: Int64
        public var value: Double
    }

    public var groups: [Group]
}

extension RangeQuery {
    /// Merges `cells` (open and stored, possibly overlapping partial rollups of the same bucket) into steps and
    /// groups, then computes the aggregate. Because rollups merge exactly, a bucket split between memory and storage
    /// gives the same answer as if it had never been split.
    public func evaluate(_ cells: [(start: Int64, cell: ClosedCell)]) -> RangeResult {
        var accumulator = RangeAccumulator(self)
        for (start, cell) in cells { accumulator.add(start, cell.series, cell.field, cell.rollup) }
        return accumulator.result()
    }

    /// Whether the query's tag filters take `series`.
    public func takes(_ series: SeriesInfo) -> Bool { filters.allSatisfy { series.tag($0.key) == $0.value } }
}

/// A ``RangeQuery`` answered as its cells arrive: each merged into its (group, step) at once, so the memory is one
/// rollup per (group, step) whatever the number of cells read.
public struct RangeAccumulator {
    public let query: RangeQuery
    private var merged: [[String]: [Int64: FieldRollup]] = [:]
    /// (group, step) pairs holding a rollup.
    public private(set) var slots = 0

    public init(_ query: RangeQuery) { self.query = query }

    /// Adds one cell; returns whether it took a new (group, step).
    @discardableResult
    public mutating func add(_ start: Int64, _ series: SeriesInfo, _ field: String, _ rollup: consuming FieldRollup)
        -> Bool
    {
        let q = query
        guard start >= q.from && start < q.to, field == q.field, series.measurement == q.measurement, q.takes(series)
        else { return false }
        let group = q.groupBy.map { series.tag($0) ?? "" }
        let stepStart = q.from &+ ((start &- q.from) / q.step) * q.step
        if merged[group]?[stepStart] != nil {
            merged[group]![stepStart]!.merge(rollup)
            return false
        }
        merged[group, default: [:]][stepStart] = rollup
        slots += 1
        return true
    }

    public func result() -> RangeResult {
        var groups: [RangeResult.Group] = []
        for (group, steps) in merged {
            let points = steps.keys.sorted().compactMap { start in
                steps[start]!.value(of: query.aggregate).map { RangeResult.Point(start: start, value: $0) }
            }
            if points.isEmpty { continue }
            groups.append(RangeResult.Group(tags: zip(query.groupBy, group).map { TagPair($0, $1) }, points: points))
        }
        groups.sort { $0.tags.map(\.value).lexicographicallyPrecedes($1.tags.map(\.value)) }
        return RangeResult(groups: groups)
    }
}
