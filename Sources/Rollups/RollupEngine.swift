public import LineProtocol
import Synchronization

/// Settings of the in-memory rollups (`[rollup]` in the configuration).
public struct RollupConfiguration: Sendable, Hashable {
    /// Bucket width in nanoseconds (default one minute).
    public var interval: Int64 = 60_000_000_000
    /// How long a finished bucket stays open for late points, in nanoseconds (default two minutes).
    public var lateness: Int64 = 120_000_000_000
    /// Series beyond this count are rejected and counted.
    public var maxSeries = 1_000_000
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

    public init() {}

    public static func += (a: inout IngestResult, b: IngestResult) {
        a.applied += b.applied
        a.late += b.late
        a.rejectedSeries += b.rejectedSeries
        a.typeConflicts += b.typeConflicts
        a.outOfRange += b.outOfRange
    }

    public var rejected: Int { rejectedSeries + typeConflicts + outOfRange }
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

    public init(configuration: RollupConfiguration = RollupConfiguration()) {
        self.configuration = configuration
        shards = (0..<max(1, configuration.shards)).map { _ in Shard() }
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
    public func ingest(
        _ decoder: LineDecoder,
        now: Int64,
        defaultTime: Int64? = nil,
        walPosition: UInt64 = 0,
        lateCells: inout [ClosedCell],
        distinct: (key: UnsafeBufferPointer<UInt8>, hash: UInt64)? = nil
    ) -> IngestResult {
        var result = IngestResult()
        let time = decoder.timestamp ?? defaultTime ?? now
        if time > now &+ configuration.maxFuture || time < now &- configuration.maxAge {
            result.outOfRange = decoder.fields.count + (distinct == nil ? 0 : 1)
            return result
        }
        let start = bucketStart(time)
        let isLate = start &+ configuration.interval &+ configuration.lateness <= now
        let hash = decoder.seriesHash()
        let shard = shards[Int(truncatingIfNeeded: hash % UInt64(shards.count))]
        let config = configuration
        shard.state.withLock { state in
            guard let seriesIndex = state.intern(decoder, hash: hash, limit: config.maxSeries, count: seriesCount)
            else {
                result.rejectedSeries = decoder.fields.count + (distinct == nil ? 0 : 1)
                return
            }
            func apply(_ key: UnsafeBufferPointer<UInt8>, _ kind: FieldKind, _ add: (inout FieldRollup) -> Void) {
                let slot = state.slot(series: seriesIndex, key: key, kind: kind)
                guard state.slots[Int(slot)].kind == kind else {
                    result.typeConflicts += 1
                    return
                }
                if isLate {
                    var rollup = FieldRollup(kind: kind)
                    add(&rollup)
                    lateCells.append(
                        ClosedCell(
                            series: state.series[Int(seriesIndex)].info,
                            field: state.slots[Int(slot)].field,
                            rollup: rollup
                        )
                    )
                    result.late += 1
                } else {
                    state.withCell(bucket: start, slot: slot, kind: kind, walPosition: walPosition, add)
                    result.applied += 1
                }
            }
            for field in decoder.fields {
                let kind: FieldKind
                switch field.value {
                case .float, .integer, .unsigned: kind = .numeric
                case .boolean: kind = .boolean
                case .string: kind = .string
                }
                apply(field.key, kind) { Self.add(field.value, at: time, to: &$0) }
            }
            if let distinct {
                apply(distinct.key, .distinct) { $0.add(distinctHash: distinct.hash, at: time) }
            }
        }
        return result
    }

    @inline(__always)
    static func add(_ value: FieldValue, at time: Int64, to rollup: inout FieldRollup) {
        switch value {
        case .float(let v): rollup.add(v, at: time)
        case .integer(let v): rollup.add(Double(v), at: time)
        case .unsigned(let v): rollup.add(Double(v), at: time)
        case .boolean(let v): rollup.add(v, at: time)
        case .string(let s): rollup.add(s, at: time)
        }
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
            shard.state.withLock { state in
                let closing = state.buckets.filter { shouldClose($0.start) }
                guard !closing.isEmpty else { return }
                state.buckets.removeAll { shouldClose($0.start) }
                state.current = 0
                for bucket in closing {
                    let start = bucket.start
                    positions[start] = max(positions[start] ?? 0, bucket.maxWALPosition)
                    var cells = byStart[start, default: []]
                    cells.reserveCapacity(cells.count + bucket.cells.count)
                    for (k, rollup) in bucket.cells.enumerated() {
                        let slot = state.slots[Int(bucket.cellSlots[k])]
                        cells.append(
                            ClosedCell(series: state.series[Int(slot.series)].info, field: slot.field, rollup: rollup)
                        )
                    }
                    byStart[start] = cells
                }
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
    public func openCells(
        measurement: String, fields: [String]?, from: Int64, to: Int64, series accept: ((SeriesInfo) -> Bool)? = nil,
        condition: String? = nil
    ) -> [(start: Int64, cell: ClosedCell)] {
        var out: [(start: Int64, cell: ClosedCell)] = []
        let key = condition.map { measurement + "\u{0}" + (fields?.joined(separator: "\u{0}") ?? "*") + "\u{0}" + $0 }
        for shard in shards {
            shard.state.withLock { state in
                guard let slots = state.slotsByMeasurement[measurement] else { return }
                // The slots this read takes, decided once per call (not per bucket), or remembered.
                let taken: [Int32]
                if let key, let known = state.takenSlots[key], known.slotCount == slots.count {
                    taken = known.taken
                } else {
                    taken = slots.filter { slot in
                        let meta = state.slots[Int(slot)]
                        return (fields?.contains(meta.field) ?? true)
                            && (accept?(state.series[Int(meta.series)].info) ?? true)
                    }
                    if let key {
                        // Bounded: at most 256 conditions and a million remembered slots per shard (4 MiB).
                        state.takenSlotsTotal += taken.count
                        if state.takenSlots.count >= 256 || state.takenSlotsTotal > 1 << 20 {
                            state.takenSlots = [:]
                            state.takenSlotsTotal = taken.count
                        }
                        state.takenSlots[key] = (slots.count, taken)
                    }
                }
                guard !taken.isEmpty else { return }
                for bucket in state.buckets where bucket.start >= from && bucket.start < to {
                    let start = bucket.start
                    for slot in taken {
                        let meta = state.slots[Int(slot)]
                        guard Int(slot) < bucket.cellIndex.count else { continue }
                        let index = bucket.cellIndex[Int(slot)]
                        guard index >= 0 else { continue }
                        out.append(
                            (
                                start,
                                ClosedCell(
                                    series: state.series[Int(meta.series)].info,
                                    field: meta.field,
                                    rollup: bucket.cells[Int(index)]
                                )
                            )
                        )
                    }
                }
            }
        }
        return out
    }

    /// Every known series with its fields and their kinds.
    public func allSeries() -> [(series: SeriesInfo, fields: [(name: String, kind: FieldKind)])] {
        var out: [(series: SeriesInfo, fields: [(name: String, kind: FieldKind)])] = []
        for shard in shards {
            shard.state.withLock { state in
                for entry in state.series {
                    out.append(
                        (entry.info, entry.slots.map { (state.slots[Int($0)].field, state.slots[Int($0)].kind) })
                    )
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
    /// Slots of this series' fields, and their names as bytes for lookup without building Strings.
    var slots: [Int32] = []
    var fieldNames: [[UInt8]] = []
    /// A cheap fingerprint of each field name, compared before the bytes.
    var fieldPrints: [UInt64] = []
}

@inline(__always)
private func fingerprint(_ key: UnsafeBufferPointer<UInt8>) -> UInt64 {
    let n = key.count
    guard n > 0 else { return 0 }
    var h = UInt64(truncatingIfNeeded: n) &* 0x9E37_79B9_7F4A_7C15
    h ^= UInt64(key[0]) | UInt64(key[n &- 1]) << 8 | UInt64(key[n &>> 1]) << 16 | UInt64(key[(n &* 3) &>> 2]) << 24
    return h
}

private struct SlotInfo {
    var series: Int32
    var field: String
    var kind: FieldKind
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
    /// Slots a query condition took (``RollupEngine/openCells(measurement:fields:from:to:series:condition:)``),
    /// with the measurement's slot count then: stale once it has more.
    var takenSlots: [String: (slotCount: Int, taken: [Int32])] = [:]
    var takenSlotsTotal = 0
    /// Open buckets, few at a time (the current one plus those within `lateness`): a linear scan beats hashing.
    var buckets: [OpenBucket] = []
    /// Index in `buckets` of the bucket used last (the common case for the next point).
    var current = 0

    /// Finds or creates the series of the decoded line; `nil` when a new series would exceed the limit.
    mutating func intern(_ d: LineDecoder, hash: UInt64, limit: Int, count: borrowing Atomic<Int>) -> Int32? {
        var h = hash
        while let index = table.find(h) {
            if Self.matches(series[Int(index)].key, d) { return index }
            h = h &+ 0x9E37_79B9_7F4A_7C15  // a true hash collision: probe on
        }
        // New series.
        let total = count.wrappingAdd(1, ordering: .relaxed).newValue
        if total > limit {
            count.wrappingSubtract(1, ordering: .relaxed)
            return nil
        }
        let info = SeriesInfo(
            id: hash,
            measurement: String(decoding: d.measurement, as: UTF8.self),
            tags: d.tags.map {
                TagPair(String(decoding: $0.key, as: UTF8.self), String(decoding: $0.value, as: UTF8.self))
            }
        )
        let index = Int32(series.count)
        series.append(SeriesEntry(info: info, key: Self.canonicalKey(d)))
        table.insert(h, index)
        return index
    }

    static func canonicalKey(_ d: LineDecoder) -> [UInt8] {
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
    static func matches(_ key: [UInt8], _ d: LineDecoder) -> Bool {
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

    /// Finds or creates the slot of field `key` of a series. The kind of a new slot is `kind`.
    mutating func slot(series index: Int32, key: UnsafeBufferPointer<UInt8>, kind: FieldKind) -> Int32 {
        let print = fingerprint(key)
        let found: Int32? = series.withUnsafeBufferPointer { all in
            let entry = all[Int(index)]
            return entry.fieldPrints.withUnsafeBufferPointer { prints in
                for k in 0..<prints.count where prints[k] == print {
                    if entry.fieldNames[k].withUnsafeBufferPointer({ Self.equal($0, key) }) { return entry.slots[k] }
                }
                return nil
            }
        }
        if let found { return found }
        let entry = series[Int(index)]
        let slot = Int32(slots.count)
        let field = String(decoding: key, as: UTF8.self)
        slots.append(SlotInfo(series: index, field: field, kind: kind))
        series[Int(index)].slots.append(slot)
        series[Int(index)].fieldNames.append(Array(key))
        series[Int(index)].fieldPrints.append(print)
        slotsByMeasurement[entry.info.measurement, default: []].append(slot)
        return slot
    }

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
