import CSQLite
public import Rollups
import Synchronization

/// Reading rollups back for queries: one snapshot per read, series chosen outside the reader's lock, keyed
/// lookups remembered (``RowCache``).
extension SQLiteStore {
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
            CellRead(measurement: measurement, fields: field.map { [$0] }, from: from, to: to), tier: .hours,
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
    public func read(_ read: CellRead, tier: Tier = .minutes, series accept: ((SeriesInfo) -> Bool)?)
        throws(StoreError) -> [(start: Int64, cell: ClosedCell)]
    {
        try readPlanned(read, tier: tier, series: accept).cells
    }

    /// ``read(_:hourly:series:)`` with the plan it took.
    public func readPlanned(_ read: CellRead, tier: Tier = .minutes, series accept: ((SeriesInfo) -> Bool)?)
        throws(StoreError) -> (cells: [(start: Int64, cell: ClosedCell)], plan: ReadPlan)
    {
        var cells: [(start: Int64, cell: ClosedCell)] = []
        let plan = try visit(read, tier: tier, series: accept) { start, series, field, rollup in
            cells.append((start, ClosedCell(series: series, field: field, rollup: rollup)))
        }
        return (cells, plan)
    }

    /// ``read(_:hourly:series:)`` without collecting: `body` gets each cell (bucket start, series, field name,
    /// rollup) as it is decoded, with the store's connection held (it must not call back into the store).
    public func visit(
        _ read: CellRead, tier: Tier = .minutes, series accept: ((SeriesInfo) -> Bool)?,
        _ body: (Int64, SeriesInfo, String, consuming FieldRollup) -> Void
    ) throws(StoreError) -> ReadPlan {
        var generation: UInt64 = 0
        return try visit(read, tier: tier, series: accept, generation: &generation, body)
    }

    /// ``visit(_:hourly:series:_:)`` in one snapshot of the store, whose generation (the stores of closed buckets
    /// it holds, ``committedGeneration``) goes to `generation`.
    public func visit(
        _ read: CellRead, tier: Tier = .minutes, series accept: ((SeriesInfo) -> Bool)?, generation: inout UInt64,
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
            if let grid = Self.keyedGrid(read, tier: tier, taken: taken.count, all: all, in: c) {
                var lookup = try KeyedLookup(c.db, tier: tier, grid: grid)
                let starts = Self.gridStarts(read, grid: grid)
                for (row, info) in taken {
                    try Self.check(read)
                    try lookup.rows(series: row, starts: starts, in: &c)
                    for (start, bytes) in lookup.found { collect(start, info, bytes) }
                }
                if let failure { throw failure }
                return .probe(series: taken.count)
            }
            let rows = try Self.scan(read, tier: tier, db: c.db)
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
    func inSnapshot<T: Sendable>(
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
    func choose(_ read: CellRead, _ accept: ((SeriesInfo) -> Bool)?) throws(StoreError) -> (
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
    static func check(_ read: CellRead) throws(StoreError) {
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
        _ read: CellRead, tier: Tier = .minutes, series accept: ((SeriesInfo) -> Bool)?,
        _ body: (Int64, SeriesInfo, Int, FieldSummary) -> Void
    ) throws(StoreError) -> ReadPlan {
        var generation: UInt64 = 0
        return try visitSummaries(read, tier: tier, series: accept, generation: &generation, body)
    }

    /// ``visitSummaries(_:hourly:series:_:)`` in one snapshot, whose generation goes to `generation`.
    public func visitSummaries(
        _ read: CellRead, tier: Tier = .minutes, series accept: ((SeriesInfo) -> Bool)?, generation: inout UInt64,
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
            guard let grid = Self.keyedGrid(read, tier: tier, taken: taken.count, all: all, in: c) else {
                let rows = try Self.scan(read, tier: tier, db: c.db)
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
            var lookup = try KeyedLookup(c.db, tier: tier, grid: grid)
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
                                tier: tier, grid: grid, blockStart: blockStart, series: row, field: ids[k].id)
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
                                tier: tier, grid: grid, blockStart: blockStart, series: row, field: ids[k].id,
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
    static func chosen(_ read: CellRead, in c: borrowing Reader) -> [(row: Int64, info: SeriesInfo)]? {
        read.condition.flatMap { c.chosenByCondition[read.measurement]?[$0] }
    }

    /// Remembers the series a read took by its condition text (when it has one). Bounded: at most 256 conditions
    /// per measurement and a million remembered series in all.
    static func remember(
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
    static func keyedGrid(_ read: CellRead, tier: Tier, taken: Int, all: Int, in c: borrowing Reader)
        -> Int64?
    {
        guard let grid = tier == .hours ? Self.hour : c.bucketGrid, read.keyed, (read.to - read.from) / grid <= 100_000,
            taken * 4 <= all || taken * Int((read.to - read.from) / grid) <= Self.keyedReadLimit
        else { return nil }
        return grid
    }

    /// The grid's bucket starts in `[read.from, read.to)`.
    static func gridStarts(_ read: CellRead, grid: Int64) -> StrideTo<Int64> {
        let q = read.from / grid
        let first = (read.from % grid > 0 ? q + 1 : q) * grid
        return stride(from: first, to: read.to, by: Int(grid))
    }

    /// The stored rows of the range, of the read's measurement: (bucket start, series row id, row bytes).
    static func scan(_ read: CellRead, tier: Tier, db: OpaquePointer) throws(StoreError) -> Statement {
        let query = try Statement(
            db,
            "SELECT ts, series, data FROM \(tier.table) WHERE ts >= ?1 AND ts < ?2"
                + " AND series IN (SELECT id FROM series WHERE measurement = ?3)")
        try query.bind(1, read.from)
        try query.bind(2, read.to)
        try query.bind(3, read.measurement)
        return query
    }

    /// Rows looked up by key (bucket start, series): from ``RowCache`` when it knows them, else one by one when
    /// few, else with one pass over the grid — and remembered, including bucket starts with no row.
    struct KeyedLookup {
        let tier: Tier
        let grid: Int64
        let single: Statement
        let range: Statement
        var missing: [Int64] = []
        /// What ``rows(series:starts:in:)`` found: (bucket start, row bytes), cached rows first.
        var found: [(start: Int64, bytes: [UInt8])] = []

        init(_ db: OpaquePointer, tier: Tier, grid: Int64) throws(StoreError) {
            let table = tier.table
            self.tier = tier
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
                if let bytes = c.rowCache.row(tier: tier, start: start, series: row) {
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
                    c.rowCache.remember(tier: tier, start: start, series: row, row: bytes)
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
                    c.rowCache.remember(tier: tier, start: start, series: row, row: bytes)
                    found.append((start, bytes))
                }
                range.reset()
                for start in unknown { c.rowCache.remember(tier: tier, start: start, series: row, row: []) }
            }
        }
    }

    /// Up to this many (series, bucket start) keys a read looks rows up by key, however many of the
    /// measurement's series it takes.
    static let keyedReadLimit = 50_000

    /// The stored series of `measurement` with their row ids, decoded once and cached until one is added.
    static func series(of measurement: String, in c: inout Reader) throws(StoreError) -> [(
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
    static func allFieldNames(in c: inout Reader) throws(StoreError) -> [Int64: String] {
        let list = try Statement(c.db, "SELECT id, name FROM fields")
        var out: [Int64: String] = [:]
        while try list.step() { out[list.int64(0)] = list.text(1) }
        return out
    }

    /// The id of a field name already stored, or `nil` (a read never adds names).
    static func existingFieldID(_ name: String, in c: inout Reader) throws(StoreError) -> Int64? {
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
}
