import Rollups

/// What a window of a SELECT merges: full rollups (points, quantiles, strings) or their summaries.
protocol WindowCell {
    init(_ rollup: FieldRollup)
    mutating func merge(_ other: Self, exactLimit: Int)
    var count: Int64 { get }
    var kind: FieldKind { get }
    var isInteger: Bool { get }
    var numeric: NumericAggregate { get }
    var trueCount: Int64 { get }
    var firstTime: Int64 { get }
    var firstBool: Bool { get }
    var lastTime: Int64 { get }
    var lastBool: Bool { get }
    /// The points, in time order, when the cell keeps every one of them.
    var exactPoints: [ExactPoint]? { get }
    var pointCount: Int { get }
    func quantileEstimate(_ q: Double) -> Double?
    var firstText: String? { get }
    var lastText: String? { get }
    func text(of point: ExactPoint) -> String
    var distinctEstimate: Double? { get }
}

extension FieldRollup: WindowCell {
    init(_ rollup: FieldRollup) { self = rollup }
    var exactPoints: [ExactPoint]? { isExact ? points : nil }
    var pointCount: Int { points.count }
    func quantileEstimate(_ q: Double) -> Double? { sketch.quantile(q) }
    var firstText: String? { kind == .string ? firstString : nil }
    var lastText: String? { kind == .string ? lastString : nil }
    func text(of point: ExactPoint) -> String { string(of: point) }
    var distinctEstimate: Double? { kind == .distinct ? distinct.estimate.rounded() : nil }
}

extension FieldSummary: WindowCell {
    mutating func merge(_ other: FieldSummary, exactLimit: Int) { merge(other) }
    var exactPoints: [ExactPoint]? { nil }
    var pointCount: Int { 0 }
    func quantileEstimate(_ q: Double) -> Double? { nil }
    var firstText: String? { nil }
    var lastText: String? { nil }
    func text(of point: ExactPoint) -> String { "" }
    var distinctEstimate: Double? { nil }
}

/// The windows of a statement: consecutive runs of windows of one width (`GROUP BY time(d)`, 1 h or more where
/// the range reaches past `retention_1m`, one window without GROUP BY time).
struct WindowGrid {
    struct Segment {
        var start: Int64
        var step: Int64
        var count: Int
        /// The index of the segment's first window.
        var base: Int
    }
    var segments: [Segment] = []
    var count: Int { segments.last.map { $0.base + $0.count } ?? 0 }

    /// The window holding `t`, or `nil` outside every window.
    @inline(__always)
    func index(_ t: Int64) -> Int? {
        // One window for the whole range (no GROUP BY time): every time read is in it.
        if segments.count == 1, segments[0].step == .max { return 0 }
        for s in segments.reversed() where t >= s.start {
            let k = Int((t - s.start) / s.step)
            return k < s.count ? s.base + k : nil
        }
        return nil
    }

    func start(_ w: Int) -> Int64 {
        for s in segments.reversed() where w >= s.base { return s.start + Int64(w - s.base) * s.step }
        return segments.first?.start ?? 0
    }

    func end(_ w: Int) -> Int64 {
        if segments.count == 1, segments[0].step == .max { return .max }
        for s in segments.reversed() where w >= s.base { return s.start + Int64(w - s.base + 1) * s.step }
        return 0
    }

    /// The windows from `lo` on, numbered from 0.
    func slice(from lo: Int) -> WindowGrid {
        guard lo > 0 else { return self }
        var g = WindowGrid()
        for s in segments where s.base + s.count > lo {
            let skip = Swift.max(0, lo - s.base)
            g.append(start: s.start + Int64(skip) * s.step, step: s.step, count: s.count - skip)
        }
        return g
    }

    mutating func append(start: Int64, step: Int64, count: Int) {
        guard count > 0 else { return }
        if var last = segments.last, last.step == step, last.start + Int64(last.count) * step == start {
            last.count += count
            segments[segments.count - 1] = last
            return
        }
        segments.append(Segment(start: start, step: step, count: count, base: self.count))
    }
}

/// One group of a SELECT (series with the same GROUP BY tags): a slot per (window, field), found through the
/// window's index — an array up to a few thousand windows, a dictionary beyond.
struct WindowGroup<Cell: WindowCell> {
    var key: [String]
    var tags: [TagPair]
    var dense: [Int32]
    var sparse: [Int: Int] = [:]
    var cells: [Cell?] = []
    /// Series of the group, in the order met (raw rows of one time are ordered by it).
    var series: [SeriesInfo] = []
    /// Raw points: (time, series ordinal, field, value).
    var raw: [RawPoint] = []

    func slot(_ window: Int) -> Int? {
        if dense.isEmpty { return sparse[window] }
        let base = dense[window]
        return base >= 0 ? Int(base) : nil
    }

    mutating func setSlot(_ window: Int, _ base: Int) {
        if dense.isEmpty { sparse[window] = base } else { dense[window] = Int32(base) }
    }

    /// The group with its windows from `lo` on, numbered from 0 (the cells are shared, not copied).
    func slice(from lo: Int) -> WindowGroup {
        guard lo > 0 else { return self }
        var g = self
        if dense.isEmpty {
            g.sparse = [:]
            for (w, base) in sparse where w >= lo { g.sparse[w - lo] = base }
        } else {
            g.dense = Array(dense[lo...])
        }
        return g
    }

    /// The windows that hold a slot, ascending.
    func windows(count: Int) -> [Int] {
        if dense.isEmpty { return sparse.keys.sorted() }
        return (0..<count).filter { dense[$0] >= 0 }
    }
}

struct RawPoint {
    var time: Int64
    var series: Int32
    var field: Int32
    var value: ResultValue
}
