import CSQLite
import Rollups
import Synchronization

/// What survives a restart besides rollups: where WAL replay starts, and the dedup window's entries.
extension SQLiteStore {
    /// Where WAL replay starts, and per stored bucket the highest WAL position it holds.
    public func walState() throws(StoreError) -> (replayFrom: UInt64, watermarks: [Int64: UInt64]) {
        try connection.withLock { c throws(StoreError) in
            var from: UInt64 = 0
            let meta = try Statement(c.db, "SELECT value FROM meta WHERE key = 'wal_replay_from'")
            if try meta.step() { from = UInt64(meta.text(0)) ?? 0 }
            var marks: [Int64: UInt64] = [:]
            let rows = try Statement(c.db, "SELECT ts, wal_position FROM flushed")
            while try rows.step() { marks[rows.int64(0)] = UInt64(bitPattern: rows.int64(1)) }
            return (from, marks)
        }
    }

    /// Persists batch-dedup entries and drops expired ones.
    public func saveDedup(_ entries: [(high: UInt64, low: UInt64, expires: Int64)], now: Int64) throws(StoreError) {
        try connection.withLock { c throws(StoreError) in
            try Self.execute(c.db, "BEGIN", context: "saving dedup entries")
            let insert = try Statement(
                c.db, "INSERT OR REPLACE INTO dedup(hash_high, hash_low, expires) VALUES(?1, ?2, ?3)")
            for e in entries {
                try insert.bind(1, Int64(bitPattern: e.high))
                try insert.bind(2, Int64(bitPattern: e.low))
                try insert.bind(3, e.expires)
                _ = try insert.step()
                insert.reset()
            }
            let prune = try Statement(c.db, "DELETE FROM dedup WHERE expires <= ?1")
            try prune.bind(1, now)
            _ = try prune.step()
            try Self.execute(c.db, "COMMIT", context: "saving dedup entries")
        }
    }

    public func loadDedup() throws(StoreError) -> [(high: UInt64, low: UInt64, expires: Int64)] {
        try connection.withLock { c throws(StoreError) in
            let rows = try Statement(c.db, "SELECT hash_high, hash_low, expires FROM dedup")
            var out: [(high: UInt64, low: UInt64, expires: Int64)] = []
            while try rows.step() {
                out.append((UInt64(bitPattern: rows.int64(0)), UInt64(bitPattern: rows.int64(1)), rows.int64(2)))
            }
            return out
        }
    }
}
