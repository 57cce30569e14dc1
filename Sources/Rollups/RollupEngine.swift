public import LineProtocol
import Synchronization

/// Settings of the in-memory rollups (`[rollup]` in the configuration).
public struct RollupConfiguration: Sendable, Hashable {
    /// Bucket width in nanoseconds (default one minute).
    public var interval: Int64 = 60_000_000_000
    /// How long a finished bucket stays open for late points, in nanoseconds (default two minutes).
    public var lateness: Int64 = 120_000_000_000
    /// New series past this count (or past ``maxSeriesPerMeasurement`` of their measurement) are folded into
    /// their measurement's overflow series (tags replaced by `_overflow=true`), counted.
    public var maxSeries = 1_000_000
    /// New series of one measurement past this count are folded likewise (0: no per-measurement limit).
    public var maxSeriesPerMeasurement = 0
    /// Overflow series allowed past ``maxSeries`` (one per measurement that overflows); past them, points of new
    /// series are rejected.
    public var maxOverflowSeries = 1000
    /// Fields of one series beyond this count are rejected and counted.
    public var maxFieldsPerSeries = 1024
    /// Points more than this far ahead of the server clock are rejected (clock skew guard), in nanoseconds.
    public var maxFuture: Int64 = 3_600_000_000_000
    /// Points older than this are rejected (`[storage] retention_1m`), in nanoseconds.
    public var maxAge: Int64 = 7 * 86_400_000_000_000
    /// Independent shards; ingestion on different cores rarely contends.
    public var shards = 16

    public init() {}
}

/// One field of one series in one closed (or late) bucket.
public struct ClosedCell: Sendable {
    public var series: SeriesInfo
    public var field: String
    public var rollup: FieldRollup

    public init(series: SeriesInfo, field: String, rollup: FieldRollup) {
        self.series = series
        self.field = field
        self.rollup = rollup
    }
}

/// A bucket handed to the sink: every cell of one bucket start, or (for late points) a few cells to merge into an
/// already stored bucket.
public struct ClosedBucket: Sendable {
    public var start: Int64
    public var cells: [ClosedCell]
    /// True when these cells are late data that must merge into a stored bucket.
    public var isLate: Bool
    /// The highest write-ahead-log position folded into these cells (0 without a WAL): once stored, replaying
    /// records at or below it for this bucket would count them twice.
    public var walPosition: UInt64

    public init(start: Int64, cells: [ClosedCell], isLate: Bool = false, walPosition: UInt64 = 0) {
        self.start = start
        self.cells = cells
        self.isLate = isLate
        self.walPosition = walPosition
    }
}

/// What happened to the points of one line.
public struct IngestResult: Sendable, Equatable {
    public var applied = 0
    public var late = 0
    /// Rejected: the series would exceed `max_series`.
    public var rejectedSeries = 0
    /// Rejected: a field's value kind differs from the kind first seen for it.
    public var typeConflicts = 0
    /// Rejected: timestamp too far in the future or older than retention.
    public var outOfRange = 0
    /// Rejected: the series already has `max_fields_per_series` fields.
    public var rejectedFields = 0
    /// Rejected: a measurement, tag or field name that is not valid UTF-8 (stored names are text: such names
    /// would merge with others once stored).
    public var invalidNames = 0
    /// Applied to the measurement's overflow series: values of new series past `max_series` or
    /// `max_series_per_measurement` (also counted in ``applied`` or ``late``; not rejected).
    public var overflowed = 0

    public init() {}

    public static func += (a: inout IngestResult, b: IngestResult) {
        a.applied += b.applied
        a.late += b.late
        a.rejectedSeries += b.rejectedSeries
        a.typeConflicts += b.typeConflicts
        a.outOfRange += b.outOfRange
        a.rejectedFields += b.rejectedFields
        a.invalidNames += b.invalidNames
        a.overflowed += b.overflowed
    }

    public var rejected: Int { rejectedSeries + typeConflicts + outOfRange + rejectedFields + invalidNames }
}

/// Cells of points whose bucket had already closed (late points), merged per series, field and bucket as they come,
/// for the sink to merge into what it stored. However many late points a batch holds, it costs one cell per
/// (series, field, bucket) — half a million late events of a few names over a day are a few thousand cells.
public struct LateCells: Sendable {
    private struct Key: Hashable {
        let series: ObjectIdentifier
        let field: String
        let start: Int64
    }
    public private(set) var cells: [ClosedCell] = []
    /// The bucket start of each cell.
    public private(set) var starts: [Int64] = []
    private var index: [Key: Int] = [:]

    public init() {}

    public var isEmpty: Bool { cells.isEmpty }
    public var count: Int { cells.count }

    /// Adds to the late cell of `series`/`field` in the bucket starting at `start` (creating it).
    mutating func add(
        series: SeriesInfo, field: String, kind: FieldKind, start: Int64, _ body: (inout FieldRollup) -> Void
    ) {
        let key = Key(series: ObjectIdentifier(series), field: field, start: start)
        if let k = index[key] {
            body(&cells[k].rollup)
            return
        }
        var rollup = FieldRollup(kind: kind)
        body(&rollup)
        index[key] = cells.count
        cells.append(ClosedCell(series: series, field: field, rollup: rollup))
        starts.append(start)
    }

    /// The cells as late buckets, one per bucket start, in order.
    public func buckets(walPosition: UInt64) -> [ClosedBucket] {
        var byStart: [Int64: [ClosedCell]] = [:]
        for (k, cell) in cells.enumerated() { byStart[starts[k], default: []].append(cell) }
        return byStart.keys.sorted().map {
            ClosedBucket(start: $0, cells: byStart[$0]!, isLate: true, walPosition: walPosition)
        }
    }

    public mutating func removeAll() {
        cells.removeAll(keepingCapacity: true)
        starts.removeAll(keepingCapacity: true)
        index.removeAll(keepingCapacity: true)
    }
}

/// Per-minute rollups in memory, sharded by series.
///
/// Hot path: ``ingest(_:now:lateCells:)`` hashes the decoded line's series key, locks one shard, finds the
/// series (interned once: measurement plus sorted tags), and for each field finds its cell in the open bucket of
/// the point's timestamp and adds the value. For a known series in an open bucket nothing is allocated.
///
/// Buckets close `lateness` after they end (``closeFinished(now:)``); closed buckets go to a sink. Points for
/// buckets already closed are returned as late cells for the sink to merge into what it stored.
public final class RollupEngine: Sendable {
    public let configuration: RollupConfiguration
    private let shards: [Shard]
    private let seriesCount = Atomic<Int>(0)
    /// Series per measurement and distinct values per tag key (``CardinalityTracker``).
    public let cardinality: CardinalityTracker

    public init(configuration: RollupConfiguration = RollupConfiguration()) {
        self.configuration = configuration
        shards = (0..<max(1, configuration.shards)).map { _ in Shard() }
        cardinality = CardinalityTracker(maxPerMeasurement: configuration.maxSeriesPerMeasurement)
    }

    /// Number of series known.
    public var activeSeries: Int { seriesCount.load(ordering: .relaxed) }

    @inline(__always)
    func bucketStart(_ t: Int64) -> Int64 {
        let i = configuration.interval
        let q = t / i
        return (t % i < 0 ? q - 1 : q) * i
    }

    /// Adds the last line decoded by `decoder`.
    ///
    /// - Parameters:
    ///   - now: the server clock in nanoseconds; also the point's time when the line has no timestamp.
    ///   - lateCells: receives the cells of a point whose bucket is already closed (for the sink).
    ///   - distinct: one more field of kind ``FieldKind/distinct`` (events' `users`), given by its name and the hash
    ///     of the value to count.
    @inline(__always)
    public func ingest(
        _ decoder: LineDecoder,
        now: Int64,
        defaultTime: Int64? = nil,
        walPosition: UInt64 = 0,
        lateCells: inout LateCells,
        distinct: (key: UnsafeBufferPointer<UInt8>, hash: UInt64)? = nil
    ) -> IngestResult {
        ingest(
            PointView(decoder), now: now, defaultTime: defaultTime, walPosition: walPosition, lateCells: &lateCells,
            distinct: distinct)
    }

    /// ``ingest(_:now:defaultTime:walPosition:lateCells:distinct:)`` for a point decoded by anything (a line, an
    /// event, the daemon's own figures): nothing is encoded to be decoded again.
    public func ingest(
        _ decoder: PointView,
        now: Int64,
        defaultTime: Int64? = nil,
        walPosition: UInt64 = 0,
        lateCells: inout LateCells,
        distinct: (key: UnsafeBufferPointer<UInt8>, hash: UInt64)? = nil
    ) -> IngestResult {
        ingest(
            decoder, now: now, defaultTime: defaultTime, walPosition: walPosition, lateCells: &lateCells,
            distinct: distinct, overflow: false)
    }

    /// - Parameter overflow: `decoder` is an overflow series' point (``fold(_:now:defaultTime:walPosition:lateCells:distinct:)``).
    private func ingest(
        _ decoder: PointView,
        now: Int64,
        defaultTime: Int64?,
        walPosition: UInt64,
        lateCells: inout LateCells,
        distinct: (key: UnsafeBufferPointer<UInt8>, hash: UInt64)?,
        overflow: Bool
    ) -> IngestResult {
        var result = IngestResult()
        let time = decoder.timestamp ?? defaultTime ?? now
        let values = decoder.fields.count + (distinct == nil ? 0 : 1)
        if time > now &+ configuration.maxFuture || time < now &- configuration.maxAge {
            result.outOfRange = values
            return result
        }
        let start = bucketStart(time)
        let isLate = start &+ configuration.interval &+ configuration.lateness <= now
        let hash = decoder.seriesHash()
        let shard = shards[Int(truncatingIfNeeded: hash % UInt64(shards.count))]
        let config = configuration
        var overflowed = false
        shard.state.withLock { state in
            let seriesIndex: Int32
            switch state.intern(
                decoder, hash: hash, limit: overflow ? config.maxSeries + config.maxOverflowSeries : config.maxSeries,
                count: seriesCount, cardinality: cardinality, overflow: overflow, now: now)
            {
            case .found(let index): seriesIndex = index
            case .overLimit:
                if overflow {
                    result.rejectedSeries = values
                } else {
                    overflowed = true
                }
                return
            case .invalidName:
                result.invalidNames = values
                return
            }
            var position = 0
            func apply(
                _ key: UnsafeBufferPointer<UInt8>, _ kind: FieldKind, integer: Bool, _ add: (inout FieldRollup) -> Void
            ) {
                defer { position += 1 }
                let slot: Int32
                switch state.slot(
                    series: seriesIndex, key: key, kind: kind, integer: integer, position: position,
                    limit: config.maxFieldsPerSeries)
                {
                case .found(let s): slot = s
                case .overLimit:
                    result.rejectedFields += 1
                    return
                case .invalidName:
                    result.invalidNames += 1
                    return
                case .typeConflict:
                    result.typeConflicts += 1
                    return
                }
                if isLate {
                    lateCells.add(
                        series: state.series[Int(seriesIndex)].info, field: state.slots[Int(slot)].field, kind: kind,
                        start: start, add)
                    result.late += 1
                } else {
                    state.withCell(bucket: start, slot: slot, kind: kind, walPosition: walPosition, add)
                    result.applied += 1
                }
            }
            for field in decoder.fields {
                let kind: FieldKind
                var integer = false
                switch field.value {
                case .float: kind = .numeric
                case .integer, .unsigned:
                    kind = .numeric
                    integer = true
                case .boolean: kind = .boolean
                case .string: kind = .string
                }
                apply(field.key, kind, integer: integer) { Self.add(field.value, at: time, to: &$0) }
            }
            if let distinct {
                apply(distinct.key, .distinct, integer: false) { $0.add(distinctHash: distinct.hash, at: time) }
            }
        }
        if overflowed {
            return fold(
                decoder, now: now, defaultTime: defaultTime, walPosition: walPosition,
                lateCells: &lateCells, distinct: distinct)
        }
        return result
    }

    private static let overflowKey: [UInt8] = Array("_overflow".utf8)
    private static let overflowValue: [UInt8] = Array("true".utf8)

    /// A point of a new series past the limits: its values go to its measurement's overflow series (its tags
    /// replaced by `_overflow=true`), so the measurement's totals stay exact; its tag values still count towards
    /// the measurement's cardinality.
    private func fold(
        _ point: PointView, now: Int64, defaultTime: Int64?, walPosition: UInt64, lateCells: inout LateCells,
        distinct: (key: UnsafeBufferPointer<UInt8>, hash: UInt64)?
    ) -> IngestResult {
        cardinality.noteOverflow(point, now: now)
        var result = Self.overflowKey.withUnsafeBufferPointer { key in
            Self.overflowValue.withUnsafeBufferPointer { value in
                withUnsafeTemporaryAllocation(of: Tag.self, capacity: 1) { tags in
                    tags.initialize(repeating: Tag(key: key, value: value))
                    let folded = PointView(
                        measurement: point.measurement, tags: UnsafeBufferPointer(tags), fields: point.fields,
                        timestamp: point.timestamp)
                    return ingest(
                        folded, now: now, defaultTime: defaultTime, walPosition: walPosition, lateCells: &lateCells,
                        distinct: distinct, overflow: true)
                }
            }
        }
        // What the overflow series took (none when even it could not be made).
        result.overflowed = result.applied + result.late
        return result
    }

    /// Why the engine refused (part of) a point it was just given: read-only, asked only for a point whose
    /// ``IngestResult`` counted refusals, so the ingest path itself does no extra work. The answer reflects the
    /// engine now: a series or field another thread created since can make it name less than was refused.
    public func refusals(_ point: PointView, now: Int64, defaultTime: Int64? = nil) -> [Refusal] {
        let time = point.timestamp ?? defaultTime ?? now
        if time > now &+ configuration.maxFuture || time < now &- configuration.maxAge {
            return [.outOfRange(time: time)]
        }
        let hash = point.seriesHash()
        let shard = shards[Int(truncatingIfNeeded: hash % UInt64(shards.count))]
        let config = configuration
        return shard.state.withLock { state -> [Refusal] in
            guard let series = state.find(point, hash: hash) else {
                let text =
                    ShardState.isText(point.measurement)
                    && point.tags.allSatisfy { ShardState.isText($0.key) && ShardState.isText($0.value) }
                return [text ? .seriesLimit(config.maxSeries) : .invalidName(field: nil)]
            }
            var out: [Refusal] = []
            for (i, field) in point.fields.enumerated() {
                let given: FieldType
                switch field.value {
                case .float: given = .float
                case .integer, .unsigned: given = .integer
                case .boolean: given = .boolean
                case .string: given = .string
                }
                guard let slot = state.findSlot(series: series, key: field.key) else {
                    out.append(
                        ShardState.isText(field.key)
                            ? .fieldLimit(field: i, limit: config.maxFieldsPerSeries) : .invalidName(field: i))
                    continue
                }
                let existing = state.slots[Int(slot)]
                let kind: FieldKind =
                    switch given {
                    case .float, .integer: .numeric
                    case .boolean: .boolean
                    case .string: .string
                    }
                if existing.kind != kind { out.append(.typeConflict(field: i, existing: existing.type, given: given)) }
            }
            return out
        }
    }

    @inline(__always)
    static func add(_ value: FieldValue, at time: Int64, to rollup: inout FieldRollup) {
        switch value {
        case .float(let v): rollup.add(v, at: time)
        case .integer(let v): rollup.add(Double(v), at: time, integer: true)
        case .unsigned(let v): rollup.add(Double(v), at: time, integer: true)
        case .boolean(let v): rollup.add(v, at: time)
        case .string(let s): rollup.add(s, at: time)
        }
    }

    /// The start of the bucket holding `t`; `Int64.min` for a time in the partial bucket below the first whole one
    /// (any timestamp a line may carry, even one the rollups reject, has an answer: replay asks for every line's).
    public func bucketStartOf(_ t: Int64) -> Int64 {
        let i = configuration.interval
        let q = t / i
        let (start, overflow) = (t % i < 0 ? q - 1 : q).multipliedReportingOverflow(by: i)
        return overflow ? .min : start
    }

    /// Removes and returns every bucket that ended at least `lateness` before `now`.
    public func closeFinished(now: Int64) -> [ClosedBucket] {
        let horizon = now &- configuration.interval &- configuration.lateness
        return close { $0 <= horizon }
    }

    /// Removes and returns every open bucket, including the current partial one (shutdown, explicit flush).
    public func closeAll() -> [ClosedBucket] { close { _ in true } }

    /// Removes and returns the buckets that ended before `now` (they may still get late points, which then go to
    /// the sink as late cells): what `POST /api/v1/flush` stores.
    public func closeEnded(now: Int64) -> [ClosedBucket] {
        let interval = configuration.interval
        return close { $0 &+ interval <= now }
    }

    private func close(where shouldClose: (Int64) -> Bool) -> [ClosedBucket] {
        var byStart: [Int64: [ClosedCell]] = [:]
        var positions: [Int64: UInt64] = [:]
        for shard in shards {
            // Under the shard's lock only the buckets are moved out and the series and slot tables referenced
            // (copy-on-write: the next point to the shard copies the series table once, about a millisecond for
            // 15,000 series); the million cells of a large minute are made outside it, so ingestion and queries
            // of this shard do not wait for them.
            let (closing, slots, series) = shard.state.withLock { state -> ([OpenBucket], [SlotInfo], [SeriesEntry]) in
                let closing = state.buckets.filter { shouldClose($0.start) }
                guard !closing.isEmpty else { return ([], [], []) }
                state.buckets.removeAll { shouldClose($0.start) }
                state.current = 0
                return (closing, state.slots, state.series)
            }
            for bucket in closing {
                let start = bucket.start
                positions[start] = max(positions[start] ?? 0, bucket.maxWALPosition)
                // Taken out of the dictionary, so appending never copies what earlier shards added (it did: a
                // copy per shard of every cell so far, seconds for a million cells).
                var cells = byStart.removeValue(forKey: start) ?? []
                for (k, rollup) in bucket.cells.enumerated() {
                    let slot = slots[Int(bucket.cellSlots[k])]
                    cells.append(ClosedCell(series: series[Int(slot.series)].info, field: slot.field, rollup: rollup))
                }
                byStart[start] = cells
            }
        }
        return byStart.keys.sorted().map {
            ClosedBucket(start: $0, cells: byStart[$0]!, walPosition: positions[$0] ?? 0)
        }
    }

    /// Copies the open cells of `measurement`/`field` whose bucket starts in `[from, to)`.
    public func openCells(measurement: String, field: String?, from: Int64, to: Int64) -> [(
        start: Int64, cell: ClosedCell
    )] {
        openCells(measurement: measurement, fields: field.map { [$0] }, from: from, to: to)
    }

    /// Open cells of `measurement` (only `fields`, when given; only series `accept` takes, when given) in
    /// buckets starting in `[from, to)`. `condition`, the text `accept` was made from, lets the slots it takes be
    /// remembered per shard until the measurement gets a new slot (slots are only ever added).
    ///
    /// `accept` is the request's (a tag condition, a regex perhaps): it is never called under a shard's lock,
    /// which ingestion and the ticker need. The series to decide are copied out, decided, and the cells of those
    /// taken copied under the lock again.
    public func openCells(
        measurement: String, fields: [String]?, from: Int64, to: Int64, series accept: ((SeriesInfo) -> Bool)? = nil,
        condition: String? = nil
    ) -> [(start: Int64, cell: ClosedCell)] {
        collectOpen(measurement: measurement, fields: fields, from: from, to: to, series: accept, condition: condition)
        { start, series, field, _, rollup in
            (start, ClosedCell(series: series, field: field, rollup: rollup))
        }
    }

    /// ``openCells(measurement:fields:from:to:series:condition:)`` with each element made by `make` under the
    /// shard's lock (bucket start, series, field name, the field's index in `fields` (0 without `fields`), cell):
    /// a summary read makes a ``FieldSummary`` there and copies no rollup.
    func collectOpen<T>(
        measurement: String, fields: [String]?, from: Int64, to: Int64, series accept: ((SeriesInfo) -> Bool)?,
        condition: String?, make: (Int64, SeriesInfo, String, Int, borrowing FieldRollup) -> T
    ) -> [T] {
        var out: [T] = []
        let key = condition.map { measurement + "\u{0}" + (fields?.joined(separator: "\u{0}") ?? "*") + "\u{0}" + $0 }
        // Slot numbers hold while the shard's epoch does (idle series are dropped between epochs): a decision made
        // in an older epoch is made again.
        var shardIndex = 0
        var attempts = 0
        while shardIndex < shards.count {
            let shard = shards[shardIndex]
            var epoch = 0
            let plan: OpenReadPlan? = shard.state.withLock { state in
                epoch = state.epoch
                guard let slots = state.slotsByMeasurement[measurement] else { return nil }
                if let key, let known = state.takenSlots[key], known.slotCount == slots.count {
                    return .taken(known.taken)
                }
                var candidates: [(slot: Int32, series: SeriesInfo)] = []
                for slot in slots {
                    let meta = state.slots[Int(slot)]
                    if fields?.contains(meta.field) ?? true {
                        candidates.append((slot, state.series[Int(meta.series)].info))
                    }
                }
                if accept == nil { return .taken(candidates.map(\.slot)) }
                return .decide(slotCount: slots.count, candidates)
            }
            let taken: [Int32]
            var remember: (slotCount: Int, taken: [Int32])?
            switch plan {
            case nil:
                shardIndex += 1
                continue
            case .taken(let slots): taken = slots
            case .decide(let slotCount, let candidates):
                // Each series once, however many of its fields are wanted.
                var decided: [ObjectIdentifier: Bool] = [:]
                taken = candidates.compactMap { c in
                    let id = ObjectIdentifier(c.series)
                    if let known = decided[id] { return known ? c.slot : nil }
                    let yes = accept?(c.series) ?? true
                    decided[id] = yes
                    return yes ? c.slot : nil
                }
                if key != nil { remember = (slotCount, taken) }
            }
            guard !taken.isEmpty || remember != nil else {
                shardIndex += 1
                continue
            }
            let current = shard.state.withLock { state -> Bool in
                guard state.epoch == epoch else { return false }
                if let key, let remember {
                    // Bounded: at most 256 conditions and a million remembered slots per shard (4 MiB).
                    state.takenSlotsTotal += remember.taken.count
                    if state.takenSlots.count >= 256 || state.takenSlotsTotal > 1 << 20 {
                        state.takenSlots = [:]
                        state.takenSlotsTotal = remember.taken.count
                    }
                    state.takenSlots[key] = remember
                }
                // Each taken slot's field index, found once (a handful of names: compared, not hashed).
                let fieldIndex = taken.map { slot -> Int in
                    guard let fields, Int(slot) < state.slots.count else { return 0 }
                    return fields.firstIndex(of: state.slots[Int(slot)].field) ?? -1
                }
                // Slot by slot (a series' cells together, as stored rows come), each slot's buckets in time order.
                let buckets = state.buckets.indices.filter {
                    state.buckets[$0].start >= from && state.buckets[$0].start < to
                }
                guard !buckets.isEmpty else { return true }
                for (k, slot) in taken.enumerated() {
                    guard Int(slot) < state.slots.count, fieldIndex[k] >= 0 else { continue }
                    let meta = state.slots[Int(slot)]
                    let info = state.series[Int(meta.series)].info
                    for b in buckets {
                        guard Int(slot) < state.buckets[b].cellIndex.count else { continue }
                        let index = Int(state.buckets[b].cellIndex[Int(slot)])
                        guard index >= 0 else { continue }
                        // The cell is read where it lies (copied only by what `make` keeps of it).
                        let start = state.buckets[b].start
                        state.buckets[b].cells.withUnsafeBufferPointer { cells in
                            out.append(make(start, info, meta.field, fieldIndex[k], cells[index]))
                        }
                    }
                }
                return true
            }
            attempts += 1
            if current || attempts > 3 {
                shardIndex += 1
                attempts = 0
            }
        }
        return out
    }

    /// Forgets series whose last point came before `cutoff` (server time) and that have nothing in an open bucket:
    /// they stop counting toward `max_series` and their memory goes; their stored minutes stay, and a new point
    /// brings the series back. Returns how many were dropped. Linear in the shard's series, under its lock:
    /// the ticker calls it once a minute.
    public func dropIdleSeries(before cutoff: Int64) -> Int {
        var dropped = 0
        for shard in shards {
            dropped += shard.state.withLock { $0.dropIdle(before: cutoff, cardinality: cardinality) }
        }
        if dropped > 0 { seriesCount.wrappingSubtract(dropped, ordering: .relaxed) }
        return dropped
    }

    /// Every known series with its fields and their kinds.
    public func allSeries() -> [(series: SeriesInfo, fields: [(name: String, kind: FieldKind)])] {
        var out: [(series: SeriesInfo, fields: [(name: String, kind: FieldKind)])] = []
        for shard in shards {
            shard.state.withLock { state in
                for entry in state.series {
                    out.append(
                        (
                            entry.info,
                            entry.fields.map { (state.slots[Int($0.slot)].field, state.slots[Int($0.slot)].kind) }
                        )
                    )
                }
            }
        }
        return out
    }

    /// The fields of one measurement in memory with the type of their first value.
    public func fieldTypes(of measurement: String) -> [String: FieldType] {
        var out: [String: FieldType] = [:]
        for shard in shards {
            guard let types = shard.state.withLock({ $0.fieldTypesByMeasurement[measurement] }) else { continue }
            if out.isEmpty {
                out = types
                continue
            }
            for (field, type) in types {
                if let known = out[field], known <= type { continue }
                out[field] = type
            }
        }
        return out
    }

    /// The tag keys of one measurement's series in memory.
    public func tagKeys(of measurement: String) -> Set<String> {
        var out = Set<String>()
        for shard in shards {
            shard.state.withLock { state in
                var seen = Set<Int32>()
                for slot in state.slotsByMeasurement[measurement] ?? [] {
                    let series = state.slots[Int(slot)].series
                    guard seen.insert(series).inserted else { continue }
                    for t in state.series[Int(series)].info.tags { out.insert(t.key) }
                }
            }
        }
        return out
    }

    /// The fields of each measurement in memory with the type of their first value.
    public func fieldTypes() -> [String: [String: FieldType]] {
        var out: [String: [String: FieldType]] = [:]
        for shard in shards {
            shard.state.withLock { state in
                for (measurement, slots) in state.slotsByMeasurement {
                    for slot in slots {
                        let info = state.slots[Int(slot)]
                        let known = out[measurement]?[info.field]
                        if known == nil || info.type < known! { out[measurement, default: [:]][info.field] = info.type }
                    }
                }
            }
        }
        return out
    }

    /// The lowest write-ahead-log position still only in memory (in an open bucket), or `nil` when nothing is open:
    /// replay after a crash starts there.
    public func minOpenWALPosition() -> UInt64? {
        var low: UInt64?
        for shard in shards {
            shard.state.withLock { state in
                for bucket in state.buckets where bucket.minWALPosition != .max {
                    low = min(low ?? .max, bucket.minWALPosition)
                }
            }
        }
        return low
    }

    /// Number of open buckets (summed over shards) and open cells.
    public func openStatistics() -> (buckets: Int, cells: Int) {
        var buckets = Set<Int64>()
        var cells = 0
        for shard in shards {
            shard.state.withLock { state in
                for bucket in state.buckets {
                    buckets.insert(bucket.start)
                    cells += bucket.cells.count
                }
            }
        }
        return (buckets.count, cells)
    }
}

// MARK: - Shard state

private final class Shard: Sendable {
    let state = Mutex(ShardState())
}

private struct SeriesEntry {
    let info: SeriesInfo
    /// Canonical key bytes (measurement, then tag key/value pairs, with separators) to verify hash hits.
    let key: [UInt8]
    /// The hash the series table files it under (its series hash, probed on after a true collision).
    var tableHash: UInt64
    /// The server time of its last point (idle series are dropped: ``RollupEngine/dropIdleSeries(before:)``).
    var lastSeen: Int64
    /// This series' fields in the order they were first seen: slot and name bytes, one array (a line's fields
    /// are found in one or two cache lines, not through an array per name).
    var fields: [FieldKey] = []
    /// Field position by the full hash of its name, once the series has many fields (a line's fields are then
    /// found without a scan over all of them).
    var fieldIndex: [UInt64: Int32] = [:]
}

/// A field of a series as the ingest path looks it up: its slot and its name, whose first 24 bytes are kept inline
/// (Telegraf's field names are shorter) so a lookup compares them where the slot is; the rest of a longer name is in
/// `tail`.
private struct FieldKey {
    static let inlineBytes = 24
    var slot: Int32
    /// The name's length (names are at most 65,535 bytes: ``RollupEngine`` refuses longer ones).
    let length: UInt16
    /// The field's kind, fixed by its first value (checked here, without reading the slot's ``SlotInfo``).
    let kind: FieldKind
    let head: (UInt64, UInt64, UInt64)
    let tail: [UInt8]

    init(slot: Int32, name: UnsafeBufferPointer<UInt8>, kind: FieldKind) {
        self.slot = slot
        self.kind = kind
        length = UInt16(name.count)
        head = (Self.word(name, 0), Self.word(name, 8), Self.word(name, 16))
        tail = name.count > Self.inlineBytes ? Array(name[Self.inlineBytes...]) : []
    }

    /// Bytes `at..<at+8` of `bytes` as a little-endian word, zero past the end.
    @inline(__always)
    static func word(_ bytes: UnsafeBufferPointer<UInt8>, _ at: Int) -> UInt64 {
        let n = bytes.count
        guard at < n, let base = bytes.baseAddress else { return 0 }
        if at &+ 8 <= n {
            return UInt64(littleEndian: UnsafeRawPointer(base).loadUnaligned(fromByteOffset: at, as: UInt64.self))
        }
        var w: UInt64 = 0
        var shift: UInt64 = 0
        for i in at..<n {
            w |= UInt64(base[i]) << shift
            shift &+= 8
        }
        return w
    }

    @inline(__always)
    func matches(_ key: UnsafeBufferPointer<UInt8>) -> Bool {
        let n = key.count
        guard Int(length) == n else { return false }
        guard head.0 == Self.word(key, 0) else { return false }
        if n > 8 {
            guard head.1 == Self.word(key, 8) else { return false }
            if n > 16 {
                guard head.2 == Self.word(key, 16) else { return false }
                if n > Self.inlineBytes {
                    return tail.withUnsafeBufferPointer { t in
                        for i in 0..<t.count where t[i] != key[Self.inlineBytes &+ i] { return false }
                        return true
                    }
                }
            }
        }
        return true
    }

    /// The name's bytes.
    var name: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Int(length))
        withUnsafeBytes(of: head) { out.append(contentsOf: $0.prefix(Swift.min(Int(length), Self.inlineBytes))) }
        out.append(contentsOf: tail)
        return out
    }
}

/// FNV-1a of a field name (the many-fields index).
@inline(__always)
private func nameHash(_ key: UnsafeBufferPointer<UInt8>) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in key {
        h ^= UInt64(b)
        h = h &* 0x0000_0100_0000_01B3
    }
    return h
}

/// Why a point, or one of its fields, was refused (``RollupEngine/refusals(_:now:defaultTime:)``).
public enum Refusal: Sendable, Equatable {
    /// The point's time is outside what the engine takes.
    case outOfRange(time: Int64)
    /// A new series past `[rollup] max_series` (the limit).
    case seriesLimit(Int)
    /// A new field (its index in the point) past `[rollup] max_fields_per_series`.
    case fieldLimit(field: Int, limit: Int)
    /// A name that is not valid UTF-8: a field's (its index), or the measurement's or a tag's (`nil`).
    case invalidName(field: Int?)
    /// A field (its index) whose value is of another type than the field's.
    case typeConflict(field: Int, existing: FieldType, given: FieldType)

    /// The refused field's index, `nil` when the whole point was.
    public var field: Int? {
        switch self {
        case .outOfRange, .seriesLimit: nil
        case .fieldLimit(let f, _), .typeConflict(let f, _, _): f
        case .invalidName(let f): f
        }
    }
}

/// What looking up (or creating) a series or a field gave.
private enum Lookup {
    case found(Int32)
    /// Creating it would pass a limit.
    case overLimit
    /// Its name is not valid UTF-8.
    case invalidName
}

/// What looking up (or creating) a field of a series gave.
private enum SlotLookup {
    case found(Int32)
    case overLimit
    /// Its name is not valid UTF-8, or longer than 65,535 bytes.
    case invalidName
    /// The field exists with another kind of value.
    case typeConflict
}

private struct SlotInfo {
    var series: Int32
    var field: String
    var kind: FieldKind
    /// The type of the field's first value (integer or float for numeric fields: `SHOW FIELD KEYS`).
    var type: FieldType
}

private struct OpenBucket {
    var start: Int64
    var minWALPosition: UInt64 = .max
    var maxWALPosition: UInt64 = 0
    /// Cell index per slot (-1: no cell yet); grows with the slot count.
    var cellIndex: [Int32] = []
    var cells: [FieldRollup] = []
    var cellSlots: [Int32] = []
}

/// Open addressing (linear probing) from series hash to series index. The hash is already well mixed, so the
/// table uses its low bits directly instead of rehashing with SipHash as `Dictionary` would.
private struct SeriesTable {
    private var hashes: [UInt64] = Array(repeating: 0, count: 1024)
    private var indices: [Int32] = Array(repeating: -1, count: 1024)
    private var count = 0

    func find(_ hash: UInt64) -> Int32? {
        let mask = hashes.count - 1
        var i = Int(truncatingIfNeeded: hash) & mask
        while true {
            let index = indices[i]
            if index < 0 { return nil }
            if hashes[i] == hash { return index }
            i = (i + 1) & mask
        }
    }

    mutating func insert(_ hash: UInt64, _ index: Int32) {
        if (count + 1) * 4 > hashes.count * 3 { grow() }
        let mask = hashes.count - 1
        var i = Int(truncatingIfNeeded: hash) & mask
        while indices[i] >= 0 { i = (i + 1) & mask }
        hashes[i] = hash
        indices[i] = index
        count += 1
    }

    private mutating func grow() {
        let oldHashes = hashes
        let oldIndices = indices
        hashes = Array(repeating: 0, count: oldHashes.count * 2)
        indices = Array(repeating: -1, count: oldHashes.count * 2)
        count = 0
        for k in 0..<oldHashes.count where oldIndices[k] >= 0 { insert(oldHashes[k], oldIndices[k]) }
    }
}

private struct ShardState: ~Copyable {
    var table = SeriesTable()
    var series: [SeriesEntry] = []
    var slots: [SlotInfo] = []
    var slotsByMeasurement: [String: [Int32]] = [:]
    /// Each measurement's fields with InfluxDB's preferred type among its slots (kept as slots are made, so a query
    /// asks a dictionary, not every slot).
    var fieldTypesByMeasurement: [String: [String: FieldType]] = [:]
    /// Slots a query condition took (``RollupEngine/openCells(measurement:fields:from:to:series:condition:)``),
    /// with the measurement's slot count then: stale once it has more.
    var takenSlots: [String: (slotCount: Int, taken: [Int32])] = [:]
    var takenSlotsTotal = 0
    /// Open buckets, few at a time (the current one plus those within `lateness`): a linear scan beats hashing.
    var buckets: [OpenBucket] = []
    /// Index in `buckets` of the bucket used last (the common case for the next point).
    var current = 0
    /// Advances when idle series are dropped (slot numbers change then).
    var epoch = 0

    /// Finds or creates the series of the decoded line (stamping it seen at `now`).
    mutating func intern(
        _ d: PointView, hash: UInt64, limit: Int, count: borrowing Atomic<Int>, cardinality: CardinalityTracker,
        overflow: Bool, now: Int64
    ) -> Lookup {
        var h = hash
        while let index = table.find(h) {
            if Self.matches(series[Int(index)].key, d) {
                series[Int(index)].lastSeen = now
                return .found(index)
            }
            h = h &+ 0x9E37_79B9_7F4A_7C15  // a true hash collision: probe on
        }
        // New series: names are stored as text, so they must be text.
        guard Self.isText(d.measurement), d.tags.allSatisfy({ Self.isText($0.key) && Self.isText($0.value) }) else {
            return .invalidName
        }
        let total = count.wrappingAdd(1, ordering: .relaxed).newValue
        if total > limit || !cardinality.admit(d, overflow: overflow, now: now) {
            count.wrappingSubtract(1, ordering: .relaxed)
            return .overLimit
        }
        let info = SeriesInfo(
            id: hash,
            measurement: String(decoding: d.measurement, as: UTF8.self),
            tags: d.tags.map {
                TagPair(String(decoding: $0.key, as: UTF8.self), String(decoding: $0.value, as: UTF8.self))
            }
        )
        let index = Int32(series.count)
        series.append(SeriesEntry(info: info, key: Self.canonicalKey(d), tableHash: h, lastSeen: now))
        table.insert(h, index)
        return .found(index)
    }

    /// The series of `d`, if it exists (nothing is created or stamped).
    func find(_ d: PointView, hash: UInt64) -> Int32? {
        var h = hash
        while let index = table.find(h) {
            if Self.matches(series[Int(index)].key, d) { return index }
            h = h &+ 0x9E37_79B9_7F4A_7C15
        }
        return nil
    }

    /// The slot of field `key` of a series, if it exists (nothing is created).
    func findSlot(series index: Int32, key: UnsafeBufferPointer<UInt8>) -> Int32? {
        series[Int(index)].fields.first(where: { $0.matches(key) })?.slot
    }

    /// Whether `bytes` are valid UTF-8 (ASCII, the usual case, is checked without decoding).
    static func isText(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        if !bytes.contains(where: { $0 >= 0x80 }) { return true }
        return String(validating: bytes, as: UTF8.self) != nil
    }

    /// ``RollupEngine/dropIdleSeries(before:)`` for this shard: keeps the live series and their slots, renumbered
    /// (open buckets' cells keep their order and get the new slot numbers).
    mutating func dropIdle(before cutoff: Int64, cardinality: CardinalityTracker) -> Int {
        var live = series.map { $0.lastSeen >= cutoff }
        guard live.contains(false) else { return 0 }
        for bucket in buckets {
            for slot in bucket.cellSlots { live[Int(slots[Int(slot)].series)] = true }
        }
        let idle = live.reduce(0) { $0 + ($1 ? 0 : 1) }
        guard idle > 0 else { return 0 }
        var newSeriesIndex = [Int32](repeating: -1, count: series.count)
        var kept: [SeriesEntry] = []
        kept.reserveCapacity(series.count - idle)
        var released: [String: Int] = [:]
        for (i, entry) in series.enumerated() {
            guard live[i] else {
                released[entry.info.measurement, default: 0] += 1
                continue
            }
            newSeriesIndex[i] = Int32(kept.count)
            kept.append(entry)
        }
        for (measurement, n) in released { cardinality.release(measurement, count: n) }
        var newSlotIndex = [Int32](repeating: -1, count: slots.count)
        var keptSlots: [SlotInfo] = []
        for (j, slot) in slots.enumerated() where newSeriesIndex[Int(slot.series)] >= 0 {
            newSlotIndex[j] = Int32(keptSlots.count)
            keptSlots.append(
                SlotInfo(series: newSeriesIndex[Int(slot.series)], field: slot.field, kind: slot.kind, type: slot.type))
        }
        for k in kept.indices {
            for f in kept[k].fields.indices { kept[k].fields[f].slot = newSlotIndex[Int(kept[k].fields[f].slot)] }
        }
        for b in buckets.indices {
            var cellIndex = [Int32](repeating: -1, count: keptSlots.count)
            for (c, slot) in buckets[b].cellSlots.enumerated() {
                let renumbered = newSlotIndex[Int(slot)]
                buckets[b].cellSlots[c] = renumbered
                cellIndex[Int(renumbered)] = Int32(c)
            }
            buckets[b].cellIndex = cellIndex
        }
        // The table anew, each series probed from its own hash, so collision chains stay unbroken.
        table = SeriesTable()
        for k in kept.indices {
            var h = kept[k].info.id
            while table.find(h) != nil { h = h &+ 0x9E37_79B9_7F4A_7C15 }
            kept[k].tableHash = h
            table.insert(h, Int32(k))
        }
        series = kept
        slots = keptSlots
        slotsByMeasurement = [:]
        fieldTypesByMeasurement = [:]
        for (j, slot) in slots.enumerated() {
            let measurement = series[Int(slot.series)].info.measurement
            slotsByMeasurement[measurement, default: []].append(Int32(j))
            noteFieldType(measurement, slot.field, slot.type)
        }
        takenSlots = [:]
        takenSlotsTotal = 0
        current = 0
        epoch += 1
        return idle
    }

    static func canonicalKey(_ d: PointView) -> [UInt8] {
        var key: [UInt8] = []
        key.append(contentsOf: d.measurement)
        for tag in d.tags {
            key.append(0)
            key.append(contentsOf: tag.key)
            key.append(1)
            key.append(contentsOf: tag.value)
        }
        return key
    }

    /// Compares stored canonical key bytes with the decoder's series without building anything.
    static func matches(_ key: [UInt8], _ d: PointView) -> Bool {
        key.withUnsafeBufferPointer { k in
            var o = 0
            func take(_ span: UnsafeBufferPointer<UInt8>) -> Bool {
                guard o + span.count <= k.count else { return false }
                for i in 0..<span.count where k[o + i] != span[i] { return false }
                o += span.count
                return true
            }
            func sep(_ b: UInt8) -> Bool {
                guard o < k.count, k[o] == b else { return false }
                o += 1
                return true
            }
            guard take(d.measurement) else { return false }
            for tag in d.tags {
                guard sep(0), take(tag.key), sep(1), take(tag.value) else { return false }
            }
            return o == k.count
        }
    }

    /// Finds or creates the slot of field `key` of a series; a new slot's kind is `kind`. `position` is the
    /// field's place in its line: lines of a series usually list its fields in the same order, so that field is
    /// tried first; a series with many fields finds the others by hash, a few by a scan of their names.
    mutating func slot(
        series index: Int32, key: UnsafeBufferPointer<UInt8>, kind: FieldKind, integer: Bool, position: Int, limit: Int
    ) -> SlotLookup {
        let found: (slot: Int32, kind: FieldKind)? = series.withUnsafeBufferPointer { all in
            all[Int(index)].fields.withUnsafeBufferPointer { fields in
                if position < fields.count, fields[position].matches(key) {
                    return (fields[position].slot, fields[position].kind)
                }
                if !all[Int(index)].fieldIndex.isEmpty {
                    if let k = all[Int(index)].fieldIndex[nameHash(key)], fields[Int(k)].matches(key) {
                        return (fields[Int(k)].slot, fields[Int(k)].kind)
                    }
                    // Not indexed (a hash shared by two names): the scan below decides.
                }
                for k in 0..<fields.count where fields[k].matches(key) { return (fields[k].slot, fields[k].kind) }
                return nil
            }
        }
        if let found { return found.kind == kind ? .found(found.slot) : .typeConflict }
        let entry = series[Int(index)]
        guard entry.fields.count < limit else { return .overLimit }
        guard key.count <= Int(UInt16.max), Self.isText(key) else { return .invalidName }
        let slot = Int32(slots.count)
        let field = String(decoding: key, as: UTF8.self)
        slots.append(
            SlotInfo(series: index, field: field, kind: kind, type: FieldType(kind: kind, integer: integer)))
        let k = Int32(entry.fields.count)
        series[Int(index)].fields.append(FieldKey(slot: slot, name: key, kind: kind))
        if k >= Self.indexedFields {
            if k == Self.indexedFields {
                // Index the fields so far, then each new one.
                for (j, f) in series[Int(index)].fields.dropLast().enumerated() {
                    let h = f.name.withUnsafeBufferPointer { nameHash($0) }
                    if series[Int(index)].fieldIndex[h] == nil { series[Int(index)].fieldIndex[h] = Int32(j) }
                }
            }
            let h = nameHash(key)
            if series[Int(index)].fieldIndex[h] == nil { series[Int(index)].fieldIndex[h] = k }
        }
        slotsByMeasurement[entry.info.measurement, default: []].append(slot)
        noteFieldType(entry.info.measurement, field, FieldType(kind: kind, integer: integer))
        return .found(slot)
    }

    /// From this many fields on, a series' fields are indexed by hash.
    static let indexedFields: Int32 = 16

    @inline(__always)
    static func equal(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        for i in 0..<a.count where a[i] != b[i] { return false }
        return true
    }

    /// Runs `body` on the cell of `slot` in the bucket starting at `start`, creating either if needed.
    mutating func withCell(
        bucket start: Int64,
        slot: Int32,
        kind: FieldKind,
        walPosition: UInt64,
        _ body: (inout FieldRollup) -> Void
    ) {
        if current >= buckets.count || buckets[current].start != start {
            if let index = buckets.firstIndex(where: { $0.start == start }) {
                current = index
            } else {
                buckets.append(OpenBucket(start: start))
                current = buckets.count - 1
            }
        }
        if walPosition > 0 {  // 0: not from the log (self-metrics, tests)
            if walPosition < buckets[current].minWALPosition { buckets[current].minWALPosition = walPosition }
            if walPosition > buckets[current].maxWALPosition { buckets[current].maxWALPosition = walPosition }
        }
        let slotCount = slots.count
        Self.update(&buckets[current], slot: Int(slot), slotCount: slotCount, kind: kind, body)
    }

    @inline(__always)
    static func update(
        _ bucket: inout OpenBucket,
        slot: Int,
        slotCount: Int,
        kind: FieldKind,
        _ body: (inout FieldRollup) -> Void
    ) {
        if slot >= bucket.cellIndex.count {
            let grow = Swift.max(slotCount, bucket.cellIndex.count * 2, 64) - bucket.cellIndex.count
            bucket.cellIndex.append(contentsOf: repeatElement(-1, count: grow))
        }
        var index = bucket.cellIndex[slot]
        if index < 0 {
            index = Int32(bucket.cells.count)
            bucket.cells.append(FieldRollup(kind: kind))
            bucket.cellSlots.append(Int32(slot))
            bucket.cellIndex[slot] = index
        }
        body(&bucket.cells[Int(index)])
    }
}

extension RollupEngine: CellSource, SeriesCatalog {
    /// The open cells of a read (``openCells(measurement:fields:from:to:series:condition:)``).
    public func visitCells(
        _ read: CellRead, series accept: ((SeriesInfo) -> Bool)?,
        _ body: (Int64, SeriesInfo, Int, consuming FieldRollup) -> Void
    ) {
        let cells = collectOpen(
            measurement: read.measurement, fields: read.fields, from: read.from, to: read.to, series: accept,
            condition: read.condition
        ) { start, series, _, index, rollup in (start, series, index, copy rollup) }
        for (start, series, index, rollup) in cells { body(start, series, index, rollup) }
    }

    public func visitSummaries(
        _ read: CellRead, series accept: ((SeriesInfo) -> Bool)?, _ body: (Int64, SeriesInfo, Int, FieldSummary) -> Void
    ) {
        let cells = collectOpen(
            measurement: read.measurement, fields: read.fields, from: read.from, to: read.to, series: accept,
            condition: read.condition
        ) { start, series, _, index, rollup in (start, series, index, FieldSummary(rollup)) }
        for (start, series, index, summary) in cells { body(start, series, index, summary) }
    }

    public func catalogSeries() -> [SeriesInfo] { allSeries().map(\.series) }

    public func catalogFields() -> [String: [String: FieldType]] { fieldTypes() }

    public func catalogFields(of measurement: String) -> [String: FieldType] { fieldTypes(of: measurement) }

    public func catalogTagKeys(of measurement: String) -> Set<String> { tagKeys(of: measurement) }
}

extension ShardState {
    /// Records that `measurement` has `field` of `type` (InfluxDB's preferred type wins when slots differ).
    mutating func noteFieldType(_ measurement: String, _ field: String, _ type: FieldType) {
        if let known = fieldTypesByMeasurement[measurement]?[field], known <= type { return }
        fieldTypesByMeasurement[measurement, default: [:]][field] = type
    }
}

/// How a read takes a shard's slots (``RollupEngine/collectOpen(measurement:fields:from:to:series:condition:make:)``).
private enum OpenReadPlan {
    case taken([Int32])
    /// The measurement's slots (of the wanted fields) and their series, to decide outside the lock.
    case decide(slotCount: Int, [(slot: Int32, series: SeriesInfo)])
}
