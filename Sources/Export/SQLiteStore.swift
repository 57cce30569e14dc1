import CSQLite
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
        /// Prepared once, reused for every new series.
        var insertSeries: Statement?
        var selectSeries: Statement?
    }

    private let connection: Mutex<Connection>
    public let path: String

    /// Opens (creating if needed) the database at `path` and applies the schema migrations.
    public init(path: String) throws(StoreError) {
        self.path = path
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let db = handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite3_close(handle)
            throw StoreError(code: rc, message: message, context: "opening \(path)")
        }
        sqlite3_busy_timeout(db, 5_000)
        connection = Mutex(Connection(db: db))
        try execute(
            """
            PRAGMA journal_mode = WAL;
            PRAGMA synchronous = NORMAL;
            PRAGMA cache_size = -65536;
            PRAGMA temp_store = MEMORY;
            CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS series(
                id INTEGER PRIMARY KEY,
                hash INTEGER NOT NULL,
                measurement TEXT NOT NULL,
                tags TEXT NOT NULL,
                UNIQUE(measurement, tags));
            CREATE INDEX IF NOT EXISTS series_by_hash ON series(hash);
            \(Self.rollupTable("rollup_1m"))
            \(Self.rollupTable("rollup_1h"))
            CREATE TABLE IF NOT EXISTS flushed(ts INTEGER PRIMARY KEY, wal_position INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS dedup(
                hash_high INTEGER NOT NULL, hash_low INTEGER NOT NULL, expires INTEGER NOT NULL,
                PRIMARY KEY(hash_high, hash_low));
            INSERT OR IGNORE INTO meta(key, value) VALUES('schema_version', '1');
            """,
            context: "creating the schema"
        )
    }

    /// Both tiers share one layout: bucket start, series, field, and the serialized rollup.
    static func rollupTable(_ name: String) -> String {
        """
        CREATE TABLE IF NOT EXISTS \(name)(
            ts INTEGER NOT NULL,
            series INTEGER NOT NULL,
            field TEXT NOT NULL,
            kind INTEGER NOT NULL,
            count INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY(ts, series, field)) WITHOUT ROWID;
        """
    }

    deinit {
        _ = connection.withLock { c in
            c.insertSeries = nil
            c.selectSeries = nil
            return sqlite3_close_v2(c.db)
        }
    }

    private func execute(_ sql: String, context: String) throws(StoreError) {
        try connection.withLock { c throws(StoreError) in try Self.execute(c.db, sql, context: context) }
    }

    private static func execute(_ db: OpaquePointer, _ sql: String, context: String) throws(StoreError) {
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
    /// and (when given) the position replay must start from after a crash.
    public func store(_ buckets: [ClosedBucket], replayFrom: UInt64?) throws(StoreError) {
        guard buckets.contains(where: { !$0.cells.isEmpty }) || replayFrom != nil else { return }
        try connection.withLock { c throws(StoreError) in
            let db = c.db
            try Self.execute(db, "BEGIN IMMEDIATE", context: "starting a flush")
            do {
                let select = try Statement(
                    db, "SELECT data FROM rollup_1m WHERE ts = ?1 AND series = ?2 AND field = ?3")
                let upsert = try Statement(
                    db,
                    "INSERT OR REPLACE INTO rollup_1m(ts, series, field, kind, count, data) VALUES(?1, ?2, ?3, ?4, ?5, ?6)"
                )
                let probe = try Statement(db, "SELECT 1 FROM rollup_1m WHERE ts = ?1 LIMIT 1")
                let watermark = try Statement(
                    db,
                    "INSERT INTO flushed(ts, wal_position) VALUES(?1, ?2)"
                        + " ON CONFLICT(ts) DO UPDATE SET wal_position = max(wal_position, excluded.wal_position)"
                )
                let downsampledThrough = try Self.metaInt(db, "downsampled_through") ?? .min
                var hourly: [ClosedBucket] = []
                for bucket in buckets {
                    // A minute of an hour already downsampled (late data) merges into the hour row as well, so
                    // the 1h tier always equals the merge of its 1m rows.
                    if Self.hourStart(bucket.start) < downsampledThrough {
                        hourly.append(ClosedBucket(start: Self.hourStart(bucket.start), cells: bucket.cells))
                    }
                    // A bucket never stored before needs no read-merge per cell: the common case of a flush.
                    try probe.bind(1, bucket.start)
                    let exists = try probe.step()
                    probe.reset()
                    if bucket.walPosition > 0 {
                        try watermark.bind(1, bucket.start)
                        try watermark.bind(2, Int64(bitPattern: bucket.walPosition))
                        _ = try watermark.step()
                        watermark.reset()
                    }
                    // Insert in key order (series id, field) so SQLite appends to the B-tree instead of seeking.
                    var ids: [Int64] = []
                    ids.reserveCapacity(bucket.cells.count)
                    for cell in bucket.cells { ids.append(try Self.seriesID(for: cell.series, in: &c)) }
                    let order = bucket.cells.indices.sorted {
                        ids[$0] != ids[$1] ? ids[$0] < ids[$1] : bucket.cells[$0].field < bucket.cells[$1].field
                    }
                    for index in order {
                        try Self.write(
                            bucket.cells[index],
                            start: bucket.start,
                            seriesID: ids[index],
                            mergingWith: exists ? select : nil,
                            upsert: upsert
                        )
                    }
                }
                if !hourly.isEmpty { try Self.merge(hourly, into: "rollup_1h", db: db, connection: &c) }
                if let replayFrom {
                    let meta = try Statement(
                        db, "INSERT OR REPLACE INTO meta(key, value) VALUES('wal_replay_from', ?1)")
                    try meta.bind(1, String(replayFrom))
                    _ = try meta.step()
                }
                try Self.execute(db, "COMMIT", context: "committing a flush")
            } catch let error as StoreError {
                try? Self.execute(db, "ROLLBACK", context: "rolling back")
                throw error
            } catch {
                try? Self.execute(db, "ROLLBACK", context: "rolling back")
                throw StoreError(code: SQLITE_ERROR, message: "\(error)", context: "flush")
            }
        }
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

    /// Merges cells into `table` (read, merge, write per cell). Used for the 1h tier.
    private static func merge(
        _ buckets: [ClosedBucket],
        into table: String,
        db: OpaquePointer,
        connection c: inout Connection
    ) throws(StoreError) {
        let select = try Statement(db, "SELECT data FROM \(table) WHERE ts = ?1 AND series = ?2 AND field = ?3")
        let upsert = try Statement(
            db,
            "INSERT OR REPLACE INTO \(table)(ts, series, field, kind, count, data) VALUES(?1, ?2, ?3, ?4, ?5, ?6)"
        )
        for bucket in buckets {
            for cell in bucket.cells {
                let seriesID = try seriesID(for: cell.series, in: &c)
                try write(cell, start: bucket.start, seriesID: seriesID, mergingWith: select, upsert: upsert)
            }
        }
    }

    /// Writes one cell, first merging it with the stored row when `select` is given (the only way a row changes:
    /// stored rollups are merged into, never overwritten).
    private static func write(
        _ cell: ClosedCell,
        start: Int64,
        seriesID: Int64,
        mergingWith select: Statement?,
        upsert: Statement
    ) throws(StoreError) {
        var rollup = cell.rollup
        if let select {
            try select.bind(1, start)
            try select.bind(2, seriesID)
            try select.bind(3, cell.field)
            if try select.step(), var stored = FieldRollup(serialized: select.blob(0)) {
                stored.merge(rollup)
                rollup = stored
            }
            select.reset()
        }
        try upsert.bind(1, start)
        try upsert.bind(2, seriesID)
        try upsert.bind(3, cell.field)
        try upsert.bind(4, Int64(rollup.kind.rawValue))
        try upsert.bind(5, rollup.count)
        try upsert.bind(6, rollup.serialized())
        _ = try upsert.step()
        upsert.reset()
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
            try Self.execute(db, "BEGIN IMMEDIATE", context: "maintenance")
            do {
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
                        "SELECT r.series, r.field, r.data, s.hash, s.measurement, s.tags FROM rollup_1m r"
                            + " JOIN series s ON s.id = r.series WHERE r.ts >= ?1 AND r.ts < ?2"
                    )
                    try rows.bind(1, hour)
                    try rows.bind(2, hour + Self.hour)
                    var merged: [String: ClosedCell] = [:]
                    while try rows.step() {
                        guard let rollup = FieldRollup(serialized: rows.blob(2)) else { continue }
                        let key = "\(rows.int64(0))\u{0}\(rows.text(1))"
                        if var existing = merged[key] {
                            existing.rollup.merge(rollup)
                            merged[key] = existing
                        } else {
                            let info = SeriesInfo(
                                id: UInt64(bitPattern: rows.int64(3)),
                                measurement: rows.text(4),
                                tags: Self.decodeTags(rows.text(5))
                            )
                            c.seriesIDs[info.id] = rows.int64(0)
                            merged[key] = ClosedCell(series: info, field: rows.text(1), rollup: rollup)
                        }
                    }
                    try Self.merge(
                        [ClosedBucket(start: hour, cells: Array(merged.values))],
                        into: "rollup_1h",
                        db: db,
                        connection: &c
                    )
                    try Self.setMeta(db, "downsampled_through", hour + Self.hour)
                    done = hour
                }
                let downsampled = try Self.metaInt(db, "downsampled_through") ?? .min
                let cut1m = try Statement(db, "DELETE FROM rollup_1m WHERE ts < ?1")
                try cut1m.bind(1, min(now - retention1m, downsampled))
                _ = try cut1m.step()
                let cut1h = try Statement(db, "DELETE FROM rollup_1h WHERE ts < ?1")
                try cut1h.bind(1, now - retention1h)
                _ = try cut1h.step()
                let cutFlushed = try Statement(db, "DELETE FROM flushed WHERE ts < ?1")
                try cutFlushed.bind(1, now - retention1m)
                _ = try cutFlushed.step()
                try Self.execute(db, "COMMIT", context: "maintenance")
                return done
            } catch let error as StoreError {
                try? Self.execute(db, "ROLLBACK", context: "maintenance")
                throw error
            } catch {
                try? Self.execute(db, "ROLLBACK", context: "maintenance")
                throw StoreError(code: SQLITE_ERROR, message: "\(error)", context: "maintenance")
            }
        }
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
        try select.bind(1, series.measurement)
        try select.bind(2, tags)
        guard try select.step() else {
            throw StoreError(code: SQLITE_ERROR, message: "series row missing", context: "storing \(series)")
        }
        let id = select.int64(0)
        c.seriesIDs[series.id] = id
        return id
    }

    // MARK: - Reading

    public func storedCells(measurement: String, field: String?, from: Int64, to: Int64) throws(StoreError)
        -> [(start: Int64, cell: ClosedCell)]
    {
        try storedCells(measurement: measurement, field: field, from: from, to: to, table: "rollup_1m")
    }

    /// Stored 1-hour rollups (bucket starts are hour starts).
    public func hourlyCells(measurement: String, field: String?, from: Int64, to: Int64) throws(StoreError)
        -> [(start: Int64, cell: ClosedCell)]
    {
        try storedCells(measurement: measurement, field: field, from: from, to: to, table: "rollup_1h")
    }

    func storedCells(measurement: String, field: String?, from: Int64, to: Int64, table: String) throws(StoreError)
        -> [(start: Int64, cell: ClosedCell)]
    {
        try connection.withLock { c throws(StoreError) in
            let db = c.db
            var series: [Int64: SeriesInfo] = [:]
            let list = try Statement(db, "SELECT id, hash, tags FROM series WHERE measurement = ?1")
            try list.bind(1, measurement)
            while try list.step() {
                series[list.int64(0)] = SeriesInfo(
                    id: UInt64(bitPattern: list.int64(1)),
                    measurement: measurement,
                    tags: Self.decodeTags(list.text(2))
                )
            }
            guard !series.isEmpty else { return [] }
            let sql =
                "SELECT ts, series, field, data FROM \(table) WHERE ts >= ?1 AND ts < ?2"
                + " AND series IN (SELECT id FROM series WHERE measurement = ?3)"
                + (field == nil ? "" : " AND field = ?4")
            let query = try Statement(db, sql)
            try query.bind(1, from)
            try query.bind(2, to)
            try query.bind(3, measurement)
            if let field { try query.bind(4, field) }
            var out: [(start: Int64, cell: ClosedCell)] = []
            while try query.step() {
                guard let info = series[query.int64(1)], let rollup = FieldRollup(serialized: query.blob(3)) else {
                    continue
                }
                out.append((query.int64(0), ClosedCell(series: info, field: query.text(2), rollup: rollup)))
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

    /// Number of stored 1-minute rows.
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
