public import Export
import Foundation
import LineProtocol
public import Logging
import Synchronization

/// What events forwarding has done, for `/health` and `/metrics`.
public final class EventForwarderStats: Sendable {
    public struct State: Sendable {
        /// `off` (no url), `idle` (caught up), `sending`, `retrying` (ClickHouse unreachable or busy), `failing`
        /// (ClickHouse refuses this configuration: no table, wrong password…; the backlog is kept, retried slowly).
        public var status = "off"
        public var lastSuccess: Int64?
        public var lastError: String?
        public var lastErrorAt: Int64?
        /// Stored events not yet acknowledged by ClickHouse, and their bytes (what `max_backlog` bounds).
        public var backlog = 0
        public var backlogBytes = 0
        public var url = ""
    }

    let sentCount = Atomic<Int>(0)
    let rejectedCount = Atomic<Int>(0)
    let requestCount = Atomic<Int>(0)
    let retryCount = Atomic<Int>(0)
    let droppedOldestCount = Atomic<Int>(0)
    let droppedNewestCount = Atomic<Int>(0)
    let blocking = Atomic<Bool>(false)
    let state = Mutex(State())
    /// Events `backlog_policy` gave up (they stay stored here, never sent), and whether `block` holds events.
    public var droppedOldest: Int { droppedOldestCount.load(ordering: .relaxed) }
    public var droppedNewest: Int { droppedNewestCount.load(ordering: .relaxed) }
    public var isBlocking: Bool { blocking.load(ordering: .relaxed) }

    public init() {}

    public var current: State { state.withLock { $0 } }
    /// Events ClickHouse acknowledged.
    public var sent: Int { sentCount.load(ordering: .relaxed) }
    /// Events ClickHouse refused for good (bad data), skipped.
    public var rejected: Int { rejectedCount.load(ordering: .relaxed) }
    /// INSERTs answered 200.
    public var requests: Int { requestCount.load(ordering: .relaxed) }
    /// INSERTs that failed and will be sent again.
    public var retries: Int { retryCount.load(ordering: .relaxed) }
}

/// Sends stored events to ClickHouse, on its own thread (libcurl blocks; never an event loop). The events table is
/// the outbox: a cursor in the store's `meta` (`clickhouse_events_seq`) says which `seq` ClickHouse has
/// acknowledged, and it moves only after an INSERT answered 200 — so an outage of any length loses nothing
/// (retention keeps events past the cursor), and `kill -9` at worst sends a batch again, whose copies the table's
/// `ReplacingMergeTree` key (and every fleet query) treats as one event.
///
/// A batch ClickHouse refuses for its data (it is all or nothing) is split in halves until the bad events are
/// alone; those are counted as rejected and skipped, the rest is sent.
public final class EventForwarder: Sendable {
    public static let cursorKey = "clickhouse_events_seq"

    public var configuration: ClickHouseConfiguration { settings.withLock { $0.configuration } }
    private let settings: Mutex<(configuration: ClickHouseConfiguration, generation: Int)>
    public let stats = EventForwarderStats()
    let store: EventStore
    let instance: String
    let logger: Logger
    private let signal = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let stopping = Atomic<Bool>(false)
    private let drainUntil = Atomic<Int64>(0)
    /// The acknowledged cursor (what retention must keep above), or -1 when forwarding is off.
    private let acknowledged = Atomic<Int64>(-1)
    private let started = Atomic<Bool>(false)

    /// Closed to events while `backlog_policy = "block"` holds them.
    let gate: IntakeGate?
    /// `drop_newest` past the bound: events after this `seq` are not sent (nil: not holding).
    private let frozenAt = Atomic<Int64>(-1)
    /// The backlog after a cursor, kept by ranges (``backlog(after:)``): read and written by the forwarder's
    /// thread only, never held across SQLite work.
    private let tally = Mutex<Tally?>(nil)

    /// The events (and bytes) stored after `cursor` up to `through`, and when they were last counted in full.
    struct Tally: Equatable {
        var cursor: Int64
        var through: Int64
        var events: Int
        var bytes: Int
        var counted: Int64
    }

    public init(
        store: EventStore, configuration: ClickHouseConfiguration, logger: Logger, gate: IntakeGate? = nil
    ) throws(StoreError) {
        self.gate = gate
        self.store = store
        self.settings = Mutex((configuration, 0))
        self.logger = logger
        instance = String(try store.instanceID(), radix: 16)
        if configuration.enabled { acknowledged.store(try store.cursor(Self.cursorKey), ordering: .relaxed) }
        stats.state.withLock {
            $0.url = configuration.url
            $0.status = configuration.enabled ? "idle" : "off"
        }
    }

    /// Events with a `seq` above this are not yet in ClickHouse: retention keeps them. `nil` when off.
    public var keepAfter: Int64? {
        let v = acknowledged.load(ordering: .relaxed)
        return v < 0 ? nil : v
    }

    /// A new target or settings from the next round on (SIGHUP). The cursor stays: what the old target acknowledged
    /// is not sent again. An empty url turns forwarding off; a url turns it on.
    public func reconfigure(_ configuration: ClickHouseConfiguration) {
        settings.withLock {
            $0.configuration = configuration
            $0.generation += 1
        }
        if configuration.enabled {
            if acknowledged.load(ordering: .relaxed) < 0, let c = try? store.cursor(Self.cursorKey) {
                acknowledged.store(c, ordering: .relaxed)
            }
        } else {
            acknowledged.store(-1, ordering: .relaxed)
        }
        stats.state.withLock {
            $0.url = configuration.url
            if !configuration.enabled { $0.status = "off" }
        }
        wake()
    }

    public func start() {
        guard !started.exchange(true, ordering: .relaxed) else { return }
        let thread = Thread { [self] in
            run()
            finished.signal()
        }
        thread.name = "metricsd-clickhouse"
        thread.start()
    }

    /// A send round now (after the flush stored events) instead of at the next interval.
    public func wake() { signal.signal() }

    /// Stops the thread; with `drain` > 0 it first sends what is stored, for up to that many nanoseconds (stopping
    /// early when caught up or when ClickHouse fails).
    public func stop(drain: Int64 = 0) {
        guard started.load(ordering: .relaxed) else { return }
        if drain > 0 {
            drainUntil.store(Self.now() + drain, ordering: .sequentiallyConsistent)
            signal.signal()
            let grace = Int(clamping: drain) + configuration.timeout * 1_000_000_000 + 1_000_000_000
            if finished.wait(timeout: .now() + .nanoseconds(grace)) == .success { return }
        }
        stopping.store(true, ordering: .sequentiallyConsistent)
        signal.signal()
        finished.wait()
    }

    private var isDraining: Bool { drainUntil.load(ordering: .sequentiallyConsistent) != 0 }

    private var isStopping: Bool {
        if stopping.load(ordering: .sequentiallyConsistent) { return true }
        let until = drainUntil.load(ordering: .sequentiallyConsistent)
        return until != 0 && Self.now() >= until
    }

    private func pause(_ nanoseconds: Int64) {
        _ = signal.wait(timeout: .now() + .nanoseconds(Int(clamping: nanoseconds)))
    }

    /// Waits out a backoff (ended early by ``wake()`` or a stop), applying `backlog_policy` every second meanwhile:
    /// an outage is when the outbox fills.
    private func waitOut(_ nanoseconds: Int64, _ configuration: ClickHouseConfiguration) {
        let end = Self.now() + nanoseconds
        while !isStopping {
            let left = end - Self.now()
            if left <= 0 { return }
            if signal.wait(timeout: .now() + .nanoseconds(Int(min(left, 1_000_000_000)))) == .success { return }
            if let c = try? readCursor() {
                _ = enforce(c, configuration)
                refresh(c, status: stats.current.status)
            }
        }
    }

    private func run() {
        var generation = -1
        var http: ClickHouseHTTP?
        var tableReady = false
        var attempt = 0
        while !isStopping {
            let (configuration, current) = settings.withLock { ($0.configuration, $0.generation) }
            guard configuration.enabled else {
                if isDraining { break }
                pause(3_600_000_000_000)
                continue
            }
            if current != generation {
                generation = current
                http = ClickHouseHTTP(configuration, timeout: configuration.timeout, maxResponseBytes: 1 << 20)
                tableReady = !configuration.createTable
                attempt = 0
            }
            guard let http else { continue }
            // The bound holds whether or not ClickHouse answers (an outage is when it fills).
            if let c = try? readCursor() { _ = enforce(c, configuration) }
            do throws(ClickHouseError) {
                if !tableReady {
                    _ = try http.query(ClickHouseSQL.createDatabase(configuration.database))
                    _ = try http.query(ClickHouseSQL.createTable(configuration.database, configuration.table))
                    tableReady = true
                    logger.info("clickhouse: table \(configuration.qualifiedTable) is ready on \(configuration.url)")
                }
                let cursor = try readCursor()
                var batch = try read(after: cursor, limit: configuration.batchSize)
                let frozen = frozenAt.load(ordering: .relaxed)
                if frozen >= 0 { batch.removeAll { $0.seq > frozen } }
                guard let lastSeq = batch.last?.seq else {
                    refresh(cursor, status: "idle")
                    if isDraining { break }
                    pause(configuration.flushInterval)
                    continue
                }
                let rejected = try send(batch, http)
                try advance(to: lastSeq)
                stats.sentCount.add(batch.count - rejected, ordering: .relaxed)
                stats.rejectedCount.add(rejected, ordering: .relaxed)
                stats.state.withLock { $0.lastSuccess = Self.now() }
                attempt = 0
                refresh(lastSeq, status: "sending")
            } catch {
                stats.retryCount.add(1, ordering: .relaxed)
                attempt += 1
                let refused = error.kind == .refused
                note(error: "\(error)", status: refused ? "failing" : "retrying")
                if error.code == 60 || error.code == 81 { tableReady = !configuration.createTable }
                if let c = try? readCursor() { refresh(c, status: refused ? "failing" : "retrying") }
                if isDraining { break }
                waitOut(refused ? configuration.retryMax : backoff(attempt, configuration), configuration)
            }
        }
    }

    private func readCursor() throws(ClickHouseError) -> Int64 {
        do {
            return try store.cursor(Self.cursorKey)
        } catch {
            throw ClickHouseError(kind: .unavailable, code: nil, status: nil, message: "reading the cursor: \(error)")
        }
    }

    private func read(after cursor: Int64, limit: Int) throws(ClickHouseError) -> [EventStore.Queued] {
        do {
            return try store.queued(after: cursor, limit: limit)
        } catch {
            throw ClickHouseError(kind: .unavailable, code: nil, status: nil, message: "reading events: \(error)")
        }
    }

    private func advance(to seq: Int64) throws(ClickHouseError) {
        do {
            try store.setCursor(Self.cursorKey, seq)
            acknowledged.store(seq, ordering: .relaxed)
        } catch {
            // Sent but not recorded: the batch goes again, and its copies count once.
            throw ClickHouseError(kind: .unavailable, code: nil, status: nil, message: "recording progress: \(error)")
        }
    }

    /// Inserts `batch`; returns how many events ClickHouse refused for good (skipped). Throws for anything else:
    /// the batch is sent again.
    func send(_ batch: [EventStore.Queued], _ http: ClickHouseHTTP) throws(ClickHouseError) -> Int {
        do {
            try http.insert(Self.rows(batch[...], instance: instance), gzip: true)
            stats.requestCount.add(1, ordering: .relaxed)
            return 0
        } catch  where error.kind == .badData {
            guard batch.count > 1 else {
                logger.error("clickhouse: event \(batch[0].seq) refused for good, skipped: \(error)")
                note(error: "\(error)", status: "sending")
                return 1
            }
            let half = batch.count / 2
            return try send(Array(batch[..<half]), http) + send(Array(batch[half...]), http)
        }
    }

    /// The JSONEachRow rows of `events`: `properties` as a JSON string (metricsd's compact JSON), `ts` in seconds,
    /// `ts_ms` exact. An event without a client id gets `<instance>/<received>/<wal position>/<index>`, its
    /// identity, so a resend has the same id.
    static func rows(_ events: ArraySlice<EventStore.Queued>, instance: String) -> [UInt8] {
        var out = JSONText()
        out.bytes.reserveCapacity(events.count * 200)
        for q in events {
            let e = q.event
            let t = max(0, e.time)
            out.raw("{\"id\":")
            out.string(e.id ?? "\(instance)/\(e.received)/\(e.origin)/\(e.index)")
            out.raw(",\"event\":")
            out.string(e.name)
            out.raw(",\"user_id\":")
            out.string(e.userID)
            out.raw(",\"ts\":")
            out.integer(t / 1000)
            out.raw(",\"ts_ms\":")
            out.integer(t)
            out.raw(",\"properties\":")
            out.string(e.properties)
            out.raw("}\n")
        }
        return out.bytes
    }

    func backoff(_ attempt: Int, _ configuration: ClickHouseConfiguration) -> Int64 {
        let step = min(
            configuration.retryMax,
            configuration.retryInitial.multipliedReportingOverflow(by: 1 << min(attempt - 1, 30)).0)
        return step / 2 + Int64.random(in: 0...max(0, step / 2))
    }

    private func note(error: String, status: String) {
        stats.state.withLock {
            $0.lastError = error
            $0.lastErrorAt = Self.now()
            $0.status = status
        }
        if status != "sending" { logger.warning("clickhouse: \(error)") }
    }

    private func refresh(_ cursor: Int64, status: String) {
        let backlog = self.backlog(after: cursor) ?? (events: 0, bytes: 0)
        stats.state.withLock {
            $0.backlog = backlog.events
            $0.backlogBytes = backlog.bytes
            $0.status = backlog.events == 0 && status != "failing" && status != "retrying" ? "idle" : status
        }
    }

    /// Keeps the backlog after `cursor` within `max_backlog` by the policy; returns the cursor to read from.
    ///
    /// - `drop_oldest`: the cursor steps over the oldest events until the rest fits.
    /// - `drop_newest`: the events stored until the bound was passed are sent; those stored after it, until they
    ///   have been (the cursor cannot skip a range in the middle), are not — then sending resumes with what comes.
    /// - `block`: events are refused (HTTP 429, UDP/TCP event lines kept as dead letters) until the backlog is
    ///   below 90 % of the bound.
    private func enforce(_ cursor: Int64, _ configuration: ClickHouseConfiguration) -> Int64 {
        guard let backlog = self.backlog(after: cursor) else { return cursor }
        let limit = configuration.maxBacklog
        let over = backlog.bytes > limit
        let relieved = backlog.bytes <= limit / 10 * 9
        if configuration.backlogPolicy != .block {
            stats.blocking.store(false, ordering: .relaxed)
            gate?.setEvents(false)
        }
        if configuration.backlogPolicy != .dropNewest { frozenAt.store(-1, ordering: .relaxed) }
        switch configuration.backlogPolicy {
        case .dropOldest:
            guard over, let point = try? store.dropPoint(after: cursor, atLeast: backlog.bytes - limit) else {
                return cursor
            }
            do {
                try store.setCursor(Self.cursorKey, point.seq)
                acknowledged.store(point.seq, ordering: .relaxed)
            } catch {
                return cursor
            }
            stats.droppedOldestCount.add(point.events, ordering: .relaxed)
            logger.warning(
                "clickhouse: the events outbox passed max_backlog (\(limit) bytes): the oldest \(point.events) events will not be sent (drop_oldest)"
            )
            return point.seq
        case .dropNewest:
            let frozen = frozenAt.load(ordering: .relaxed)
            if frozen < 0 {
                if over, let newest = try? store.maxSeq() {
                    frozenAt.store(newest, ordering: .relaxed)
                    logger.warning(
                        "clickhouse: the events outbox passed max_backlog (\(limit) bytes): newer events are kept here, not sent (drop_newest)"
                    )
                }
                return cursor
            }
            guard cursor >= frozen, let newest = try? store.maxSeq() else { return cursor }
            // What was queued before the bound is sent: the events held since are given up, and sending resumes.
            let skipped = ((try? store.count(after: cursor)) ?? 0) - ((try? store.count(after: newest)) ?? 0)
            do {
                try store.setCursor(Self.cursorKey, newest)
                acknowledged.store(newest, ordering: .relaxed)
            } catch {
                return cursor
            }
            stats.droppedNewestCount.add(skipped, ordering: .relaxed)
            frozenAt.store(-1, ordering: .relaxed)
            return newest
        case .block:
            let blocked = stats.blocking.load(ordering: .relaxed)
            let now = over || (blocked && !relieved)
            if now && !blocked {
                logger.warning(
                    "clickhouse: the events outbox passed max_backlog (\(limit) bytes): events are refused until it drains (block)"
                )
            }
            stats.blocking.store(now, ordering: .relaxed)
            gate?.setEvents(now)
            return cursor
        }
    }

    /// The backlog after `cursor`: the last count, less the range sent since, plus the rows stored since — each row
    /// read about once, where counting everything unsent for every batch made draining a large backlog quadratic
    /// (1,000,000 events forwarded at 47,000/s with 20 µs of CPU each). Counted in full again every 30 s (rows the
    /// retention removed meanwhile) and whenever the cursor is outside the counted range.
    func backlog(after cursor: Int64) -> (events: Int, bytes: Int)? {
        let now = Self.now()
        var t = tally.withLock { $0 }
        do throws(StoreError) {
            t = try Self.advance(t, to: cursor, now: now, store: store)
        } catch {
            return nil
        }
        tally.withLock { $0 = t }
        return t.map { ($0.events, $0.bytes) }
    }

    /// ``backlog(after:)``'s step (a function of the store, for tests).
    static func advance(_ t: Tally?, to cursor: Int64, now: Int64, store: EventStore) throws(StoreError) -> Tally {
        if let t, cursor >= t.cursor, cursor <= t.through, now &- t.counted < 30_000_000_000 {
            var next = t
            if cursor > t.cursor {
                let sent = try store.backlog(after: t.cursor, through: cursor)
                next.events -= sent.events
                next.bytes -= sent.bytes
                next.cursor = cursor
            }
            let added = try store.backlog(after: t.through, through: .max)
            next.events += added.events
            next.bytes += added.bytes
            next.through = added.last
            return next
        }
        let all = try store.backlog(after: cursor, through: .max)
        return Tally(cursor: cursor, through: all.last, events: all.events, bytes: all.bytes, counted: now)
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1e9) }
}
