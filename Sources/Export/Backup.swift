import CSQLite

#if canImport(Glibc)
    import Glibc
#endif

extension SQLiteStore {
    /// What ``backup(from:to:pagesPerStep:)`` copied.
    public struct BackupResult: Sendable {
        public var pages: Int
        public var bytes: Int
        /// `PRAGMA integrity_check` on the copy: "ok", or what is wrong.
        public var integrity: String
    }

    /// Copies the database at `source` to `destination` with SQLite's online backup API, while a daemon may be
    /// writing to it: each step copies `pagesPerStep` pages under a short read lock; when the source changes
    /// between steps the copy starts over (SQLite does this itself), so the result is one consistent snapshot.
    /// The destination must not exist (a backup never overwrites). The copy is checked before returning.
    public static func backup(from source: String, to destination: String, pagesPerStep: Int32 = 1024)
        throws(StoreError) -> BackupResult
    {
        var existing = stat()
        if stat(destination, &existing) == 0 {
            throw StoreError(
                code: SQLITE_CANTOPEN, message: "\(destination) exists; not overwriting it", context: "backup")
        }
        let from = try open(source, create: false)
        defer { sqlite3_close(from) }
        let to = try open(destination, create: true)
        defer { sqlite3_close(to) }  // after every Statement below is finalized (they live in the do block)
        guard let handle = sqlite3_backup_init(to, "main", from, "main") else {
            throw StoreError(code: sqlite3_errcode(to), message: String(cString: sqlite3_errmsg(to)), context: "backup")
        }
        var rc: Int32
        repeat {
            rc = sqlite3_backup_step(handle, pagesPerStep)
            if rc == SQLITE_BUSY || rc == SQLITE_LOCKED { sqlite3_sleep(20) }
        } while rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED
        let pages = Int(sqlite3_backup_pagecount(handle))
        let finish = sqlite3_backup_finish(handle)
        guard rc == SQLITE_DONE, finish == SQLITE_OK else {
            throw StoreError(
                code: rc == SQLITE_DONE ? finish : rc, message: String(cString: sqlite3_errmsg(to)), context: "backup")
        }
        // A standalone file: no -wal beside it to lose.
        try execute(to, "PRAGMA journal_mode=DELETE", context: "backup")
        var lines: [String] = []
        var pageSize = 0
        do {
            let check = try Statement(to, "PRAGMA integrity_check")
            while try check.step() { lines.append(check.text(0)) }
            let size = try Statement(to, "PRAGMA page_size")
            if try size.step() { pageSize = Int(size.int64(0)) }
        }
        return BackupResult(pages: pages, bytes: pages * pageSize, integrity: lines.joined(separator: "; "))
    }
}
