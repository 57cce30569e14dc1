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
    private struct Connection: ~Copyable {
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

    private struct FieldTypeKey: Hashable {
        var measurement: String
        var field: String
    }

    /// What a transaction changed: bucket starts written per tier (0: 1-minute, 1: hourly), rows deleted before a
    /// time per tier (retention), measurements that got a new series.
    private struct Changes {
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
    private struct Reader: ~Copyable {
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

    private let connection: Mutex<Connection>
    private let reader: Mutex<Reader>
    /// What commits changed that the reader has not applied yet: the writer leaves it here (never waiting for a
    /// query that holds the reader), the reader applies it before each read.
    private let readerInbox = Mutex(Changes())
    /// The highest store generation whose changes are in the inbox (or applied): a read whose snapshot is newer
    /// cannot trust what the reader remembers (``withReader(snapshot:_:)``).
    private let publishedGeneration = Atomic<UInt64>(0)
    /// How many stores of closed buckets have committed (`meta.store_generation`, kept across restarts): a read
    /// learns which stores its snapshot holds (``visit(_:hourly:series:generation:_:)``), so what is still being
    /// stored can be added to it exactly once (``StoreGuard``).
    private let committed = Atomic<UInt64>(0)
    public var committedGeneration: UInt64 { committed.load(ordering: .acquiring) }
    /// Called inside a store's transaction, just before it commits (tests only: a store held inside SQLite).
    let beforeCommitForTesting = Mutex<(@Sendable () -> Void)?>(nil)
    /// Called just after a store commits, before the reader is told (tests only).
    let afterCommitForTesting = Mutex<(@Sendable () -> Void)?>(nil)
    /// Stored rows a read could not decode (skipped): a corrupt database, reported by `/health`.
    private let corruptRowCount = Atomic<Int>(0)
    public var corruptRows: Int { corruptRowCount.load(ordering: .relaxed) }
    public let path: String
    /// Whether stored minutes are queued for forwarding (`outbox` table; on when `[influx] url` is set).
    public let recordsOutbox: Bool

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

    /// The schema this build writes. Version 1 (the first release) kept one row per field with its own blob;
    /// version 2 keeps one row per series and bucket with every field packed (4× fewer rows and B-tree inserts);
    /// version 3 adds the `events` table (``EventStore``); version 4 the `measurement_fields` table (each
    /// measurement's fields and their types, for `SHOW FIELD KEYS`) and rows of format 3 (cells that keep their
    /// points; format 2 rows are still read).
    public static let schemaVersion: Int64 = 4

    /// Creates the schema, or brings an older one up to ``schemaVersion`` in one transaction. A database from a
    /// newer metricsd is refused rather than misread.
    private func migrate() throws(StoreError) {
        try connection.withLock { c throws(StoreError) in
            let db = c.db
            try Self.execute(db, "BEGIN IMMEDIATE", context: "migrating the schema")
            do throws(StoreError) {
                let version = try Self.metaInt(db, "schema_version")
                if let version, version > Self.schemaVersion {
                    throw StoreError(
                        code: SQLITE_ERROR,
                        message:
                            "schema version \(version) is newer than this metricsd supports (\(Self.schemaVersion))",
                        context: "opening \(path)"
                    )
                }
                try Self.execute(
                    db,
                    """
                    CREATE TABLE IF NOT EXISTS series(
                        id INTEGER PRIMARY KEY,
                        hash INTEGER NOT NULL,
                        measurement TEXT NOT NULL,
                        tags TEXT NOT NULL,
                        UNIQUE(measurement, tags));
                    CREATE INDEX IF NOT EXISTS series_by_hash ON series(hash);
                    CREATE TABLE IF NOT EXISTS fields(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
                    CREATE TABLE IF NOT EXISTS flushed(ts INTEGER PRIMARY KEY, wal_position INTEGER NOT NULL);
                    CREATE TABLE IF NOT EXISTS outbox(
                        seq INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, series INTEGER);
                    CREATE TABLE IF NOT EXISTS dedup(
                        hash_high INTEGER NOT NULL, hash_low INTEGER NOT NULL, expires INTEGER NOT NULL,
                        PRIMARY KEY(hash_high, hash_low));
                    CREATE TABLE IF NOT EXISTS measurement_fields(
                        measurement TEXT NOT NULL, field TEXT NOT NULL, type TEXT NOT NULL,
                        PRIMARY KEY(measurement, field)) WITHOUT ROWID;
                    """ + EventStore.schema,
                    context: "creating the schema"
                )
                if version == 1 {
                    for table in ["rollup_1m", "rollup_1h"] { try Self.migrateVersion1(table, connection: &c) }
                } else {
                    try Self.execute(
                        db, Self.rollupTable("rollup_1m") + Self.rollupTable("rollup_1h"),
                        context: "creating the schema")
                }
                if let version, version < 4 { try Self.recordFieldTypesOfRecentRows(connection: &c) }
                try Self.setMeta(db, "schema_version", Self.schemaVersion)
                try Self.execute(db, "COMMIT", context: "migrating the schema")
            } catch {
                try? Self.execute(db, "ROLLBACK", context: "rolling back the migration")
                c.forgetCachedIDs()
                throw error
            }
        }
    }

    /// Version 1 → 2: the per-field rows of each (bucket, series) become one packed row.
    private static func migrateVersion1(_ table: String, connection c: inout Connection) throws(StoreError) {
        let db = c.db
        try execute(
            db, "ALTER TABLE \(table) RENAME TO \(table)_v1;" + rollupTable(table), context: "migrating \(table)")
        let rows = try Statement(db, "SELECT ts, series, field, data FROM \(table)_v1 ORDER BY ts, series, field")
        let insert = try Statement(db, "INSERT INTO \(table)(ts, series, data) VALUES(?1, ?2, ?3)")
        var writer = ByteWriter()
        var group: [(field: Int64, rollup: FieldRollup)] = []
        var key: (ts: Int64, series: Int64)?
        func emit() throws(StoreError) {
            guard let key, !group.isEmpty else { return }
            PackedRow.encode(group, start: key.ts, into: &writer)
            try insert.bind(1, key.ts)
            try insert.bind(2, key.series)
            _ = try insert.stepBinding(blob: writer, at: 3)
            insert.reset()
            group.removeAll(keepingCapacity: true)
        }
        while try rows.step() {
            let ts = rows.int64(0)
            let series = rows.int64(1)
            if let k = key, k.ts != ts || k.series != series { try emit() }
            key = (ts, series)
            guard let rollup = FieldRollup(serialized: rows.blob(3)) else {
                throw StoreError(
                    code: SQLITE_CORRUPT, message: "unreadable rollup at ts \(ts) series \(series)",
                    context: "migrating \(table)")
            }
            group.append((try fieldID(for: rows.text(2), in: &c), rollup))
        }
        try emit()
        try execute(db, "DROP TABLE \(table)_v1", context: "migrating \(table)")
    }

    /// Version 3 → 4: the fields of each measurement with their types, from the last two hours of stored minutes
    /// (a bounded read; fields seen only before that are named as they are next stored). Rows of format 2 do not
    /// say whether a numeric field is an integer: those read as `float`.
    private static func recordFieldTypesOfRecentRows(connection c: inout Connection) throws(StoreError) {
        let db = c.db
        let newest = try Statement(db, "SELECT max(ts) FROM rollup_1m")
        guard try newest.step(), sqlite3_column_type(newest.handle, 0) != SQLITE_NULL else { return }
        let rows = try Statement(
            db,
            "SELECT s.measurement, r.ts, r.data FROM rollup_1m r JOIN series s ON s.id = r.series WHERE r.ts >= ?1")
        try rows.bind(1, newest.int64(0) - 2 * hour)
        var found: [String: [Int64: FieldType]] = [:]
        while try rows.step() {
            let measurement = rows.text(0)
            let every: (Int64) -> Bool = { _ in true }
            _ = PackedRow.visit(rows.blob(2), start: rows.int64(1), sketches: false, wanted: every) { field, rollup in
                let type = FieldType(rollup)
                if let known = found[measurement]?[field], known <= type { return }
                found[measurement, default: [:]][field] = type
            }
        }
        for (measurement, fields) in found {
            for (field, type) in fields {
                try recordFieldType(measurement: measurement, field: try fieldName(field, in: &c), type: type, in: &c)
            }
        }
    }

    /// Records a field of a measurement with its type, once (the type first recorded stays).
    private static func recordFieldType(
        measurement: String, field: String, type: FieldType, in c: inout Connection
    ) throws(StoreError) {
        let key = FieldTypeKey(measurement: measurement, field: field)
        guard c.fieldTypesRecorded.insert(key).inserted else { return }
        if c.insertFieldType == nil {
            c.insertFieldType = try Statement(
                c.db, "INSERT OR IGNORE INTO measurement_fields(measurement, field, type) VALUES(?1, ?2, ?3)")
        }
        let insert = c.insertFieldType!
        defer { insert.reset() }
        try insert.bind(1, measurement)
        try insert.bind(2, field)
        try insert.bind(3, type.rawValue)
        _ = try insert.step()
        if sqlite3_changes(c.db) > 0 { c.changes.fieldTypes = true }
    }

    /// Both tiers share one layout: bucket start, series, and every field of the series in that bucket packed
    /// into one blob (``PackedRow``).
    static func rollupTable(_ name: String) -> String {
        """
        CREATE TABLE IF NOT EXISTS \(name)(
            ts INTEGER NOT NULL,
            series INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY(ts, series)) WITHOUT ROWID;
        """
    }

    deinit {
        _ = connection.withLock { c in
            c.insertSeries = nil
            c.selectSeries = nil
            return sqlite3_close_v2(c.db)
        }
        _ = reader.withLock { r in sqlite3_close_v2(r.db) }
    }

    private func execute(_ sql: String, context: String) throws(StoreError) {
        try connection.withLock { c throws(StoreError) in try Self.execute(c.db, sql, context: context) }
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

    // MARK: - Writing

    /// Merges the buckets into the store in one transaction.
    public func store(_ buckets: [ClosedBucket]) throws(StoreError) { try store(buckets, replayFrom: nil) }

    /// Merges the buckets and, in the same transaction, records for each bucket the highest WAL position it holds
    /// and (when given) the position replay must start from after a crash. The transaction advances the store
    /// generation (``committedGeneration``); `willCommit` gets the generation it commits, inside the transaction.
    public func store(
        _ buckets: [ClosedBucket], replayFrom: UInt64?, willCommit: (@Sendable (UInt64) -> Void)? = nil
    ) throws(StoreError) {
        guard buckets.contains(where: { !$0.cells.isEmpty }) || replayFrom != nil else { return }
        try connection.withLock { c throws(StoreError) in
            let db = c.db
            try transaction(&c, "flush") { c throws(StoreError) in
                let minutes = try RowWriter(db, table: "rollup_1m", outbox: recordsOutbox)
                let probe = try Statement(db, "SELECT 1 FROM rollup_1m WHERE ts = ?1 LIMIT 1")
                let watermark = try Statement(
                    db,
                    "INSERT INTO flushed(ts, wal_position) VALUES(?1, ?2)"
                        + " ON CONFLICT(ts) DO UPDATE SET wal_position = max(wal_position, excluded.wal_position)"
                )
                let downsampledThrough = try Self.metaInt(db, "downsampled_through") ?? .min
                var hourly: [ClosedBucket] = []
                for bucket in Self.coalesce(buckets) {
                    // A minute of an hour already downsampled (late data) merges into the hour row as well, so
                    // the 1h tier always equals the merge of its 1m rows.
                    if Self.hourStart(bucket.start) < downsampledThrough {
                        hourly.append(ClosedBucket(start: Self.hourStart(bucket.start), cells: bucket.cells))
                    }
                    // A bucket never stored before needs no read-merge per row: the common case of a flush.
                    try probe.bind(1, bucket.start)
                    let exists = try probe.step()
                    probe.reset()
                    if bucket.walPosition > 0 {
                        try watermark.bind(1, bucket.start)
                        try watermark.bind(2, Int64(bitPattern: bucket.walPosition))
                        _ = try watermark.step()
                        watermark.reset()
                    }
                    // Merged rows need their own outbox entries only where a pending whole-minute entry will not
                    // read them anyway (it reads rows as stored when it gets to them).
                    minutes.queueAbove =
                        recordsOutbox && exists
                        ? try Self.pendingWholeEntry(db, start: bucket.start, readThrough: c.outboxReadThrough) : nil
                    try minutes.write(bucket, merging: exists, connection: &c)
                    // A new bucket is queued for forwarding whole, in one entry (merged rows queue themselves).
                    if recordsOutbox && !exists && !bucket.cells.isEmpty {
                        try Self.queue(db, start: bucket.start, series: nil)
                    }
                }
                if !hourly.isEmpty {
                    let hours = try RowWriter(db, table: "rollup_1h")
                    for bucket in hourly { try hours.write(bucket, merging: true, connection: &c) }
                }
                if let replayFrom {
                    let meta = try Statement(
                        db, "INSERT OR REPLACE INTO meta(key, value) VALUES('wal_replay_from', ?1)")
                    try meta.bind(1, String(replayFrom))
                    _ = try meta.step()
                }
                let generation = committed.load(ordering: .acquiring) + 1
                try Self.setMeta(db, "store_generation", Int64(bitPattern: generation))
                c.changes.generation = generation
                willCommit?(generation)
                if let hook = beforeCommitForTesting.withLock({ $0 }) { hook() }
            }
        }
    }

    /// Writes buckets into one rollup table: cells grouped into one packed row per series, in key order (series id)
    /// so SQLite appends to the B-tree instead of seeking, through one reused buffer.
    private final class RowWriter {
        let select: Statement
        let upsert: Statement
        let insert: Statement
        var writer = ByteWriter(capacity: 4096)
        var keyed: [(id: Int64, index: Int32)] = []
        var fields: [Int64] = []
        var group: [(field: Int64, rollup: FieldRollup)] = []

        /// Queues each row merged into for forwarding again (the minute changed after it was forwarded).
        let outbox: Statement?
        /// Rows of series ids above this are still to be read by a pending whole-minute entry: not queued again.
        var queueAbove: Int64?

        /// Whether this writes the hourly tier (for ``RowCache`` invalidation).
        let hourly: Bool

        init(_ db: OpaquePointer, table: String, outbox: Bool = false) throws(StoreError) {
            hourly = table == "rollup_1h"
            self.outbox = outbox ? try Statement(db, "INSERT INTO outbox(ts, series) VALUES(?1, ?2)") : nil
            select = try Statement(db, "SELECT data FROM \(table) WHERE ts = ?1 AND series = ?2")
            upsert = try Statement(db, "INSERT OR REPLACE INTO \(table)(ts, series, data) VALUES(?1, ?2, ?3)")
            // A bucket with no stored rows yet: plain inserts (no conflict handling, no statement journal).
            insert = try Statement(db, "INSERT INTO \(table)(ts, series, data) VALUES(?1, ?2, ?3)")
        }

        /// Stores `bucket`'s cells; with `merging`, each series' row is first read and merged with (the only way a
        /// stored row changes: merged into, never overwritten).
        func write(_ bucket: ClosedBucket, merging: Bool, connection c: inout Connection) throws(StoreError) {
            c.changes.starts[hourly ? 1 : 0].insert(bucket.start)
            let cells = bucket.cells
            keyed.removeAll(keepingCapacity: true)
            keyed.reserveCapacity(cells.count)
            // The fields of a series sit next to each other: look its row id up once per run, not per cell.
            var previous: (hash: UInt64, id: Int64)?
            fields.removeAll(keepingCapacity: true)
            fields.reserveCapacity(cells.count)
            // A bucket holds a handful of field names, repeated: compared with the last few (short names compare
            // as two words) instead of hashed per cell.
            recentFields.removeAll(keepingCapacity: true)
            for k in cells.indices {
                let hash = cells[k].series.id
                let id: Int64
                if let previous, previous.hash == hash {
                    id = previous.id
                } else {
                    id = try SQLiteStore.seriesID(for: cells[k].series, in: &c)
                }
                previous = (hash, id)
                keyed.append((id, Int32(k)))
                let field = try fieldID(cells[k].field, in: &c)
                fields.append(field)
                // The measurement's fields and their types (`SHOW FIELD KEYS`): recorded the first time each is
                // stored; the last few pairs are remembered so a bucket costs a comparison per cell.
                let measurement = cells[k].series.measurement
                if !recentTypes.contains(where: { $0.field == field && $0.measurement == measurement }) {
                    try SQLiteStore.recordFieldType(
                        measurement: measurement, field: cells[k].field, type: FieldType(cells[k].rollup), in: &c)
                    if recentTypes.count == 16 { recentTypes.removeFirst() }
                    recentTypes.append((measurement, field))
                }
            }
            keyed.sort { $0.id != $1.id ? $0.id < $1.id : $0.index < $1.index }
            let runs = seriesRuns()
            if !merging, keyed.count >= Self.pipelineMinimum, try writeNew(bucket, runs: runs) { return }
            for run in runs {
                let (k, end, id) = (run.lowerBound, run.upperBound, keyed[run.lowerBound].id)
                if !merging && distinctFields(keyed[k..<end]) {
                    // The common case: a new row, one cell per field — encoded straight from the cells.
                    PackedRow.begin(fields: end - k, into: &writer)
                    var base = bucket.start
                    for j in k..<end {
                        let cell = Int(keyed[j].index)
                        PackedRow.append(fields[cell], cells[cell].rollup, base: &base, into: &writer)
                    }
                } else {
                    group.removeAll(keepingCapacity: true)
                    for j in k..<end {
                        let cell = Int(keyed[j].index)
                        if let same = group.firstIndex(where: { $0.field == fields[cell] }) {
                            group[same].rollup.merge(cells[cell].rollup)
                        } else {
                            group.append((fields[cell], cells[cell].rollup))
                        }
                    }
                    if merging {
                        try select.bind(1, bucket.start)
                        try select.bind(2, id)
                        if try select.step(), let stored = PackedRow.decode(select.blob(0), start: bucket.start) {
                            for (field, var rollup) in stored {
                                if let same = group.firstIndex(where: { $0.field == field }) {
                                    rollup.merge(group[same].rollup)
                                    group[same].rollup = rollup
                                } else {
                                    group.append((field, rollup))
                                }
                            }
                        }
                        select.reset()
                    }
                    PackedRow.encode(group, start: bucket.start, into: &writer)
                }
                let statement = merging ? upsert : insert
                try statement.bind(1, bucket.start)
                try statement.bind(2, id)
                _ = try statement.stepBinding(blob: writer, at: 3)
                statement.reset()
                if merging, let outbox, id <= queueAbove ?? .max {
                    try outbox.bind(1, bucket.start)
                    try outbox.bind(2, id)
                    _ = try outbox.step()
                    outbox.reset()
                }
            }
        }

        /// The ranges of `keyed` (sorted by series id) that belong to one series: one row each.
        func seriesRuns() -> [Range<Int>] {
            var runs: [Range<Int>] = []
            var k = 0
            while k < keyed.count {
                var end = k + 1
                while end < keyed.count && keyed[end].id == keyed[k].id { end += 1 }
                runs.append(k..<end)
                k = end
            }
            return runs
        }

        var recentFields: [(name: String, id: Int64)] = []
        /// (measurement, field id) pairs whose type was recorded lately (``recordFieldType``).
        var recentTypes: [(measurement: String, field: Int64)] = []

        /// Below this many cells a bucket is encoded row by row, between the inserts (a thread is not worth it).
        static let pipelineMinimum = 20_000
        static let rowsPerChunk = 4_096
        static let chunksAhead = 8

        /// Rows of a bucket encoded on another thread, a chunk at a time, published by `ready`: the encoder writes
        /// `bytes`/`ends` once and then signals; the writer reads them only after waiting. So a chunk is never
        /// touched by both threads at once, which is what makes the unchecked `Sendable` sound.
        final class EncodedChunk: @unchecked Sendable {
            let runs: Range<Int>
            let ready = DispatchSemaphore(value: 0)
            var bytes: [UInt8] = []
            /// Where each row ends in `bytes`.
            var ends: [Int] = []
            init(runs: Range<Int>) { self.runs = runs }
        }

        /// A bucket never stored, with one cell per field in every series (a bucket closed from memory): its rows
        /// are encoded on a second thread while this one inserts the rows encoded before, so encoding (about a
        /// third of a flush) overlaps SQLite's B-tree inserts instead of preceding each. `false` (nothing written)
        /// when some series has a field twice; the row-by-row path merges those.
        func writeNew(_ bucket: ClosedBucket, runs: [Range<Int>]) throws(StoreError) -> Bool {
            guard runs.allSatisfy({ distinctFields(self.keyed[$0]) }) else { return false }
            let chunks = stride(from: 0, to: runs.count, by: Self.rowsPerChunk).map {
                EncodedChunk(runs: $0..<min($0 + Self.rowsPerChunk, runs.count))
            }
            let (cells, keyed, fields, start) = (bucket.cells, self.keyed, self.fields, bucket.start)
            // At most this many chunks encoded ahead of the inserts (memory: a few MiB, not the whole bucket).
            let ahead = DispatchSemaphore(value: Self.chunksAhead)
            DispatchQueue.global(qos: .userInitiated).async { [runs] in
                var w = ByteWriter(capacity: 1 << 20)
                for chunk in chunks {
                    ahead.wait()
                    w.reset()
                    var ends: [Int] = []
                    ends.reserveCapacity(chunk.runs.count)
                    for run in runs[chunk.runs] {
                        PackedRow.header(fields: run.count, into: &w)
                        var base = start
                        for j in run {
                            let cell = Int(keyed[j].index)
                            PackedRow.append(fields[cell], cells[cell].rollup, base: &base, into: &w)
                        }
                        ends.append(w.count)
                    }
                    chunk.bytes = w.bytes
                    chunk.ends = ends
                    chunk.ready.signal()
                }
            }
            // Every chunk is awaited before returning. On an error the encoder is let run to its end (it only
            // reads values it owns; `ahead` is signalled for every chunk left so it never waits for ever).
            do throws(StoreError) {
                for chunk in chunks {
                    chunk.ready.wait()
                    let bytes = chunk.bytes
                    chunk.bytes = []
                    ahead.signal()
                    try bytes.withUnsafeBytes { (all: UnsafeRawBufferPointer) -> Result<Void, StoreError> in
                        Result { () throws(StoreError) in
                            var from = 0
                            for (row, run) in zip(chunk.ends, runs[chunk.runs]) {
                                try insert.bind(1, start)
                                try insert.bind(2, keyed[run.lowerBound].id)
                                _ = try insert.stepBinding(
                                    blob: UnsafeRawBufferPointer(rebasing: all[from..<row]), at: 3)
                                insert.reset()
                                from = row
                            }
                        }
                    }.get()
                }
            } catch {
                for _ in chunks { ahead.signal() }
                throw error
            }
            return true
        }

        private func fieldID(_ name: String, in c: inout Connection) throws(StoreError) -> Int64 {
            for k in recentFields.indices where recentFields[k].name == name { return recentFields[k].id }
            let id = try SQLiteStore.fieldID(for: name, in: &c)
            if recentFields.count == 8 { recentFields.removeFirst() }
            recentFields.append((name, id))
            return id
        }

        /// Whether the cells of one series have distinct fields (they do for a bucket closed from memory).
        func distinctFields(_ keyed: ArraySlice<(id: Int64, index: Int32)>) -> Bool {
            guard keyed.count > 1 else { return true }
            if keyed.count > 16 { return Set(keyed.map { fields[Int($0.index)] }).count == keyed.count }
            for a in keyed.indices {
                for b in keyed.indices where b > a {
                    if fields[Int(keyed[a].index)] == fields[Int(keyed[b].index)] { return false }
                }
            }
            return true
        }
    }

    /// Buckets of the same start as one (late points arrive as many small buckets): one read-merge-write and one
    /// outbox entry per row instead of one per point, and the cells merge in arrival order.
    static func coalesce(_ buckets: [ClosedBucket]) -> [ClosedBucket] {
        guard buckets.count > 1 else { return buckets }
        var merged: [ClosedBucket] = []
        var index: [Int64: Int] = [:]
        for bucket in buckets {
            if let k = index[bucket.start] {
                // In place: the array is uniquely referenced, so appends stay amortized O(1).
                merged[k].cells.append(contentsOf: bucket.cells)
                merged[k].walPosition = max(merged[k].walPosition, bucket.walPosition)
                merged[k].isLate = merged[k].isLate && bucket.isLate
            } else {
                index[bucket.start] = merged.count
                merged.append(bucket)
            }
        }
        return merged
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` … `COMMIT`; on any error rolls back and forgets the cached ids (they may
    /// name rows that were never committed).
    private func transaction<T>(
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
    private func publish(_ c: inout Connection) {
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
    private func withReader<T>(
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
                    for start in changes.starts[t] { r.rowCache.invalidate(hourly: t == 1, start: start) }
                    if let cut = changes.cutBefore[t] { r.rowCache.invalidate(hourly: t == 1, before: cut) }
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
    private static func generation(in r: inout Reader) throws(StoreError) -> UInt64 {
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

    /// Retention and downsampling, one step at a time so it never holds the store for long:
    /// merges the oldest complete hour not yet downsampled (every minute of it at least `settle` old) into
    /// `rollup_1h`, then deletes 1m rows older than `retention1m` (their hours are downsampled by then) and 1h rows
    /// older than `retention1h`.
    ///
    /// - Returns: the hour start downsampled in this step, or `nil` when there was nothing to do.
    @discardableResult
    public func maintain(now: Int64, settle: Int64, retention1m: Int64, retention1h: Int64) throws(StoreError) -> Int64?
    {
        try connection.withLock { c throws(StoreError) in
            let db = c.db
            return try transaction(&c, "maintenance") { c throws(StoreError) -> Int64? in
                var done: Int64?
                let through = try Self.metaInt(db, "downsampled_through")
                // The next hour to downsample: the one after `through`, or the oldest stored minute's hour.
                var next = through
                if next == nil {
                    let oldest = try Statement(db, "SELECT min(ts) FROM rollup_1m")
                    if try oldest.step(), sqlite3_column_type(oldest.handle, 0) != SQLITE_NULL {
                        next = Self.hourStart(oldest.int64(0))
                    }
                }
                if let hour = next, hour + Self.hour + settle <= now {
                    let rows = try Statement(
                        db,
                        "SELECT r.series, r.data, s.hash, s.measurement, s.tags, r.ts FROM rollup_1m r"
                            + " JOIN series s ON s.id = r.series WHERE r.ts >= ?1 AND r.ts < ?2"
                    )
                    try rows.bind(1, hour)
                    try rows.bind(2, hour + Self.hour)
                    var cells: [ClosedCell] = []
                    while try rows.step() {
                        guard let fields = PackedRow.decode(rows.blob(1), start: rows.int64(5)) else { continue }
                        let names = try fields.map { (field, _) throws(StoreError) in try Self.fieldName(field, in: &c)
                        }
                        let info = SeriesInfo(
                            id: UInt64(bitPattern: rows.int64(2)),
                            measurement: rows.text(3),
                            tags: Self.decodeTags(rows.text(4))
                        )
                        c.seriesIDs[info.id] = rows.int64(0)
                        for (k, field) in fields.enumerated() {
                            cells.append(ClosedCell(series: info, field: names[k], rollup: field.rollup))
                        }
                    }
                    // The writer merges the minutes of one series and field into one hour cell.
                    try RowWriter(db, table: "rollup_1h").write(
                        ClosedBucket(start: hour, cells: cells), merging: true, connection: &c)
                    try Self.setMeta(db, "downsampled_through", hour + Self.hour)
                    done = hour
                }
                let downsampled = try Self.metaInt(db, "downsampled_through") ?? .min
                let cut1m = try Statement(db, "DELETE FROM rollup_1m WHERE ts < ?1")
                try cut1m.bind(1, min(now - retention1m, downsampled))
                _ = try cut1m.step()
                c.changes.cutBefore[0] = min(now - retention1m, downsampled)
                let cut1h = try Statement(db, "DELETE FROM rollup_1h WHERE ts < ?1")
                try cut1h.bind(1, now - retention1h)
                _ = try cut1h.step()
                c.changes.cutBefore[1] = now - retention1h
                // Minutes deleted by retention cannot be forwarded any more: their outbox entries go too.
                let cutOutbox = try Statement(db, "DELETE FROM outbox WHERE ts < ?1")
                try cutOutbox.bind(1, min(now - retention1m, downsampled))
                _ = try cutOutbox.step()
                let cutFlushed = try Statement(db, "DELETE FROM flushed WHERE ts < ?1")
                try cutFlushed.bind(1, now - retention1m)
                _ = try cutFlushed.step()
                return done
            }
        }
    }

    /// Copies the SQLite write-ahead log into the database file and resets it (the flush only appends to the log,
    /// so its commit never waits for this). The ticker calls it after flushes; a no-op when there is nothing new.
    /// The next write reuses the log from its start (`journal_size_limit` caps what stays allocated).
    ///
    /// - Returns: pages copied.
    @discardableResult
    public func checkpoint() throws(StoreError) -> Int {
        try connection.withLock { c throws(StoreError) in
            var logged: Int32 = 0
            var copied: Int32 = 0
            let rc = sqlite3_wal_checkpoint_v2(c.db, nil, SQLITE_CHECKPOINT_PASSIVE, &logged, &copied)
            guard rc == SQLITE_OK else {
                throw StoreError(code: rc, message: String(cString: sqlite3_errmsg(c.db)), context: "checkpoint")
            }
            return Int(copied)
        }
    }

    /// The id of a field name in the `fields` dictionary, adding it when new.
    private static func fieldID(for name: String, in c: inout Connection) throws(StoreError) -> Int64 {
        if let id = c.fieldIDs[name] { return id }
        let insert = try Statement(c.db, "INSERT OR IGNORE INTO fields(name) VALUES(?1)")
        try insert.bind(1, name)
        _ = try insert.step()
        let select = try Statement(c.db, "SELECT id FROM fields WHERE name = ?1")
        try select.bind(1, name)
        guard try select.step() else {
            throw StoreError(code: SQLITE_ERROR, message: "field row missing", context: "storing field \(name)")
        }
        return remember(field: name, id: select.int64(0), in: &c)
    }

    @discardableResult
    private static func remember(field name: String, id: Int64, in c: inout Connection) -> Int64 {
        c.fieldIDs[name] = id
        c.fieldNames[id] = name
        return id
    }

    private static func fieldName(_ id: Int64, in c: inout Connection) throws(StoreError) -> String {
        if let name = c.fieldNames[id] { return name }
        let select = try Statement(c.db, "SELECT name FROM fields WHERE id = ?1")
        try select.bind(1, id)
        guard try select.step() else {
            throw StoreError(code: SQLITE_CORRUPT, message: "no field with id \(id)", context: "reading rollups")
        }
        let name = select.text(0)
        remember(field: name, id: id, in: &c)
        return name
    }

    private static func seriesID(for series: SeriesInfo, in c: inout Connection) throws(StoreError) -> Int64 {
        if let id = c.seriesIDs[series.id] { return id }
        let tags = encodeTags(series.tags)
        if c.insertSeries == nil {
            c.insertSeries = try Statement(
                c.db, "INSERT OR IGNORE INTO series(hash, measurement, tags) VALUES(?1, ?2, ?3)")
            c.selectSeries = try Statement(c.db, "SELECT id FROM series WHERE measurement = ?1 AND tags = ?2")
        }
        let insert = c.insertSeries!
        let select = c.selectSeries!
        defer {
            insert.reset()
            select.reset()
        }
        try insert.bind(1, Int64(bitPattern: series.id))
        try insert.bind(2, series.measurement)
        try insert.bind(3, tags)
        _ = try insert.step()
        if sqlite3_changes(c.db) > 0 { c.changes.measurements.insert(series.measurement) }
        try select.bind(1, series.measurement)
        try select.bind(2, tags)
        guard try select.step() else {
            throw StoreError(code: SQLITE_ERROR, message: "series row missing", context: "storing \(series)")
        }
        let id = select.int64(0)
        c.seriesIDs[series.id] = id
        return id
    }

    /// For a minute with a whole-minute outbox entry not yet (fully) forwarded: the series id above which its rows
    /// are still to be read (-1: all of them), or `nil` when there is none.
    /// `readThrough` is how far the forwarder has read (rows it read may be in flight with their old value).
    static func pendingWholeEntry(_ db: OpaquePointer, start: Int64, readThrough: OutboxCursor?) throws(StoreError)
        -> Int64?
    {
        var cursorSeq = try metaInt(db, "outbox_seq") ?? 0
        var cursorSeries = try metaInt(db, "outbox_series") ?? SQLiteStore.OutboxCursor.done
        if let r = readThrough, (r.seq, r.series) > (cursorSeq, cursorSeries) {
            cursorSeq = r.seq
            cursorSeries = r.series
        }
        let s = try Statement(
            db, "SELECT max(seq) FROM outbox WHERE ts = ?1 AND series IS NULL AND seq >= ?2")
        try s.bind(1, start)
        try s.bind(2, cursorSeq)
        guard try s.step(), sqlite3_column_type(s.handle, 0) != SQLITE_NULL else { return nil }
        let seq = s.int64(0)
        if seq > cursorSeq { return -1 }
        return cursorSeries == SQLiteStore.OutboxCursor.done ? nil : cursorSeries
    }

    static func queue(_ db: OpaquePointer, start: Int64, series: Int64?) throws(StoreError) {
        let s = try Statement(db, "INSERT INTO outbox(ts, series) VALUES(?1, ?2)")
        try s.bind(1, start)
        if let series { try s.bind(2, series) }
        _ = try s.step()
    }

    // MARK: - Outbox (forwarding)

    /// Where forwarding is: every outbox entry before `seq` is sent, and of entry `seq` the rows of series ids up
    /// to `series` (``done`` when the whole entry is sent).
    public struct OutboxCursor: Sendable, Hashable, CustomStringConvertible {
        public var seq: Int64
        public var series: Int64
        public static let done = Int64.max
        public static let start = OutboxCursor(seq: 0, series: done)
        public var description: String { "\(seq)/\(series == Self.done ? "done" : String(series))" }
    }

    /// One stored row to forward: a series in a minute, all its fields.
    public struct OutboxRow: Sendable {
        public var start: Int64
        public var series: SeriesInfo
        public var fields: [(name: String, rollup: FieldRollup)]
    }

    /// The persisted cursor (``OutboxCursor/start`` before anything was forwarded).
    public func outboxCursor() throws(StoreError) -> OutboxCursor {
        try connection.withLock { c throws(StoreError) in
            guard let seq = try Self.metaInt(c.db, "outbox_seq"), let series = try Self.metaInt(c.db, "outbox_series")
            else { return .start }
            return OutboxCursor(seq: seq, series: series)
        }
    }

    /// Up to `limit` rows queued after `cursor`, in queue order (within a whole-minute entry, by series id), and the
    /// cursor that marks them sent. A row is read as stored now, so a minute queued twice is sent with its latest
    /// value both times: the second send overwrites the first point in InfluxDB.
    public func outboxBatch(after cursor: OutboxCursor, limit: Int) throws(StoreError) -> (
        rows: [OutboxRow], cursor: OutboxCursor
    ) {
        try connection.withLock { c throws(StoreError) in
            let db = c.db
            var rows: [OutboxRow] = []
            var position = cursor
            let entries = try Statement(db, "SELECT seq, ts, series FROM outbox WHERE seq >= ?1 ORDER BY seq")
            try entries.bind(1, cursor.seq)
            let whole = try Statement(
                db, "SELECT series, data FROM rollup_1m WHERE ts = ?1 AND series > ?2 ORDER BY series LIMIT ?3")
            let one = try Statement(db, "SELECT data FROM rollup_1m WHERE ts = ?1 AND series = ?2")
            while rows.count < limit, try entries.step() {
                let seq = entries.int64(0)
                let start = entries.int64(1)
                if seq > position.seq { position = OutboxCursor(seq: seq, series: -1) }
                guard position.series != OutboxCursor.done else { continue }
                if sqlite3_column_type(entries.handle, 2) == SQLITE_NULL {
                    try whole.bind(1, start)
                    try whole.bind(2, position.series)
                    try whole.bind(3, Int64(limit - rows.count))
                    var fetched = 0
                    while try whole.step() {
                        fetched += 1
                        let id = whole.int64(0)
                        position.series = id
                        if let row = try Self.outboxRow(start: start, series: id, data: whole.blob(1), in: &c) {
                            rows.append(row)
                        }
                    }
                    whole.reset()
                    if rows.count < limit || fetched == 0 { position.series = OutboxCursor.done }
                } else {
                    let id = entries.int64(2)
                    try one.bind(1, start)
                    try one.bind(2, id)
                    if try one.step(), let row = try Self.outboxRow(start: start, series: id, data: one.blob(0), in: &c)
                    {
                        rows.append(row)
                    }
                    one.reset()
                    position.series = OutboxCursor.done
                }
            }
            if c.outboxReadThrough.map({ ($0.seq, $0.series) < (position.seq, position.series) }) ?? true {
                c.outboxReadThrough = position
            }
            return (rows, position)
        }
    }

    private static func outboxRow(start: Int64, series id: Int64, data: [UInt8], in c: inout Connection)
        throws(StoreError) -> OutboxRow?
    {
        guard let fields = PackedRow.decode(data, start: start) else { return nil }
        let info: SeriesInfo
        if let known = c.seriesByRow[id] {
            info = known
        } else {
            let s = try Statement(c.db, "SELECT hash, measurement, tags FROM series WHERE id = ?1")
            try s.bind(1, id)
            guard try s.step() else { return nil }
            info = SeriesInfo(
                id: UInt64(bitPattern: s.int64(0)), measurement: s.text(1), tags: decodeTags(s.text(2)))
            c.seriesByRow[id] = info
        }
        var named: [(name: String, rollup: FieldRollup)] = []
        for (field, rollup) in fields { named.append((try fieldName(field, in: &c), rollup)) }
        return OutboxRow(start: start, series: info, fields: named)
    }

    /// Persists `cursor` (after the receiver acknowledged everything before it) and deletes the entries it passed.
    public func advanceOutbox(to cursor: OutboxCursor) throws(StoreError) {
        try connection.withLock { c throws(StoreError) in
            let db = c.db
            try Self.execute(db, "BEGIN IMMEDIATE", context: "advancing the outbox")
            do throws(StoreError) {
                try Self.setMeta(db, "outbox_seq", cursor.seq)
                try Self.setMeta(db, "outbox_series", cursor.series)
                let prune = try Statement(
                    db,
                    cursor.series == OutboxCursor.done
                        ? "DELETE FROM outbox WHERE seq <= ?1" : "DELETE FROM outbox WHERE seq < ?1")
                try prune.bind(1, cursor.seq)
                _ = try prune.step()
                try Self.execute(db, "COMMIT", context: "advancing the outbox")
            } catch {
                try? Self.execute(db, "ROLLBACK", context: "advancing the outbox")
                throw error
            }
        }
    }

    /// What is still to forward after `cursor`: distinct minutes and rows (points).
    public func outboxBacklog(after cursor: OutboxCursor) throws(StoreError) -> (minutes: Int, points: Int) {
        try connection.withLock { c throws(StoreError) in
            let db = c.db
            let entries = try Statement(db, "SELECT seq, ts, series FROM outbox WHERE seq >= ?1")
            try entries.bind(1, cursor.seq)
            let count = try Statement(db, "SELECT count(*) FROM rollup_1m WHERE ts = ?1 AND series > ?2")
            var minutes = Set<Int64>()
            var points = 0
            while try entries.step() {
                let seq = entries.int64(0)
                let after = seq == cursor.seq ? cursor.series : -1
                guard after != OutboxCursor.done else { continue }
                minutes.insert(entries.int64(1))
                if sqlite3_column_type(entries.handle, 2) == SQLITE_NULL {
                    try count.bind(1, entries.int64(1))
                    try count.bind(2, after)
                    _ = try count.step()
                    points += Int(count.int64(0))
                    count.reset()
                } else {
                    points += 1
                }
            }
            return (minutes.count, points)
        }
    }

    // MARK: - Reading

    public func storedCells(measurement: String, field: String?, from: Int64, to: Int64) throws(StoreError)
        -> [(start: Int64, cell: ClosedCell)]
    {
        try storedCells(measurement: measurement, field: field, from: from, to: to, series: nil)
    }

    /// Stored 1-minute rollups of `measurement` (one field, or all) in `[from, to)`; with `series`, only the series
    /// it accepts (rows of the others are skipped before they are decoded).
    public func storedCells(
        measurement: String, field: String?, from: Int64, to: Int64, series accept: ((SeriesInfo) -> Bool)?
    ) throws(StoreError) -> [(start: Int64, cell: ClosedCell)] {
        try read(CellRead(measurement: measurement, fields: field.map { [$0] }, from: from, to: to), series: accept)
    }

    /// Stored 1-hour rollups (bucket starts are hour starts).
    public func hourlyCells(
        measurement: String, field: String?, from: Int64, to: Int64, series accept: ((SeriesInfo) -> Bool)? = nil
    ) throws(StoreError) -> [(start: Int64, cell: ClosedCell)] {
        try read(
            CellRead(measurement: measurement, fields: field.map { [$0] }, from: from, to: to), hourly: true,
            series: accept)
    }

    /// What a query reads from one tier.
    public typealias CellRead = Rollups.CellRead

    /// How a read found its rows (tests check the plan).
    public enum ReadPlan: Sendable, Equatable {
        /// Every row of the range, skipping other series' rows.
        case scan
        /// Each chosen series' rows looked up by key, bucket start by bucket start.
        case probe(series: Int)
    }

    /// Stored rollups (1-minute tier, or the hourly one) for a query: only the series `accept` takes (their tags
    /// are matched once, from a cache) and only the fields asked for are decoded.
    ///
    /// Rows are keyed (bucket start, series). When bucket starts lie on a known grid (the bucket width, 1 h for
    /// the hourly tier) and the keys are few (at most ``keyedReadLimit`` series × starts, or a quarter of the
    /// measurement's series or fewer), each chosen series' rows are looked up by key — remembered in ``RowCache``
    /// — so a one-host query over a day reads that host's 1,440 rows, not the day's rows of every host; otherwise
    /// the range is scanned once.
    public func read(_ read: CellRead, hourly: Bool = false, series accept: ((SeriesInfo) -> Bool)?)
        throws(StoreError) -> [(start: Int64, cell: ClosedCell)]
    {
        try readPlanned(read, hourly: hourly, series: accept).cells
    }

    /// ``read(_:hourly:series:)`` with the plan it took.
    public func readPlanned(_ read: CellRead, hourly: Bool = false, series accept: ((SeriesInfo) -> Bool)?)
        throws(StoreError) -> (cells: [(start: Int64, cell: ClosedCell)], plan: ReadPlan)
    {
        var cells: [(start: Int64, cell: ClosedCell)] = []
        let plan = try visit(read, hourly: hourly, series: accept) { start, series, field, rollup in
            cells.append((start, ClosedCell(series: series, field: field, rollup: rollup)))
        }
        return (cells, plan)
    }

    /// ``read(_:hourly:series:)`` without collecting: `body` gets each cell (bucket start, series, field name,
    /// rollup) as it is decoded, with the store's connection held (it must not call back into the store).
    public func visit(
        _ read: CellRead, hourly: Bool = false, series accept: ((SeriesInfo) -> Bool)?,
        _ body: (Int64, SeriesInfo, String, consuming FieldRollup) -> Void
    ) throws(StoreError) -> ReadPlan {
        var generation: UInt64 = 0
        return try visit(read, hourly: hourly, series: accept, generation: &generation, body)
    }

    /// ``visit(_:hourly:series:_:)`` in one snapshot of the store, whose generation (the stores of closed buckets
    /// it holds, ``committedGeneration``) goes to `generation`.
    public func visit(
        _ read: CellRead, hourly: Bool = false, series accept: ((SeriesInfo) -> Bool)?, generation: inout UInt64,
        _ body: (Int64, SeriesInfo, String, consuming FieldRollup) -> Void
    ) throws(StoreError) -> ReadPlan {
        try inSnapshot(read, accept, generation: &generation) { c, all, taken throws(StoreError) in
            guard !taken.isEmpty, read.from < read.to else { return .scan }
            var wanted: [Int64: String]?
            if let fields = read.fields {
                var ids: [Int64: String] = [:]
                for name in fields {
                    if let id = try Self.existingFieldID(name, in: &c) { ids[id] = name }
                }
                guard !ids.isEmpty else { return .scan }
                wanted = ids
            }
            let names: [Int64: String]
            if let wanted { names = wanted } else { names = try Self.allFieldNames(in: &c) }
            // A row naming a field id that is not in `fields` is corrupt: the read fails rather than guessing.
            var failure: StoreError?
            func collect(_ start: Int64, _ info: SeriesInfo, _ bytes: [UInt8]) {
                // A malformed row is skipped, as the forwarder and downsampling skip it, and counted.
                if !PackedRow.visit(
                    bytes, start: start, sketches: read.sketches, wanted: { wanted == nil || wanted?[$0] != nil },
                    stopAfter: wanted?.count ?? .max,
                    each: { field, rollup in
                        guard let name = names[field] else {
                            failure = StoreError(
                                code: SQLITE_CORRUPT, message: "no field with id \(field)", context: "reading rollups")
                            return
                        }
                        body(start, info, name, rollup)
                    })
                {
                    corruptRowCount.wrappingAdd(1, ordering: .relaxed)
                }
            }
            if let grid = Self.keyedGrid(read, hourly: hourly, taken: taken.count, all: all, in: c) {
                var lookup = try KeyedLookup(c.db, hourly: hourly, grid: grid)
                let starts = Self.gridStarts(read, grid: grid)
                for (row, info) in taken {
                    try Self.check(read)
                    try lookup.rows(series: row, starts: starts, in: &c)
                    for (start, bytes) in lookup.found { collect(start, info, bytes) }
                }
                if let failure { throw failure }
                return .probe(series: taken.count)
            }
            let rows = try Self.scan(read, hourly: hourly, db: c.db)
            let chosen = Dictionary(taken, uniquingKeysWith: { first, _ in first })
            while try rows.step() {
                try Self.check(read)
                guard let info = chosen[rows.int64(1)] else { continue }
                collect(rows.int64(0), info, rows.blob(2))
            }
            if let failure { throw failure }
            return .scan
        }
    }

    /// Runs `body` in one read transaction with the stored series the read takes (and how many its measurement
    /// has), chosen in the same snapshot; the snapshot's store generation goes to `generation`.
    ///
    /// The series are chosen before the transaction, outside the reader's lock (the condition is the request's, a
    /// regex perhaps, and other queries must not wait on it), from the list as of some generation; when a store
    /// committed between that and the snapshot (it may have added series), the choice is made again — the last
    /// time inside the snapshot, so a read never misses a series its snapshot holds.
    private func inSnapshot<T: Sendable>(
        _ read: CellRead, _ accept: ((SeriesInfo) -> Bool)?, generation: inout UInt64,
        _ body: (inout Reader, Int, [(row: Int64, info: SeriesInfo)]) throws(StoreError) -> T
    ) throws(StoreError) -> T {
        for attempt in 0..<4 {
            let choice = try choose(read, accept)
            let last = attempt == 3
            let outcome: (T, UInt64)? = try withReader(snapshot: true) { c, seen throws(StoreError) in
                var (all, taken) = (choice.all, choice.taken)
                if seen != choice.storeGeneration {
                    guard last else { return nil }
                    let list = try Self.series(of: read.measurement, in: &c)
                    all = list.count
                    if let accept {
                        taken = []
                        for entry in list {
                            try Self.check(read)
                            if accept(entry.info) { taken.append(entry) }
                        }
                    } else {
                        taken = list
                    }
                } else if choice.isNew, c.seriesGeneration == choice.generation {
                    Self.remember(read, chose: taken, in: &c)
                }
                return (try body(&c, all, taken), seen)
            }
            if let outcome {
                generation = outcome.1
                return outcome.0
            }
        }
        preconditionFailure("the last attempt reads in its own snapshot")
    }

    /// The stored series a read takes, among all of its measurement's: those `accept` takes — decided outside the
    /// reader's lock or remembered from an earlier read with the same condition text — and the store generation
    /// the list was read at (it may hold later series too).
    private func choose(_ read: CellRead, _ accept: ((SeriesInfo) -> Bool)?) throws(StoreError) -> (
        all: Int, taken: [(row: Int64, info: SeriesInfo)], isNew: Bool, generation: UInt64, storeGeneration: UInt64
    ) {
        let (all, known, generation, storeGeneration) = try withReader { c, seen throws(StoreError) in
            (
                try Self.series(of: read.measurement, in: &c), accept == nil ? nil : Self.chosen(read, in: c),
                c.seriesGeneration, seen
            )
        }
        guard let accept else { return (all.count, all, false, generation, storeGeneration) }
        if let known { return (all.count, known, false, generation, storeGeneration) }
        var taken: [(row: Int64, info: SeriesInfo)] = []
        for entry in all {
            try Self.check(read)
            if accept(entry.info) { taken.append(entry) }
        }
        return (all.count, taken, true, generation, storeGeneration)
    }

    /// Throws when the read's query must stop (``CellRead/shouldStop``).
    @inline(__always)
    private static func check(_ read: CellRead) throws(StoreError) {
        if let stop = read.shouldStop, stop() {
            throw StoreError(code: SQLITE_INTERRUPT, message: "the query was stopped", context: "reading rollups")
        }
    }

    /// ``visit(_:hourly:series:_:)`` for reads that need no quantile and no distinct count: `body` gets each
    /// cell's summary (``FieldSummary``) and its field's index in `read.fields` (which must be given).
    ///
    /// A keyed read keeps what it decodes: each chosen series' summaries of a field over ``RowCache/blockLength``
    /// bucket starts of the grid (a block), dropped with the rows they were decoded from (``RowCache``) — so a
    /// dashboard's next refresh decodes only the blocks a flush changed.
    public func visitSummaries(
        _ read: CellRead, hourly: Bool = false, series accept: ((SeriesInfo) -> Bool)?,
        _ body: (Int64, SeriesInfo, Int, FieldSummary) -> Void
    ) throws(StoreError) -> ReadPlan {
        var generation: UInt64 = 0
        return try visitSummaries(read, hourly: hourly, series: accept, generation: &generation, body)
    }

    /// ``visitSummaries(_:hourly:series:_:)`` in one snapshot, whose generation goes to `generation`.
    public func visitSummaries(
        _ read: CellRead, hourly: Bool = false, series accept: ((SeriesInfo) -> Bool)?, generation: inout UInt64,
        _ body: (Int64, SeriesInfo, Int, FieldSummary) -> Void
    ) throws(StoreError) -> ReadPlan {
        precondition(read.fields != nil, "a summary read names its fields")
        return try inSnapshot(read, accept, generation: &generation) { c, all, taken throws(StoreError) in
            guard !taken.isEmpty, read.from < read.to else { return .scan }
            // Field ids with their index in `read.fields`.
            var ids: [(id: Int64, index: Int)] = []
            for (index, name) in (read.fields ?? []).enumerated() {
                if let id = try Self.existingFieldID(name, in: &c) { ids.append((id, index)) }
            }
            guard !ids.isEmpty else { return .scan }
            // A field id's position in `ids` (a handful: compared, not hashed).
            func position(_ id: Int64) -> Int? {
                for (k, wanted) in ids.enumerated() where wanted.id == id { return k }
                return nil
            }
            guard let grid = Self.keyedGrid(read, hourly: hourly, taken: taken.count, all: all, in: c) else {
                let rows = try Self.scan(read, hourly: hourly, db: c.db)
                let chosen = Dictionary(taken, uniquingKeysWith: { first, _ in first })
                while try rows.step() {
                    try Self.check(read)
                    guard let info = chosen[rows.int64(1)] else { continue }
                    let start = rows.int64(0)
                    if !PackedRow.visitSummaries(
                        rows.blob(2), start: start, wanted: position, stopAfter: ids.count,
                        each: {
                            body(start, info, ids[$0].index, $1)
                        })
                    {
                        corruptRowCount.wrappingAdd(1, ordering: .relaxed)
                    }
                }
                return .scan
            }
            var lookup = try KeyedLookup(c.db, hourly: hourly, grid: grid)
            let length = RowCache.blockLength
            let span = grid * Int64(length)
            var blocks = Array(repeating: RowCache.SummaryBlock(), count: ids.count)
            func bits(_ lower: Int, _ upper: Int) -> UInt64 { (1 << UInt64(upper - lower) - 1) << UInt64(lower) }
            for (row, info) in taken {
                try Self.check(read)
                var blockStart = RowCache.blockStart(read.from, span: span)
                while blockStart < read.to {
                    defer { blockStart += span }
                    // The block's slots in the range; those of each field's block not known yet are looked up
                    // (one span of rows for every field) and remembered.
                    let first = Swift.max(0, Int((read.from - blockStart + grid - 1) / grid))
                    let last = Swift.min(length, Int((read.to - blockStart + grid - 1) / grid))
                    guard first < last else { continue }
                    let needed = bits(first, last)
                    var missing: UInt64 = 0
                    for k in ids.indices {
                        blocks[k] =
                            c.rowCache.block(
                                hourly: hourly, grid: grid, blockStart: blockStart, series: row, field: ids[k].id)
                            ?? RowCache.SummaryBlock()
                        missing |= needed & ~blocks[k].known
                    }
                    if missing != 0 {
                        let lower = missing.trailingZeroBitCount
                        let upper = 64 - missing.leadingZeroBitCount
                        let starts = stride(
                            from: blockStart + Int64(lower) * grid, to: blockStart + Int64(upper) * grid, by: Int(grid))
                        try lookup.rows(series: row, starts: starts, in: &c)
                        for (start, bytes) in lookup.found {
                            let slot = Int((start - blockStart) / grid)
                            if !PackedRow.visitSummaries(
                                bytes, start: start, wanted: position, stopAfter: ids.count,
                                each: {
                                    blocks[$0].summaries[slot] = $1
                                })
                            {
                                corruptRowCount.wrappingAdd(1, ordering: .relaxed)
                            }
                        }
                        for k in ids.indices {
                            blocks[k].known |= bits(lower, upper)
                            c.rowCache.remember(
                                hourly: hourly, grid: grid, blockStart: blockStart, series: row, field: ids[k].id,
                                block: blocks[k])
                        }
                    }
                    // Deliver start by start (the fields of one start together, as a row would).
                    for slot in first..<last {
                        let start = blockStart + Int64(slot) * grid
                        for k in ids.indices {
                            // Handed where it lies (a summary is 160 bytes: a copy per cell shows in a profile).
                            blocks[k].summaries.withUnsafeBufferPointer { block in
                                if block[slot].count > 0 { body(start, info, ids[k].index, block[slot]) }
                            }
                        }
                    }
                }
            }
            return .probe(series: taken.count)
        }
    }

    /// The series a read with the same condition text took before, when remembered.
    private static func chosen(_ read: CellRead, in c: borrowing Reader) -> [(row: Int64, info: SeriesInfo)]? {
        read.condition.flatMap { c.chosenByCondition[read.measurement]?[$0] }
    }

    /// Remembers the series a read took by its condition text (when it has one). Bounded: at most 256 conditions
    /// per measurement and a million remembered series in all.
    private static func remember(
        _ read: CellRead, chose taken: [(row: Int64, info: SeriesInfo)], in c: inout Reader
    ) {
        guard let condition = read.condition else { return }
        c.chosenTotal += taken.count
        if c.chosenByCondition[read.measurement, default: [:]].count >= 256 || c.chosenTotal > 1 << 20 {
            c.chosenByCondition = [:]
            c.chosenTotal = taken.count
        }
        c.chosenByCondition[read.measurement, default: [:]][condition] = taken
    }

    /// The grid to look rows up on by key, or `nil` to scan: keys few enough, or a small part of the measurement.
    /// A scan visits every row of the range, every measurement's (the key is time-major), so it wins only when
    /// most rows are wanted.
    private static func keyedGrid(_ read: CellRead, hourly: Bool, taken: Int, all: Int, in c: borrowing Reader)
        -> Int64?
    {
        guard let grid = hourly ? Self.hour : c.bucketGrid, read.keyed, (read.to - read.from) / grid <= 100_000,
            taken * 4 <= all || taken * Int((read.to - read.from) / grid) <= Self.keyedReadLimit
        else { return nil }
        return grid
    }

    /// The grid's bucket starts in `[read.from, read.to)`.
    private static func gridStarts(_ read: CellRead, grid: Int64) -> StrideTo<Int64> {
        let q = read.from / grid
        let first = (read.from % grid > 0 ? q + 1 : q) * grid
        return stride(from: first, to: read.to, by: Int(grid))
    }

    /// The stored rows of the range, of the read's measurement: (bucket start, series row id, row bytes).
    private static func scan(_ read: CellRead, hourly: Bool, db: OpaquePointer) throws(StoreError) -> Statement {
        let query = try Statement(
            db,
            "SELECT ts, series, data FROM \(hourly ? "rollup_1h" : "rollup_1m") WHERE ts >= ?1 AND ts < ?2"
                + " AND series IN (SELECT id FROM series WHERE measurement = ?3)")
        try query.bind(1, read.from)
        try query.bind(2, read.to)
        try query.bind(3, read.measurement)
        return query
    }

    /// Rows looked up by key (bucket start, series): from ``RowCache`` when it knows them, else one by one when
    /// few, else with one pass over the grid — and remembered, including bucket starts with no row.
    private struct KeyedLookup {
        let hourly: Bool
        let grid: Int64
        let single: Statement
        let range: Statement
        var missing: [Int64] = []
        /// What ``rows(series:starts:in:)`` found: (bucket start, row bytes), cached rows first.
        var found: [(start: Int64, bytes: [UInt8])] = []

        init(_ db: OpaquePointer, hourly: Bool, grid: Int64) throws(StoreError) {
            let table = hourly ? "rollup_1h" : "rollup_1m"
            self.hourly = hourly
            self.grid = grid
            single = try Statement(db, "SELECT data FROM \(table) WHERE ts = ?1 AND series = ?2")
            range = try Statement(
                db,
                "WITH RECURSIVE grid(t) AS (SELECT ?1 UNION ALL SELECT t + ?3 FROM grid WHERE t + ?3 < ?2)"
                    + " SELECT ts, data FROM grid CROSS JOIN \(table) ON ts = t AND series = ?4")
        }

        /// The stored rows of series `row` at `starts` (ascending, on the grid), into ``found``.
        mutating func rows(series row: Int64, starts: StrideTo<Int64>, in c: inout Reader) throws(StoreError) {
            missing.removeAll(keepingCapacity: true)
            found.removeAll(keepingCapacity: true)
            for start in starts {
                if let bytes = c.rowCache.row(hourly: hourly, start: start, series: row) {
                    if !bytes.isEmpty { found.append((start, bytes)) }
                } else {
                    missing.append(start)
                }
            }
            if missing.count <= 64 {
                for start in missing {
                    try single.bind(1, start)
                    try single.bind(2, row)
                    let bytes = try single.step() ? single.blob(0) : []
                    single.reset()
                    c.rowCache.remember(hourly: hourly, start: start, series: row, row: bytes)
                    if !bytes.isEmpty { found.append((start, bytes)) }
                }
            } else {
                var unknown = Set(missing)
                try range.bind(1, missing[0])
                try range.bind(2, missing[missing.count - 1] + 1)
                try range.bind(3, grid)
                try range.bind(4, row)
                while try range.step() {
                    let start = range.int64(0)
                    guard unknown.remove(start) != nil else { continue }  // delivered from the cache
                    let bytes = range.blob(1)
                    c.rowCache.remember(hourly: hourly, start: start, series: row, row: bytes)
                    found.append((start, bytes))
                }
                range.reset()
                for start in unknown { c.rowCache.remember(hourly: hourly, start: start, series: row, row: []) }
            }
        }
    }

    /// Up to this many (series, bucket start) keys a read looks rows up by key, however many of the
    /// measurement's series it takes.
    static let keyedReadLimit = 50_000

    /// The stored series of `measurement` with their row ids, decoded once and cached until one is added.
    private static func series(of measurement: String, in c: inout Reader) throws(StoreError) -> [(
        row: Int64, info: SeriesInfo
    )] {
        if let known = c.seriesOfMeasurement[measurement] { return known }
        let list = try Statement(c.db, "SELECT id, hash, tags FROM series WHERE measurement = ?1")
        try list.bind(1, measurement)
        var out: [(row: Int64, info: SeriesInfo)] = []
        while try list.step() {
            let info = SeriesInfo(
                id: UInt64(bitPattern: list.int64(1)), measurement: measurement, tags: decodeTags(list.text(2)))
            out.append((list.int64(0), info))
        }
        c.seriesOfMeasurement[measurement] = out
        return out
    }

    /// Every stored field name by id.
    private static func allFieldNames(in c: inout Reader) throws(StoreError) -> [Int64: String] {
        let list = try Statement(c.db, "SELECT id, name FROM fields")
        var out: [Int64: String] = [:]
        while try list.step() { out[list.int64(0)] = list.text(1) }
        return out
    }

    /// The id of a field name already stored, or `nil` (a read never adds names).
    private static func existingFieldID(_ name: String, in c: inout Reader) throws(StoreError) -> Int64? {
        if let id = c.fieldIDs[name] { return id }
        let lookup = try Statement(c.db, "SELECT id FROM fields WHERE name = ?1")
        try lookup.bind(1, name)
        guard try lookup.step() else { return nil }
        c.fieldIDs[name] = lookup.int64(0)
        return lookup.int64(0)
    }

    /// Records that bucket starts of the 1-minute tier are multiples of `width` (the configured bucket width),
    /// keeping in `meta` the greatest common divisor of every width this database was written with — of the
    /// stored starts themselves the first time — so keyed reads (``read(_:hourly:series:)``) find every row
    /// even after the width was changed.
    public func noteBucketWidth(_ width: Int64) throws(StoreError) {
        precondition(width > 0)
        try connection.withLock { c throws(StoreError) in
            var grid = try Self.metaInt(c.db, "bucket_grid")
            if grid == nil {
                let starts = try Statement(c.db, "SELECT DISTINCT ts FROM rollup_1m")
                var g: Int64 = 0
                while try starts.step() { g = Self.gcd(g, starts.int64(0)) }
                grid = g
            }
            let updated = Self.gcd(grid ?? 0, width)
            if updated != grid { try Self.setMeta(c.db, "bucket_grid", updated) }
            reader.withLock { $0.bucketGrid = updated }
        }
    }

    static func gcd(_ a: Int64, _ b: Int64) -> Int64 {
        var (x, y) = (a.magnitude, b.magnitude)
        while y != 0 { (x, y) = (y, x % y) }
        return Int64(x)
    }

    /// Every stored series (measurement and tags), read through the queries' connection (`SHOW` statements).
    public func allSeries() throws(StoreError) -> [SeriesInfo] {
        try withReader { r, _ throws(StoreError) in
            let rows = try Statement(r.db, "SELECT hash, measurement, tags FROM series")
            var out: [SeriesInfo] = []
            while try rows.step() {
                out.append(
                    SeriesInfo(
                        id: UInt64(bitPattern: rows.int64(0)), measurement: rows.text(1),
                        tags: Self.decodeTags(rows.text(2))))
            }
            return out
        }
    }

    /// Where WAL replay starts, and per stored bucket the highest WAL position it holds.
    public func walState() throws(StoreError) -> (replayFrom: UInt64, watermarks: [Int64: UInt64]) {
        try connection.withLock { c throws(StoreError) in
            var from: UInt64 = 0
            let meta = try Statement(c.db, "SELECT value FROM meta WHERE key = 'wal_replay_from'")
            if try meta.step() { from = UInt64(meta.text(0)) ?? 0 }
            var marks: [Int64: UInt64] = [:]
            let rows = try Statement(c.db, "SELECT ts, wal_position FROM flushed")
            while try rows.step() { marks[rows.int64(0)] = UInt64(bitPattern: rows.int64(1)) }
            return (from, marks)
        }
    }

    /// Persists batch-dedup entries and drops expired ones.
    public func saveDedup(_ entries: [(high: UInt64, low: UInt64, expires: Int64)], now: Int64) throws(StoreError) {
        try connection.withLock { c throws(StoreError) in
            try Self.execute(c.db, "BEGIN", context: "saving dedup entries")
            let insert = try Statement(
                c.db, "INSERT OR REPLACE INTO dedup(hash_high, hash_low, expires) VALUES(?1, ?2, ?3)")
            for e in entries {
                try insert.bind(1, Int64(bitPattern: e.high))
                try insert.bind(2, Int64(bitPattern: e.low))
                try insert.bind(3, e.expires)
                _ = try insert.step()
                insert.reset()
            }
            let prune = try Statement(c.db, "DELETE FROM dedup WHERE expires <= ?1")
            try prune.bind(1, now)
            _ = try prune.step()
            try Self.execute(c.db, "COMMIT", context: "saving dedup entries")
        }
    }

    public func loadDedup() throws(StoreError) -> [(high: UInt64, low: UInt64, expires: Int64)] {
        try connection.withLock { c throws(StoreError) in
            let rows = try Statement(c.db, "SELECT hash_high, hash_low, expires FROM dedup")
            var out: [(high: UInt64, low: UInt64, expires: Int64)] = []
            while try rows.step() {
                out.append((UInt64(bitPattern: rows.int64(0)), UInt64(bitPattern: rows.int64(1)), rows.int64(2)))
            }
            return out
        }
    }

    /// Runs `sql` (tests only: fault injection with triggers).
    func executeForTesting(_ sql: String) throws(StoreError) { try execute(sql, context: "test") }

    /// Merges `bucket` into the hourly tier directly (tests only; the daemon fills it by downsampling).
    func storeHourlyForTesting(_ bucket: ClosedBucket) throws(StoreError) {
        try connection.withLock { c throws(StoreError) in
            try RowWriter(c.db, table: "rollup_1h").write(bucket, merging: true, connection: &c)
            publish(&c)
        }
    }

    /// Merges `bucket` into the 1-minute tier in a transaction that stays open (the writer's lock held) while
    /// `body` runs, then commits (tests only: reads during a long flush).
    func storeForTesting(_ bucket: ClosedBucket, whileWriting body: @Sendable () -> Void) throws(StoreError) {
        try connection.withLock { c throws(StoreError) in
            let db = c.db
            try transaction(&c, "test") { c throws(StoreError) in
                try RowWriter(db, table: "rollup_1m").write(bucket, merging: true, connection: &c)
                body()
            }
        }
    }

    func setSchemaVersionForTesting(_ version: Int64) throws(StoreError) {
        try connection.withLock { c throws(StoreError) in try Self.setMeta(c.db, "schema_version", version) }
    }

    /// Number of stored 1-minute rows (one per series and minute, holding all its fields).
    public func rowCount() throws(StoreError) -> Int {
        try connection.withLock { c throws(StoreError) in
            let s = try Statement(c.db, "SELECT count(*) FROM rollup_1m")
            _ = try s.step()
            return Int(s.int64(0))
        }
    }
}

/// A prepared statement, finalized on deinit. Used only while the connection's lock is held.
final class Statement {
    let handle: OpaquePointer
    let db: OpaquePointer

    init(_ db: OpaquePointer, _ sql: String) throws(StoreError) {
        var h: OpaquePointer?
        let rc = sqlite3_prepare_v2(db, sql, -1, &h, nil)
        guard rc == SQLITE_OK, let h else {
            throw StoreError(code: rc, message: String(cString: sqlite3_errmsg(db)), context: "preparing \(sql)")
        }
        handle = h
        self.db = db
    }

    deinit { sqlite3_finalize(handle) }

    func check(_ rc: Int32, _ what: String) throws(StoreError) {
        guard rc == SQLITE_OK else {
            throw StoreError(code: rc, message: String(cString: sqlite3_errmsg(db)), context: what)
        }
    }

    func bind(_ i: Int32, _ v: Int64) throws(StoreError) { try check(sqlite3_bind_int64(handle, i, v), "bind") }
    func bind(_ i: Int32, _ v: String) throws(StoreError) {
        try check(sqlite3_bind_text(handle, i, v, -1, csqlite_transient()), "bind")
    }
    func bind(_ i: Int32, _ v: [UInt8]) throws(StoreError) {
        let rc = v.withUnsafeBytes {
            sqlite3_bind_blob(handle, i, $0.baseAddress, Int32($0.count), csqlite_transient())
        }
        try check(rc, "bind")
    }

    /// Binds `bytes` to parameter `i` without copying them (SQLITE_STATIC) and steps while they are pinned.
    func stepBinding(blob bytes: borrowing ByteWriter, at i: Int32) throws(StoreError) -> Bool {
        try bytes.withUnsafeBytes { (buffer: UnsafeRawBufferPointer) -> Result<Bool, StoreError> in
            Result { () throws(StoreError) in try stepBinding(blob: buffer, at: i) }
        }.get()
    }

    /// Binds `buffer` to parameter `i` without copying it and steps; it is unbound before returning.
    func stepBinding(blob buffer: UnsafeRawBufferPointer, at i: Int32) throws(StoreError) -> Bool {
        let bound = sqlite3_bind_blob(handle, i, buffer.baseAddress, Int32(buffer.count), nil)
        var rc = SQLITE_OK
        if bound == SQLITE_OK {
            rc = sqlite3_step(handle)
            // The bytes are only borrowed for this step: unbind before they can move.
            sqlite3_bind_null(handle, i)
        }
        try check(bound, "bind")
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        throw StoreError(code: rc, message: String(cString: sqlite3_errmsg(db)), context: "step")
    }

    /// Steps once: `true` for a row, `false` when done.
    func step() throws(StoreError) -> Bool {
        let rc = sqlite3_step(handle)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        throw StoreError(code: rc, message: String(cString: sqlite3_errmsg(db)), context: "step")
    }

    func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }
    func text(_ column: Int32) -> String {
        guard let p = sqlite3_column_text(handle, column) else { return "" }
        return String(cString: p)
    }
    func blob(_ column: Int32) -> [UInt8] {
        let n = Int(sqlite3_column_bytes(handle, column))
        guard n > 0, let p = sqlite3_column_blob(handle, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: n))
    }
}

/// The `data` of one rollup row: every field of one series in one bucket.
///
/// Layout: format version (``FieldRollup/formatVersion``), number of fields (varint), then per field (in the
/// order first seen): field id (varint, from the `fields` table), rollup length (varint), the rollup
/// (``FieldRollup/write(to:base:)``, times relative to the bucket start for the first field and to the previous
/// field's ``FieldRollup/timeAnchor`` after that). The length lets a reader skip fields it does not want.
enum PackedRow {
    /// Starts a row of `fields` fields; append each with ``append(_:_:base:into:)``, `base` starting at the
    /// bucket start.
    static func begin(fields: Int, into w: inout ByteWriter) {
        w.reset()
        header(fields: fields, into: &w)
    }

    /// The row header alone, appended after what `w` holds (rows encoded back to back).
    static func header(fields: Int, into w: inout ByteWriter) {
        w.u8(FieldRollup.formatVersion)
        w.varint(UInt64(fields))
    }

    static func append(_ field: Int64, _ rollup: FieldRollup, base: inout Int64, into w: inout ByteWriter) {
        w.varint(UInt64(bitPattern: field))
        let mark = w.beginLength()
        rollup.write(to: &w, base: base)
        w.endLength(mark)
        base = rollup.timeAnchor
    }

    static func encode(_ fields: [(field: Int64, rollup: FieldRollup)], start: Int64, into w: inout ByteWriter) {
        begin(fields: fields.count, into: &w)
        var base = start
        for field in fields { append(field.field, field.rollup, base: &base, into: &w) }
    }

    /// The fields of a row (only field `only`, when given); `nil` when the bytes are malformed or of a newer format.
    static func decode(_ bytes: [UInt8], start: Int64, only: Int64? = nil) -> [(field: Int64, rollup: FieldRollup)]? {
        var out: [(field: Int64, rollup: FieldRollup)] = []
        let ok = visit(
            bytes, start: start, sketches: true, wanted: { only == nil || $0 == only }, each: { out.append(($0, $1)) })
        return ok ? out : nil
    }

    /// Calls `body` with each field of a row that `wanted` accepts, in order; `false` when the bytes are malformed
    /// or of a newer format (`body` may have been called for the fields before the fault). Unwanted fields are
    /// stepped over by their length after reading only their time anchor (the next field's times are relative to
    /// it); with `sketches` false quantile sketches are skipped too. Nothing is allocated for what is skipped.
    static func visit(
        _ bytes: [UInt8], start: Int64, sketches: Bool, wanted: (Int64) -> Bool, stopAfter: Int = .max,
        each body: (Int64, consuming FieldRollup) -> Void
    ) -> Bool {
        walk(
            bytes, start: start, wanted: { wanted($0) ? $0 : nil }, stopAfter: stopAfter,
            read: { field, r, base, end, version in
                guard let rollup = FieldRollup(reading: &r, base: base, sketches: sketches, version: version),
                    r.offset == end
                else {
                    return nil
                }
                let anchor = rollup.timeAnchor
                body(field, rollup)
                return anchor
            })
    }

    /// ``visit(_:start:sketches:wanted:stopAfter:each:)`` for summaries (``FieldSummary``): `wanted` gives a
    /// wanted field's index (the caller's numbering) or `nil`; `body` gets the index and the summary.
    static func visitSummaries(
        _ bytes: [UInt8], start: Int64, wanted: (Int64) -> Int?, stopAfter: Int = .max,
        each body: (Int, FieldSummary) -> Void
    ) -> Bool {
        walk(bytes, start: start, wanted: wanted, stopAfter: stopAfter) { index, r, base, end, version in
            // A summary stops where what it needs ends (before a numeric cell's points, a string's bytes).
            guard let summary = FieldSummary(reading: &r, base: base, version: version), r.offset <= end else {
                return nil
            }
            body(index, summary)
            return summary.timeAnchor
        }
    }

    /// The fields of a row in order: `read` gets each field `wanted` accepts (what `wanted` gave for it, the reader
    /// at its rollup, the base its times are relative to, and the offset where it ends) and returns the field's
    /// time anchor, or `nil` when it is malformed; other fields are stepped over after their anchor. `false` when
    /// the bytes are malformed or of a newer format; once `stopAfter` fields were read the rest is not looked at.
    private static func walk<W>(
        _ bytes: [UInt8], start: Int64, wanted: (Int64) -> W?, stopAfter: Int,
        read: (W, inout ByteReader, Int64, Int, UInt8) -> Int64?
    ) -> Bool {
        var found = 0
        var r = ByteReader(bytes)
        guard let version = r.u8(), version >= FieldRollup.oldestReadableVersion,
            version <= FieldRollup.formatVersion, let n = r.varint(), n <= UInt64(bytes.count)
        else { return false }
        var base = start
        for _ in 0..<n {
            guard let word = r.varint(), let length = r.varint(), length <= UInt64(bytes.count - r.offset) else {
                return false
            }
            let end = r.offset + Int(length)
            if let w = wanted(Int64(bitPattern: word)) {
                guard let anchor = read(w, &r, base, end, version) else { return false }
                base = anchor
                r.seek(to: end)
                found += 1
                // Every wanted field seen: the rest of the row is not read (nor checked).
                if found == stopAfter { return true }
            } else {
                guard let anchor = FieldRollup.timeAnchor(reading: &r, base: base, version: version), r.offset <= end
                else {
                    return false
                }
                base = anchor
                r.seek(to: end)
            }
        }
        return r.atEnd
    }
}

// MARK: - The query engine's view

extension SQLiteStore: SeriesCatalog {
    public func catalogSeries() throws -> [SeriesInfo] { try allSeries() }

    public func catalogFields() throws -> [String: [String: FieldType]] { try fieldTypes() }

    public func catalogFields(of measurement: String) throws -> [String: FieldType] {
        try withReader { r, _ throws(StoreError) in
            let rows = try Statement(r.db, "SELECT field, type FROM measurement_fields WHERE measurement = ?1")
            try rows.bind(1, measurement)
            var out: [String: FieldType] = [:]
            while try rows.step() { out[rows.text(0)] = FieldType(rawValue: rows.text(1)) ?? .float }
            return out
        }
    }

    public func catalogTagKeys(of measurement: String) throws -> Set<String> {
        try withReader { r, _ throws(StoreError) in
            var keys = Set<String>()
            for s in try Self.series(of: measurement, in: &r) { for t in s.info.tags { keys.insert(t.key) } }
            return keys
        }
    }

    /// The fields of each stored measurement with their types (the `measurement_fields` table).
    public func fieldTypes() throws(StoreError) -> [String: [String: FieldType]] {
        try withReader { r, _ throws(StoreError) in
            let rows = try Statement(r.db, "SELECT measurement, field, type FROM measurement_fields")
            var out: [String: [String: FieldType]] = [:]
            while try rows.step() {
                out[rows.text(0), default: [:]][rows.text(1)] = FieldType(rawValue: rows.text(2)) ?? .float
            }
            return out
        }
    }

    /// One stored tier as a ``CellSource``: the 1-minute rows, or the hourly ones.
    public func tier(hourly: Bool) -> Tier { Tier(store: self, hourly: hourly) }

    public struct Tier: CellSource {
        public let store: SQLiteStore
        public let hourly: Bool

        public func visitCells(
            _ read: CellRead, series accept: ((SeriesInfo) -> Bool)?,
            _ body: (Int64, SeriesInfo, Int, consuming FieldRollup) -> Void
        ) throws {
            var generation: UInt64 = 0
            try visitCells(read, series: accept, generation: &generation, body)
        }

        /// ``visitCells(_:series:_:)`` in one snapshot, whose store generation goes to `generation`.
        public func visitCells(
            _ read: CellRead, series accept: ((SeriesInfo) -> Bool)?, generation: inout UInt64,
            _ body: (Int64, SeriesInfo, Int, consuming FieldRollup) -> Void
        ) throws {
            // Cells come in runs of one field: the last one is looked up before hashing.
            let fields = read.fields ?? []
            var last: (name: String, index: Int)?
            _ = try store.visit(read, hourly: hourly, series: accept, generation: &generation) {
                start, series, field, rollup in
                let f: Int
                if let last, last.name == field {
                    f = last.index
                } else {
                    guard let known = fields.firstIndex(of: field) else { return }
                    f = known
                    last = (field, known)
                }
                body(start, series, f, rollup)
            }
        }

        public func visitSummaries(
            _ read: CellRead, series accept: ((SeriesInfo) -> Bool)?,
            _ body: (Int64, SeriesInfo, Int, FieldSummary) -> Void
        ) throws {
            _ = try store.visitSummaries(read, hourly: hourly, series: accept, body)
        }

        /// ``visitSummaries(_:series:_:)`` in one snapshot, whose store generation goes to `generation`.
        public func visitSummaries(
            _ read: CellRead, series accept: ((SeriesInfo) -> Bool)?, generation: inout UInt64,
            _ body: (Int64, SeriesInfo, Int, FieldSummary) -> Void
        ) throws {
            _ = try store.visitSummaries(read, hourly: hourly, series: accept, generation: &generation, body)
        }
    }
}
