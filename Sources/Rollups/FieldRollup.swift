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

/// One value of a cell that still keeps its values (``FieldRollup/points``): its time and, for a numeric field, the
/// value; for a boolean 0 or 1; for a string where its bytes are in the cell's text.
public struct ExactPoint: Sendable, Hashable {
    public var time: Int64
    public var value: Double

    public init(time: Int64, value: Double) {
        self.time = time
        self.value = value
    }
}

/// The rollup of one (series, field, bucket): every aggregate metricsd keeps, mergeable exactly.
///
/// - numeric: ``NumericAggregate`` (count, sum, min and max with their times, first, last, stddev) — computed from
///   the points, in time order, while the cell keeps them (at most ``exactLimit``), kept with a ``QuantileSketch`` of
///   the values beyond;
/// - boolean: count, count of `true`, first and last value by timestamp, the points while few;
/// - string: count, first and last value by timestamp, the points (and their bytes) while few;
/// - distinct: count, last time, and a ``DistinctSketch`` of the values' hashes.
///
/// A cell that keeps its points answers everything a raw-point store answers — exact percentiles, modes, distinct
/// counts, top values with their times, integrals, conditions on values, points inside part of a bucket — and costs
/// 16 bytes a point (the first 6 in the cell itself), about what the sketch's bins cost for so few values. Past
/// ``exactLimit`` points the values go into the sketch (numeric) or are dropped (booleans and strings keep their
/// counts, first and last).
public struct FieldRollup: @unchecked Sendable {
    /// The most points a stored cell keeps (Telegraf's default 10 s interval writes 6 a minute).
    public static let exactLimit = 16
    /// The most bytes of string values a cell keeps with its points.
    public static let exactTextLimit = 4_096

    /// The most points kept in the cell itself (no allocation, in the cell's own cache lines): a minute of
    /// Telegraf's default 10 s interval. A cell keeping more holds them all in one array.
    public static let inlineLimit = 6

    public internal(set) var kind: FieldKind
    /// Numeric fields: every value came as an integer (line protocol `i` or `u`): the field's type is `integer`.
    public internal(set) var isInteger = true
    /// How many of ``inlinePoints`` hold points (while ``heapPoints`` is empty).
    private var inlineCount: UInt8 = 0
    /// Values seen (every kind).
    public internal(set) var count: Int64 = 0
    /// The points in time order, while at most ``inlineLimit``.
    private var inlinePoints = InlineArray<6, ExactPoint>(repeating: ExactPoint(time: 0, value: 0))
    /// The points in time order, when more than ``inlineLimit`` are kept.
    private var heapPoints: [ExactPoint] = []
    /// What only some cells need — the numeric aggregate and the sketch of a cell past ``exactLimit`` points (a
    /// cell that keeps its points derives its aggregate from them), the state of boolean, string and distinct
    /// cells — kept apart, so the common cell (numeric, few points) is 128 bytes with its points.
    /// `@unchecked Sendable` is for this: a class instance, changed only after `isKnownUniquelyReferenced` (else
    /// replaced by a copy first), so no value is changed while another holds it — the copy on write arrays use.
    private var extra: ManagedBuffer<Extra, UInt8>?

    /// The numeric aggregate (count, sum, min and max with their times, first, last, stddev): computed from the
    /// points while the cell keeps them (in time order, so it does not depend on the order they came in), kept
    /// beyond that. Empty for other kinds.
    public internal(set) var numeric: NumericAggregate {
        get {
            guard kind == .numeric else { return NumericAggregate() }
            if isExact { return withPoints { Self.aggregate(of: $0) } }
            return extra?.header.numeric ?? NumericAggregate()
        }
        set { mutableExtra().header.numeric = newValue }
    }

    /// The aggregate of `points` added in their order.
    static func aggregate(of points: UnsafeBufferPointer<ExactPoint>) -> NumericAggregate {
        var a = NumericAggregate()
        for p in points { a.add(p.value, at: p.time) }
        return a
    }

    /// The points, in time order, while the cell keeps them (``isExact``); ``withPoints(_:)`` reads them without
    /// making an array.
    public var points: [ExactPoint] {
        if !heapPoints.isEmpty { return heapPoints }
        return withPoints { Array($0) }
    }

    /// How many points the cell keeps.
    @inline(__always)
    public var pointCount: Int { heapPoints.isEmpty ? Int(inlineCount) : heapPoints.count }

    /// Runs `body` on the kept points, in time order.
    @inline(__always)
    public func withPoints<R>(_ body: (UnsafeBufferPointer<ExactPoint>) throws -> R) rethrows -> R {
        if !heapPoints.isEmpty { return try heapPoints.withUnsafeBufferPointer(body) }
        return try inlinePoints.span.withUnsafeBufferPointer { all in
            try body(UnsafeBufferPointer(rebasing: all[0..<Int(inlineCount)]))
        }
    }

    /// Replaces the kept points (in time order).
    mutating func setPoints(_ points: [ExactPoint]) {
        if points.count <= Self.inlineLimit {
            heapPoints = []
            for (k, p) in points.enumerated() { inlinePoints[k] = p }
            inlineCount = UInt8(points.count)
        } else {
            heapPoints = points
            inlineCount = 0
        }
    }

    /// Adds a point read from storage after those read before it, in a cell that will keep `total` points: inline
    /// when they fit, else in one array reserved once (the reader checks their time order).
    mutating func appendReadPoint(_ point: ExactPoint, of total: Int) {
        if total <= Self.inlineLimit {
            inlinePoints[Int(inlineCount)] = point
            inlineCount += 1
        } else {
            if heapPoints.isEmpty { heapPoints.reserveCapacity(total) }
            heapPoints.append(point)
        }
    }

    /// Numeric values past ``exactLimit`` points (empty while the cell keeps its points).
    public internal(set) var sketch: QuantileSketch {
        get { extra?.header.sketch ?? Self.noExtra.sketch }
        _modify { yield &mutableExtra().header.sketch }
        set { mutableExtra().header.sketch = newValue }
    }
    public internal(set) var trueCount: Int64 {
        get { extra?.header.trueCount ?? Self.noExtra.trueCount }
        set { mutableExtra().header.trueCount = newValue }
    }
    /// First value by time (booleans and strings; numeric fields keep theirs in ``numeric``).
    public internal(set) var firstTime: Int64 {
        get { extra?.header.firstTime ?? Self.noExtra.firstTime }
        set { mutableExtra().header.firstTime = newValue }
    }
    public internal(set) var firstBool: Bool {
        get { extra?.header.firstBool ?? Self.noExtra.firstBool }
        set { mutableExtra().header.firstBool = newValue }
    }
    public internal(set) var firstBytes: [UInt8] {
        get { extra?.header.firstBytes ?? Self.noExtra.firstBytes }
        _modify { yield &mutableExtra().header.firstBytes }
        set { mutableExtra().header.firstBytes = newValue }
    }
    public internal(set) var lastTime: Int64 {
        get { extra?.header.lastTime ?? Self.noExtra.lastTime }
        set { mutableExtra().header.lastTime = newValue }
    }
    public internal(set) var lastBool: Bool {
        get { extra?.header.lastBool ?? Self.noExtra.lastBool }
        set { mutableExtra().header.lastBool = newValue }
    }
    public internal(set) var lastBytes: [UInt8] {
        get { extra?.header.lastBytes ?? Self.noExtra.lastBytes }
        _modify { yield &mutableExtra().header.lastBytes }
        set { mutableExtra().header.lastBytes = newValue }
    }
    public internal(set) var distinct: DistinctSketch {
        get { extra?.header.distinct ?? Self.noExtra.distinct }
        _modify { yield &mutableExtra().header.distinct }
        set { mutableExtra().header.distinct = newValue }
    }
    /// String points' bytes (a point's value is `offset << 32 | length` into it).
    var text: [UInt8] {
        get { extra?.header.text ?? Self.noExtra.text }
        _modify { yield &mutableExtra().header.text }
        set { mutableExtra().header.text = newValue }
    }

    /// ``extra``, made or copied first unless this cell alone holds it (copy on write, as arrays do).
    @inline(__always)
    private mutating func mutableExtra() -> ManagedBuffer<Extra, UInt8> {
        if !isKnownUniquelyReferenced(&extra) {
            let state = extra?.header ?? Extra()
            extra = ManagedBuffer<Extra, UInt8>.create(minimumCapacity: 0) { _ in state }
        }
        return extra.unsafelyUnwrapped
    }

    /// What a cell without ``extra`` reads (the defaults, in one place).
    private static let noExtra = Extra()

    /// The part of a cell only some cells need (``extra``), changed only through ``mutableExtra()``.
    private struct Extra: Sendable {
        var numeric = NumericAggregate()
        var sketch = QuantileSketch()
        var trueCount: Int64 = 0
        var firstTime: Int64 = .max
        var lastTime: Int64 = .min
        var firstBool = false
        var lastBool = false
        var firstBytes: [UInt8] = []
        var lastBytes: [UInt8] = []
        var distinct = DistinctSketch()
        var text: [UInt8] = []
    }

    public init(kind: FieldKind) {
        self.kind = kind
    }

    /// Whether the cell holds every one of its values as a point.
    @inline(__always)
    public var isExact: Bool { Int64(pointCount) == count && kind != .distinct }

    /// The last string value, for string fields.
    public var lastString: String { String(decoding: lastBytes, as: UTF8.self) }
    public var firstString: String { String(decoding: firstBytes, as: UTF8.self) }

    /// The string of a point of a string field.
    public func string(of point: ExactPoint) -> String {
        let word = point.value.bitPattern
        let offset = Int(word >> 32)
        let length = Int(word & 0xFFFF_FFFF)
        return String(decoding: text[offset..<(offset + length)], as: UTF8.self)
    }

    /// The bytes of a point of a string field.
    public func withBytes<R>(of point: ExactPoint, _ body: (ArraySlice<UInt8>) -> R) -> R {
        let word = point.value.bitPattern
        let offset = Int(word >> 32)
        return body(text[offset..<(offset + Int(word & 0xFFFF_FFFF))])
    }

    public mutating func add(_ value: Double, at time: Int64, integer: Bool = false) {
        if !integer { isInteger = false }
        let kept = pointCount
        if Int64(kept) == count {
            if kept < Self.exactLimit {
                count &+= 1
                insert(ExactPoint(time: time, value: value))
                return
            }
            spill()
        }
        count &+= 1
        let extra = mutableExtra()
        extra.header.numeric.add(value, at: time)
        extra.header.sketch.add(value)
    }

    public mutating func add(_ value: Bool, at time: Int64) {
        count &+= 1
        if value { trueCount &+= 1 }
        if time < firstTime || (time == firstTime && !value && firstBool) {
            firstTime = time
            firstBool = value
        }
        if time > lastTime || (time == lastTime && value && !lastBool) {
            lastTime = time
            lastBool = value
        }
        if Int64(pointCount) &+ 1 == count && pointCount < Self.exactLimit {
            insert(ExactPoint(time: time, value: value ? 1 : 0))
        } else if pointCount > 0 {
            clearPoints()
        }
    }

    public mutating func add(_ bytes: UnsafeBufferPointer<UInt8>, at time: Int64) {
        count &+= 1
        if time < firstTime || (time == firstTime && Self.precedes(firstBytes, bytes)) {
            firstTime = time
            firstBytes.replaceSubrange(0..<firstBytes.count, with: bytes)
        }
        if time > lastTime || (time == lastTime && Self.precedes(lastBytes, bytes)) {
            lastTime = time
            lastBytes.replaceSubrange(0..<lastBytes.count, with: bytes)
        }
        if Int64(pointCount) &+ 1 == count && pointCount < Self.exactLimit
            && text.count + bytes.count <= Self.exactTextLimit
        {
            let word = UInt64(text.count) << 32 | UInt64(bytes.count)
            text.append(contentsOf: bytes)
            insert(ExactPoint(time: time, value: Double(bitPattern: word)))
        } else if pointCount > 0 || !text.isEmpty {
            clearPoints()
        }
    }

    /// Adds a value of a distinct-count field by its hash (``DistinctSketch/hash(_:)``).
    public mutating func add(distinctHash hash: UInt64, at time: Int64) {
        count &+= 1
        distinct.add(hash: hash)
        if time >= lastTime { lastTime = time }
    }

    /// Byte-wise order of strings (Go compares strings by bytes).
    static func precedes<A: Collection<UInt8>, B: Collection<UInt8>>(_ a: A, _ b: B) -> Bool {
        a.lexicographicallyPrecedes(b)
    }

    /// Inserts a point keeping time order (points of equal time stay in arrival order).
    @inline(__always)
    private mutating func insert(_ point: ExactPoint) {
        if heapPoints.isEmpty {
            let n = Int(inlineCount)
            if n < Self.inlineLimit {
                var at = n
                while at > 0 && inlinePoints[at - 1].time > point.time {
                    inlinePoints[at] = inlinePoints[at - 1]
                    at -= 1
                }
                inlinePoints[at] = point
                inlineCount &+= 1
                return
            }
            // One more than fit: all of them go to an array with room for a full cell.
            heapPoints.reserveCapacity(Self.exactLimit)
            for k in 0..<n { heapPoints.append(inlinePoints[k]) }
            inlineCount = 0
        }
        var at = heapPoints.count
        while at > 0 && heapPoints[at - 1].time > point.time { at -= 1 }
        if at == heapPoints.count { heapPoints.append(point) } else { heapPoints.insert(point, at: at) }
    }

    /// Drops the kept points (and a string cell's bytes of them).
    private mutating func clearPoints() {
        inlineCount = 0
        heapPoints = []
        if extra != nil { text = [] }
    }

    /// Stops keeping points (the cell must keep them all: ``isExact``): a numeric cell's aggregate is kept from
    /// them and its values go into the sketch.
    mutating func spill() {
        if kind == .numeric {
            let aggregate = numeric
            let extra = mutableExtra()
            extra.header.numeric = aggregate
            withPoints { for p in $0 { extra.header.sketch.add(p.value) } }
        }
        clearPoints()
    }

    /// Merges `other` (same series and field) into `self`. A rollup of another kind is ignored: a field's kind is
    /// fixed when it is first seen, and conflicting values are rejected at ingest. The result keeps its points while
    /// both kept theirs and they are at most `exactLimit` together.
    public mutating func merge(_ other: FieldRollup) { merge(other, exactLimit: Self.exactLimit) }

    /// ``merge(_:)`` keeping the points while both keep theirs and they number at most `exactLimit` together.
    public mutating func merge(_ other: FieldRollup, exactLimit: Int) {
        guard other.count > 0 else { return }
        guard count > 0 else {
            self = other
            if pointCount > exactLimit { spill() }
            return
        }
        guard other.kind == kind else { return }
        let keep =
            isExact && other.isExact && pointCount + other.pointCount <= exactLimit
            && (kind != .string || text.count + other.text.count <= Self.exactTextLimit)
        if kind == .numeric {
            isInteger = isInteger && other.isInteger
            if !keep {
                // Both aggregates as they are now (a cell keeping its points derives its own from them).
                var merged = numeric
                merged.merge(other.numeric)
                if isExact { spill() }
                let extra = mutableExtra()
                extra.header.numeric = merged
                if other.isExact {
                    other.withPoints { for p in $0 { extra.header.sketch.add(p.value) } }
                } else {
                    extra.header.sketch.merge(other.sketch)
                }
            }
        }
        count &+= other.count
        switch kind {
        case .numeric:
            break
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
            if !keep { clearPoints() }
        case .string:
            if other.firstTime < firstTime
                || (other.firstTime == firstTime && Self.precedes(firstBytes, other.firstBytes))
            {
                firstTime = other.firstTime
                firstBytes = other.firstBytes
            }
            if other.lastTime > lastTime || (other.lastTime == lastTime && Self.precedes(lastBytes, other.lastBytes)) {
                lastTime = other.lastTime
                lastBytes = other.lastBytes
            }
            if !keep { clearPoints() }
        case .distinct:
            distinct.merge(other.distinct)
            if other.lastTime > lastTime { lastTime = other.lastTime }
        }
        if keep { mergePoints(other) }
    }

    /// Merges the points of `other` (both exact) in time order; `other`'s string bytes follow ours.
    private mutating func mergePoints(_ other: FieldRollup) {
        var points = self.points
        defer { setPoints(points) }
        var incoming = other.points
        if kind == .string {
            let shift = UInt64(text.count) << 32
            for k in incoming.indices {
                incoming[k].value = Double(bitPattern: incoming[k].value.bitPattern &+ shift)
            }
            text.append(contentsOf: other.text)
        }
        if let last = points.last, let first = incoming.first, last.time <= first.time {
            points.append(contentsOf: incoming)
            return
        }
        var merged: [ExactPoint] = []
        merged.reserveCapacity(points.count + incoming.count)
        var i = 0
        var j = 0
        while i < points.count || j < incoming.count {
            if j == incoming.count || (i < points.count && points[i].time <= incoming[j].time) {
                merged.append(points[i])
                i += 1
            } else {
                merged.append(incoming[j])
                j += 1
            }
        }
        points = merged
    }

    /// The cell of the points with a time in `[from, through]` of a cell that keeps its points (``isExact``);
    /// `nil` when none is in the range.
    public func points(from: Int64, through: Int64) -> FieldRollup? {
        precondition(isExact)
        return withPoints { points -> FieldRollup? in
            if let first = points.first, let last = points.last, first.time >= from, last.time <= through {
                return self
            }
            var out = FieldRollup(kind: kind)
            out.isInteger = isInteger
            for p in points where p.time >= from && p.time <= through {
                switch kind {
                case .numeric: out.add(p.value, at: p.time, integer: isInteger)
                case .boolean: out.add(p.value != 0, at: p.time)
                case .string:
                    withBytes(of: p) { bytes in
                        Array(bytes).withUnsafeBufferPointer { out.add($0, at: p.time) }
                    }
                case .distinct: break
                }
            }
            return out.count > 0 ? out : nil
        }
    }

    /// The values of a numeric cell that keeps its points, ascending; `nil` when it does not.
    public func sortedValues() -> [Double]? {
        guard isExact, kind != .string else { return nil }
        return withPoints { $0.map(\.value).sorted() }
    }

    /// ``value(of:)`` of each aggregate, into `out` (reused): the numeric aggregate is made once and the kept points
    /// sorted once for all quantiles (on the stack while few).
    public func values(of aggregates: [Aggregate], into out: inout [Double?]) {
        out.removeAll(keepingCapacity: true)
        guard kind == .numeric, count > 0 else {
            for agg in aggregates { out.append(value(of: agg)) }
            return
        }
        let aggregate = numeric
        guard isExact, aggregates.contains(where: { $0.isQuantile }) else {
            for agg in aggregates {
                if case .quantile(let q) = agg {
                    out.append(isExact ? value(of: agg) : sketch.quantile(q))
                } else {
                    out.append(agg == .count ? Double(count) : aggregate.value(of: agg))
                }
            }
            return
        }
        withPoints { points in
            withUnsafeTemporaryAllocation(of: Double.self, capacity: points.count) { buffer in
                var sorted = buffer
                for (i, p) in points.enumerated() { sorted.initializeElement(at: i, to: p.value) }
                sorted.sort()
                for agg in aggregates {
                    if case .quantile(let q) = agg {
                        guard q >= 0, q <= 1 else {
                            out.append(nil)
                            continue
                        }
                        let rank = Int((Double(sorted.count) * q + 0.5).rounded(.down)) - 1
                        out.append(sorted[Swift.min(Swift.max(rank, 0), sorted.count - 1)])
                    } else {
                        out.append(agg == .count ? Double(count) : aggregate.value(of: agg))
                    }
                }
            }
        }
    }

    /// The value of aggregate `agg` for this rollup, or `nil` when it does not apply or is undefined. Quantiles of
    /// a cell that keeps its points are its value at InfluxDB's nearest rank `⌊n·q + 0.5⌋`; past that, the sketch's estimate of it.
    public func value(of agg: Aggregate) -> Double? {
        guard count > 0 else { return nil }
        switch (kind, agg) {
        case (_, .count): return Double(count)
        case (.numeric, .quantile(let q)):
            if let values = sortedValues() {
                guard q >= 0, q <= 1 else { return nil }
                // InfluxDB's percentile(): the value at nearest rank ⌊n·q + 0.5⌋ (1-based), within the values.
                let rank = Int((Double(values.count) * q + 0.5).rounded(.down)) - 1
                return values[Swift.min(Swift.max(rank, 0), values.count - 1)]
            }
            return sketch.quantile(q)
        case (.numeric, _): return numeric.value(of: agg)
        case (.boolean, .last): return lastBool ? 1 : 0
        case (.boolean, .first): return firstBool ? 1 : 0
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

    public var isQuantile: Bool {
        if case .quantile = self { return true }
        return false
    }

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
