import CSQLite
public import Rollups
import Synchronization

// MARK: - The query engine's view

extension SQLiteStore: SeriesCatalog {
    public func catalogSeries() throws -> [SeriesInfo] { try allSeries() }

    public func catalogFields() throws -> [String: [String: FieldType]] { try fieldTypes() }

    public func catalogFields(of measurement: String) throws -> [String: FieldType] {
        try withReader { r, _ throws(StoreError) in
            let rows = try Statement(r.db, "SELECT field, type FROM measurement_fields WHERE measurement = ?1")
            try rows.bind(1, measurement)
            var out: [String: FieldType] = [:]
            while try rows.step() { out[rows.text(0)] = FieldType(rawValue: rows.text(1)) ?? .float }
            return out
        }
    }

    public func catalogTagKeys(of measurement: String) throws -> Set<String> {
        try withReader { r, _ throws(StoreError) in
            var keys = Set<String>()
            for s in try Self.series(of: measurement, in: &r) { for t in s.info.tags { keys.insert(t.key) } }
            return keys
        }
    }

    /// The fields of each stored measurement with their types (the `measurement_fields` table).
    public func fieldTypes() throws(StoreError) -> [String: [String: FieldType]] {
        try withReader { r, _ throws(StoreError) in
            let rows = try Statement(r.db, "SELECT measurement, field, type FROM measurement_fields")
            var out: [String: [String: FieldType]] = [:]
            while try rows.step() {
                out[rows.text(0), default: [:]][rows.text(1)] = FieldType(rawValue: rows.text(2)) ?? .float
            }
            return out
        }
    }

    /// One stored tier as a ``CellSource`` (what the query engine reads).
    public func source(_ tier: Tier) -> TierSource { TierSource(store: self, tier: tier) }

    public struct TierSource: CellSource {
        public let store: SQLiteStore
        public let tier: Tier

        public func visitCells(
            _ read: CellRead, series accept: ((SeriesInfo) -> Bool)?,
            _ body: (Int64, SeriesInfo, Int, consuming FieldRollup) -> Void
        ) throws {
            var generation: UInt64 = 0
            try visitCells(read, series: accept, generation: &generation, body)
        }

        /// ``visitCells(_:series:_:)`` in one snapshot, whose store generation goes to `generation`.
        public func visitCells(
            _ read: CellRead, series accept: ((SeriesInfo) -> Bool)?, generation: inout UInt64,
            _ body: (Int64, SeriesInfo, Int, consuming FieldRollup) -> Void
        ) throws {
            // Cells come in runs of one field: the last one is looked up before hashing.
            let fields = read.fields ?? []
            var last: (name: String, index: Int)?
            _ = try store.visit(read, tier: tier, series: accept, generation: &generation) {
                start, series, field, rollup in
                let f: Int
                if let last, last.name == field {
                    f = last.index
                } else {
                    guard let known = fields.firstIndex(of: field) else { return }
                    f = known
                    last = (field, known)
                }
                body(start, series, f, rollup)
            }
        }

        public func visitSummaries(
            _ read: CellRead, series accept: ((SeriesInfo) -> Bool)?,
            _ body: (Int64, SeriesInfo, Int, FieldSummary) -> Void
        ) throws {
            _ = try store.visitSummaries(read, tier: tier, series: accept, body)
        }

        /// ``visitSummaries(_:series:_:)`` in one snapshot, whose store generation goes to `generation`.
        public func visitSummaries(
            _ read: CellRead, series accept: ((SeriesInfo) -> Bool)?, generation: inout UInt64,
            _ body: (Int64, SeriesInfo, Int, FieldSummary) -> Void
        ) throws {
            _ = try store.visitSummaries(read, tier: tier, series: accept, generation: &generation, body)
        }
    }
}

/// A stored tier: the 1-minute rows (`rollup_1m`) or their hourly downsampling (`rollup_1h`). Every read names one.
public enum Tier: Int, Sendable, CaseIterable {
    case minutes = 0
    case hours = 1

    /// Its table.
    public var table: String { self == .minutes ? "rollup_1m" : "rollup_1h" }
}
