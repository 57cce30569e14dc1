import CSQLite
import Synchronization

/// One accepted event as stored.
public struct StoredEvent: Sendable, Equatable {
    /// Event time, milliseconds since the epoch.
    public var time: Int64
    public var name: String
    public var userID: String
    public var id: String?
    /// When metricsd received it (nanoseconds; the WAL record's time) and where it was logged (WAL position,
    /// index in the record): together they identify the event, so replaying the log never stores it twice.
    public var received: Int64
    public var origin: UInt64
    public var index: Int
    public var properties: String

    public init(
        time: Int64, name: String, userID: String, id: String?, received: Int64, origin: UInt64, index: Int,
        properties: String
    ) {
        self.time = time
        self.name = name
        self.userID = userID
        self.id = id
        self.received = received
        self.origin = origin
        self.index = index
        self.properties = properties
    }
}

/// The `events` table of `<data_dir>/metricsd.db` (created by ``SQLiteStore``'s schema, version 3), on a
/// connection of its own: event inserts and analytics reads never wait for a rollup flush's lock in this
/// process, and SQLite's WAL mode lets reads run while the other connection writes.
///
/// Indexes: `(ts)` serves retention; `(received, origin, idx)` is the unique identity that makes inserts idempotent,
/// and finds the ids of the dedup window at start-up. `seq` is the forwarding order (the ClickHouse outbox).
public final class EventStore: Sendable {
    static let schema = """
        CREATE TABLE IF NOT EXISTS events(
            seq INTEGER PRIMARY KEY,
            ts INTEGER NOT NULL,
            event TEXT NOT NULL,
            user_id TEXT NOT NULL,
            id TEXT,
            received INTEGER NOT NULL,
            origin INTEGER NOT NULL,
            idx INTEGER NOT NULL,
            properties TEXT NOT NULL);
        CREATE UNIQUE INDEX IF NOT EXISTS events_identity ON events(received, origin, idx);
        CREATE INDEX IF NOT EXISTS events_by_time ON events(ts);
        """

    private struct Handle: @unchecked Sendable {
        let db: OpaquePointer
    }

    private let connection: Mutex<Handle>

    /// Opens a connection to the database at `path`, which ``SQLiteStore`` has created or migrated.
    public init(path: String) throws(StoreError) {
        let db = try SQLiteStore.open(path, create: false)
        connection = Mutex(Handle(db: db))
        try SQLiteStore.execute(
            db, "PRAGMA synchronous = NORMAL; PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY;",
            context: "opening the event store")
        // Indexes earlier versions made and nothing reads (analytics read the in-memory index; ids at start-up come
        // by receive time, through the identity index): each cost a B-tree insert per event.
        try SQLiteStore.execute(
            db, "DROP INDEX IF EXISTS events_by_event; DROP INDEX IF EXISTS events_by_id;",
            context: "opening the event store")
        let version = try SQLiteStore.metaInt(db, "schema_version") ?? 0
        guard version >= 3 else {
            throw StoreError(
                code: SQLITE_ERROR, message: "schema version \(version) has no events table",
                context: "opening \(path) for events")
        }
    }

    deinit {
        connection.withLock { _ = sqlite3_close_v2($0.db) }
    }

    /// Inserts events in one transaction; an event already stored (same identity) is skipped. Returns how many
    /// were new.
    @discardableResult
    public func insert(_ events: [StoredEvent]) throws(StoreError) -> Int {
        guard !events.isEmpty else { return 0 }
        return try connection.withLock { h throws(StoreError) in
            try SQLiteStore.immediateTransaction(h.db, context: "storing events") { () throws(StoreError) in
                let s = try Statement(
                    h.db,
                    """
                    INSERT OR IGNORE INTO events(ts, event, user_id, id, received, origin, idx, properties)
                    VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                    """)
                var inserted = 0
                for e in events {
                    try s.bind(1, e.time)
                    try s.bind(2, e.name)
                    try s.bind(3, e.userID)
                    if let id = e.id { try s.bind(4, id) }
                    try s.bind(5, e.received)
                    try s.bind(6, Int64(bitPattern: e.origin))
                    try s.bind(7, Int64(e.index))
                    try s.bind(8, e.properties)
                    _ = try s.step()
                    inserted += Int(sqlite3_changes(h.db))
                    s.reset()
                }
                return inserted
            }
        }
    }

    /// Ids of events received at or after `since` (nanoseconds), with their identity, for deduplication after a
    /// restart.
    public func recentIDs(since: Int64) throws(StoreError) -> [(
        id: String, received: Int64, origin: UInt64, index: Int
    )] {
        try connection.withLock { h throws(StoreError) in
            let s = try Statement(
                h.db, "SELECT id, received, origin, idx FROM events WHERE received >= ?1 AND id IS NOT NULL")
            try s.bind(1, since)
            var out: [(String, Int64, UInt64, Int)] = []
            while try s.step() {
                out.append((s.text(0), s.int64(1), UInt64(bitPattern: s.int64(2)), Int(s.int64(3))))
            }
            return out
        }
    }

    /// Deletes up to `limit` events older than `before` (milliseconds); returns how many. With `keepAfter`, events
    /// whose `seq` is above it are kept whatever their age (not yet forwarded to ClickHouse: an outage of any length
    /// loses nothing). The newest row is always kept: `seq` is SQLite's rowid, which would otherwise start again
    /// below a forwarding cursor once the table is empty.
    @discardableResult
    public func deleteOlder(than before: Int64, limit: Int = 10_000, keepAfter: Int64? = nil) throws(StoreError)
        -> Int
    {
        try connection.withLock { h throws(StoreError) in
            let s = try Statement(
                h.db,
                """
                DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE ts < ?1 AND seq <= ?3
                    AND seq < (SELECT max(seq) FROM events) LIMIT ?2)
                """)
            try s.bind(1, before)
            try s.bind(2, Int64(limit))
            try s.bind(3, keepAfter ?? Int64.max)
            _ = try s.step()
            return Int(sqlite3_changes(h.db))
        }
    }

    // MARK: - Forwarding (the events outbox)

    /// A stored event with its place in the table, as the ClickHouse forwarder reads it.
    public struct Queued: Sendable, Equatable {
        public var seq: Int64
        public var event: StoredEvent
    }

    /// Up to `limit` events stored after `seq`, in `seq` order: the events outbox is the table itself, read from a
    /// cursor (``cursor(_:)``) that moves only when the receiver acknowledged.
    public func queued(after seq: Int64, limit: Int) throws(StoreError) -> [Queued] {
        try connection.withLock { h throws(StoreError) in
            let s = try Statement(
                h.db,
                """
                SELECT seq, ts, event, user_id, id, received, origin, idx, properties FROM events
                WHERE seq > ?1 ORDER BY seq LIMIT ?2
                """)
            try s.bind(1, seq)
            try s.bind(2, Int64(limit))
            var out: [Queued] = []
            while try s.step() {
                let id = sqlite3_column_type(s.handle, 4) == SQLITE_NULL ? nil : s.text(4)
                out.append(
                    Queued(
                        seq: s.int64(0),
                        event: StoredEvent(
                            time: s.int64(1), name: s.text(2), userID: s.text(3), id: id, received: s.int64(5),
                            origin: UInt64(bitPattern: s.int64(6)), index: Int(s.int64(7)), properties: s.text(8))))
            }
            return out
        }
    }

    /// What a row of the events outbox weighs: its text columns (what `[events.clickhouse] max_backlog` bounds).
    static let rowBytes = "length(event) + length(user_id) + length(properties) + coalesce(length(id), 0)"

    /// Events stored after `seq` and their bytes (the backlog of a forwarder at that cursor).
    public func backlog(after seq: Int64) throws(StoreError) -> (events: Int, bytes: Int) {
        try connection.withLock { h throws(StoreError) in
            let s = try Statement(
                h.db, "SELECT count(*), coalesce(sum(\(Self.rowBytes)), 0) FROM events WHERE seq > ?1")
            try s.bind(1, seq)
            _ = try s.step()
            return (Int(s.int64(0)), Int(s.int64(1)))
        }
    }

    /// Events stored with `after < seq <= through`, their bytes, and the last such `seq` (`after` when none): a
    /// range of the backlog, so a forwarder keeps its backlog by the ranges it sends and the rows added since
    /// instead of scanning everything unsent per batch.
    public func backlog(after: Int64, through: Int64) throws(StoreError) -> (events: Int, bytes: Int, last: Int64) {
        try connection.withLock { h throws(StoreError) in
            let s = try Statement(
                h.db,
                "SELECT count(*), coalesce(sum(\(Self.rowBytes)), 0), coalesce(max(seq), ?1) FROM events "
                    + "WHERE seq > ?1 AND seq <= ?2")
            try s.bind(1, after)
            try s.bind(2, through)
            _ = try s.step()
            return (Int(s.int64(0)), Int(s.int64(1)), s.int64(2))
        }
    }

    /// The `seq` past the oldest events after `seq` that weigh at least `bytes`, and how many they are (for
    /// `backlog_policy = "drop_oldest"`).
    public func dropPoint(after seq: Int64, atLeast bytes: Int) throws(StoreError) -> (seq: Int64, events: Int)? {
        try connection.withLock { h throws(StoreError) in
            let s = try Statement(
                h.db,
                """
                SELECT seq, n FROM (SELECT seq, sum(\(Self.rowBytes)) OVER (ORDER BY seq) AS run,
                    count(*) OVER (ORDER BY seq) AS n FROM events WHERE seq > ?1)
                WHERE run >= ?2 ORDER BY seq LIMIT 1
                """)
            try s.bind(1, seq)
            try s.bind(2, Int64(bytes))
            guard try s.step() else { return nil }
            return (s.int64(0), Int(s.int64(1)))
        }
    }

    /// The newest `seq` (0 when empty).
    public func maxSeq() throws(StoreError) -> Int64 {
        try connection.withLock { h throws(StoreError) in
            let s = try Statement(h.db, "SELECT coalesce(max(seq), 0) FROM events")
            _ = try s.step()
            return s.int64(0)
        }
    }

    /// Events stored after `seq` (the backlog of a forwarder at that cursor).
    public func count(after seq: Int64) throws(StoreError) -> Int {
        try connection.withLock { h throws(StoreError) in
            let s = try Statement(h.db, "SELECT count(*) FROM events WHERE seq > ?1")
            try s.bind(1, seq)
            _ = try s.step()
            return Int(s.int64(0))
        }
    }

    /// A forwarding cursor kept in the store's `meta` table (0 before anything was sent).
    public func cursor(_ name: String) throws(StoreError) -> Int64 {
        try connection.withLock { h throws(StoreError) in try SQLiteStore.metaInt(h.db, name) ?? 0 }
    }

    public func setCursor(_ name: String, _ value: Int64) throws(StoreError) {
        try connection.withLock { h throws(StoreError) in try SQLiteStore.setMeta(h.db, name, value) }
    }

    /// This data directory's identity: a random 64-bit number made on first use and kept in `meta`. It names the
    /// events this instance received without a client `id` (their id in ClickHouse), so two instances never
    /// give two events the same id, and a replayed or resent event always gets its own again.
    public func instanceID() throws(StoreError) -> UInt64 {
        try connection.withLock { h throws(StoreError) in
            if let known = try SQLiteStore.metaInt(h.db, "instance_id") { return UInt64(bitPattern: known) }
            let fresh = UInt64.random(in: 1...UInt64.max)
            try SQLiteStore.setMeta(h.db, "instance_id", Int64(bitPattern: fresh))
            return fresh
        }
    }

    /// Calls `body` with every stored event (time, name, user, properties JSON), oldest first: how the daemon
    /// builds its in-memory index at start-up.
    /// Every stored event (the `newest` ones at most), in the order they were stored: time, name, user, properties.
    public func visitAll(newest: Int = .max, _ body: (Int64, String, String, String) -> Void) throws(StoreError) {
        try connection.withLock { h throws(StoreError) in
            let s = try Statement(
                h.db,
                "SELECT ts, event, user_id, properties FROM"
                    + " (SELECT seq, ts, event, user_id, properties FROM events ORDER BY seq DESC LIMIT ?1) ORDER BY seq"
            )
            try s.bind(1, Int64(min(newest, Int(Int64.max))))
            while try s.step() { body(s.int64(0), s.text(1), s.text(2), s.text(3)) }
        }
    }

    public func count() throws(StoreError) -> Int {
        try connection.withLock { h throws(StoreError) in
            let s = try Statement(h.db, "SELECT COUNT(*) FROM events")
            _ = try s.step()
            return Int(s.int64(0))
        }
    }
}
