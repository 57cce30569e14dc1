import CSQLite
import Rollups
import Synchronization

/// The schema and its migrations.
extension SQLiteStore {
    /// The schema this build writes. Version 1 (the first release) kept one row per field with its own blob;
    /// version 2 keeps one row per series and bucket with every field packed (4× fewer rows and B-tree inserts);
    /// version 3 adds the `events` table (``EventStore``); version 4 the `measurement_fields` table (each
    /// measurement's fields and their types, for `SHOW FIELD KEYS`) and rows of format 3 (cells that keep their
    /// points; format 2 rows are still read).
    public static let schemaVersion: Int64 = 4

    /// Creates the schema, or brings an older one up to ``schemaVersion`` in one transaction. A database from a
    /// newer metricsd is refused rather than misread.
    func migrate() throws(StoreError) {
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
                    CREATE TABLE IF NOT EXISTS quarantine(
                        id INTEGER PRIMARY KEY, at INTEGER NOT NULL, source TEXT NOT NULL, ts INTEGER NOT NULL,
                        series INTEGER NOT NULL, data BLOB NOT NULL, reason TEXT NOT NULL);
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
    static func migrateVersion1(_ table: String, connection c: inout Connection) throws(StoreError) {
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
    static func recordFieldTypesOfRecentRows(connection c: inout Connection) throws(StoreError) {
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
    static func recordFieldType(
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
}
