import CSQLite
import Dispatch
public import Rollups
import Synchronization

/// Why the store failed: the SQLite result code and message, and what was being done.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public var code: Int32
    public var message: String
    public var context: String
    public var description: String { "\(context): \(message) (SQLite \(code))" }

    public init(code: Int32, message: String, context: String) {
        self.code = code
        self.message = message
        self.context = context
    }
}

/// The durable rollup store: closed buckets are merged into `<data_dir>/metricsd.db` (SQLite, WAL mode).
///
/// Every write is a merge: a cell stored for a (bucket, series, field) that already has a row is merged with it
/// (counts add, min/max combine, first/last by timestamp, sketches merge), never overwritten or duplicated. That
/// makes late data, a restart in the middle of a minute, and a repeated flush exact. Batches are one transaction.
///
/// Schema (see docs/storage.md): `series(id, hash, measurement, tags)`, `rollup_1m(ts, series, field, kind, count,
/// data)` keyed `(ts, series, field)` — insert order is time-major, which SQLite appends cheaply — and `meta`.
public final class SQLiteStore: RollupSink, RollupReader {
    struct Connection: ~Copyable {
        let db: OpaquePointer
        /// Series ids known to be in the table (hash of the series → row id).
        var seriesIDs: [UInt64: Int64] = [:]
        /// How far the forwarder has read the outbox (sent or in flight), this process.
        var outboxReadThrough: OutboxCursor?
        /// Series by row id, for reading rows back (forwarding).
        var seriesByRow: [Int64: SeriesInfo] = [:]
        /// The field-name dictionary (rows name fields by id), both ways.
        var fieldIDs: [String: Int64] = [:]
        var fieldNames: [Int64: String] = [:]
        /// What the open transaction changed that the reader may remember (``Reader``): told to it after commit.
        var changes = Changes()

        /// Forgets every cached id: after a rolled-back transaction they may name rows that were never committed.
        mutating func forgetCachedIDs() {
            seriesIDs = [:]
            seriesByRow = [:]
            fieldIDs = [:]
            fieldNames = [:]
            fieldTypesRecorded = []
            changes = Changes()
        }
        /// Prepared once, reused for every new series.
        var insertSeries: Statement?
        var selectSeries: Statement?
        /// (measurement, field) pairs known to be in `measurement_fields`, and the statement that adds one.
        var fieldTypesRecorded: Set<FieldTypeKey> = []
        var insertFieldType: Statement?
    }

    struct FieldTypeKey: Hashable {
        var measurement: String
        var field: String
    }

    /// What a transaction changed: bucket starts written per tier (0: 1-minute, 1: hourly), rows deleted before a
    /// time per tier (retention), measurements that got a new series.
    struct Changes {
        var starts: [Set<Int64>] = [[], []]
        var cutBefore: [Int64?] = [nil, nil]
        var measurements: Set<String> = []
        /// Whether `measurement_fields` got a row.
        var fieldTypes = false
        /// The store generation the transaction commits (``committedGeneration``), 0 when it stores no buckets.
        var generation: UInt64 = 0
    }

    /// The connection queries read through, so a flush (a long write transaction on the writer's connection) does
    /// not hold them up: in WAL mode a reader sees the last committed state while a write is in progress. What it
    /// remembers between queries is dropped by the writer after each commit, under this connection's lock (see
    /// ``publish(_:)``).
    struct Reader: ~Copyable {
        let db: OpaquePointer
        /// Field names to ids, as committed (ids are never reused).
        var fieldIDs: [String: Int64] = [:]
        /// Stored series per measurement (row id and decoded tags); dropped when a series of the measurement is
        /// added.
        var seriesOfMeasurement: [String: [(row: Int64, info: SeriesInfo)]] = [:]
        /// Per measurement, the series a read's condition took (``CellRead/condition``), dropped with the above.
        var chosenByCondition: [String: [String: [(row: Int64, info: SeriesInfo)]]] = [:]
        var chosenTotal = 0
        /// Every bucket start in `rollup_1m` is a multiple of this (``noteBucketWidth(_:)``); `nil`: unknown.
        var bucketGrid: Int64?
        /// Rows found by keyed reads, and decoded summary blocks (``RowCache``).
        var rowCache = RowCache()
        /// Advances whenever a measurement's series list is dropped: a choice of series made from an older list
        /// is not remembered.
        var seriesGeneration: UInt64 = 0
        /// Reads `meta.store_generation` (prepared once).
        var generationStatement: Statement?
    }

    let connection: Mutex<Connection>
    let reader: Mutex<Reader>
    /// What commits changed that the reader has not applied yet: the writer leaves it here (never waiting for a
    /// query that holds the reader), the reader applies it before each read.
    let readerInbox = Mutex(Changes())
    /// The highest store generation whose changes are in the inbox (or applied): a read whose snapshot is newer
    /// cannot trust what the reader remembers (``withReader(snapshot:_:)``).
    let publishedGeneration = Atomic<UInt64>(0)
    /// How many stores of closed buckets have committed (`meta.store_generation`, kept across restarts): a read
    /// learns which stores its snapshot holds (``visit(_:hourly:series:generation:_:)``), so what is still being
    /// stored can be added to it exactly once (``StoreGuard``).
    let committed = Atomic<UInt64>(0)
    public var committedGeneration: UInt64 { committed.load(ordering: .acquiring) }
    /// Called inside a store's transaction, just before it commits (tests only: a store held inside SQLite).
    let beforeCommitForTesting = Mutex<(@Sendable () -> Void)?>(nil)
    /// Called just after a store commits, before the reader is told (tests only).
    let afterCommitForTesting = Mutex<(@Sendable () -> Void)?>(nil)
    /// Stored rows a read could not decode (skipped): a corrupt database, reported by `/health`.
    let corruptRowCount = Atomic<Int>(0)
    public var corruptRows: Int { corruptRowCount.load(ordering: .relaxed) }
    public let path: String
    /// Whether stored minutes are queued for forwarding (`outbox` table; on when `[influx] url` is set).
    public let recordsOutbox: Bool
    /// While set (`[influx] backlog_policy = "drop_newest"` with the backlog full), minutes stored are kept here but
    /// not queued for forwarding; their rows (points) are counted in ``outboxSkippedRows``.
    let outboxPaused = Atomic<Bool>(false)
    /// Outbox rows that could not be decoded, moved to the `quarantine` table (``quarantined()``) and skipped.
    let quarantinedRowCount = Atomic<Int>(0)
    public var quarantinedRows: Int { quarantinedRowCount.load(ordering: .relaxed) }
    let outboxSkippedRows = Atomic<Int>(0)

    /// Opens (creating if needed) the database at `path` and applies the schema migrations.
    public init(path: String, recordsOutbox: Bool = false) throws(StoreError) {
        self.path = path
        self.recordsOutbox = recordsOutbox
        let db = try Self.open(path, create: true)
        let readerDB: OpaquePointer
        do {
            readerDB = try Self.open(path, create: true)
        } catch {
            sqlite3_close(db)
            throw error
        }
        connection = Mutex(Connection(db: db))
        reader = Mutex(Reader(db: readerDB))
        try execute(
            """
            PRAGMA journal_mode = WAL;
            PRAGMA synchronous = NORMAL;
            PRAGMA cache_size = -65536;
            PRAGMA temp_store = MEMORY;
            PRAGMA wal_autocheckpoint = 0;
            PRAGMA journal_size_limit = 67108864;
            CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
            """,
            context: "opening the database"
        )
        try migrate()
        let generation = try connection.withLock { c throws(StoreError) in
            try Self.metaInt(c.db, "store_generation") ?? 0
        }
        committed.store(UInt64(generation), ordering: .releasing)
        publishedGeneration.store(UInt64(generation), ordering: .releasing)
        try reader.withLock { r throws(StoreError) in
            try Self.execute(r.db, "PRAGMA query_only = 1; PRAGMA cache_size = -32768;", context: "opening the reader")
        }
    }

    deinit {
        _ = connection.withLock { c in
            c.insertSeries = nil
            c.selectSeries = nil
            return sqlite3_close_v2(c.db)
        }
        _ = reader.withLock { r in sqlite3_close_v2(r.db) }
    }

    /// A connection to `path` (created if `create`), without SQLite's own mutex (callers hold theirs), waiting up
    /// to 5 s for another connection's lock.
    static func open(_ path: String, create: Bool) throws(StoreError) -> OpaquePointer {
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let db = handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite3_close(handle)
            throw StoreError(code: rc, message: message, context: "opening \(path)")
        }
        sqlite3_busy_timeout(db, 5_000)
        return db
    }

    func execute(_ sql: String, context: String) throws(StoreError) {
        try connection.withLock { c throws(StoreError) in try Self.execute(c.db, sql, context: context) }
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction on `db`: committed when it returns, rolled back when it
    /// throws.
    static func immediateTransaction<T>(
        _ db: OpaquePointer, context: String, _ body: () throws(StoreError) -> T
    ) throws(StoreError) -> T {
        try execute(db, "BEGIN IMMEDIATE", context: context)
        do throws(StoreError) {
            let value = try body()
            try execute(db, "COMMIT", context: context)
            return value
        } catch {
            try? execute(db, "ROLLBACK", context: context)
            throw error
        }
    }

    static func execute(_ db: OpaquePointer, _ sql: String, context: String) throws(StoreError) {
        var error: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &error)
        if rc != SQLITE_OK {
            let message = error.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(db))
            sqlite3_free(error)
            throw StoreError(code: rc, message: message, context: context)
        }
    }

    /// Tags as stored: `key=value` pairs joined by U+001F (neither appears in a decoded tag by accident often,
    /// and the encoding is only compared for equality and split back).
    static func encodeTags(_ tags: [TagPair]) -> String {
        tags.map { "\($0.key)\u{1E}\($0.value)" }.joined(separator: "\u{1F}")
    }

    static func decodeTags(_ text: String) -> [TagPair] {
        guard !text.isEmpty else { return [] }
        return text.split(separator: "\u{1F}", omittingEmptySubsequences: false).map { pair in
            let parts = pair.split(separator: "\u{1E}", maxSplits: 1, omittingEmptySubsequences: false)
            return TagPair(String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
        }
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` … `COMMIT`; on any error rolls back and forgets the cached ids (they may
    /// name rows that were never committed).
    func transaction<T>(
        _ c: inout Connection, _ context: String, _ body: (inout Connection) throws(StoreError) -> T
    ) throws(StoreError) -> T {
        try Self.execute(c.db, "BEGIN IMMEDIATE", context: context)
        do throws(StoreError) {
            let result = try body(&c)
            try Self.execute(c.db, "COMMIT", context: context)
            if c.changes.generation > 0 {
                committed.store(c.changes.generation, ordering: .releasing)
                if let hook = afterCommitForTesting.withLock({ $0 }) { hook() }
            }
            publish(&c)
            return result
        } catch {
            try? Self.execute(c.db, "ROLLBACK", context: context)
            c.forgetCachedIDs()
            throw error
        }
    }

    /// Tells the reader what was just committed: it drops what it remembers of those bucket starts, of the rows
    /// retention deleted, and of measurements that got a series — before its next read, which therefore sees the
    /// commit. A read in progress may remember rows from before the commit; they are dropped all the same before
    /// the read after it. The writer only leaves the changes in the inbox: it never waits for a query.
    func publish(_ c: inout Connection) {
        let changes = c.changes
        c.changes = Changes()
        guard
            !changes.measurements.isEmpty || changes.starts.contains(where: { !$0.isEmpty })
                || changes.cutBefore.contains(where: { $0 != nil }) || changes.generation > 0
        else { return }
        readerInbox.withLock { inbox in
            for t in 0..<2 {
                inbox.starts[t].formUnion(changes.starts[t])
                if let cut = changes.cutBefore[t] { inbox.cutBefore[t] = max(inbox.cutBefore[t] ?? cut, cut) }
            }
            inbox.measurements.formUnion(changes.measurements)
            if changes.generation > 0 { publishedGeneration.store(changes.generation, ordering: .releasing) }
        }
    }

    /// Runs `body` with the reader's connection, after applying what commits changed since its last read; `body`
    /// gets the store generation the read sees (``committedGeneration`` when it began).
    ///
    /// With `snapshot`, `body` runs in one read transaction: everything it reads is of that generation. A commit
    /// the writer has not told the reader about yet (it tells just after committing) makes the reader drop all it
    /// remembers, so a read never mixes remembered rows older than its snapshot with the snapshot.
    func withReader<T>(
        snapshot: Bool = false, _ body: (inout sending Reader, UInt64) throws(StoreError) -> T
    ) throws(StoreError) -> T {
        try reader.withLock { r throws(StoreError) in
            if snapshot { try Self.execute(r.db, "BEGIN", context: "reading rollups") }
            do throws(StoreError) {
                let generation = try Self.generation(in: &r)
                let (changes, published) = readerInbox.withLock { inbox in
                    defer { inbox = Changes() }
                    return (inbox, publishedGeneration.load(ordering: .acquiring))
                }
                for t in 0..<2 {
                    for start in changes.starts[t] { r.rowCache.invalidate(tier: Tier(rawValue: t)!, start: start) }
                    if let cut = changes.cutBefore[t] { r.rowCache.invalidate(tier: Tier(rawValue: t)!, before: cut) }
                }
                if !changes.measurements.isEmpty { r.seriesGeneration &+= 1 }
                for measurement in changes.measurements {
                    r.seriesOfMeasurement[measurement] = nil
                    r.chosenByCondition[measurement] = nil
                }
                if generation > published {
                    r.rowCache.clear()
                    r.seriesOfMeasurement = [:]
                    r.chosenByCondition = [:]
                    r.chosenTotal = 0
                    r.seriesGeneration &+= 1
                }
                let result = try body(&r, generation)
                if snapshot { try Self.execute(r.db, "COMMIT", context: "reading rollups") }
                return result
            } catch {
                if snapshot { try? Self.execute(r.db, "ROLLBACK", context: "reading rollups") }
                throw error
            }
        }
    }

    /// The store generation of the reader's snapshot (it starts one when none is open).
    static func generation(in r: inout Reader) throws(StoreError) -> UInt64 {
        let statement: Statement
        if let known = r.generationStatement {
            statement = known
        } else {
            statement = try Statement(r.db, "SELECT value FROM meta WHERE key = 'store_generation'")
            r.generationStatement = statement
        }
        defer { statement.reset() }
        return try statement.step() ? UInt64(statement.text(0)) ?? 0 : 0
    }

    static let hour: Int64 = 3_600_000_000_000

    static func hourStart(_ t: Int64) -> Int64 {
        let q = t / hour
        return (t % hour < 0 ? q - 1 : q) * hour
    }

    static func metaInt(_ db: OpaquePointer, _ key: String) throws(StoreError) -> Int64? {
        let s = try Statement(db, "SELECT value FROM meta WHERE key = ?1")
        try s.bind(1, key)
        return try s.step() ? Int64(s.text(0)) : nil
    }

    static func setMeta(_ db: OpaquePointer, _ key: String, _ value: Int64) throws(StoreError) {
        let s = try Statement(db, "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)")
        try s.bind(1, key)
        try s.bind(2, String(value))
        _ = try s.step()
    }

}
