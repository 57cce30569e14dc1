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
        var closed = false
        defer { if !closed { sqlite3_close(to) } }
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
        var integrity = ""
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(to, "PRAGMA integrity_check", -1, &statement, nil) == SQLITE_OK else {
            throw StoreError(code: sqlite3_errcode(to), message: String(cString: sqlite3_errmsg(to)), context: "backup")
        }
        while sqlite3_step(statement) == SQLITE_ROW {
            if let text = sqlite3_column_text(statement, 0) {
                integrity += (integrity.isEmpty ? "" : "; ") + String(cString: text)
            }
        }
        sqlite3_finalize(statement)
        let pageSize = Int(try intPragma(to, "page_size"))
        sqlite3_close(to)
        closed = true
        return BackupResult(pages: pages, bytes: pages * pageSize, integrity: integrity)
    }

    private static func intPragma(_ db: OpaquePointer, _ name: String) throws(StoreError) -> Int64 {
        var statement: OpaquePointer?
        defer { sqlite3_finalize(statement) }
        guard sqlite3_prepare_v2(db, "PRAGMA \(name)", -1, &statement, nil) == SQLITE_OK,
            sqlite3_step(statement) == SQLITE_ROW
        else {
            throw StoreError(code: sqlite3_errcode(db), message: String(cString: sqlite3_errmsg(db)), context: name)
        }
        return sqlite3_column_int64(statement, 0)
    }
}
