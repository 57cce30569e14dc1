import CSQLite
import Rollups

/// A prepared statement, finalized on deinit. Used only while the connection's lock is held.
final class Statement {
    let handle: OpaquePointer
    let db: OpaquePointer

    init(_ db: OpaquePointer, _ sql: String) throws(StoreError) {
        var h: OpaquePointer?
        let rc = sqlite3_prepare_v2(db, sql, -1, &h, nil)
        guard rc == SQLITE_OK, let h else {
            throw StoreError(code: rc, message: String(cString: sqlite3_errmsg(db)), context: "preparing \(sql)")
        }
        handle = h
        self.db = db
    }

    deinit { sqlite3_finalize(handle) }

    func check(_ rc: Int32, _ what: String) throws(StoreError) {
        guard rc == SQLITE_OK else {
            throw StoreError(code: rc, message: String(cString: sqlite3_errmsg(db)), context: what)
        }
    }

    func bind(_ i: Int32, _ v: Int64) throws(StoreError) { try check(sqlite3_bind_int64(handle, i, v), "bind") }
    func bind(_ i: Int32, _ v: String) throws(StoreError) {
        try check(sqlite3_bind_text(handle, i, v, -1, csqlite_transient()), "bind")
    }
    func bind(_ i: Int32, _ v: [UInt8]) throws(StoreError) {
        let rc = v.withUnsafeBytes {
            sqlite3_bind_blob(handle, i, $0.baseAddress, Int32($0.count), csqlite_transient())
        }
        try check(rc, "bind")
    }

    /// Binds `bytes` to parameter `i` without copying them (SQLITE_STATIC) and steps while they are pinned.
    func stepBinding(blob bytes: borrowing ByteWriter, at i: Int32) throws(StoreError) -> Bool {
        try bytes.withUnsafeBytes { (buffer: UnsafeRawBufferPointer) -> Result<Bool, StoreError> in
            Result { () throws(StoreError) in try stepBinding(blob: buffer, at: i) }
        }.get()
    }

    /// Binds `buffer` to parameter `i` without copying it and steps; it is unbound before returning.
    func stepBinding(blob buffer: UnsafeRawBufferPointer, at i: Int32) throws(StoreError) -> Bool {
        let bound = sqlite3_bind_blob(handle, i, buffer.baseAddress, Int32(buffer.count), nil)
        var rc = SQLITE_OK
        if bound == SQLITE_OK {
            rc = sqlite3_step(handle)
            // The bytes are only borrowed for this step: unbind before they can move.
            sqlite3_bind_null(handle, i)
        }
        try check(bound, "bind")
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        throw StoreError(code: rc, message: String(cString: sqlite3_errmsg(db)), context: "step")
    }

    /// Steps once: `true` for a row, `false` when done.
    func step() throws(StoreError) -> Bool {
        let rc = sqlite3_step(handle)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        throw StoreError(code: rc, message: String(cString: sqlite3_errmsg(db)), context: "step")
    }

    func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }
    func text(_ column: Int32) -> String {
        guard let p = sqlite3_column_text(handle, column) else { return "" }
        return String(cString: p)
    }
    func blob(_ column: Int32) -> [UInt8] {
        let n = Int(sqlite3_column_bytes(handle, column))
        guard n > 0, let p = sqlite3_column_blob(handle, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: n))
    }
}
