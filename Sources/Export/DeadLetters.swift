import CSQLite
import Synchronization

/// Why a line, an event or a forwarded point was refused: a closed set, each a label value of
/// `metricsd_rejected_total{reason=…}` and of a dead letter's `reason`. docs/troubleshooting.md says what to do
/// about each.
public enum RejectReason: String, Sendable, CaseIterable, Codable {
    /// Not line protocol (the parser's message says where and what it expected).
    case syntax
    /// Longer than `[limits] max_line_length`.
    case tooLong = "too_long"
    /// A field value of another type than the field's first (integer into a float field is fine, a string is not).
    case typeConflict = "type_conflict"
    /// A timestamp too far in the future or older than `[storage] retention_1m`.
    case outOfRange = "out_of_range"
    /// A new series past `[rollup] max_series`.
    case cardinality
    /// A new field past `[rollup] max_fields_per_series`.
    case fieldLimit = "field_limit"
    /// A measurement, tag or field name that is not valid UTF-8.
    case invalidName = "invalid_name"
    /// A JSON event that does not decode or is refused (no user, bad time, too large, events disabled).
    case invalidEvent = "invalid_event"
    /// A point the InfluxDB metricsd forwards to answered 400 for (its error is the dead letter's message).
    case rejectedByInfluxDB = "rejected_by_influxdb"
    /// An event line over UDP or TCP while `[events.clickhouse] backlog_policy = "block"` holds events (HTTP gets
    /// 429 instead): kept to replay once the outbox drains.
    case backlogFull = "backlog_full"

    /// Its place in per-reason arrays (`allCases` builds an array at each call: looked up once).
    public var ordinal: Int { Self.order[self]! }
    private static let order = Dictionary(uniqueKeysWithValues: allCases.enumerated().map { ($1, $0) })
}

/// Counts per ``RejectReason``, without a dictionary (a batch keeps one).
public struct RejectCounts: Sendable, Equatable {
    /// Empty (no allocation) until a batch rejects something: a good batch costs nothing here.
    public private(set) var counts: [Int] = []
    public init() {}
    public subscript(reason: RejectReason) -> Int {
        get { counts.isEmpty ? 0 : counts[reason.ordinal] }
        set {
            if counts.isEmpty { counts = [Int](repeating: 0, count: RejectReason.allCases.count) }
            counts[reason.ordinal] = newValue
        }
    }
    public var total: Int { counts.reduce(0, +) }
    /// The reasons with a count, in the set's order.
    public var nonZero: [(reason: RejectReason, count: Int)] {
        counts.isEmpty
            ? [] : RejectReason.allCases.compactMap { counts[$0.ordinal] > 0 ? ($0, counts[$0.ordinal]) : nil }
    }
}

/// What a dead letter holds, and so how a replay submits it again.
public enum DeadLetterKind: Int, Sendable, Codable {
    /// A line of line protocol, with its batch's precision; replayed through the ingest pipeline.
    case line = 0
    /// One JSON event; replayed as an events body.
    case event = 1
    /// A downsampled point InfluxDB refused (line protocol, nanoseconds); replayed by posting it to InfluxDB.
    case influxPoint = 2
}

/// A refused line, event or forwarded point, kept so it can be read, fixed at its source and replayed.
public struct DeadLetter: Sendable, Equatable {
    /// The row id once stored (0 before).
    public var id: Int64
    /// When metricsd received it (nanoseconds; for a forwarded point, when InfluxDB refused it).
    public var received: Int64
    /// `udp`, `tcp`, `http`, `events` or `influx` (forwarding).
    public var source: String
    /// The sender's address (`127.0.0.1:51234`), or empty.
    public var remote: String
    public var reason: RejectReason
    public var kind: DeadLetterKind
    /// The line's number in its batch (1-based), the event's index in its body, the point's place in its batch.
    public var line: Int
    /// 1-based byte column of the fault in `payload`, when the parser knows it.
    public var column: Int?
    public var message: String
    /// The WAL precision code of a line's batch (how its timestamp reads).
    public var precision: UInt8
    /// The refused bytes: the line (for a partly applied line, only its refused fields, with the point's time), the
    /// event's JSON, the point as sent.
    public var payload: [UInt8]
    /// Where the batch was logged (WAL position): with `received`, `source` and `line`, the letter's identity, so
    /// WAL replay after a crash never stores one twice.
    public var origin: UInt64

    public init(
        id: Int64 = 0, received: Int64, source: String, remote: String, reason: RejectReason, kind: DeadLetterKind,
        line: Int, column: Int?, message: String, precision: UInt8, payload: [UInt8], origin: UInt64
    ) {
        self.id = id
        self.received = received
        self.source = source
        self.remote = remote
        self.reason = reason
        self.kind = kind
        self.line = line
        self.column = column
        self.message = message
        self.precision = precision
        self.payload = payload
        self.origin = origin
    }

    /// Bytes it holds in memory, roughly (what the pending queue bounds).
    var footprint: Int { payload.count + message.utf8.count + source.utf8.count + remote.utf8.count + 96 }
}

/// Dead letters waiting to be stored: every listener adds to it without touching SQLite (a mutex held for an
/// append), and the flush service takes them all each second. Bounded in count and bytes: past either bound the
/// oldest go first, counted (``dropped``), so a flood of bad lines costs memory it cannot grow.
public final class DeadLetterQueue: Sendable {
    private struct State {
        var letters: [DeadLetter] = []
        /// Index of the oldest letter in `letters` (a ring once full).
        var head = 0
        var bytes = 0
        var dropped = 0
    }

    public let maxCount: Int
    public let maxBytes: Int
    private let state = Mutex(State())

    public init(maxCount: Int = 10_000, maxBytes: Int = 16 << 20) {
        self.maxCount = max(1, maxCount)
        self.maxBytes = max(1, maxBytes)
    }

    public func add(_ letter: DeadLetter) {
        state.withLock { s in
            s.letters.append(letter)
            s.bytes += letter.footprint
            while s.letters.count - s.head > maxCount || (s.bytes > maxBytes && s.letters.count - s.head > 1) {
                s.bytes -= s.letters[s.head].footprint
                s.head += 1
                s.dropped += 1
            }
            // Compact now and then, so the array holds at most twice the bound.
            if s.head > 0 && s.head >= s.letters.count / 2 {
                s.letters.removeFirst(s.head)
                s.head = 0
            }
        }
    }

    /// Every pending letter, oldest first; the queue is empty after.
    public func takeAll() -> [DeadLetter] {
        state.withLock { s in
            let out = s.head == 0 ? s.letters : Array(s.letters[s.head...])
            s.letters = []
            s.head = 0
            s.bytes = 0
            return out
        }
    }

    /// Letters given back after a failed store (they go in front, still bounded).
    public func putBack(_ letters: [DeadLetter]) {
        let newer = takeAll()
        for l in letters + newer { add(l) }
    }

    public var count: Int { state.withLock { $0.letters.count - $0.head } }
    /// Letters evicted before they could be stored, since the last ``takeDropped()``.
    public var dropped: Int { state.withLock { $0.dropped } }

    /// The evicted count, reset to 0.
    public func takeDropped() -> Int {
        state.withLock { s in
            defer { s.dropped = 0 }
            return s.dropped
        }
    }
}

/// The `dead_letters` table of `<data_dir>/metricsd.db`, on a connection of its own (like ``EventStore``): stores
/// and reads never wait for a rollup flush in this process. Bounded by `[dead_letters] max_rows` (oldest deleted
/// first, counted) and `retention`.
public final class DeadLetterStore: Sendable {
    static let schema = """
        CREATE TABLE IF NOT EXISTS dead_letters(
            id INTEGER PRIMARY KEY,
            received INTEGER NOT NULL,
            source TEXT NOT NULL,
            remote TEXT NOT NULL,
            reason TEXT NOT NULL,
            kind INTEGER NOT NULL,
            line INTEGER NOT NULL,
            col INTEGER,
            message TEXT NOT NULL,
            precision INTEGER NOT NULL,
            payload BLOB NOT NULL,
            origin INTEGER NOT NULL);
        CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_identity ON dead_letters(received, origin, source, line);
        """

    private struct Handle: @unchecked Sendable {
        let db: OpaquePointer
    }

    private let connection: Mutex<Handle>

    /// Opens (and creates, when new) the table in the database at `path`, which ``SQLiteStore`` has created.
    public init(path: String) throws(StoreError) {
        let db = try SQLiteStore.open(path, create: false)
        connection = Mutex(Handle(db: db))
        try SQLiteStore.execute(
            db, "PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY;", context: "opening the dead letters")
        try SQLiteStore.execute(db, Self.schema, context: "creating the dead_letters table")
    }

    deinit {
        connection.withLock { _ = sqlite3_close_v2($0.db) }
    }

    /// Stores `letters` in one transaction (one already stored, same identity, is skipped); returns how many were
    /// new.
    @discardableResult
    public func insert(_ letters: [DeadLetter]) throws(StoreError) -> Int {
        guard !letters.isEmpty else { return 0 }
        return try connection.withLock { h throws(StoreError) in
            try SQLiteStore.immediateTransaction(h.db, context: "storing dead letters") { () throws(StoreError) in
                let s = try Statement(
                    h.db,
                    """
                    INSERT OR IGNORE INTO dead_letters(received, source, remote, reason, kind, line, col, message,
                        precision, payload, origin)
                    VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                    """)
                var inserted = 0
                for l in letters {
                    try s.bind(1, l.received)
                    try s.bind(2, l.source)
                    try s.bind(3, l.remote)
                    try s.bind(4, l.reason.rawValue)
                    try s.bind(5, Int64(l.kind.rawValue))
                    try s.bind(6, Int64(l.line))
                    if let column = l.column { try s.bind(7, Int64(column)) }
                    try s.bind(8, l.message)
                    try s.bind(9, Int64(l.precision))
                    try s.bind(10, l.payload)
                    try s.bind(11, Int64(bitPattern: l.origin))
                    _ = try s.step()
                    inserted += Int(sqlite3_changes(h.db))
                    s.reset()
                }
                return inserted
            }
        }
    }

    /// Which dead letters a list, a delete or a replay is about. Times are nanoseconds, `from` inclusive, `to`
    /// exclusive.
    public struct Selection: Sendable, Equatable {
        public var source: String?
        public var reason: RejectReason?
        public var from: Int64?
        public var to: Int64?
        /// Ids (`id=3,7`); empty: any.
        public var ids: [Int64] = []
        public var limit: Int

        public init(
            source: String? = nil, reason: RejectReason? = nil, from: Int64? = nil, to: Int64? = nil,
            ids: [Int64] = [], limit: Int = 100
        ) {
            self.source = source
            self.reason = reason
            self.from = from
            self.to = to
            self.ids = ids
            self.limit = limit
        }

        /// A value bound to a statement parameter.
        fileprivate enum Binding {
            case int(Int64)
            case text(String)
        }

        /// The WHERE clause and its values for parameters ?1, ?2, …
        fileprivate var clause: (sql: String, values: [Binding]) {
            var terms: [String] = []
            var values: [Binding] = []
            func add(_ term: String, _ value: Binding) {
                values.append(value)
                terms.append(term + "\(values.count)")
            }
            if let source { add("source = ?", .text(source)) }
            if let reason { add("reason = ?", .text(reason.rawValue)) }
            if let from { add("received >= ?", .int(from)) }
            if let to { add("received < ?", .int(to)) }
            if !ids.isEmpty {
                // Ids are integers: written into the statement, never text from the request.
                terms.append("id IN (\(ids.map(String.init).joined(separator: ",")))")
            }
            return (terms.isEmpty ? "" : " WHERE " + terms.joined(separator: " AND "), values)
        }
    }

    private static func bind(_ values: [Selection.Binding], to s: Statement) throws(StoreError) {
        for (i, value) in values.enumerated() {
            switch value {
            case .int(let v): try s.bind(Int32(i + 1), v)
            case .text(let v): try s.bind(Int32(i + 1), v)
            }
        }
    }

    /// The selected letters, oldest first, at most `selection.limit`.
    public func list(_ selection: Selection) throws(StoreError) -> [DeadLetter] {
        let (sql, values) = selection.clause
        return try connection.withLock { h throws(StoreError) in
            let s = try Statement(
                h.db,
                "SELECT id, received, source, remote, reason, kind, line, col, message, precision, payload, origin"
                    + " FROM dead_letters\(sql) ORDER BY id LIMIT \(max(0, selection.limit))")
            try Self.bind(values, to: s)
            var out: [DeadLetter] = []
            while try s.step() {
                let column = sqlite3_column_type(s.handle, 7) == SQLITE_NULL ? nil : Int(s.int64(7))
                out.append(
                    DeadLetter(
                        id: s.int64(0), received: s.int64(1), source: s.text(2), remote: s.text(3),
                        reason: RejectReason(rawValue: s.text(4)) ?? .syntax,
                        kind: DeadLetterKind(rawValue: Int(s.int64(5))) ?? .line, line: Int(s.int64(6)),
                        column: column, message: s.text(8), precision: UInt8(truncatingIfNeeded: s.int64(9)),
                        payload: s.blob(10), origin: UInt64(bitPattern: s.int64(11))))
            }
            return out
        }
    }

    /// How many letters the selection matches (its limit aside).
    public func count(_ selection: Selection = Selection()) throws(StoreError) -> Int {
        let (sql, values) = selection.clause
        return try connection.withLock { h throws(StoreError) in
            let s = try Statement(h.db, "SELECT count(*) FROM dead_letters\(sql)")
            try Self.bind(values, to: s)
            _ = try s.step()
            return Int(s.int64(0))
        }
    }

    /// Deletes the selected letters (at most `selection.limit`, oldest first); returns how many.
    @discardableResult
    public func delete(_ selection: Selection) throws(StoreError) -> Int {
        let (sql, values) = selection.clause
        return try connection.withLock { h throws(StoreError) in
            let s = try Statement(
                h.db,
                "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters\(sql) ORDER BY id LIMIT \(max(0, selection.limit)))"
            )
            try Self.bind(values, to: s)
            _ = try s.step()
            return Int(sqlite3_changes(h.db))
        }
    }

    /// Deletes letters by id (after a replay accepted them).
    @discardableResult
    public func delete(ids: [Int64]) throws(StoreError) -> Int {
        var deleted = 0
        for chunk in stride(from: 0, to: ids.count, by: 500) {
            deleted += try delete(Selection(ids: Array(ids[chunk..<min(ids.count, chunk + 500)]), limit: 500))
        }
        return deleted
    }

    /// Keeps the table within its bounds: letters received before `before` go, then the oldest past `maxRows`.
    /// Returns how many went for each.
    public func trim(before: Int64, maxRows: Int) throws(StoreError) -> (expired: Int, evicted: Int) {
        try connection.withLock { h throws(StoreError) in
            let old = try Statement(h.db, "DELETE FROM dead_letters WHERE received < ?1")
            try old.bind(1, before)
            _ = try old.step()
            let expired = Int(sqlite3_changes(h.db))
            let excess = try Statement(
                h.db,
                "DELETE FROM dead_letters WHERE id <= (SELECT id FROM dead_letters ORDER BY id DESC LIMIT 1 OFFSET ?1)")
            try excess.bind(1, Int64(max(0, maxRows)))
            _ = try excess.step()
            return (expired, Int(sqlite3_changes(h.db)))
        }
    }
}
