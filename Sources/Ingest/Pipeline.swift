public import Export
public import LineProtocol
public import Rollups

/// Where a batch came from: each has its own counters (`metricsd_lines_received_total{listener=…}`).
public enum IngestSource: String, Sendable {
    case udp, tcp, http
    /// WAL replay and the daemon's own figures.
    case `internal`
}

/// The one way into the rollups. Every source — UDP datagrams, TCP reads, HTTP v1/v2 bodies, JSON event bodies,
/// WAL replay, the daemon's own figures — goes through it, so logging before applying, batch dedup, event admission
/// and the counters are written once. Listeners in the executable only read sockets and answer.
///
/// The order for a batch: (dedup check) → append to the WAL (and with `durability = "fsync"`, for a batch that is
/// acknowledged, sync) → frame → decode and apply line by line → hand late cells to the sink without waiting
/// (``RollupSink/submit(_:)``) → count.
public final class IngestPipeline: Sendable {
    public let engine: RollupEngine
    public let sink: any RollupSink
    public let stats: Stats
    /// Accepted batches are appended here before they touch the rollups (nil: no durability, tests only).
    public let wal: WriteAheadLog?
    /// Retried HTTP bodies (``DedupWindow``); nil: no dedup.
    public let dedup: DedupWindow?
    /// Where JSON events go (lines starting with `{`, event bodies); nil: they are rejected.
    public let events: EventPipeline?
    public let maxLineLength: Int
    /// Where refused lines and events wait to be stored as dead letters; nil: they are only counted.
    public let deadLetters: DeadLetterQueue?
    /// Closed while the InfluxDB outbox is full under `backlog_policy = "block"`: listeners stop taking writes.
    public let gate = IntakeGate()

    public init(
        engine: RollupEngine, sink: any RollupSink, stats: Stats, wal: WriteAheadLog?, dedup: DedupWindow? = nil,
        events: EventPipeline? = nil, maxLineLength: Int, deadLetters: DeadLetterQueue? = nil
    ) {
        self.deadLetters = deadLetters
        self.engine = engine
        self.sink = sink
        self.stats = stats
        self.wal = wal
        self.dedup = dedup
        self.events = events
        self.maxLineLength = maxLineLength
    }

    /// The per-handler state for `source` (one per connection, datagram handler or request).
    public func ingester(_ source: IngestSource, precision: Precision = .nanoseconds) -> LineIngester {
        LineIngester(pipeline: self, source: source, precision: precision)
    }

    public enum Accepted {
        /// Applied: the outcome is in the ingester's ``LineIngester/outcome``.
        case applied
        /// A retry of a body applied within `[storage] dedup_window`: acknowledged, not applied again.
        case duplicate
        /// The WAL refused it (counted; `/health` fails until it takes appends again): nothing was applied.
        case refused(any Error)
    }

    /// One batch of line protocol: a datagram, the complete lines of a TCP read, an HTTP body (decompressed).
    ///
    /// - Parameters:
    ///   - overlong: byte counts of lines the listener's own framer cut (TCP), counted after the batch's lines so a
    ///     line's number is the same live and on replay.
    ///   - acknowledged: the sender is told it is stored (HTTP): with `durability = "fsync"`, synced first.
    ///   - deduplicate: a body whose every line is timestamped and that was applied within the dedup window is
    ///     acknowledged without being applied again (HTTP retries).
    ///   - receivedAt: the receive time to log the batch with (a dead letter replayed: its own, so a line without a
    ///     timestamp gets the time it first came with); now when nil.
    public func accept(
        _ bytes: UnsafeRawBufferPointer, overlong: [Int] = [], into ingester: LineIngester, acknowledged: Bool = false,
        deduplicate: Bool = false, receivedAt: Int64? = nil
    ) -> Accepted {
        let precision = ingester.decoder.precision
        var key: DedupWindow.Key?
        if deduplicate, let dedup {
            let k = DedupWindow.hash(bytes, precision: precision.walCode)
            if dedup.seen(k, now: nowNanoseconds()) && DedupWindow.allLinesTimestamped(bytes) {
                stats.duplicateBatches.add(1)
                return .duplicate
            }
            key = k
        }
        // One receive time for the log and the batch, so a replay gives untimestamped lines and events the same
        // time and identity as they got live.
        let received = receivedAt ?? nowNanoseconds()
        let position: UInt64
        switch log(bytes, receivedAt: received, code: precision.walCode, acknowledged: acknowledged) {
        case .success(let p): position = p
        case .failure(let error): return .refused(error)
        }
        ingester.begin(walPosition: position, receivedAt: received)
        var framer = LineFramer(maxLineLength: maxLineLength)
        framer.feed(bytes) { ingester.handle($0) }
        framer.finish { ingester.handle($0) }  // a datagram's or body's last line needs no newline
        for n in overlong { ingester.handle(.overlong(byteCount: n)) }
        ingester.end(bytes: bytes.count)
        let outcome = ingester.outcome
        if let key, outcome.lines > 0, outcome.untimestamped == 0, outcome.firstError == nil,
            outcome.result.rejected == 0
        {
            dedup?.record(key, now: nowNanoseconds())
        }
        return .applied
    }

    /// What a body of JSON events came to.
    public struct EventsOutcome: Sendable {
        public var decoded = 0
        public var accepted = 0
        public var duplicates = 0
        public var rejectedCount = 0
        /// The rejected events, up to the ingester's ``LineIngester/reportLimit`` (at least the first): index in the
        /// body (1-based), reason and why.
        public var rejected: [Rejection] = []
    }

    /// A body of JSON events (`POST /api/v1/events`): logged whole (replay decodes it again the same way), then
    /// decoded and admitted one event at a time (never all decoded at once).
    public func acceptEvents(_ body: [UInt8], into ingester: LineIngester, receivedAt: Int64? = nil) -> Result<
        EventsOutcome, any Error
    > {
        guard let events else { return .failure(EventsDisabled()) }
        let received = receivedAt ?? nowNanoseconds()
        var position: UInt64 = 0
        if body.contains(where: { $0 > 0x20 }) {
            let logged = body.withUnsafeBytes {
                log($0, receivedAt: received, code: eventsBodyWALCode, acknowledged: true)
            }
            switch logged {
            case .success(let p): position = p
            case .failure(let error): return .failure(error)
            }
        }
        ingester.begin(walPosition: position, receivedAt: received)
        let outcome = applyEvents(body, events, ingester)
        ingester.end(bytes: body.count)
        return .success(outcome)
    }

    public struct EventsDisabled: Error, CustomStringConvertible {
        public var description: String { "events are disabled" }
    }

    private func applyEvents(_ body: [UInt8], _ events: EventPipeline, _ ingester: LineIngester) -> EventsOutcome {
        var outcome = EventsOutcome()
        body.withUnsafeBufferPointer { bytes in
            EventDecoder.forEachEvent(bytes, limits: events.limits) { index, result, range in
                outcome.decoded += 1
                var why: String?
                switch result {
                case .failure(let e):
                    stats.eventsInvalid.add(1)  // rejections after decoding are counted by the ingester
                    why = e.message
                case .success(let event):
                    switch ingester.handleEvent(event, index: index) {
                    case .accepted: outcome.accepted += 1
                    case .duplicate: outcome.duplicates += 1
                    case .rejected(let reason): why = reason
                    }
                }
                if let why {
                    outcome.rejectedCount += 1
                    ingester.rejectEvent(
                        index: index + 1, message: why, json: UnsafeBufferPointer(rebasing: bytes[range]))
                }
            }
        }
        outcome.rejected = ingester.outcome.rejections
        return outcome
    }

    /// WAL replay after an unclean stop: each record is applied as it was live, except lines and events whose
    /// bucket was already stored with that record in it (its watermark), so nothing is counted twice; replayed
    /// bodies re-enter the dedup window.
    public func replay(_ records: [WALRecord], watermarks: [Int64: UInt64]) -> (applied: Int, skipped: Int) {
        let ingester = self.ingester(.internal)
        // Events of buckets already stored with the record in them are stored (idempotently) but not rolled up.
        ingester.replayWatermarks = watermarks
        var applied = 0
        var skipped = 0
        for record in records {
            ingester.begin(walPosition: record.position, receivedAt: record.receivedAt)
            if record.precision == eventsBodyWALCode {
                if let events {
                    applied += applyEvents(record.payload, events, ingester).decoded
                }
            } else {
                ingester.decoder.precision = Precision(walCode: record.precision) ?? .nanoseconds
                var framer = LineFramer(maxLineLength: Int(Int32.max))
                record.payload.withUnsafeBytes { raw in
                    framer.feed(raw) { ingester.handle($0) }
                    framer.finish { ingester.handle($0) }
                }
                if let dedup,
                    let key = record.payload.withUnsafeBytes({ DedupWindow.key($0, precision: record.precision) })
                {
                    dedup.record(key, now: record.receivedAt)
                }
            }
            ingester.end(bytes: record.payload.count)
            applied += ingester.outcome.lines - ingester.outcome.skipped
            skipped += ingester.outcome.skipped
            stats.walReplayed.add(1)
        }
        return (applied, skipped)
    }

    /// The daemon's own figures (measurement `metricsd`), straight into the rollups: they are not logged (they
    /// are recomputed after a restart).
    public func acceptOwn(
        measurement: String, tags: [(key: String, value: String)] = [], fields: [(key: String, value: Value)],
        time: Int64
    ) {
        let ingester = self.ingester(.internal)
        ingester.begin()
        PointView.with(measurement: measurement, tags: tags, fields: fields, timestamp: time) { ingester.handle($0) }
        ingester.end(bytes: 0)
    }

    /// Appends to the WAL; without one, position 0.
    private func log(_ bytes: UnsafeRawBufferPointer, receivedAt: Int64, code: UInt8, acknowledged: Bool) -> Result<
        UInt64, any Error
    > {
        guard let wal else { return .success(0) }
        do {
            let position = try wal.append(bytes, receivedAt: receivedAt, precision: code)
            if acknowledged && wal.durability == .fsync { try wal.sync(upTo: position) }
            stats.walSucceeded()
            return .success(position)
        } catch {
            stats.walFailed(error)
            return .failure(error)
        }
    }
}

extension PointView {
    /// A point built from names and values (not hot: the daemon's own figures once a bucket interval), valid during
    /// `body`.
    static func with(
        measurement: String, tags: [(key: String, value: String)] = [], fields: [(key: String, value: Value)],
        timestamp: Int64?, _ body: (PointView) -> Void
    ) {
        // One arena for every name and string, then spans into it.
        var arena = Array(measurement.utf8)
        var tagSpans: [(key: (start: Int, count: Int), value: (start: Int, count: Int))] = []
        // Tags sorted by key, as a decoded line's are (the series key is over sorted tags).
        for tag in tags.sorted(by: { $0.key < $1.key }) {
            let key = (arena.count, tag.key.utf8.count)
            arena += tag.key.utf8
            tagSpans.append((key, (arena.count, tag.value.utf8.count)))
            arena += tag.value.utf8
        }
        var spans: [(start: Int, count: Int)] = []
        var strings: [Int: (start: Int, count: Int)] = [:]
        for (i, field) in fields.enumerated() {
            spans.append((arena.count, field.key.utf8.count))
            arena += field.key.utf8
            if case .string(let s) = field.value {
                strings[i] = (arena.count, s.utf8.count)
                arena += s.utf8
            }
        }
        arena.withUnsafeBufferPointer { a in
            func span(_ s: (start: Int, count: Int)) -> UnsafeBufferPointer<UInt8> {
                UnsafeBufferPointer(rebasing: a[s.start..<s.start + s.count])
            }
            var built: [Field] = []
            for (i, field) in fields.enumerated() {
                let value: FieldValue =
                    switch field.value {
                    case .float(let v): .float(v)
                    case .integer(let v): .integer(v)
                    case .unsigned(let v): .unsigned(v)
                    case .boolean(let v): .boolean(v)
                    case .string: .string(span(strings[i]!))
                    }
                built.append(Field(key: span(spans[i]), value: value))
            }
            let builtTags = tagSpans.map { Tag(key: span($0.key), value: span($0.value)) }
            built.withUnsafeBufferPointer { f in
                builtTags.withUnsafeBufferPointer { t in
                    body(
                        PointView(
                            measurement: UnsafeBufferPointer(rebasing: a[0..<measurement.utf8.count]), tags: t,
                            fields: f, timestamp: timestamp))
                }
            }
        }
    }
}
