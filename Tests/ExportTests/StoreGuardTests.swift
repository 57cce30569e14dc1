import Dispatch
import Foundation
import Synchronization
import Testing

@testable import Export
@testable import Rollups

/// The store's write side: nothing a query or a listener does waits for SQLite work, and what is being stored is
/// read exactly once — before, during and after its commit.
@Suite struct StoreGuardTests {
    static let minute: Int64 = 60_000_000_000
    static let a = SeriesInfo(measurement: "cpu", tags: [TagPair("host", "a")])
    static let b = SeriesInfo(measurement: "cpu", tags: [TagPair("host", "b")])

    static func bucket(_ m: Int64, _ cells: [(SeriesInfo, Double)]) -> ClosedBucket {
        ClosedBucket(start: m * minute, cells: cells.map { SQLiteStoreTests.cell($0.0, "usage", [($0.1, m * minute)]) })
    }

    /// (points, sum) per host over minutes 0..<10, read as a query reads: summaries, keyed (the row cache on).
    static func totals(_ guarded: StoreGuard) throws -> [String: (count: Int64, sum: Double)] {
        var out: [String: (count: Int64, sum: Double)] = [:]
        let read = CellRead(measurement: "cpu", fields: ["usage"], from: 0, to: 10 * minute)
        try guarded.minutes.visitSummaries(read, series: nil) { _, series, _, summary in
            let host = series.tags.first?.value ?? ""
            out[host, default: (0, 0)].count += summary.count
            out[host, default: (0, 0)].sum += summary.numeric.sum
        }
        return out
    }

    /// A store held inside SQLite by a hook that waits for the test: runs `during` while it waits, then lets it
    /// commit. Fails (never hangs) when the store does not reach the hook or `during` does not finish.
    static func whileHeld(
        _ store: SQLiteStore, afterCommit: Bool,
        storing: @escaping @Sendable () throws -> Void, during: @escaping @Sendable () throws -> Void
    ) throws {
        let entered = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        func setHook(_ hook: (@Sendable () -> Void)?) {
            if afterCommit {
                store.afterCommitForTesting.withLock { $0 = hook }
            } else {
                store.beforeCommitForTesting.withLock { $0 = hook }
            }
        }
        setHook {
            entered.signal()
            release.wait()
        }
        defer { setHook(nil) }
        let stored = DispatchSemaphore(value: 0)
        let storeError = Mutex<String?>(nil)
        Thread.detachNewThread {
            do { try storing() } catch { storeError.withLock { $0 = "\(error)" } }
            stored.signal()
        }
        guard entered.wait(timeout: .now() + 30) == .success else {
            release.signal()
            Issue.record("the store never reached the hook")
            return
        }
        let finished = DispatchSemaphore(value: 0)
        let failure = Mutex<String?>(nil)
        Thread.detachNewThread {
            do { try during() } catch { failure.withLock { $0 = "\(error)" } }
            finished.signal()
        }
        let completed = finished.wait(timeout: .now() + 30) == .success
        #expect(completed, "a query and a late write complete while the store is held inside SQLite")
        release.signal()
        #expect(stored.wait(timeout: .now() + 30) == .success, "the store commits once released")
        if completed { _ = failure.withLock { f in f.map { Issue.record("while held: \($0)") } } }
        if let e = storeError.withLock({ $0 }) { Issue.record("the store failed: \(e)") }
    }

    static func make() throws -> (StoreGuard, String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("guard-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let store = try SQLiteStore(path: dir + "/metricsd.db")
        try store.noteBucketWidth(minute)
        return (StoreGuard(store: store, dataDir: dir), dir)
    }

    /// The acceptance test of step 11: a store held inside SQLite (before its commit) holds up neither a query
    /// nor a write with a late point; both see the bucket being stored once; after the commit every cell still
    /// counts once, and the late point is stored by the next store.
    @Test func aQueryAndALateWriteCompleteWhileAStoreIsHeldInsideSQLite() throws {
        let (guarded, dir) = try Self.make()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try guarded.store([Self.bucket(0, [(Self.a, 1)])], replayFrom: nil)
        _ = try Self.totals(guarded)  // the row cache now remembers minutes 0..<10 (no row at 1)
        let seen = Mutex<[[String: Int64]]>([])
        try Self.whileHeld(
            guarded.store, afterCommit: false,
            storing: { try guarded.store([Self.bucket(1, [(Self.a, 2), (Self.b, 5)])], replayFrom: nil) },
            during: {
                let before = try Self.totals(guarded).mapValues(\.count)
                guarded.submit([Self.bucket(0, [(Self.a, 10)])])  // a listener's late point: never waits
                let after = try Self.totals(guarded).mapValues(\.count)
                seen.withLock { $0 = [before, after] }
            })
        let during = seen.withLock { $0 }
        #expect(during.first == ["a": 2, "b": 1], "during the store: the stored minute and the one in flight, once")
        #expect(during.last == ["a": 3, "b": 1], "the late point is read as soon as it is submitted")
        #expect(try Self.totals(guarded).mapValues(\.count) == ["a": 3, "b": 1], "committed: still once")
        #expect(guarded.hasQueued, "the late point waits for the next store")
        try guarded.store([], replayFrom: nil)
        #expect(!guarded.hasQueued && guarded.pendingCells == 0)
        let stored = try guarded.store.storedCells(measurement: "cpu", field: "usage", from: 0, to: 10 * Self.minute)
        #expect(stored.reduce(0) { $0 + $1.cell.rollup.count } == 4, "in SQLite: every point once")
        #expect(try Self.totals(guarded).mapValues(\.count) == ["a": 3, "b": 1])
    }

    /// Between a store's commit and the moment the guard and the reader learn of it, a query's snapshot already
    /// holds the bucket: it must not add the in-flight copy again, nor trust rows or series lists remembered from
    /// before the commit (minute 1 was remembered as empty, host b was unknown).
    @Test func justAfterTheCommitNothingCountsTwiceOrGoesMissing() throws {
        let (guarded, dir) = try Self.make()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try guarded.store([Self.bucket(0, [(Self.a, 1)])], replayFrom: nil)
        _ = try Self.totals(guarded)
        let seen = Mutex<[String: Int64]>([:])
        try Self.whileHeld(
            guarded.store, afterCommit: true,
            storing: { try guarded.store([Self.bucket(1, [(Self.a, 2), (Self.b, 5)])], replayFrom: nil) },
            during: {
                let counts = try Self.totals(guarded).mapValues(\.count)
                seen.withLock { $0 = counts }
            })
        #expect(seen.withLock { $0 } == ["a": 2, "b": 1])
        #expect(try Self.totals(guarded).mapValues(\.count) == ["a": 2, "b": 1])
    }

    /// A failed store keeps everything queued and readable; the next store after the fault clears stores it once.
    @Test func aFailedStoreIsRetriedWithTheNext() throws {
        let (guarded, dir) = try Self.make()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = FileManager.default.createFile(atPath: guarded.faultFile, contents: nil)
        #expect(throws: StoreError.self) { try guarded.store([Self.bucket(0, [(Self.a, 1)])], replayFrom: 7) }
        #expect(guarded.isDegraded && guarded.pendingCells == 1)
        #expect(try Self.totals(guarded).mapValues(\.count) == ["a": 1])
        try FileManager.default.removeItem(atPath: guarded.faultFile)
        try guarded.store([Self.bucket(1, [(Self.b, 1)])], replayFrom: 9)
        #expect(!guarded.isDegraded && guarded.pendingCells == 0)
        #expect(try Self.totals(guarded).mapValues(\.count) == ["a": 1, "b": 1])
        #expect(try guarded.store.walState().replayFrom != 9, "a retried store does not move the replay start")
    }

    /// Cells not stored yet are filtered a series run at a time: two series whose ids collide are still told apart
    /// (by their tags), and each cell counts once whatever the order of the runs.
    @Test func unstoredCellsAreFilteredBySeriesEvenWhenIdsCollide() throws {
        let (guarded, dir) = try Self.make()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = SeriesInfo(id: 7, measurement: "cpu", tags: [TagPair("host", "a")])
        let b = SeriesInfo(id: 7, measurement: "cpu", tags: [TagPair("host", "b")])
        let m = SeriesInfo(id: 7, measurement: "mem", tags: [])
        let cells = [a, a, b, a, m, b, b].enumerated().map { k, series in
            SQLiteStoreTests.cell(series, "usage", [(Double(k), 0)])
        }
        guarded.submit([ClosedBucket(start: 0, cells: cells)])
        var seen: [String: Int] = [:]
        let read = CellRead(measurement: "cpu", fields: ["usage"], from: 0, to: Self.minute)
        let onlyB: (SeriesInfo) -> Bool = { $0.tags.first?.value == "b" }
        try guarded.minutes.visitCells(read, series: onlyB) { _, series, _, rollup in
            seen[series.tags.first?.value ?? "", default: 0] += Int(rollup.count)
        }
        #expect(seen == ["b": 3])
    }

    /// A read whose SQLite snapshot was taken before a store committed, and that reaches the cells not stored yet
    /// only after the store is done (a slow read): the batch is in neither place it looks, unless the guard keeps
    /// it for that read. (Without it this read counted host a once and host b not at all.)
    @Test func aReadWhoseSnapshotPredatesACommitStillCountsTheBatch() throws {
        let (guarded, dir) = try Self.make()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try guarded.store([Self.bucket(0, [(Self.a, 1)])], replayFrom: nil)
        guarded.submit([Self.bucket(1, [(Self.a, 2), (Self.b, 5)])])
        let entered = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let done = DispatchSemaphore(value: 0)
        guarded.afterSnapshotForTesting.withLock {
            $0 = {
                entered.signal()
                release.wait()
            }
        }
        let seen = Mutex<[String: Int64]?>(nil)
        Thread.detachNewThread {
            let counts = try? Self.totals(guarded).mapValues(\.count)
            seen.withLock { $0 = counts }
            done.signal()
        }
        guard entered.wait(timeout: .now() + 30) == .success else {
            release.signal()
            Issue.record("the read never reached the hook")
            return
        }
        guarded.afterSnapshotForTesting.withLock { $0 = nil }
        try guarded.store([], replayFrom: nil)  // commits the queued batch while the read waits
        #expect(!guarded.hasQueued && guarded.pendingCells == 0)
        release.signal()
        #expect(done.wait(timeout: .now() + 30) == .success)
        #expect(seen.withLock { $0 } == ["a": 2, "b": 1])
        #expect(try Self.totals(guarded).mapValues(\.count) == ["a": 2, "b": 1], "and after it, from SQLite")
    }
}
