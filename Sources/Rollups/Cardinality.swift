import LineProtocol
import Synchronization

/// Series per measurement and distinct values per tag key, for `[rollup] max_series_per_measurement` and
/// `GET /api/v1/cardinality`. Touched only when a series is made or dropped and for points folded into an
/// overflow series — never for a point of a known series.
///
/// Distinct values are counted by a ``DistinctSketch`` per tag key (relative standard error
/// ``DistinctSketch/standardError``, 1.6 %): over the series made, and over the series that
/// were refused and folded, so the tag that explodes is named even once nothing new gets in. Every
/// ``snapshotInterval`` each key's estimate is noted (an hour of them kept), which gives its growth over the last
/// hour.
public final class CardinalityTracker: Sendable {
    /// Tag keys tracked per measurement and in all, and measurements tracked: bounds what a flood of new names
    /// can cost (a sketch is at most 4 KiB: 40 MiB for every key at most).
    public static let maxTagKeys = 256
    public static let maxTrackedKeys = 10_000
    public static let maxMeasurements = 100_000
    /// How often each tag key's estimate is noted for its growth.
    public static let snapshotInterval: Int64 = 300_000_000_000
    /// The window growth is measured over.
    public static let growthWindow: Int64 = 3_600_000_000_000

    struct TagStats {
        var sketch = DistinctSketch()
        /// (time, estimate), oldest first, spanning at most a little over ``growthWindow``.
        var history: [(time: Int64, estimate: Double)] = []
    }

    struct Measurement {
        var series = 0
        /// Points folded into the measurement's overflow series.
        var overflowPoints = 0
        /// Distinct values per tag key.
        var tags: [String: TagStats] = [:]
        var lastSnapshot: Int64 = 0
    }

    struct State {
        var measurements: [String: Measurement] = [:]
        /// Tag keys sketched, over every measurement.
        var trackedKeys = 0
    }

    private let state = Mutex(State())
    /// `[rollup] max_series_per_measurement` (0: none).
    public let maxPerMeasurement: Int

    public init(maxPerMeasurement: Int) {
        self.maxPerMeasurement = maxPerMeasurement
    }

    /// A new series of `d`'s measurement: admitted unless the measurement is at its limit (an overflow series is
    /// always admitted); counted and its tag values sketched when admitted.
    func admit(_ d: PointView, overflow: Bool, now: Int64) -> Bool {
        let name = String(decoding: d.measurement, as: UTF8.self)
        return state.withLock { s -> Bool in
            if s.measurements[name] == nil && s.measurements.count >= Self.maxMeasurements && !overflow { return false }
            var m = s.measurements[name] ?? Measurement()
            if !overflow, maxPerMeasurement > 0, m.series >= maxPerMeasurement { return false }
            m.series += 1
            if !overflow { Self.sketch(d, into: &m, tracked: &s.trackedKeys, now: now) }
            s.measurements[name] = m
            return true
        }
    }

    /// A point of a series that was refused and folded into its measurement's overflow series: its tag values
    /// still count towards the distinct values (so the tag that explodes is named).
    func noteOverflow(_ d: PointView, now: Int64) {
        let name = String(decoding: d.measurement, as: UTF8.self)
        state.withLock { s in
            guard s.measurements[name] != nil || s.measurements.count < Self.maxMeasurements else { return }
            var m = s.measurements[name] ?? Measurement()
            m.overflowPoints += 1
            Self.sketch(d, into: &m, tracked: &s.trackedKeys, now: now)
            s.measurements[name] = m
        }
    }

    /// Series of `measurement` dropped (idle).
    func release(_ measurement: String, count: Int) {
        state.withLock { s in
            guard var m = s.measurements[measurement] else { return }
            m.series = max(0, m.series - count)
            s.measurements[measurement] = m
        }
    }

    private static func sketch(_ d: PointView, into m: inout Measurement, tracked: inout Int, now: Int64) {
        for tag in d.tags {
            let key = String(decoding: tag.key, as: UTF8.self)
            if m.tags[key] == nil {
                guard m.tags.count < maxTagKeys, tracked < maxTrackedKeys else { continue }
                tracked += 1
            }
            m.tags[key, default: TagStats()].sketch.add(hash: DistinctSketch.hash(tag.value))
        }
        if now - m.lastSnapshot >= snapshotInterval { snapshot(&m, now: now) }
    }

    private static func snapshot(_ m: inout Measurement, now: Int64) {
        m.lastSnapshot = now
        for key in m.tags.keys {
            var stats = m.tags[key]!
            stats.history.append((now, stats.sketch.estimate))
            // Keep one entry at or before the window's start, and what follows it.
            while stats.history.count > 1, stats.history[1].time <= now - growthWindow { stats.history.removeFirst() }
            m.tags[key] = stats
        }
    }

    /// One tag key of a measurement in a ``Report``.
    public struct TagReport: Sendable, Equatable {
        public var key: String
        /// Distinct values seen (an estimate within the sketch's error).
        public var distinctValues: Double
        /// Growth of ``distinctValues`` since `since` (the oldest estimate within the last hour, or the first).
        public var growth: Double
        public var since: Int64
    }

    public struct MeasurementReport: Sendable, Equatable {
        public var measurement: String
        public var series: Int
        public var overflowPoints: Int
        /// By distinct values, most first.
        public var tags: [TagReport]
    }

    /// Every measurement (most series first, at most `limit`), and the tag keys that grew most in the last hour
    /// (at most `top`).
    public func report(now: Int64, limit: Int = 1000, top: Int = 10) -> (
        measurements: [MeasurementReport], growing: [(measurement: String, tag: TagReport)]
    ) {
        let copy = state.withLock { s -> [String: Measurement] in
            for name in s.measurements.keys where now - s.measurements[name]!.lastSnapshot >= Self.snapshotInterval {
                Self.snapshot(&s.measurements[name]!, now: now)
            }
            return s.measurements
        }
        // Estimates and sorting outside the lock: a report's cost is its caller's.
        var measurements: [MeasurementReport] = []
        var growing: [(String, TagReport)] = []
        for (name, m) in copy {
            var tags: [TagReport] = []
            for (key, stats) in m.tags {
                let estimate = stats.sketch.estimate.rounded()
                // The estimate an hour ago, or the first one noted when the key is younger.
                let from =
                    stats.history.last { $0.time <= now - Self.growthWindow } ?? stats.history.first ?? (now, 0)
                let report = TagReport(
                    key: key, distinctValues: estimate, growth: max(0, estimate - from.estimate.rounded()),
                    since: from.time)
                tags.append(report)
                growing.append((name, report))
            }
            tags.sort { ($0.distinctValues, $1.key) > ($1.distinctValues, $0.key) }
            measurements.append(
                MeasurementReport(measurement: name, series: m.series, overflowPoints: m.overflowPoints, tags: tags))
        }
        measurements.sort { ($0.series, $1.measurement) > ($1.series, $0.measurement) }
        growing.sort { ($0.1.growth, $1.0, $1.1.key) > ($1.1.growth, $0.0, $0.1.key) }
        return (Array(measurements.prefix(limit)), Array(growing.prefix(top)))
    }
}
