import CSQLite
import Dispatch
public import Rollups
import Synchronization

/// The write pipeline: closed buckets into packed rows, one transaction per store.
extension SQLiteStore {
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
            // drop_newest with the backlog full: stored, not queued (counted).
            let queueing = recordsOutbox && !outboxPaused.load(ordering: .relaxed)
            try transaction(&c, "flush") { c throws(StoreError) in
                let minutes = try RowWriter(db, table: "rollup_1m", outbox: queueing)
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
                        queueing && exists
                        ? try Self.pendingWholeEntry(db, start: bucket.start, readThrough: c.outboxReadThrough) : nil
                    try minutes.write(bucket, merging: exists, connection: &c)
                    // A new bucket is queued for forwarding whole, in one entry (merged rows queue themselves).
                    if queueing && !exists && !bucket.cells.isEmpty {
                        try Self.queue(db, start: bucket.start, series: nil)
                    }
                    if recordsOutbox && !queueing {
                        var ids = Set<UInt64>()
                        for cell in bucket.cells { ids.insert(cell.series.id) }
                        outboxSkippedRows.add(ids.count, ordering: .relaxed)
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
    final class RowWriter {
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
        let tier: Tier

        init(_ db: OpaquePointer, table: String, outbox: Bool = false) throws(StoreError) {
            tier = table == Tier.hours.table ? .hours : .minutes
            self.outbox = outbox ? try Statement(db, "INSERT INTO outbox(ts, series) VALUES(?1, ?2)") : nil
            select = try Statement(db, "SELECT data FROM \(table) WHERE ts = ?1 AND series = ?2")
            upsert = try Statement(db, "INSERT OR REPLACE INTO \(table)(ts, series, data) VALUES(?1, ?2, ?3)")
            // A bucket with no stored rows yet: plain inserts (no conflict handling, no statement journal).
            insert = try Statement(db, "INSERT INTO \(table)(ts, series, data) VALUES(?1, ?2, ?3)")
        }

        /// Stores `bucket`'s cells; with `merging`, each series' row is first read and merged with (the only way a
        /// stored row changes: merged into, never overwritten).
        func write(_ bucket: ClosedBucket, merging: Bool, connection c: inout Connection) throws(StoreError) {
            c.changes.starts[tier.rawValue].insert(bucket.start)
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

        func fieldID(_ name: String, in c: inout Connection) throws(StoreError) -> Int64 {
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

    /// The id of a field name in the `fields` dictionary, adding it when new.
    static func fieldID(for name: String, in c: inout Connection) throws(StoreError) -> Int64 {
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
    static func remember(field name: String, id: Int64, in c: inout Connection) -> Int64 {
        c.fieldIDs[name] = id
        c.fieldNames[id] = name
        return id
    }

    static func fieldName(_ id: Int64, in c: inout Connection) throws(StoreError) -> String {
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

    static func seriesID(for series: SeriesInfo, in c: inout Connection) throws(StoreError) -> Int64 {
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
}
