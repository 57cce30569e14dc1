import CSQLite
import Rollups
import Synchronization

/// Retention and downsampling, and folding SQLite's log into the database file.
extension SQLiteStore {
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
}
