import Foundation
import Synchronization
import Testing

@testable import Export
@testable import Rollups

@Suite struct SQLiteStoreTests {
    static func tempPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("store-\(UUID().uuidString).db").path
    }

    static func cell(_ series: SeriesInfo, _ field: String, _ values: [(Double, Int64)]) -> ClosedCell {
        var r = FieldRollup(kind: .numeric)
        for (v, t) in values { r.add(v, at: t) }
        return ClosedCell(series: series, field: field, rollup: r)
    }

    @Test func rollupsSurviveSerialization() throws {
        var numeric = FieldRollup(kind: .numeric)
        for i in 0..<50 { numeric.add(Double(i) * 1.25 - 7, at: Int64(i)) }
        var boolean = FieldRollup(kind: .boolean)
        boolean.add(true, at: 5)
        boolean.add(false, at: 9)
        var string = FieldRollup(kind: .string)
        Array("hello".utf8).withUnsafeBufferPointer { string.add($0, at: 3) }
        for r in [numeric, boolean, string] {
            let back = try #require(FieldRollup(serialized: r.serialized()))
            #expect(back.serialized() == r.serialized())
            #expect(back.count == r.count)
            #expect(back.value(of: .quantile(0.5)) == r.value(of: .quantile(0.5)))
        }
        // Truncated bytes and a newer format version are rejected, never misread.
        let bytes = numeric.serialized()
        #expect(FieldRollup(serialized: Array(bytes.dropLast())) == nil)
        #expect(FieldRollup(serialized: [FieldRollup.formatVersion + 1] + bytes.dropFirst()) == nil)
    }

    /// Property: any rollup survives the packed row format exactly, whatever its values (integral or not, signed
    /// zero, extremes, subnormals) and times (relative to any base, in any order).
    /// The outbox reader reserves a row's fields from its header: a damaged header that claims as many fields as the
    /// row has bytes would have reserved 144 bytes per byte of row; the count is capped by what the bytes can hold.
    @Test func aRowsFieldCountIsBoundedByItsSize() {
        var w = ByteWriter()
        PackedRow.header(fields: 400, into: &w)
        let bytes = w.bytes + [UInt8](repeating: 0, count: 398)
        #expect(PackedRow.fieldCount(bytes) == bytes.count / 4)
        var one = ByteWriter()
        PackedRow.header(fields: 1, into: &one)
        #expect(PackedRow.fieldCount(one.bytes + [0, 0, 0, 0]) == 1)
        #expect(PackedRow.fieldCount([]) == nil)
    }

    @Test func packedRowsRoundTripExactly() throws {
        var rng = SystemRandomNumberGenerator()
        let specials: [Double] = [
            0, -0.0, 1, -1, 0.5, 9_007_199_254_740_991, 9_007_199_254_740_992, -9_007_199_254_740_994, 1e300, -1e-300,
            .leastNonzeroMagnitude, .greatestFiniteMagnitude, 123.456, -2.5e-7,
        ]
        for round in 0..<500 {
            var fields: [(field: Int64, rollup: FieldRollup)] = []
            for f in 0..<Int.random(in: 1...6, using: &rng) {
                let kind = [FieldKind.numeric, .numeric, .boolean, .string, .distinct].randomElement(using: &rng)!
                var r = FieldRollup(kind: kind)
                for _ in 0..<Int.random(in: 0...20, using: &rng) {
                    let t = Int64.random(in: -1_000_000_000_000...1_000_000_000_000, using: &rng)
                    switch kind {
                    case .numeric:
                        let v =
                            Bool.random(using: &rng)
                            ? specials.randomElement(using: &rng)!
                            : Double.random(in: -1e6...1e6, using: &rng).rounded(
                                round % 2 == 0 ? .toNearestOrEven : .up)
                        r.add(v, at: t)
                    case .boolean: r.add(Bool.random(using: &rng), at: t)
                    case .string:
                        Array("v\(Int.random(in: 0...999, using: &rng))".utf8).withUnsafeBufferPointer {
                            r.add($0, at: t)
                        }
                    case .distinct: r.add(distinctHash: UInt64.random(in: 0...UInt64.max, using: &rng), at: t)
                    }
                }
                fields.append((Int64(f * 37 + round), r))
            }
            let start = Int64.random(in: -1_000_000_000_000...1_000_000_000_000, using: &rng)
            var w = ByteWriter(capacity: 16)  // small, so growth is exercised
            PackedRow.encode(fields, start: start, into: &w)
            let back = try #require(PackedRow.decode(w.bytes, start: start))
            #expect(back.count == fields.count)
            for (got, want) in zip(back, fields) {
                #expect(got.field == want.field)
                #expect(got.rollup.kind == want.rollup.kind && got.rollup.count == want.rollup.count)
                #expect(got.rollup.numeric == want.rollup.numeric)
                #expect(got.rollup.sketch == want.rollup.sketch)
                #expect(got.rollup.trueCount == want.rollup.trueCount && got.rollup.lastTime == want.rollup.lastTime)
                #expect(got.rollup.lastBool == want.rollup.lastBool && got.rollup.lastBytes == want.rollup.lastBytes)
                #expect(got.rollup.distinct == want.rollup.distinct)
            }
            // One field picked out (the ones before it are stepped over by their time anchors); truncated bytes
            // rejected.
            let pick = fields.randomElement(using: &rng)!
            let one = try #require(PackedRow.decode(w.bytes, start: start, only: pick.field))
            #expect(one.map(\.field) == [pick.field])
            #expect(
                one.first?.rollup.numeric == pick.rollup.numeric && one.first?.rollup.lastTime == pick.rollup.lastTime)
            #expect(one.first?.rollup.lastBytes == pick.rollup.lastBytes)
            // Without sketches: every other part equal, the quantile sketch left empty.
            var lean: [(Int64, FieldRollup)] = []
            #expect(
                PackedRow.visit(
                    w.bytes, start: start, sketches: false, wanted: { _ in true }, each: { lean.append(($0, $1)) })
            )
            #expect(lean.map(\.0) == fields.map(\.field))
            for (got, want) in zip(lean.map(\.1), fields.map(\.rollup)) {
                #expect(got.numeric == want.numeric && got.count == want.count && got.sketch.count == 0)
                #expect(got.distinct == want.distinct && got.lastBytes == want.lastBytes)
            }
            #expect(PackedRow.decode(Array(w.bytes.dropLast()), start: start) == nil)
        }
    }

    /// Field lengths of one byte (< 128) and longer: the length is written in place, or the field moved by the
    /// extra bytes.
    @Test func packedRowsOfLongFields() throws {
        for length in [0, 100, 127, 128, 129, 300, 20_000] {
            var text = FieldRollup(kind: .string)
            Array(repeating: UInt8(ascii: "x"), count: length).withUnsafeBufferPointer { text.add($0, at: 7) }
            var wide = FieldRollup(kind: .numeric)
            for i in 0..<(length / 2) { wide.add(Double(i) * 1.37, at: Int64(i)) }
            var w = ByteWriter()
            PackedRow.encode([(1, text), (2, wide), (3, text)], start: 5, into: &w)
            let back = try #require(PackedRow.decode(w.bytes, start: 5))
            #expect(back.map(\.field) == [1, 2, 3])
            #expect(back[0].rollup.lastBytes.count == length && back[2].rollup.lastBytes == text.lastBytes)
            #expect(back[1].rollup.numeric == wide.numeric && back[1].rollup.sketch == wide.sketch)
        }
    }

    /// A database written by the first release (schema 1: one row per field, fixed-width blobs; the fixture was
    /// written by that build from known points) is migrated on open, and reads back the same rollups.
    @Test func schemaVersion1IsMigrated() throws {
        let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/schema-v1.db")
        let path = Self.tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try FileManager.default.copyItem(atPath: fixture.path, toPath: path)
        let store = try SQLiteStore(path: path)
        let t0: Int64 = 1_795_917_600_000_000_000
        let minute: Int64 = 60_000_000_000
        // Points (written at t0 + i·20 s, i = 0...5): usage_user = i·10 + 0.5, usage_idle = 90 − i, up = true,
        // state = "ok<i>"; mem used = 1000 + i at t0 + i·30 s.
        let user = try store.storedCells(measurement: "cpu", field: "usage_user", from: t0, to: t0 + 10 * minute)
            .sorted { $0.start < $1.start }
        #expect(user.map(\.start) == [t0, t0 + minute])
        #expect(user.map(\.cell.rollup.count) == [3, 3])
        #expect(user.map { $0.cell.rollup.numeric.sum } == [31.5, 121.5])
        #expect(user[1].cell.rollup.numeric.first == 30.5 && user[1].cell.rollup.numeric.last == 50.5)
        #expect(user[0].cell.series.tags == [TagPair("cpu", "cpu0"), TagPair("host", "a")])
        let all = try store.storedCells(measurement: "cpu", field: nil, from: t0, to: t0 + minute)
        #expect(Set(all.map(\.cell.field)) == ["usage_user", "usage_idle", "up", "state"])
        let state = try #require(all.first { $0.cell.field == "state" }?.cell.rollup)
        #expect(state.lastString == "ok2")
        #expect(all.first { $0.cell.field == "up" }?.cell.rollup.trueCount == 3)
        let used = try store.storedCells(measurement: "mem", field: "used", from: t0, to: t0 + 10 * minute)
            .sorted { $0.start < $1.start }
        #expect(used.map { $0.cell.rollup.numeric.sum } == [2001, 2005, 2009])
        #expect(try store.rowCount() == 5)  // (cpu, mem) × 2 minutes + mem's third minute
        // What the old build recorded for WAL replay survives the migration.
        #expect(try store.walState().watermarks[t0] == 1_099_511_627_784)
    }

    /// A database from a newer metricsd is refused, not misread.
    @Test func aNewerSchemaIsRefused() throws {
        let path = Self.tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try SQLiteStore(path: path).setSchemaVersionForTesting(SQLiteStore.schemaVersion + 1)
        #expect(throws: StoreError.self) { try SQLiteStore(path: path) }
    }

    /// Regression: a flush that failed after adding a new series (disk full, …) was rolled back, but the store
    /// kept the new series' id cached; the next flush then wrote rows pointing at a series row that did not exist,
    /// and queries never found them. Ids are now forgotten on rollback.
    @Test func aRolledBackFlushLeavesNoDanglingSeries() throws {
        let path = Self.tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try SQLiteStore(path: path)
        // Every write to bucket 666 fails inside the transaction, after the series row was inserted.
        try store.executeForTesting(
            "CREATE TRIGGER fail BEFORE INSERT ON rollup_1m WHEN NEW.ts = 666 BEGIN SELECT RAISE(ABORT, 'injected'); END"
        )
        let series = SeriesInfo(measurement: "cpu", tags: [TagPair("host", "new")])
        #expect(throws: StoreError.self) {
            try store.store([ClosedBucket(start: 666, cells: [Self.cell(series, "usage", [(1, 666)])])])
        }
        try store.store([ClosedBucket(start: 0, cells: [Self.cell(series, "usage", [(2, 5)])])])
        let cells = try store.storedCells(measurement: "cpu", field: "usage", from: 0, to: 1_000)
        #expect(cells.count == 1)
        #expect(cells.first?.cell.rollup.numeric.sum == 2)
    }

    /// A large new bucket is encoded on a second thread while rows are inserted: a failure in the middle rolls
    /// the whole bucket back, and storing it again stores every row once.
    @Test func aFailedLargeFlushRollsBackWhole() throws {
        let path = Self.tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try SQLiteStore(path: path)
        let minute: Int64 = 60_000_000_000
        let series = (0..<12_000).map { SeriesInfo(measurement: "cpu", tags: [TagPair("host", "h\($0)")]) }
        try store.store([ClosedBucket(start: 0, cells: series.map { Self.cell($0, "a", [(1, 0)]) })])  // ids exist
        let cells = series.flatMap { s in ["a", "b", "c"].map { Self.cell(s, $0, [(2, minute)]) } }
        #expect(cells.count >= 20_000)  // the pipelined path
        try store.executeForTesting(
            "CREATE TRIGGER fail BEFORE INSERT ON rollup_1m WHEN NEW.ts = \(minute) AND NEW.series = 9000"
                + " BEGIN SELECT RAISE(ABORT, 'injected'); END")
        for _ in 0..<3 {
            #expect(throws: StoreError.self) { try store.store([ClosedBucket(start: minute, cells: cells)]) }
        }
        #expect(try store.rowCount() == 12_000)
        try store.executeForTesting("DROP TRIGGER fail")
        try store.store([ClosedBucket(start: minute, cells: cells)])
        #expect(try store.rowCount() == 24_000)
        let stored = try store.storedCells(measurement: "cpu", field: nil, from: minute, to: 2 * minute)
        #expect(stored.count == 36_000 && stored.allSatisfy { $0.cell.rollup.numeric.sum == 2 })
    }

    /// Storing the same (bucket, series, field) twice merges — the mechanism behind late data and restarts
    /// mid-minute — and the result equals one rollup of all the points.
    @Test func storingTwiceMergesExactly() throws {
        let path = Self.tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let series = SeriesInfo(measurement: "cpu", tags: [TagPair("host", "a")])
        let first = Self.cell(series, "usage", [(1, 10), (5, 20), (3, 30)])
        let second = Self.cell(series, "usage", [(9, 5), (2, 40)])
        do {
            let store = try SQLiteStore(path: path)
            try store.store([ClosedBucket(start: 0, cells: [first])])
            try store.store([ClosedBucket(start: 0, cells: [second], isLate: true)])
        }
        // Reopen: what was stored is durable.
        let store = try SQLiteStore(path: path)
        let cells = try store.storedCells(measurement: "cpu", field: "usage", from: 0, to: 60)
        #expect(cells.count == 1)
        let got = try #require(cells.first?.cell.rollup)
        var whole = FieldRollup(kind: .numeric)
        for (v, t) in [(1.0, Int64(10)), (5, 20), (3, 30), (9, 5), (2, 40)] { whole.add(v, at: t) }
        #expect(got.count == 5)
        #expect(got.numeric.sum == whole.numeric.sum)
        #expect(got.numeric.min == 1 && got.numeric.max == 9)
        #expect(got.numeric.first == 9 && got.numeric.last == 2)
        #expect(got.value(of: .stddev)! - whole.value(of: .stddev)! < 1e-12)
        #expect(cells.first?.cell.series.tags == [TagPair("host", "a")])
        #expect(try store.rowCount() == 1)
    }

    @Test func rangesAndFieldsFilter() throws {
        let path = Self.tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try SQLiteStore(path: path)
        let a = SeriesInfo(measurement: "cpu", tags: [TagPair("host", "a")])
        let b = SeriesInfo(measurement: "mem", tags: [])
        var buckets: [ClosedBucket] = []
        for minute in 0..<10 {
            let start = Int64(minute) * 60_000_000_000
            buckets.append(
                ClosedBucket(
                    start: start,
                    cells: [
                        Self.cell(a, "usage", [(Double(minute), start)]), Self.cell(a, "idle", [(1, start)]),
                        Self.cell(b, "used", [(2, start)]),
                    ]
                )
            )
        }
        try store.store(buckets)
        let cpu = try store.storedCells(measurement: "cpu", field: "usage", from: 120_000_000_000, to: 300_000_000_000)
        #expect(cpu.map(\.start).sorted() == [120_000_000_000, 180_000_000_000, 240_000_000_000])
        #expect(try store.storedCells(measurement: "cpu", field: nil, from: 0, to: .max).count == 20)
        #expect(try store.storedCells(measurement: "disk", field: nil, from: 0, to: .max).isEmpty)
    }

    /// A read of a few series looks their rows up by key (bucket start by bucket start) instead of scanning
    /// the range: it must find exactly what a scan finds, for 1-minute and hourly rows, on the grid the stored
    /// starts really lie on — including a database written with a finer bucket width than the current one, and
    /// one written before the grid was recorded.
    @Test func keyedReadsFindWhatScansFind() throws {
        let path = Self.tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let second: Int64 = 1_000_000_000
        let hosts = (0..<12).map { SeriesInfo(measurement: "cpu", tags: [TagPair("host", "h\($0)")]) }
        func write(_ store: SQLiteStore, width: Int64, buckets: Range<Int64>, offset: Int64 = 0) throws {
            for b in buckets {
                let start = offset + b * width
                // Not every host in every bucket: keyed reads must not invent or miss gaps.
                let cells = hosts.enumerated().filter { (k, _) in (Int64(k) + b) % 3 != 0 }.map { (k, h) in
                    Self.cell(h, "usage", [(Double(k) + Double(b), start + second)])
                }
                try store.store([ClosedBucket(start: start, cells: cells)])
            }
        }
        func sums(_ cells: [(start: Int64, cell: ClosedCell)]) -> [String] {
            cells.map { "\($0.start) \($0.cell.series.tags[0].value) \($0.cell.rollup.numeric.sum)" }.sorted()
        }
        do {
            // Written before the grid was recorded, with 10 s buckets offset by 30 s from the minute.
            let store = try SQLiteStore(path: path)
            try write(store, width: 10 * second, buckets: 0..<30, offset: 30 * second)
        }
        let store = try SQLiteStore(path: path)
        try store.noteBucketWidth(60 * second)  // the grid becomes gcd(stored starts, 60 s) = 10 s
        try write(store, width: 60 * second, buckets: 5..<40)
        let one: (SeriesInfo) -> Bool = { $0.tags[0].value == "h3" }
        let read = SQLiteStore.CellRead(measurement: "cpu", fields: ["usage"], from: 0, to: 3_000 * second)
        let keyed = try store.readPlanned(read, series: one)
        #expect(keyed.plan == .probe(series: 1))
        var scan = read
        scan.keyed = false
        let scanned = try store.readPlanned(scan, series: nil)
        #expect(scanned.plan == .scan)
        let expected = scanned.cells.filter { one($0.cell.series) }
        #expect(!expected.isEmpty)
        #expect(sums(keyed.cells) == sums(expected))
        // A range starting off the grid, and one ending on a bucket start (excluded).
        var inner = SQLiteStore.CellRead(measurement: "cpu", fields: nil, from: 65 * second, to: 600 * second)
        let innerKeyed = try store.read(inner, series: one)
        inner.keyed = false
        #expect(sums(innerKeyed) == sums(try store.read(inner, series: nil).filter { one($0.cell.series) }))
        // The hourly tier: hour starts.
        let hour: Int64 = 3_600 * second
        for h in 0..<5 as Range<Int64> {
            let cells = hosts.map { Self.cell($0, "usage", [(Double(h), h * hour + second)]) }
            try store.storeHourlyForTesting(ClosedBucket(start: h * hour, cells: cells))
        }
        var hours = SQLiteStore.CellRead(measurement: "cpu", fields: ["usage"], from: hour / 2, to: 5 * hour)
        let keyedHours = try store.readPlanned(hours, tier: .hours, series: one)
        #expect(keyedHours.plan == .probe(series: 1))
        hours.keyed = false
        #expect(
            sums(keyedHours.cells)
                == sums(try store.read(hours, tier: .hours, series: nil).filter { one($0.cell.series) }))
        #expect(keyedHours.cells.count == 4)
        // Most series of the measurement over a range with more keys than the limit: one scan; fewer keys, or a
        // small part of the series: keys.
        let most: (SeriesInfo) -> Bool = { $0.tags[0].value != "h0" }
        let long = SQLiteStore.CellRead(measurement: "cpu", fields: ["usage"], from: 0, to: 50_000 * 10 * second)
        #expect(11 * 50_000 > SQLiteStore.keyedReadLimit)
        let scannedMost = try store.readPlanned(long, series: most)
        #expect(scannedMost.plan == .scan)
        let keyedMost = try store.readPlanned(read, series: most)
        #expect(keyedMost.plan == .probe(series: 11))
        #expect(sums(keyedMost.cells) == sums(scannedMost.cells.filter { $0.start < read.to }))
        #expect(try store.readPlanned(long, series: one).plan == .probe(series: 1))
    }

    /// Keyed reads remember the rows they looked up (and the bucket starts with none), and summary reads the
    /// blocks they decoded; a later write to a bucket — late data merged into a stored minute, a minute stored
    /// where there was none, a minute past the last block's rows, retention cutting a block — must never be hidden
    /// by what was remembered, and a rolled-back write changes nothing.
    @Test(arguments: [false, true]) func rememberedRowsNeverHideWrites(summaries: Bool) throws {
        let path = Self.tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try SQLiteStore(path: path)
        let minute: Int64 = 60_000_000_000
        try store.noteBucketWidth(minute)
        let hosts = (0..<8).map { SeriesInfo(measurement: "cpu", tags: [TagPair("host", "h\($0)")]) }
        for m in 0..<200 as Range<Int64> where m % 7 != 3 {  // gaps at every 7th minute
            try store.store([
                ClosedBucket(start: m * minute, cells: hosts.map { Self.cell($0, "usage", [(1, m * minute)]) })
            ])
        }
        let one: (SeriesInfo) -> Bool = { $0.tags[0].value == "h1" }
        func sum(_ from: Int64 = 0, _ to: Int64 = 200) throws -> (Double, Int) {
            let read = SQLiteStore.CellRead(measurement: "cpu", fields: ["usage"], from: from * minute, to: to * minute)
            var total = 0.0
            var cells = 0
            let plan: SQLiteStore.ReadPlan
            if summaries {
                plan = try store.visitSummaries(read, series: one) { _, _, _, summary in
                    total += summary.numeric.sum
                    cells += 1
                }
            } else {
                plan = try store.visit(read, series: one) { _, _, _, rollup in
                    total += rollup.numeric.sum
                    cells += 1
                }
            }
            #expect(plan == .probe(series: 1))
            return (total, cells)
        }
        #expect(try sum() == (171, 171))
        #expect(try sum() == (171, 171))  // from the cache now
        // Late data merges into a remembered minute; a minute that had no row gets one.
        try store.store([
            ClosedBucket(start: 11 * minute, cells: [Self.cell(hosts[1], "usage", [(5, 11 * minute)])], isLate: true)
        ])
        try store.store([ClosedBucket(start: 3 * minute, cells: [Self.cell(hosts[1], "usage", [(2, 3 * minute)])])])
        #expect(try sum() == (178, 172))
        #expect(try sum(0, 20) == (24, 18))  // a narrower range, partly remembered
        // A minute stored in the last block, past the rows it had (a flush of the newest minute).
        try store.store([ClosedBucket(start: 200 * minute, cells: [Self.cell(hosts[1], "usage", [(4, 200 * minute)])])])
        #expect(try sum(0, 201) == (182, 173))
        // A rolled-back write: what is read after it is still right.
        try store.executeForTesting(
            "CREATE TRIGGER fail BEFORE INSERT ON rollup_1m WHEN NEW.ts = 660000000000000 BEGIN SELECT RAISE(ABORT, 'injected'); END"
        )
        #expect(throws: StoreError.self) {
            try store.store([ClosedBucket(start: 660_000_000_000_000, cells: [Self.cell(hosts[1], "usage", [(1, 0)])])])
        }
        #expect(try sum() == (178, 172))
        #expect(try sum(0, 201) == (182, 173))
        // Retention: deleted minutes (inside a remembered block) are not served from memory.
        try store.maintain(
            now: 100 * minute + 3_600_000_000_000 * 3, settle: 0, retention1m: 3_600_000_000_000 * 3,
            retention1h: .max / 2)
        let left = try sum(0, 201)
        #expect(left.1 < 173)
        #expect(try sum().1 < 172)
        var all = SQLiteStore.CellRead(measurement: "cpu", fields: ["usage"], from: 0, to: 201 * minute)
        all.keyed = false
        let stored = try store.read(all, series: one)
        #expect(left == (stored.reduce(0) { $0 + $1.cell.rollup.numeric.sum }, stored.count))
    }

    /// Summary reads (``SQLiteStore/visitSummaries(_:hourly:series:_:)``, decoded blocks remembered) give, cell for
    /// cell, the summaries of what full reads give: keyed and cold, keyed from remembered blocks, and scanned;
    /// over ranges that start and end inside blocks, on and off the grid, in both tiers, for every field kind.
    @Test func summaryReadsAnswerAsRollupReads() throws {
        let path = Self.tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try SQLiteStore(path: path)
        let minute: Int64 = 60_000_000_000
        try store.noteBucketWidth(minute)
        let hosts = (0..<6).map { SeriesInfo(measurement: "cpu", tags: [TagPair("host", "h\($0)")]) }
        func cells(_ start: Int64, _ k: Int, _ salt: Int64) -> [ClosedCell] {
            var flag = FieldRollup(kind: .boolean)
            flag.add((start / minute + salt) % 2 == 0, at: start + 5)
            var name = FieldRollup(kind: .string)
            Array("v\(k)".utf8).withUnsafeBufferPointer { name.add($0, at: start + 7) }
            return [
                Self.cell(
                    hosts[k], "usage", [(Double(k) + Double(start / minute) * 0.5, start + 1), (Double(k), start + 9)]),
                ClosedCell(series: hosts[k], field: "up", rollup: flag),
                ClosedCell(series: hosts[k], field: "name", rollup: name),
            ]
        }
        for m in 0..<150 as Range<Int64> {
            let start = m * minute
            // Gaps that differ per host; a field missing from some rows.
            let bucket = hosts.indices.filter { (Int64($0) + m) % 5 != 0 }.flatMap { k in
                cells(start, k, 0).filter { m % 4 != 1 || $0.field != "up" }
            }
            try store.store([ClosedBucket(start: start, cells: bucket)])
        }
        let hour = 60 * minute
        for h in [0, 1, 2, 59, 60, 61] as [Int64] {
            try store.storeHourlyForTesting(
                ClosedBucket(start: h * hour, cells: hosts.indices.flatMap { cells(h * hour, $0, 1) }))
        }
        let fields = ["usage", "up", "name", "absent"]
        func full(_ read: SQLiteStore.CellRead, tier: Tier, _ accept: ((SeriesInfo) -> Bool)?) throws -> [String] {
            var out: [String] = []
            var scan = read
            scan.keyed = false
            _ = try store.visit(scan, tier: tier, series: accept) { start, series, field, rollup in
                out.append("\(start) \(series.tags[0].value) \(fields.firstIndex(of: field)!) \(FieldSummary(rollup))")
            }
            return out.sorted()
        }
        func summaries(_ read: SQLiteStore.CellRead, tier: Tier, _ accept: ((SeriesInfo) -> Bool)?) throws -> (
            [String], SQLiteStore.ReadPlan
        ) {
            var out: [String] = []
            let plan = try store.visitSummaries(read, tier: tier, series: accept) { start, series, field, summary in
                out.append("\(start) \(series.tags[0].value) \(field) \(summary)")
            }
            return (out.sorted(), plan)
        }
        let one: (SeriesInfo) -> Bool = { $0.tags[0].value == "h2" }
        let two: (SeriesInfo) -> Bool = { $0.tags[0].value == "h1" || $0.tags[0].value == "h4" }
        let ranges: [(Int64, Int64)] = [
            (0, 150 * minute), (5 * minute, 65 * minute), (59 * minute, 61 * minute), (61 * minute, 119 * minute),
            (0, minute), (149 * minute, 150 * minute), (200 * minute, 300 * minute), (30_000_000_000, 90 * minute + 1),
            (-10 * minute, 3 * minute),
        ]
        var compared = 0
        for (from, to) in ranges {
            for accept in [one, two] {
                let read = SQLiteStore.CellRead(measurement: "cpu", fields: fields, from: from, to: to)
                let expected = try full(read, tier: .minutes, accept)
                let cold = try summaries(read, tier: .minutes, accept)
                #expect(cold.1 != .scan, "a few series are read by key")
                #expect(cold.0 == expected, "\(from)…\(to) cold")
                #expect(try summaries(read, tier: .minutes, accept).0 == expected, "\(from)…\(to) remembered")
                var scan = read
                scan.keyed = false
                #expect(try summaries(scan, tier: .minutes, accept) == (expected, .scan), "\(from)…\(to) scanned")
                compared += expected.count
            }
        }
        #expect(compared > 1_000)
        // Every series: the plan may scan; the answer is the same.
        let all = SQLiteStore.CellRead(measurement: "cpu", fields: ["up", "usage"], from: 0, to: 150 * minute)
        var expectedAll: [String] = []
        var scanAll = all
        scanAll.keyed = false
        _ = try store.visit(scanAll, series: nil) { start, series, field, rollup in
            expectedAll.append("\(start) \(series.tags[0].value) \(field == "up" ? 0 : 1) \(FieldSummary(rollup))")
        }
        #expect(try summaries(all, tier: .minutes, nil).0 == expectedAll.sorted())
        // The hourly tier: blocks of 60 hours.
        for (from, to) in [(0, 62 * hour), (hour / 2, 60 * hour), (60 * hour, 61 * hour + 1)] as [(Int64, Int64)] {
            let read = SQLiteStore.CellRead(measurement: "cpu", fields: fields, from: from, to: to)
            let expected = try full(read, tier: .hours, one)
            #expect(!expected.isEmpty)
            #expect(try summaries(read, tier: .hours, one).0 == expected, "hours \(from)…\(to)")
            #expect(try summaries(read, tier: .hours, one).0 == expected, "hours \(from)…\(to) remembered")
        }
    }

    /// Queries read through their own connection: a write transaction in progress (a flush of a million cells
    /// takes most of a second) neither blocks them nor shows them uncommitted rows, and what they remembered
    /// before the commit is dropped by it. (Had reads taken the writer's lock, as they did with one connection for
    /// both, the read below would re-enter the lock the write holds: checked, the test crashes.)
    @Test func readsDoNotWaitForAWriteInProgress() throws {
        let path = Self.tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try SQLiteStore(path: path)
        let minute: Int64 = 60_000_000_000
        try store.noteBucketWidth(minute)
        let host = SeriesInfo(measurement: "cpu", tags: [TagPair("host", "a")])
        for m in 0..<10 as Range<Int64> {
            try store.store([ClosedBucket(start: m * minute, cells: [Self.cell(host, "usage", [(1, m * minute)])])])
        }
        let read = SQLiteStore.CellRead(measurement: "cpu", fields: ["usage"], from: 0, to: 10 * minute)
        @Sendable func sums() throws -> (summaries: Double, rollups: Double) {
            var a = 0.0
            var b = 0.0
            _ = try store.visitSummaries(read, series: nil) { _, _, _, s in a += s.numeric.sum }
            _ = try store.visit(read, series: nil) { _, _, _, r in b += r.numeric.sum }
            return (a, b)
        }
        #expect(try sums() == (10, 10))  // and remembered
        let during = Mutex<(summaries: Double, rollups: Double)?>(nil)
        let other = SeriesInfo(measurement: "cpu", tags: [TagPair("host", "b")])
        try store.storeForTesting(
            ClosedBucket(
                start: 5 * minute,
                cells: [Self.cell(host, "usage", [(4, 5 * minute)]), Self.cell(other, "usage", [(7, 5 * minute)])])
        ) { during.withLock { $0 = try? sums() } }
        #expect(during.withLock { $0.map { $0 == (10, 10) } } == true, "while writing: the last commit, not waiting")
        #expect(try sums() == (21, 21), "after the commit: the write, including the new series")
    }

    /// Reads racing writes: one thread merges late data into remembered minutes and stores new ones while another
    /// reads the same rows (keyed, remembered between reads) as fast as it can. Every read sees a total that only
    /// grows, and once the writes are done a read sees exactly what was written: nothing a read remembered from
    /// before a commit outlives it. (Checked: with the reader told before the commit instead of after, this fails
    /// in 4 runs of 4.)
    @Test func readsRacingWritesKeepNothingStale() async throws {
        let path = Self.tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try SQLiteStore(path: path)
        let minute: Int64 = 60_000_000_000
        try store.noteBucketWidth(minute)
        let host = SeriesInfo(measurement: "cpu", tags: [TagPair("host", "a")])
        for m in 0..<120 as Range<Int64> {
            try store.store([ClosedBucket(start: m * minute, cells: [Self.cell(host, "usage", [(1, m * minute)])])])
        }
        let rounds = 1_000
        let done = Mutex(false)
        let writer = Task.detached {
            defer { done.withLock { $0 = true } }
            for round in 0..<rounds {
                let late = Int64(round * 7 % 120) * minute
                try store.store([
                    ClosedBucket(start: late, cells: [Self.cell(host, "usage", [(2, late)])], isLate: true)
                ])
                let fresh = Int64(120 + round) * minute
                try store.store([ClosedBucket(start: fresh, cells: [Self.cell(host, "usage", [(3, fresh)])])])
            }
        }
        let read = SQLiteStore.CellRead(measurement: "cpu", fields: ["usage"], from: 0, to: 2_000 * minute)
        func totals() throws -> (Double, Double) {
            var a = 0.0
            var b = 0.0
            _ = try store.visitSummaries(read, series: nil) { _, _, _, s in a += s.numeric.sum }
            _ = try store.visit(read, series: nil) { _, _, _, r in b += r.numeric.sum }
            return (a, b)
        }
        var last = (0.0, 0.0)
        var reads = 0
        var grew = true
        while reads < 100_000 {
            let finished = done.withLock { $0 }
            let now = try totals()
            if now.0 < last.0 || now.1 < last.1 { grew = false }
            last = now
            reads += 1
            if finished { break }
        }
        try await writer.value
        #expect(grew, "a read saw less than an earlier one")
        #expect(reads > 10)
        let expected = 120.0 + Double(rounds) * 2 + Double(rounds) * 3
        #expect(try totals() == (expected, expected))
    }

    @Test func aReadOnlyDatabaseFailsWithAClearError() throws {
        #expect(throws: StoreError.self) { try SQLiteStore(path: "/proc/metricsd-cannot-be-here.db") }
    }

    /// Retention and downsampling with a fake clock: 1h rows equal the merge of their 1m rows; 1m rows older than
    /// retention_1m are gone after downsampling; late data for a downsampled hour reaches both tiers.
    @Test func downsamplingMergesMinutesIntoHours() throws {
        let path = Self.tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try SQLiteStore(path: path)
        let minute: Int64 = 60_000_000_000
        let hour = 60 * minute
        let a = SeriesInfo(measurement: "cpu", tags: [TagPair("host", "a")])
        var expected: [Int64: FieldRollup] = [:]
        var buckets: [ClosedBucket] = []
        for m in 0..<(3 * 60) {  // three hours of minutes
            let start = Int64(m) * minute
            let values = (0..<3).map { (Double((m * 7 + $0) % 101), start + Int64($0)) }
            let cell = Self.cell(a, "usage", values)
            buckets.append(ClosedBucket(start: start, cells: [cell]))
            expected[start / hour * hour, default: FieldRollup(kind: .numeric)].merge(cell.rollup)
        }
        try store.store(buckets)
        // Fake clock: 10 hours later; keep 1m rows for 2 hours, 1h rows for 100 days.
        let now = 10 * hour
        var steps = 0
        while try store.maintain(now: now, settle: 3 * minute, retention1m: 2 * hour, retention1h: 100 * 24 * hour)
            != nil
        {
            steps += 1
        }
        #expect(steps >= 3)
        let hours = try store.hourlyCells(measurement: "cpu", field: "usage", from: 0, to: now)
        #expect(hours.count == 3)
        for (start, cell) in hours {
            let want = try #require(expected[start])
            #expect(cell.rollup.count == want.count)
            #expect(cell.rollup.numeric.sum == want.numeric.sum)
            #expect(cell.rollup.numeric.min == want.numeric.min && cell.rollup.numeric.max == want.numeric.max)
            #expect(cell.rollup.numeric.first == want.numeric.first && cell.rollup.numeric.last == want.numeric.last)
            #expect(cell.rollup.value(of: .quantile(0.9)) == want.value(of: .quantile(0.9)))
        }
        #expect(try store.rowCount() == 0, "1m rows older than retention_1m are deleted once downsampled")
        // Late data for hour 1 merges into the 1h tier too.
        let late = Self.cell(a, "usage", [(1000, hour + 5)])
        try store.store([ClosedBucket(start: hour, cells: [late], isLate: true)])
        let after = try store.hourlyCells(measurement: "cpu", field: "usage", from: hour, to: 2 * hour)
        #expect(after.first?.cell.rollup.count == expected[hour]!.count + 1)
        #expect(after.first?.cell.rollup.numeric.max == 1000)
        // 1h retention.
        _ = try store.maintain(
            now: now + 200 * 24 * hour, settle: 0, retention1m: 2 * hour, retention1h: 100 * 24 * hour)
        #expect(try store.hourlyCells(measurement: "cpu", field: nil, from: 0, to: .max).isEmpty)
    }
    /// A stored row that no longer decodes (a damaged page) does not block the outbox: it is copied to the
    /// quarantine table with its position, counted, and the rows after it are sent.
    @Test func anUndecodableOutboxRowIsQuarantinedAndSkipped() throws {
        let path = Self.tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try SQLiteStore(path: path, recordsOutbox: true)
        let minute: Int64 = 60_000_000_000
        let series = ["a", "b", "c"].map { SeriesInfo(measurement: "cpu", tags: [TagPair("host", $0)]) }
        try store.store([
            ClosedBucket(start: minute, cells: series.enumerated().map { Self.cell($1, "v", [(Double($0), minute)]) })
        ])
        try store.executeForTesting(
            "UPDATE rollup_1m SET data = x'FFFF00' WHERE series = (SELECT id FROM series WHERE tags = 'host' || char(30) || 'b')"
        )
        let batch = try store.outboxBatch(after: try store.outboxCursor(), limit: 100)
        #expect(batch.rows.map { $0.series.tags[0].value } == ["a", "c"])
        #expect(store.quarantinedRows == 1)
        let q = try store.quarantined()
        #expect(q.count == 1)
        #expect(q.first?.source == "outbox" && q.first?.start == minute && q.first?.bytes == 3)
        try store.advanceOutbox(to: batch.cursor)
        #expect(try store.outboxBacklog(after: batch.cursor).points == 0, "nothing left behind it")
    }
}
