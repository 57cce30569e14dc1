/// Where closed buckets go. Implementations merge: storing a cell for a (series, field, bucket) that is already
/// stored must merge the two rollups, never overwrite or duplicate — that is what makes late data, restarts in the
/// middle of a minute and retried flushes exact.
public protocol RollupSink: Sendable {
    func store(_ buckets: [ClosedBucket]) throws
    /// Hands buckets over without waiting for them to be stored (a listener's late cells): a sink that queues
    /// them stores them with its next store; by default they are stored now, a failure dropped.
    func submit(_ buckets: [ClosedBucket])
}

extension RollupSink {
    public func submit(_ buckets: [ClosedBucket]) { try? store(buckets) }
}

/// Reads stored rollups back for queries.
public protocol RollupReader: Sendable {
    /// Stored cells of `measurement` (and `field`, when given) whose bucket starts in `[from, to)`.
    func storedCells(measurement: String, field: String?, from: Int64, to: Int64) throws -> [(
        start: Int64, cell: ClosedCell
    )]
}
