import CSQLite
import Rollups
import Synchronization

/// Test hooks (internal: `@testable import Export`).
extension SQLiteStore {
    /// Runs `sql` (tests only: fault injection with triggers).
    func executeForTesting(_ sql: String) throws(StoreError) { try execute(sql, context: "test") }

    /// Merges `bucket` into the hourly tier directly (tests only; the daemon fills it by downsampling).
    func storeHourlyForTesting(_ bucket: ClosedBucket) throws(StoreError) {
        try connection.withLock { c throws(StoreError) in
            try RowWriter(c.db, table: "rollup_1h").write(bucket, merging: true, connection: &c)
            publish(&c)
        }
    }

    /// Merges `bucket` into the 1-minute tier in a transaction that stays open (the writer's lock held) while
    /// `body` runs, then commits (tests only: reads during a long flush).
    func storeForTesting(_ bucket: ClosedBucket, whileWriting body: @Sendable () -> Void) throws(StoreError) {
        try connection.withLock { c throws(StoreError) in
            let db = c.db
            try transaction(&c, "test") { c throws(StoreError) in
                try RowWriter(db, table: "rollup_1m").write(bucket, merging: true, connection: &c)
                body()
            }
        }
    }

    func setSchemaVersionForTesting(_ version: Int64) throws(StoreError) {
        try connection.withLock { c throws(StoreError) in try Self.setMeta(c.db, "schema_version", version) }
    }

    /// Number of stored 1-minute rows (one per series and minute, holding all its fields).
    public func rowCount() throws(StoreError) -> Int {
        try connection.withLock { c throws(StoreError) in
            let s = try Statement(c.db, "SELECT count(*) FROM rollup_1m")
            _ = try s.step()
            return Int(s.int64(0))
        }
    }
}
