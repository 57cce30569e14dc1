import Export
import Rollups
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Puts the SQLite store behind a guard so that a storage fault (disk full, read-only file, locked database)
/// never loses data and never stops ingestion:
///
/// - a failed store keeps its buckets in memory (bounded by `maxPendingCells`) and retries them with the next
///   store, so storing resumes by itself when the fault clears;
/// - while anything is pending, `/health` reports `degraded` with the reason, and the WAL is not released (replay
///   would recover the pending data after a crash);
/// - queries see pending cells as if they were stored.
///
/// Fault injection for tests: while the file `<data_dir>/inject-store-fault` exists, every store fails.
final class StoreGuard: RollupSink, RollupReader {
    let store: SQLiteStore
    let stats: Stats
    let faultFile: String
    let maxPendingCells: Int

    private struct State {
        var pending: [ClosedBucket] = []
        var pendingCells = 0
        var reason: String?
        /// Set once SQLite said the database is corrupt or not a database (a read or a store): it stays until a
        /// restart, since nothing the daemon does repairs the file.
        var unreadable: String?
    }

    private let state = Mutex(State())

    init(store: SQLiteStore, stats: Stats, dataDir: String, maxPendingCells: Int = 2_000_000) {
        self.store = store
        self.stats = stats
        faultFile = dataDir + "/inject-store-fault"
        self.maxPendingCells = maxPendingCells
    }

    /// Why storing is failing, or `nil` when healthy.
    var degradedReason: String? { state.withLock { $0.reason } }
    /// Why the store cannot be read, or `nil`.
    var unreadableReason: String? { state.withLock { $0.unreadable } }

    /// SQLite codes that mean the file itself is damaged.
    static func isCorruption(_ error: any Error) -> Bool {
        guard let e = error as? StoreError else { return false }
        return e.code & 0xFF == 11 || e.code & 0xFF == 26  // SQLITE_CORRUPT, SQLITE_NOTADB
    }

    /// A read failed: when the file is damaged, `/health` fails from now on.
    func noteReadFailure(_ error: any Error) {
        guard Self.isCorruption(error) else { return }
        state.withLock { $0.unreadable = $0.unreadable ?? "\(error)" }
    }
    var pendingCells: Int { state.withLock { $0.pendingCells } }
    var isDegraded: Bool { degradedReason != nil }

    func store(_ buckets: [ClosedBucket]) throws { try store(buckets, replayFrom: nil) }

    /// Stores `buckets` after anything still pending; on failure keeps them all pending and rethrows.
    func store(_ buckets: [ClosedBucket], replayFrom: UInt64?) throws {
        try state.withLock { s in
            let all = s.pending + buckets
            do {
                if access(faultFile, F_OK) == 0 {
                    throw StoreError(code: 13, message: "injected fault (\(faultFile) exists)", context: "storing")
                }
                // While recovering, do not move the replay start: pending buckets came from older records.
                try store.store(all, replayFrom: s.pending.isEmpty ? replayFrom : nil)
                s.pending.removeAll()
                s.pendingCells = 0
                s.reason = nil
            } catch {
                stats.storeErrors.add(1)
                s.reason = "storing rollups failed: \(error)"
                if Self.isCorruption(error) { s.unreadable = s.unreadable ?? "\(error)" }
                s.pending = all
                s.pendingCells = all.reduce(0) { $0 + $1.cells.count }
                // Bounded memory: past the limit the oldest buckets go (counted); the WAL still holds them.
                while s.pendingCells > maxPendingCells, !s.pending.isEmpty {
                    let dropped = s.pending.removeFirst()
                    s.pendingCells -= dropped.cells.count
                    stats.pendingDropped.add(dropped.cells.count)
                }
                throw error
            }
        }
    }

    func storedCells(measurement: String, field: String?, from: Int64, to: Int64) throws -> [(
        start: Int64, cell: ClosedCell
    )] {
        var cells = try store.storedCells(measurement: measurement, field: field, from: from, to: to)
        for (start, cell) in pendingCells(measurement: measurement, fields: field.map { [$0] }, from: from, to: to) {
            cells.append((start, cell))
        }
        return cells
    }

    /// The 1-minute tier as queries read it: stored rows, then cells still pending a store (as if stored). A read
    /// that fails on a corrupt file marks the store unreadable (`/health`).
    var minutes: Minutes { Minutes(guarded: self) }

    struct Minutes: CellSource {
        let guarded: StoreGuard

        func visitCells(
            _ read: CellRead, series accept: ((SeriesInfo) -> Bool)?,
            _ body: (Int64, SeriesInfo, Int, consuming FieldRollup) -> Void
        ) throws {
            do {
                try guarded.store.tier(hourly: false).visitCells(read, series: accept, body)
            } catch {
                guarded.noteReadFailure(error)
                throw error
            }
            pending(read, accept) { start, series, index, rollup in body(start, series, index, rollup) }
        }

        func visitSummaries(
            _ read: CellRead, series accept: ((SeriesInfo) -> Bool)?,
            _ body: (Int64, SeriesInfo, Int, FieldSummary) -> Void
        ) throws {
            do {
                try guarded.store.tier(hourly: false).visitSummaries(read, series: accept, body)
            } catch {
                guarded.noteReadFailure(error)
                throw error
            }
            pending(read, accept) { start, series, index, rollup in body(start, series, index, FieldSummary(rollup)) }
        }

        /// The cells of a read still pending a store, with their field's index in `read.fields`.
        private func pending(
            _ read: CellRead, _ accept: ((SeriesInfo) -> Bool)?, _ body: (Int64, SeriesInfo, Int, FieldRollup) -> Void
        ) {
            let fields = read.fields ?? []
            for (start, cell) in guarded.pendingCells(
                measurement: read.measurement, fields: read.fields, from: read.from, to: read.to)
            where accept?(cell.series) ?? true {
                if let index = fields.firstIndex(of: cell.field) { body(start, cell.series, index, cell.rollup) }
            }
        }
    }

    private func pendingCells(measurement: String, fields: [String]?, from: Int64, to: Int64) -> [(
        start: Int64, cell: ClosedCell
    )] {
        state.withLock { s in
            var out: [(start: Int64, cell: ClosedCell)] = []
            for bucket in s.pending where bucket.start >= from && bucket.start < to {
                for cell in bucket.cells
                where cell.series.measurement == measurement && (fields?.contains(cell.field) ?? true) {
                    out.append((bucket.start, cell))
                }
            }
            return out
        }
    }
}
