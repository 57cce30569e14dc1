public import Rollups
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The write side of the store: closed buckets go through it into SQLite, and what it has not stored yet is read
/// by queries as if it were stored. No lock that a query or a listener takes is held across SQLite work:
///
/// - listeners ``submit(_:)`` late cells and return at once (they are in the WAL already); the next
///   ``store(_:replayFrom:)`` — the flush service, every second — stores them;
/// - a store takes what is queued, marks it in flight and stores it with no lock of the guard held; only storers
///   wait for each other;
/// - a query reads SQLite in one snapshot and learns its store generation, then adds what is queued and what is in
///   flight unless its snapshot already holds it (the in-flight batch is told the generation it commits as, inside
///   the transaction): every cell counts once, during a store as after it;
/// - a failed store keeps its buckets in memory (bounded by `maxPendingCells`, the oldest going first, counted)
///   and retries them with the next, so storing resumes by itself when the fault clears; meanwhile `/health`
///   reports `degraded` with the reason and the WAL is not released.
///
/// Fault injection for tests: while the file `<data_dir>/inject-store-fault` exists, every store fails.
public final class StoreGuard: RollupSink, RollupReader {
    public let store: SQLiteStore
    public let faultFile: String
    public let maxPendingCells: Int
    private let onStoreError: @Sendable () -> Void
    private let onDropped: @Sendable (Int) -> Void

    private struct State {
        /// Buckets waiting for the next store, oldest first.
        var queued: [ClosedBucket] = []
        /// The buckets a store is writing now, and the generation its transaction commits as once it knows it.
        var inFlight: [ClosedBucket] = []
        var inFlightGeneration: UInt64?
        /// Cells in `queued` and `inFlight`.
        var pendingCells = 0
        /// Whether `queued` holds buckets of a failed store (they came from older WAL records than a flush's).
        var retrying = false
        var reason: String?
        /// Set once SQLite said the database is corrupt or not a database (a read or a store): it stays until a
        /// restart, since nothing the daemon does repairs the file.
        var unreadable: String?
        /// Reads in progress: each with the store generation it started at (its snapshot's is that or later).
        var readers: [Int: UInt64] = [:]
        var nextReader = 0
        /// Every batch stored, with its generation, until no read in progress started before it: a read whose
        /// snapshot predates a batch's commit reads it from here (the batch is no longer in flight). The storer
        /// frees them, so a read never holds the last reference to a million cells (freeing them took a query
        /// 300–600 ms).
        var retired: [(generation: UInt64, buckets: [ClosedBucket])] = []

        /// Takes the retired batches no read in progress can hold any more (the caller frees them, off the lock).
        mutating func takeFreeable() -> [(generation: UInt64, buckets: [ClosedBucket])] {
            guard !retired.isEmpty else { return [] }
            let oldest = readers.values.min() ?? .max
            let free = retired.filter { $0.generation <= oldest }
            retired.removeAll { $0.generation <= oldest }
            return free
        }
    }

    private let state = Mutex(State())
    /// Taken by storers only (one store at a time), never by a query or a listener.
    private let writer = Mutex(())
    /// Called by a read between its SQLite snapshot and the cells not stored yet (tests only).
    let afterSnapshotForTesting = Mutex<(@Sendable () -> Void)?>(nil)

    /// Registers a read about to take its SQLite snapshot (at this store generation or a later one), so batches
    /// committed meanwhile stay readable for it (``State/retired``).
    func beginRead() -> Int {
        let generation = store.committedGeneration
        return state.withLock { s in
            s.nextReader &+= 1
            s.readers[s.nextReader] = generation
            return s.nextReader
        }
    }

    func endRead(_ reader: Int) {
        _ = state.withLock { s in s.readers.removeValue(forKey: reader) }
    }

    public init(
        store: SQLiteStore, dataDir: String, maxPendingCells: Int = 2_000_000,
        onStoreError: @escaping @Sendable () -> Void = {}, onDropped: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.store = store
        faultFile = dataDir + "/inject-store-fault"
        self.maxPendingCells = maxPendingCells
        self.onStoreError = onStoreError
        self.onDropped = onDropped
    }

    /// Why storing is failing, or `nil` when healthy.
    public var degradedReason: String? { state.withLock { $0.reason } }
    /// Why the store cannot be read, or `nil`.
    public var unreadableReason: String? { state.withLock { $0.unreadable } }
    /// Cells not stored yet (queued or in flight).
    public var pendingCells: Int { state.withLock { $0.pendingCells } }
    public var isDegraded: Bool { degradedReason != nil }
    /// Whether buckets wait for the next store.
    public var hasQueued: Bool { state.withLock { !$0.queued.isEmpty } }
    /// The lowest WAL position of a queued bucket (replay must still start at or before it), `nil` when none.
    public var oldestQueuedPosition: UInt64? {
        state.withLock { s in s.queued.lazy.map(\.walPosition).filter { $0 > 0 }.min() }
    }

    /// SQLite codes that mean the file itself is damaged.
    public static func isCorruption(_ error: any Error) -> Bool {
        guard let e = error as? StoreError else { return false }
        return e.code & 0xFF == 11 || e.code & 0xFF == 26  // SQLITE_CORRUPT, SQLITE_NOTADB
    }

    /// A read failed: when the file is damaged, `/health` fails from now on.
    public func noteReadFailure(_ error: any Error) {
        guard Self.isCorruption(error) else { return }
        state.withLock { $0.unreadable = $0.unreadable ?? "\(error)" }
    }

    /// Queues `buckets` for the next store and returns at once (listeners: late cells). Queries see them now.
    public func submit(_ buckets: [ClosedBucket]) {
        let cells = buckets.reduce(0) { $0 + $1.cells.count }
        guard cells > 0 else { return }
        state.withLock { s in
            s.queued.append(contentsOf: buckets)
            s.pendingCells += cells
            dropOldest(&s)
        }
    }

    public func store(_ buckets: [ClosedBucket]) throws { try store(buckets, replayFrom: nil) }

    /// Frees stored batches no read in progress can still hold (the flush service calls it every second, so a
    /// stored minute leaves memory within a second of its last reader; a read itself never frees one).
    public func freeStored() {
        let freeable = state.withLock { $0.takeFreeable() }
        withExtendedLifetime(freeable) {}
    }

    /// Stores what is queued, then `buckets`, in one transaction; on failure keeps them all queued and rethrows.
    /// Waits only for another store.
    public func store(_ buckets: [ClosedBucket], replayFrom: UInt64?) throws {
        try writer.withLock { _ in
            // Freed here, on the storer's thread, after the lock: what no read can hold any more.
            let freeable = state.withLock { $0.takeFreeable() }
            withExtendedLifetime(freeable) {}
            let (batch, retrying) = state.withLock { s in
                s.inFlight = s.queued
                s.inFlight.append(contentsOf: buckets)
                s.inFlightGeneration = nil
                s.queued = []
                s.pendingCells += buckets.reduce(0) { $0 + $1.cells.count }
                return (s.inFlight, s.retrying)
            }
            do {
                if access(faultFile, F_OK) == 0 {
                    throw StoreError(code: 13, message: "injected fault (\(faultFile) exists)", context: "storing")
                }
                // While recovering, do not move the replay start: pending buckets came from older records.
                try store.store(batch, replayFrom: retrying ? nil : replayFrom) { generation in
                    self.state.withLock { $0.inFlightGeneration = generation }
                }
                state.withLock { s in
                    s.pendingCells -= s.inFlight.reduce(0) { $0 + $1.cells.count }
                    // A read that started before this commit may have a snapshot without it: kept for it.
                    s.retired.append((s.inFlightGeneration ?? 0, s.inFlight))
                    s.inFlight = []
                    s.inFlightGeneration = nil
                    s.retrying = false
                    s.reason = nil
                }
            } catch {
                onStoreError()
                state.withLock { s in
                    s.queued = s.inFlight + s.queued
                    s.inFlight = []
                    s.inFlightGeneration = nil
                    s.retrying = true
                    s.reason = "storing rollups failed: \(error)"
                    if Self.isCorruption(error) { s.unreadable = s.unreadable ?? "\(error)" }
                    dropOldest(&s)
                }
                throw error
            }
        }
    }

    /// Bounded memory: past the limit the oldest queued buckets go (counted); the WAL still holds them.
    private func dropOldest(_ s: inout State) {
        while s.pendingCells > maxPendingCells, !s.queued.isEmpty {
            let dropped = s.queued.removeFirst()
            s.pendingCells -= dropped.cells.count
            s.retrying = true
            onDropped(dropped.cells.count)
        }
    }

    public func storedCells(measurement: String, field: String?, from: Int64, to: Int64) throws -> [(
        start: Int64, cell: ClosedCell
    )] {
        let read = CellRead(measurement: measurement, fields: field.map { [$0] }, from: from, to: to)
        let reader = beginRead()
        defer { endRead(reader) }
        var generation: UInt64 = 0
        var cells: [(start: Int64, cell: ClosedCell)] = []
        _ = try store.visit(read, series: nil, generation: &generation) { start, series, field, rollup in
            cells.append((start, ClosedCell(series: series, field: field, rollup: rollup)))
        }
        cells += unstored(read, nil, storedThrough: generation)
        return cells
    }

    /// The 1-minute tier as queries read it: stored rows, then cells not stored yet (as if stored). A read that
    /// fails on a corrupt file marks the store unreadable (`/health`).
    public var minutes: Minutes { Minutes(guarded: self) }

    public struct Minutes: CellSource {
        let guarded: StoreGuard

        public func visitCells(
            _ read: CellRead, series accept: ((SeriesInfo) -> Bool)?,
            _ body: (Int64, SeriesInfo, Int, consuming FieldRollup) -> Void
        ) throws {
            let reader = guarded.beginRead()
            defer { guarded.endRead(reader) }
            var generation: UInt64 = 0
            do {
                try guarded.store.source(.minutes).visitCells(read, series: accept, generation: &generation, body)
            } catch {
                guarded.noteReadFailure(error)
                throw error
            }
            unstored(read, accept, generation) { start, series, index, rollup in body(start, series, index, rollup) }
        }

        public func visitSummaries(
            _ read: CellRead, series accept: ((SeriesInfo) -> Bool)?,
            _ body: (Int64, SeriesInfo, Int, FieldSummary) -> Void
        ) throws {
            let reader = guarded.beginRead()
            defer { guarded.endRead(reader) }
            var generation: UInt64 = 0
            do {
                try guarded.store.source(.minutes).visitSummaries(
                    read, series: accept, generation: &generation, body)
            } catch {
                guarded.noteReadFailure(error)
                throw error
            }
            unstored(read, accept, generation) { start, series, index, rollup in
                body(start, series, index, FieldSummary(rollup))
            }
        }

        /// The cells of a read not stored in the snapshot of `generation`, with their field's index in
        /// `read.fields`.
        private func unstored(
            _ read: CellRead, _ accept: ((SeriesInfo) -> Bool)?, _ generation: UInt64,
            _ body: (Int64, SeriesInfo, Int, FieldRollup) -> Void
        ) {
            let fields = read.fields ?? []
            if let hook = guarded.afterSnapshotForTesting.withLock({ $0 }) { hook() }
            for (start, cell) in guarded.unstored(read, accept, storedThrough: generation) {
                if let index = fields.firstIndex(of: cell.field) { body(start, cell.series, index, cell.rollup) }
            }
        }
    }

    /// Queued cells of a read that `accept` takes, and in-flight ones unless a snapshot of `generation` holds them.
    /// Only the arrays are taken under the lock (copy-on-write: no cell is copied there); the scan — as long as the
    /// batch being stored, a million cells in a large flush — runs outside it, so a listener's ``submit(_:)``
    /// never waits for a query.
    private func unstored(
        _ read: CellRead, _ accept: ((SeriesInfo) -> Bool)?, storedThrough generation: UInt64
    ) -> [(start: Int64, cell: ClosedCell)] {
        let (inFlight, queued, retired) = state.withLock { s in
            (s.inFlightGeneration.map({ $0 > generation }) ?? true ? s.inFlight : [], s.queued, s.retired)
        }
        let committed = retired.filter { $0.generation > generation }.flatMap(\.buckets)
        var out: [(start: Int64, cell: ClosedCell)] = []
        // Cells come in runs of one series: the measurement and `accept` are checked once per run, and a cell is
        // copied only when it is taken (a million-cell batch costs a query a pass of cheap compares). A run is the
        // same series when its id, measurement and tag storage are the same (ids alone can collide).
        var last: (id: UInt64, tags: UnsafeRawPointer?, measurement: String)?
        var lastTaken = false
        for buckets in [committed, inFlight, queued] {
            for bucket in buckets where bucket.start >= read.from && bucket.start < read.to {
                bucket.cells.withUnsafeBufferPointer { cells in
                    for i in cells.indices {
                        let series = cells[i].series
                        let tags = series.tags.withUnsafeBufferPointer { UnsafeRawPointer($0.baseAddress) }
                        if last == nil || last!.id != series.id || last!.tags != tags
                            || last!.measurement != series.measurement
                        {
                            last = (series.id, tags, series.measurement)
                            lastTaken = series.measurement == read.measurement && (accept?(series) ?? true)
                        }
                        guard lastTaken, read.fields?.contains(cells[i].field) ?? true else { continue }
                        out.append((bucket.start, cells[i]))
                    }
                }
            }
        }
        return out
    }
}
