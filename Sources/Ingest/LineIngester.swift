public import Export
public import LineProtocol
public import Rollups

/// The outcome of ingesting a batch of lines (one datagram, one TCP chunk, one HTTP body).
public struct BatchOutcome {
    public var lines = 0
    public var invalid = 0
    public var overlong = 0
    /// Decoded lines that had no timestamp (their points got the server's time).
    public var untimestamped = 0
    /// Lines WAL replay skipped: their bucket was stored with this record in it.
    public var skipped = 0
    public var result = IngestResult()
    /// The first rejected line: number (1-based within the batch), its text (truncated) and why.
    public var firstError: (line: Int, text: String, message: String)?
    /// The first line the rollups refused (some or all of): number and why, in InfluxDB's words where it has some.
    public var firstRefusal: (line: Int, message: String)?
    /// Rejected lines (or events), in order, up to the ingester's ``LineIngester/reportLimit``.
    public var rejections: [Rejection] = []
    /// Rejected lines (or events) per reason, all of them.
    public var reasons = RejectCounts()
    /// Lines with at least one refused value (parser or rollups).
    public var rejectedLines: Int { reasons.total }
}

/// What one listener handler or request keeps between batches: a decoder, a scratch buffer for late cells and
/// the current batch's outcome. Not shared between threads; the ``IngestPipeline`` it belongs to is. Batches go
/// in through the pipeline (``IngestPipeline/accept(_:overlong:into:acknowledged:deduplicate:)`` and the others),
/// which logs them, frames them and hands each line here.
public final class LineIngester {
    public let pipeline: IngestPipeline
    public let source: IngestSource
    let stats: ListenerStats
    public let decoder: LineDecoder
    var lateCells = LateCells()
    /// The last batch's outcome.
    public internal(set) var outcome = BatchOutcome()
    private(set) var batchNow: Int64 = 0
    private(set) var batchPosition: UInt64 = 0
    private(set) var defaultTime: Int64?
    /// How many rejections a batch lists (``BatchOutcome/rejections``): `[limits] max_reported_errors` for a
    /// request that asked for per-line results, 0 otherwise (the first error is always kept).
    public var reportLimit = 0
    /// Where refused lines and events go as dead letters: the pipeline's queue; a replay of dead letters collects
    /// them itself; nil: none are kept.
    public lazy var deadLetterQueue: DeadLetterQueue? = pipeline.deadLetters
    /// The sender of the current batch (a dead letter's `remote`), described only when a letter is made.
    public var remote: (any CustomStringConvertible)?
    var eventCounts = EventCounts()
    /// During WAL replay: per bucket start, the WAL position the stored bucket already covers.
    var replayWatermarks: [Int64: UInt64]?
    /// The rollup point of an event: tag and field storage reused from event to event.
    private var eventTags: [Tag] = []
    private var eventFields: [Field] = []

    init(pipeline: IngestPipeline, source: IngestSource, precision: Precision) {
        self.pipeline = pipeline
        self.source = source
        stats = pipeline.stats.listener(source.rawValue)
        decoder = LineDecoder(precision: precision)
    }

    var engine: RollupEngine { pipeline.engine }
    var events: EventPipeline? { pipeline.events }

    /// Starts a batch: the server time for lines without a timestamp is taken once per batch.
    ///
    /// - Parameters:
    ///   - walPosition: where the batch was logged (0 without a WAL).
    ///   - receivedAt: the time the batch was received, as logged with it (lines without a timestamp and events get
    ///     it, live and on replay alike).
    func begin(walPosition: UInt64 = 0, receivedAt: Int64? = nil) {
        outcome = BatchOutcome()
        eventCounts = EventCounts()
        batchNow = nowNanoseconds()
        batchPosition = walPosition
        defaultTime = receivedAt
    }

    /// The server time this batch uses for lines without a timestamp.
    var batchTime: Int64 { defaultTime ?? batchNow }

    func handle(_ framed: FramedLine) {
        switch framed {
        case .overlong(let n):
            outcome.lines += 1
            outcome.overlong += 1
            outcome.invalid += 1
            rejectOverlong(n)
        case .line(let line):
            handle(line)
        }
    }

    func handle(_ line: UnsafeBufferPointer<UInt8>) {
        if line.first == 0x7B {  // "{": a JSON event
            handleEventLine(line)
            return
        }
        do {
            guard try decoder.decode(line) else {
                outcome.lines += 1  // blank and comment lines count for line numbers, not as points
                return
            }
            outcome.lines += 1
            if let marks = replayWatermarks,
                let mark = marks[engine.bucketStartOf(decoder.timestamp ?? batchTime)], mark >= batchPosition
            {
                outcome.skipped += 1  // replay: this record is in the stored bucket already
                return
            }
            if decoder.timestamp == nil { outcome.untimestamped += 1 }
            let result = engine.ingest(
                decoder,
                now: batchNow,
                defaultTime: defaultTime,
                walPosition: batchPosition,
                lateCells: &lateCells
            )
            outcome.result += result
            if result.rejected > 0 { rejectRefused(line, result) }  // the only cost on a good line: this test
        } catch {
            outcome.lines += 1
            outcome.invalid += 1
            rejectSyntax(line, error)
        }
    }

    /// A point that is not line protocol (the daemon's own figures): straight into the rollups.
    func handle(_ point: PointView) {
        outcome.lines += 1
        outcome.result += engine.ingest(
            point, now: batchNow, defaultTime: defaultTime, walPosition: batchPosition, lateCells: &lateCells)
    }

    /// Ends a batch: hands late cells to the sink and records the counters.
    func end(bytes: Int) {
        if !lateCells.isEmpty {
            pipeline.sink.submit(lateCells.buckets(walPosition: batchPosition))  // stored by the next flush
            lateCells.removeAll()
        }
        let global = pipeline.stats
        global.eventsAccepted.add(eventCounts.accepted)
        stats.events.add(eventCounts.accepted)
        global.eventsDuplicate.add(eventCounts.duplicates)
        global.eventsInvalid.add(eventCounts.invalid)
        stats.lines.add(outcome.lines)
        stats.invalid.add(outcome.invalid)
        if outcome.reasons.total > 0 {
            for (reason, n) in outcome.reasons.nonZero { global.rejected[reason.ordinal].add(n) }
        }
        stats.points.add(outcome.result.applied + outcome.result.late)
        stats.bytes.add(bytes)
        global.rejectedSeries.add(outcome.result.rejectedSeries)
        global.seriesOverflowed.add(outcome.result.overflowed)
        global.typeConflicts.add(outcome.result.typeConflicts)
        global.outOfRange.add(outcome.result.outOfRange)
        global.rejectedFields.add(outcome.result.rejectedFields)
        global.invalidNames.add(outcome.result.invalidNames)
        global.latePoints.add(outcome.result.late)
        global.overlongLines.add(outcome.overlong)
    }

    // MARK: - Events

    private static let eventsMeasurement: [UInt8] = Array("events".utf8)
    private static let eventTag: [UInt8] = Array("event".utf8)
    private static let countField: [UInt8] = Array("count".utf8)
    private static let usersField: [UInt8] = Array("users".utf8)

    /// Feeds an accepted event into the rollups: measurement `events`, tag `event=<name>`, field `count` (1) and
    /// the distinct-count field `users` — as a point, never as a line to decode.
    func feedRollups(_ event: Event, time: Int64) {
        let hash = DistinctSketch.hash(event.userID)
        var name = event.name
        name.withUTF8 { name in
            Self.eventsMeasurement.withUnsafeBufferPointer { measurement in
                Self.eventTag.withUnsafeBufferPointer { tagKey in
                    Self.countField.withUnsafeBufferPointer { countKey in
                        Self.usersField.withUnsafeBufferPointer { users in
                            eventTags.removeAll(keepingCapacity: true)
                            eventTags.append(Tag(key: tagKey, value: name))
                            eventFields.removeAll(keepingCapacity: true)
                            eventFields.append(Field(key: countKey, value: .integer(1)))
                            eventTags.withUnsafeBufferPointer { tags in
                                eventFields.withUnsafeBufferPointer { fields in
                                    let point = PointView(
                                        measurement: measurement, tags: tags, fields: fields,
                                        timestamp: time &* 1_000_000)
                                    outcome.result += engine.ingest(
                                        point, now: batchNow, defaultTime: nil, walPosition: batchPosition,
                                        lateCells: &lateCells, distinct: (users, hash))
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Handles one decoded event at `index` of the current batch: dedup, storage queue, rollups.
    func handleEvent(_ event: Event, index: Int) -> EventPipeline.Outcome {
        guard let events else { return .rejected("events are not enabled here") }
        let outcome = events.admit(
            event, received: batchTime, position: batchPosition, index: index, now: batchNow)
        switch outcome {
        case .accepted(let time):
            eventCounts.accepted += 1
            // On WAL replay, the rollups of buckets already stored with this record in them are not fed again.
            if let marks = replayWatermarks,
                let mark = marks[engine.bucketStartOf(time * 1_000_000)], mark >= batchPosition
            {
                return outcome
            }
            feedRollups(event, time: time)
        case .duplicate: eventCounts.duplicates += 1
        case .rejected: eventCounts.invalid += 1
        }
        return outcome
    }

    /// A line starting with `{` on UDP or TCP: one JSON event.
    func handleEventLine(_ line: UnsafeBufferPointer<UInt8>) {
        outcome.lines += 1
        let index = outcome.lines
        var why: String?
        var reason = RejectReason.invalidEvent
        if pipeline.gate.isClosedToEvents {
            why =
                "the events outbox is full (backlog_policy = \"block\"): kept as a dead letter, replay it once it drains"
            reason = .backlogFull
        } else if let events {
            do throws(EventError) {
                let event = try EventDecoder.decode(line, limits: events.limits)
                if case .rejected(let reason) = handleEvent(event, index: index) { why = reason }
            } catch {
                eventCounts.invalid += 1
                why = error.message
            }
        } else {
            why = "JSON events are not enabled"
        }
        if let why {
            outcome.invalid += 1
            rejectEvent(index: index, message: why, json: line, reason: reason)
        }
    }
}
