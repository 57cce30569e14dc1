import CSQLite
import LineProtocol
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
/// Indexes: `(event, ts)` serves the analytics (every query selects a few event names over a time range),
/// `(ts)` serves retention, `(received, origin, idx)` is the unique identity that makes inserts idempotent, and
/// `(id)` finds ids for deduplication at start-up.
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
        CREATE INDEX IF NOT EXISTS events_by_event ON events(event, ts);
        CREATE INDEX IF NOT EXISTS events_by_time ON events(ts);
        CREATE INDEX IF NOT EXISTS events_by_id ON events(id) WHERE id IS NOT NULL;
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
            try SQLiteStore.execute(h.db, "BEGIN IMMEDIATE", context: "storing events")
            do throws(StoreError) {
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
                try SQLiteStore.execute(h.db, "COMMIT", context: "storing events")
                return inserted
            } catch {
                try? SQLiteStore.execute(h.db, "ROLLBACK", context: "storing events")
                throw error
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

    /// Deletes up to `limit` events older than `before` (milliseconds); returns how many.
    @discardableResult
    public func deleteOlder(than before: Int64, limit: Int = 10_000) throws(StoreError) -> Int {
        try connection.withLock { h throws(StoreError) in
            let s = try Statement(
                h.db, "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE ts < ?1 LIMIT ?2)")
            try s.bind(1, before)
            try s.bind(2, Int64(limit))
            _ = try s.step()
            return Int(sqlite3_changes(h.db))
        }
    }

    /// Events named in `names` with `from ≤ ts < to`: user, name, time and, when `property` is given, that
    /// property's value as text (strings unquoted, numbers and booleans as JSON writes them; `nil` when absent).
    public func rows(names: [String], from: Int64, to: Int64, property: String? = nil) throws(StoreError)
        -> [(user: String, event: String, time: Int64, property: String?)]
    {
        guard !names.isEmpty else { return [] }
        return try connection.withLock { h throws(StoreError) in
            let placeholders = (0..<names.count).map { "?\($0 + 4)" }.joined(separator: ",")
            let s = try Statement(
                h.db,
                """
                SELECT user_id, event, ts, CASE WHEN ?3 IS NULL THEN NULL ELSE properties -> ?3 END
                FROM events WHERE event IN (\(placeholders)) AND ts >= ?1 AND ts < ?2
                """)
            try s.bind(1, from)
            try s.bind(2, to)
            if let property { try s.bind(3, Self.jsonPath(property)) }
            for (k, n) in names.enumerated() { try s.bind(Int32(k + 4), n) }
            var out: [(String, String, Int64, String?)] = []
            while try s.step() {
                var value: String?
                if sqlite3_column_type(s.handle, 3) != SQLITE_NULL {
                    let json = s.text(3)
                    value = json == "null" ? nil : Self.unquote(json)
                }
                out.append((s.text(0), s.text(1), s.int64(2), value))
            }
            return out
        }
    }

    /// Every event in `from ≤ ts < to` (any name): for `return_event=any`.
    public func allRows(from: Int64, to: Int64) throws(StoreError) -> [(user: String, event: String, time: Int64)] {
        try connection.withLock { h throws(StoreError) in
            let s = try Statement(h.db, "SELECT user_id, event, ts FROM events WHERE ts >= ?1 AND ts < ?2")
            try s.bind(1, from)
            try s.bind(2, to)
            var out: [(String, String, Int64)] = []
            while try s.step() { out.append((s.text(0), s.text(1), s.int64(2))) }
            return out
        }
    }

    /// Each user's first event named `name` (over every stored event) when it lies in `from ≤ ts < to`.
    public func firstOccurrences(of name: String, from: Int64, to: Int64) throws(StoreError)
        -> [(user: String, time: Int64)]
    {
        try connection.withLock { h throws(StoreError) in
            let s = try Statement(
                h.db,
                """
                SELECT user_id, MIN(ts) AS first FROM events WHERE event = ?1 GROUP BY user_id
                HAVING first >= ?2 AND first < ?3
                """)
            try s.bind(1, name)
            try s.bind(2, from)
            try s.bind(3, to)
            var out: [(String, Int64)] = []
            while try s.step() { out.append((s.text(0), s.int64(1))) }
            return out
        }
    }

    public func count() throws(StoreError) -> Int {
        try connection.withLock { h throws(StoreError) in
            let s = try Statement(h.db, "SELECT COUNT(*) FROM events")
            _ = try s.step()
            return Int(s.int64(0))
        }
    }

    /// A JSON path naming one top-level key, quoted so dots and brackets in the key are literal.
    static func jsonPath(_ key: String) -> String {
        "$.\"" + key.replacingAll("\"", with: "\\\"") + "\""
    }

    /// A JSON scalar as text: strings lose their quotes and escapes, anything else stays as written.
    static func unquote(_ json: String) -> String {
        json.hasPrefix("\"") ? EventDecoder.unquote(json) ?? json : json
    }
}

extension String {
    fileprivate func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        for c in self { if c == target { out += replacement } else { out.append(c) } }
        return out
    }
}
