/// Stored rows that keyed reads (``SQLiteStore/read(_:hourly:series:)`` for a few series) looked up, kept so the
/// next refresh of the same panels does not look them up again: a dashboard re-reads the same series' last hours
/// every few seconds, and only the newest minutes change.
///
/// Entries are the row bytes by tier, bucket start and series row id, and also the absence of a row (an empty
/// entry), so gaps are not looked up again either. Every write to a tier drops that bucket start's entries (all
/// series), retention drops the starts it deleted, and a rolled-back transaction drops everything: an entry is
/// never older than its row. Bounded by ``budget`` bytes (an estimate with per-entry overhead); when over it, the
/// cache starts again empty.
struct RowCache {
    static let budget = 32 << 20
    /// The estimated cost of an entry beyond its bytes (dictionary slot, array header).
    static let overhead = 64

    private var tiers: [[Int64: [Int64: [UInt8]]]] = [[:], [:]]
    private(set) var bytes = 0

    /// The cached row (empty: known to have no row), or `nil` when unknown.
    func row(hourly: Bool, start: Int64, series: Int64) -> [UInt8]? {
        tiers[hourly ? 1 : 0][start]?[series]
    }

    mutating func remember(hourly: Bool, start: Int64, series: Int64, row: [UInt8]) {
        if bytes + row.count + Self.overhead > Self.budget { clear() }
        let old = tiers[hourly ? 1 : 0][start, default: [:]].updateValue(row, forKey: series)
        bytes += row.count + Self.overhead - (old.map { $0.count + Self.overhead } ?? 0)
    }

    /// A write to bucket `start` of a tier.
    mutating func invalidate(hourly: Bool, start: Int64) {
        guard let gone = tiers[hourly ? 1 : 0].removeValue(forKey: start) else { return }
        bytes -= gone.values.reduce(0) { $0 + $1.count + Self.overhead }
    }

    /// Rows of buckets before `start` deleted (retention).
    mutating func invalidate(hourly: Bool, before start: Int64) {
        for key in tiers[hourly ? 1 : 0].keys where key < start { invalidate(hourly: hourly, start: key) }
    }

    mutating func clear() {
        tiers = [[:], [:]]
        bytes = 0
    }
}
