import CSQLite
import Foundation
public import Rollups
import Synchronization

/// The outbox: stored minutes queued for forwarding to InfluxDB, read in order and released on success.
extension SQLiteStore {
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
        /// The series' row id in this store (unlike ``SeriesInfo/id``, a hash, it never collides).
        public var rowID: Int64
        public var series: SeriesInfo
        public var fields: [(name: String, rollup: FieldRollup)]
        /// The stored row's size (what `[influx] max_backlog` counts).
        public var bytes = 0
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
                        if let row = try outboxRow(start: start, series: id, data: whole.blob(1), in: &c) {
                            rows.append(row)
                        }
                    }
                    whole.reset()
                    if rows.count < limit || fetched == 0 { position.series = OutboxCursor.done }
                } else {
                    let id = entries.int64(2)
                    try one.bind(1, start)
                    try one.bind(2, id)
                    if try one.step(), let row = try outboxRow(start: start, series: id, data: one.blob(0), in: &c) {
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

    func outboxRow(start: Int64, series id: Int64, data: [UInt8], in c: inout Connection)
        throws(StoreError) -> OutboxRow?
    {
        // The fields are decoded straight into the row with their names (one array, no intermediate list).
        var named: [(name: String, rollup: FieldRollup)] = []
        named.reserveCapacity(PackedRow.fieldCount(data) ?? 0)
        var unnamed: StoreError?
        let decoded = PackedRow.visit(
            data, start: start, sketches: true, wanted: { _ in true },
            each: { field, rollup in
                guard unnamed == nil else { return }
                do throws(StoreError) {
                    named.append((try Self.fieldName(field, in: &c), rollup))
                } catch {
                    unnamed = error
                }
            })
        guard decoded else {
            // A row that does not decode (a damaged page): copied aside with its position, counted, skipped — the
            // rows after it are sent.
            let q = try Statement(
                c.db,
                "INSERT INTO quarantine(at, source, ts, series, data, reason) VALUES(?1, 'outbox', ?2, ?3, ?4, ?5)")
            try q.bind(1, Int64(Date().timeIntervalSince1970 * 1e9))
            try q.bind(2, start)
            try q.bind(3, id)
            try q.bind(4, data)
            try q.bind(5, "the row of series \(id) at \(start) does not decode (\(data.count) bytes)")
            _ = try q.step()
            quarantinedRowCount.add(1, ordering: .relaxed)
            return nil
        }
        let info: SeriesInfo
        if let known = c.seriesByRow[id] {
            info = known
        } else {
            let s = try Statement(c.db, "SELECT hash, measurement, tags FROM series WHERE id = ?1")
            try s.bind(1, id)
            guard try s.step() else { return nil }
            info = SeriesInfo(
                id: UInt64(bitPattern: s.int64(0)), measurement: s.text(1), tags: Self.decodeTags(s.text(2)))
            c.seriesByRow[id] = info
        }
        if let unnamed { throw unnamed }
        var row = OutboxRow(start: start, rowID: id, series: info, fields: named)
        row.bytes = data.count
        return row
    }

    /// Quarantined rows, oldest first: when, where from, their position (minute and series id), why, and size.
    public func quarantined(limit: Int = 100) throws(StoreError) -> [(
        at: Int64, source: String, start: Int64, series: Int64, reason: String, bytes: Int
    )] {
        try connection.withLock { c throws(StoreError) in
            let s = try Statement(
                c.db, "SELECT at, source, ts, series, reason, length(data) FROM quarantine ORDER BY id LIMIT ?1")
            try s.bind(1, Int64(limit))
            var out: [(Int64, String, Int64, Int64, String, Int)] = []
            while try s.step() {
                out.append((s.int64(0), s.text(1), s.int64(2), s.int64(3), s.text(4), Int(s.int64(5))))
            }
            return out
        }
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

    /// How many rows the store's connection has inserted, updated or deleted since it opened (SQLite's
    /// `total_changes`, every table, rolled back or not): while it and the cursor stand still, so does the backlog.
    public func changeCount() -> Int64 {
        connection.withLock { c in sqlite3_total_changes64(c.db) }
    }

    /// What is still to forward after `cursor`: distinct minutes, rows (points) and the bytes of those rows as
    /// stored (what `[influx] max_backlog` bounds).
    public func outboxBacklog(after cursor: OutboxCursor) throws(StoreError) -> (minutes: Int, points: Int, bytes: Int)
    {
        var minutes = Set<Int64>()
        var points = 0
        var bytes = 0
        try visitOutbox(after: cursor) { _, start, rows, size in
            minutes.insert(start)
            points += rows
            bytes += size
            return true
        }
        return (minutes.count, points, bytes)
    }

    /// Each outbox entry after `cursor`, in order, with its minute and the rows and bytes still to send of it, until
    /// `body` answers false.
    private func visitOutbox(
        after cursor: OutboxCursor, _ body: (_ seq: Int64, _ start: Int64, _ rows: Int, _ bytes: Int) -> Bool
    ) throws(StoreError) {
        try connection.withLock { c throws(StoreError) in
            let db = c.db
            let entries = try Statement(db, "SELECT seq, ts, series FROM outbox WHERE seq >= ?1 ORDER BY seq")
            try entries.bind(1, cursor.seq)
            let whole = try Statement(
                db, "SELECT count(*), coalesce(sum(length(data)), 0) FROM rollup_1m WHERE ts = ?1 AND series > ?2")
            let one = try Statement(db, "SELECT length(data) FROM rollup_1m WHERE ts = ?1 AND series = ?2")
            while try entries.step() {
                let seq = entries.int64(0)
                let after = seq == cursor.seq ? cursor.series : -1
                guard after != OutboxCursor.done else { continue }
                let start = entries.int64(1)
                var rows = 0
                var size = 0
                if sqlite3_column_type(entries.handle, 2) == SQLITE_NULL {
                    try whole.bind(1, start)
                    try whole.bind(2, after)
                    _ = try whole.step()
                    rows = Int(whole.int64(0))
                    size = Int(whole.int64(1))
                    whole.reset()
                } else {
                    try one.bind(1, start)
                    try one.bind(2, entries.int64(2))
                    if try one.step() {
                        rows = 1
                        size = Int(one.int64(0))
                    }
                    one.reset()
                }
                if !body(seq, start, rows, size) { break }
            }
        }
    }

    /// `[influx] backlog_policy = "drop_oldest"`: steps the cursor over the oldest entries after `cursor` until at
    /// least `bytes` of the backlog are freed (those minutes stay stored here, unforwarded). Returns the new cursor
    /// and the points and bytes dropped; the cursor is persisted.
    public func dropOldestOutbox(after cursor: OutboxCursor, atLeast bytes: Int) throws(StoreError) -> (
        cursor: OutboxCursor, points: Int, bytes: Int
    ) {
        var freed = 0
        var points = 0
        var last: Int64?
        try visitOutbox(after: cursor) { seq, _, rows, size in
            freed += size
            points += rows
            last = seq
            return freed < bytes
        }
        guard let last else { return (cursor, 0, 0) }
        let next = OutboxCursor(seq: last, series: OutboxCursor.done)
        try advanceOutbox(to: next)
        return (next, points, freed)
    }
}
