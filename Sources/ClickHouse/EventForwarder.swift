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
        /// Stored events not yet acknowledged by ClickHouse.
        public var backlog = 0
        public var url = ""
    }

    let sentCount = Atomic<Int>(0)
    let rejectedCount = Atomic<Int>(0)
    let requestCount = Atomic<Int>(0)
    let retryCount = Atomic<Int>(0)
    let state = Mutex(State())

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

    public init(store: EventStore, configuration: ClickHouseConfiguration, logger: Logger) throws(StoreError) {
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
            do throws(ClickHouseError) {
                if !tableReady {
                    _ = try http.query(ClickHouseSQL.createDatabase(configuration.database))
                    _ = try http.query(ClickHouseSQL.createTable(configuration.database, configuration.table))
                    tableReady = true
                    logger.info("clickhouse: table \(configuration.qualifiedTable) is ready on \(configuration.url)")
                }
                let cursor = try readCursor()
                let batch = try read(after: cursor, limit: configuration.batchSize)
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
                pause(refused ? configuration.retryMax : backoff(attempt, configuration))
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
        let backlog = (try? store.count(after: cursor)) ?? 0
        stats.state.withLock {
            $0.backlog = backlog
            $0.status = backlog == 0 && status != "failing" && status != "retrying" ? "idle" : status
        }
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1e9) }
}
