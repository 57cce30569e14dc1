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
