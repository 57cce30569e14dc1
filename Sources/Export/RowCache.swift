import Rollups

/// Stored rows that keyed reads (``SQLiteStore/read(_:hourly:series:)`` for a few series) looked up, kept so the
/// next refresh of the same panels does not look them up again: a dashboard re-reads the same series' last hours
/// every few seconds, and only the newest minutes change.
///
/// Entries are the row bytes by tier, bucket start and series row id, and also the absence of a row (an empty
/// entry), so gaps are not looked up again either. Every write to a tier drops that bucket start's entries (all
/// series), retention drops the starts it deleted, and a rolled-back transaction drops everything: an entry is
/// never older than its row. It also keeps summary reads' decoded blocks (``SummaryBlock``), dropped with any row
/// of theirs. Bounded by ``budget`` bytes (an estimate with per-entry overhead); when over it, the cache starts
/// again empty.
struct RowCache {
    static let budget = 32 << 20
    /// The estimated cost of an entry beyond its bytes (dictionary slot, array header).
    static let overhead = 64

    private var tiers: [[Int64: [Int64: [UInt8]]]] = [[:], [:]]
    private(set) var bytes = 0

    /// Decoded summaries of one series and field over ``blockLength`` consecutive bucket starts of the grid, by
    /// tier and block start, then (series row id, field id). Reads that need no sketch take these instead of
    /// decoding rows again.
    private var blocks: [[Int64: [BlockKey: SummaryBlock]]] = [[:], [:]]
    /// The span of a block per tier (grid × ``blockLength``); 0 while the tier has none.
    private var spans: [Int64] = [0, 0]

    struct BlockKey: Hashable {
        var series: Int64
        var field: Int64
    }

    /// The summaries of one series and field at the bucket starts of a block, slot by slot: a slot whose bit is
    /// set in `known` holds what is stored (a summary with count 0: no row, or no such field in it); other slots
    /// were not looked up yet (a read fills in the slots of its range).
    struct SummaryBlock {
        var summaries = ContiguousArray(repeating: FieldSummary(), count: RowCache.blockLength)
        var known: UInt64 = 0
    }

    /// Slots per block (at most 64: one bit each in ``SummaryBlock/known``).
    static let blockLength = 60
    static let summaryBytes = MemoryLayout<FieldSummary>.stride * blockLength + overhead

    /// The block of starts `[blockStart, blockStart + grid × blockLength)`, or `nil` when unknown.
    func block(tier: Tier, grid: Int64, blockStart: Int64, series: Int64, field: Int64) -> SummaryBlock? {
        let t = tier.rawValue
        guard spans[t] == grid * Int64(Self.blockLength) else { return nil }
        return blocks[t][blockStart]?[BlockKey(series: series, field: field)]
    }

    mutating func remember(
        tier: Tier, grid: Int64, blockStart: Int64, series: Int64, field: Int64, block: SummaryBlock
    ) {
        precondition(block.summaries.count == Self.blockLength)
        let t = tier.rawValue
        let span = grid * Int64(Self.blockLength)
        if spans[t] != span {
            dropBlocks(t)
            spans[t] = span
        }
        if bytes + Self.summaryBytes > Self.budget { clear() }
        if blocks[t][blockStart, default: [:]].updateValue(block, forKey: BlockKey(series: series, field: field))
            == nil
        {
            bytes += Self.summaryBytes
        }
    }

    /// The start of the block holding bucket start `start` (blocks of span `span` start at its multiples).
    static func blockStart(_ start: Int64, span: Int64) -> Int64 {
        let q = start / span
        return (start % span < 0 ? q - 1 : q) * span
    }

    private mutating func dropBlocks(_ t: Int) {
        for block in blocks[t].values { bytes -= block.count * Self.summaryBytes }
        blocks[t] = [:]
    }

    /// The cached row (empty: known to have no row), or `nil` when unknown.
    func row(tier: Tier, start: Int64, series: Int64) -> [UInt8]? {
        tiers[tier.rawValue][start]?[series]
    }

    mutating func remember(tier: Tier, start: Int64, series: Int64, row: [UInt8]) {
        if bytes + row.count + Self.overhead > Self.budget { clear() }
        let old = tiers[tier.rawValue][start, default: [:]].updateValue(row, forKey: series)
        bytes += row.count + Self.overhead - (old.map { $0.count + Self.overhead } ?? 0)
    }

    /// A write to bucket `start` of a tier.
    mutating func invalidate(tier: Tier, start: Int64) {
        let t = tier.rawValue
        if spans[t] > 0, let gone = blocks[t].removeValue(forKey: Self.blockStart(start, span: spans[t])) {
            bytes -= gone.count * Self.summaryBytes
        }
        guard let gone = tiers[t].removeValue(forKey: start) else { return }
        bytes -= gone.values.reduce(0) { $0 + $1.count + Self.overhead }
    }

    /// Rows of buckets before `start` deleted (retention): every block that holds such a bucket goes too.
    mutating func invalidate(tier: Tier, before start: Int64) {
        let t = tier.rawValue
        for key in tiers[t].keys where key < start { invalidate(tier: tier, start: key) }
        for key in blocks[t].keys where key < start {
            bytes -= (blocks[t].removeValue(forKey: key)?.count ?? 0) * Self.summaryBytes
        }
    }

    mutating func clear() {
        tiers = [[:], [:]]
        blocks = [[:], [:]]
        bytes = 0
    }
}
