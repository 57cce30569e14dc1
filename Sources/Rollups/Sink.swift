import Synchronization

/// Where closed buckets go. Implementations merge: storing a cell for a (series, field, bucket) that is already
/// stored must merge the two rollups, never overwrite or duplicate — that is what makes late data, restarts in the
/// middle of a minute and retried flushes exact.
public protocol RollupSink: Sendable {
    func store(_ buckets: [ClosedBucket]) throws
}

/// Reads stored rollups back for queries.
public protocol RollupReader: Sendable {
    /// Stored cells of `measurement` (and `field`, when given) whose bucket starts in `[from, to)`.
    func storedCells(measurement: String, field: String?, from: Int64, to: Int64) throws -> [(
        start: Int64, cell: ClosedCell
    )]
}

/// An in-memory sink and reader: keeps closed buckets for `retention` nanoseconds (by bucket start, relative to
/// the newest bucket stored). Used until a durable store is configured, and in tests.
public final class MemoryStore: RollupSink, RollupReader {
    private struct Key: Hashable {
        var series: SeriesInfo
        var field: String
        var start: Int64
    }

    private struct State {
        var cells: [Key: FieldRollup] = [:]
        var byMeasurement: [String: Set<Key>] = [:]
        var newest: Int64 = .min
    }

    private let state = Mutex(State())
    public let retention: Int64

    public init(retention: Int64 = 7 * 86_400_000_000_000) {
        self.retention = retention
    }

    public func store(_ buckets: [ClosedBucket]) {
        state.withLock { state in
            for bucket in buckets {
                state.newest = max(state.newest, bucket.start)
                for cell in bucket.cells {
                    let key = Key(series: cell.series, field: cell.field, start: bucket.start)
                    if var existing = state.cells[key] {
                        existing.merge(cell.rollup)
                        state.cells[key] = existing
                    } else {
                        state.cells[key] = cell.rollup
                        state.byMeasurement[cell.series.measurement, default: []].insert(key)
                    }
                }
            }
            let horizon = state.newest &- retention
            if state.cells.count > 0, state.cells.keys.contains(where: { $0.start < horizon }) {
                for key in state.cells.keys where key.start < horizon {
                    state.cells.removeValue(forKey: key)
                    state.byMeasurement[key.series.measurement]?.remove(key)
                }
            }
        }
    }

    public func storedCells(measurement: String, field: String?, from: Int64, to: Int64) -> [(
        start: Int64, cell: ClosedCell
    )] {
        state.withLock { state in
            guard let keys = state.byMeasurement[measurement] else { return [] }
            var out: [(start: Int64, cell: ClosedCell)] = []
            for key in keys where key.start >= from && key.start < to && (field == nil || key.field == field) {
                if let rollup = state.cells[key] {
                    out.append((key.start, ClosedCell(series: key.series, field: key.field, rollup: rollup)))
                }
            }
            return out
        }
    }

    /// Number of stored cells.
    public var cellCount: Int { state.withLock { $0.cells.count } }
}
