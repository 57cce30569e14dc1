import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// CRC-32C (Castagnoli), table-driven, for WAL record framing.
enum CRC32C {
    static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    static func checksum(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        var c = ~seed
        table.withUnsafeBufferPointer { t in
            for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        }
        return ~c
    }
}

/// One accepted batch as logged: the raw line protocol with the precision and the server time it was received
/// at (so replay gives lines without a timestamp the same time they got the first time).
public struct WALRecord: Sendable, Equatable {
    public var position: UInt64
    public var receivedAt: Int64
    public var precision: UInt8
    public var payload: [UInt8]
}

/// What opening the log found: how many records it holds from the start position, and what it had to repair.
public struct WALRecovery: Sendable {
    public var records: [WALRecord] = []
    public var truncatedBytes = 0
    /// Corrupt records (or holes) skipped, with records after them replayed.
    public var skippedRecords = 0
    public var problems: [String] = []
}

/// The write-ahead log under `<data_dir>/wal/`: accepted batches are appended here before they touch the rollups.
///
/// Segments `%016x.wal` start with a 16-byte header (`MWAL`, format version 2, 3 reserved bytes, then the segment's
/// own number as a u64; version 1's 8-byte header without the number is still read); each record is
/// `[length u32][crc32c u32][received_at i64][precision u8][payload]`, little-endian, the CRC covering everything
/// after it. A position is `segment << 40 | offset` (segment numbers below 2^24).
///
/// On open, never a crash:
/// - a torn tail (a record cut short, or zeros where the file was extended but not written) is truncated;
/// - a record that fails its CRC but whose length is sane (it ends inside the file) is skipped by its length and
///   reported, the records after it replayed, and a copy of the segment kept as `<name>.corrupt` for inspection;
/// - a segment of a newer format is set aside (`.unsupported`), one whose header names another number (a copy) is
///   set aside as `.misnamed` (it would replay records twice), a name that is not a segment number is ignored.
///
/// Appends write at the record's own offset (`pwritev`), so a short write (a full disk) is undone with
/// `ftruncate` and leaves no hole for the next record to land behind.
///
/// Durability (`[storage] durability`): `fsync` — ``sync(upTo:)`` returns after the record is on disk, and callers
/// waiting at the same time share one fsync (group commit); `batch` — a background fsync at most every 100 ms;
/// `none` — the OS decides.
public final class WriteAheadLog: Sendable {
    public enum Durability: String, Sendable {
        case fsync, batch, none
    }

    static let magic: [UInt8] = [0x4D, 0x57, 0x41, 0x4C, 2, 0, 0, 0]  // "MWAL", version 2 (+ the segment number)
    static let headerSize = 16
    static let recordHeader = 17
    public static let segmentSize = 64 << 20
    /// Segment numbers must leave a position room for the offset (40 bits).
    static let maxSegment: UInt64 = 1 << 24 - 1

    private struct State {
        var fd: Int32 = -1
        var segment: UInt64 = 0
        var offset = 0
    }

    public let directory: String
    public let durability: Durability
    private let state = Mutex(State())
    private let syncLock = Mutex<UInt64>(0)  // position synced up to
    private let written = Atomic<UInt64>(0)

    public init(directory: String, durability: Durability) {
        self.directory = directory
        self.durability = durability
    }

    deinit { close() }

    static func position(_ segment: UInt64, _ offset: Int) -> UInt64 { segment << 40 | UInt64(offset) }

    func segmentPath(_ n: UInt64) -> String {
        let hex = String(n, radix: 16)
        return directory + "/" + String(repeating: "0", count: 16 - hex.count) + hex + ".wal"
    }

    func segments() -> [UInt64] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var out: [UInt64] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name.hasSuffix(".wal"), name.count == 20, let n = UInt64(name.dropLast(4), radix: 16),
                n <= Self.maxSegment
            {
                out.append(n)
            }
        }
        return out.sorted()
    }

    /// Reads every record at or after `from`, repairing torn tails and skipping corrupt records, and opens a new
    /// segment for writing.
    public func open(replayFrom from: UInt64) throws -> WALRecovery {
        mkdir(directory, 0o755)
        var recovery = WALRecovery()
        reportStrayNames(&recovery)
        let all = segments()
        for n in all {
            let path = segmentPath(n)
            let bytes = try readFile(path)
            if bytes.count < 8 {
                if !bytes.isEmpty { recovery.problems.append("\(path): header torn, segment ignored") }
                continue
            }
            guard Array(bytes[0..<4]) == Array(Self.magic[0..<4]) else {
                recovery.problems.append("\(path): not a WAL segment, ignored")
                continue
            }
            let start: Int
            switch bytes[4] {
            case 1:
                start = 8
            case 2:
                guard bytes.count >= Self.headerSize else {
                    recovery.problems.append("\(path): header torn, segment ignored")
                    continue
                }
                let own = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[8 + $1]) << (8 * UInt64($1)) }
                guard own == n else {
                    recovery.problems.append(
                        "\(path): its header says segment \(own): a copy or a renamed file, set aside as .misnamed")
                    rename(path, path + ".misnamed")
                    continue
                }
                start = Self.headerSize
            default:
                recovery.problems.append("\(path): format version \(bytes[4]) is newer than this metricsd, set aside")
                rename(path, path + ".unsupported")
                continue
            }
            var corrupt = false
            var offset = start
            while offset < bytes.count {
                switch Self.decode(bytes, at: offset, segment: n) {
                case .record(let record):
                    if record.position >= from { recovery.records.append(record) }
                    offset += Self.recordHeader + record.payload.count
                case .corrupt(let length):
                    // The length ends inside the file: only this record is bad.
                    recovery.problems.append(
                        "\(path): record at offset \(offset) fails its checksum: skipped (\(Self.recordHeader + length) bytes), the records after it replayed"
                    )
                    recovery.skippedRecords += 1
                    corrupt = true
                    offset += Self.recordHeader + length
                case .torn:
                    // Zeros up to the end are a tail that was never written; zeros before more data, a hole.
                    if let next = bytes[offset...].firstIndex(where: { $0 != 0 }),
                        let resumed = Self.resynchronize(bytes, after: offset, nonZero: next, segment: n)
                    {
                        recovery.problems.append(
                            "\(path): \(resumed - offset) unreadable bytes at offset \(offset) skipped, the records after them replayed"
                        )
                        recovery.skippedRecords += 1
                        corrupt = true
                        offset = resumed
                        continue
                    }
                    let torn = bytes.count - offset
                    recovery.truncatedBytes += torn
                    recovery.problems.append(
                        "\(path): corrupt or torn record at offset \(offset), \(torn) bytes truncated")
                    if bytes[offset...].contains(where: { $0 != 0 }) { corrupt = true }
                    if corrupt { Self.keepCopy(bytes, of: path) }
                    truncate(path, off_t(offset))
                    offset = bytes.count
                    corrupt = false
                }
            }
            if corrupt { Self.keepCopy(bytes, of: path) }
        }
        // Always write into a fresh segment: the old ones stay read-only until they are released.
        let next = (all.last ?? 0) + 1
        guard next <= Self.maxSegment else { throw WALError("the write-ahead log has run out of segment numbers") }
        try state.withLock { s in try openSegment(next, &s) }
        return recovery
    }

    /// Names in the directory that end in `.wal` but are not segment numbers (never replayed).
    private func reportStrayNames(_ recovery: inout WALRecovery) {
        guard let dir = opendir(directory) else { return }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            guard name.hasSuffix(".wal") else { continue }
            let number = name.count == 20 ? UInt64(name.dropLast(4), radix: 16) : nil
            if number.map({ $0 > Self.maxSegment }) ?? true {
                recovery.problems.append("\(directory)/\(name): not a segment number metricsd writes, ignored")
            }
        }
    }

    /// Saves the segment as it was read, once, as `<path>.corrupt` (replay may go on to delete or cut the segment).
    static func keepCopy(_ bytes: [UInt8], of path: String) {
        let copy = path + ".corrupt"
        guard access(copy, F_OK) != 0 else { return }
        let fd = Glibc.open(copy, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        try? writeFully(fd, bytes)
        fsync(fd)
        Glibc.close(fd)
    }

    /// Where a record starts again after a hole of zeros ending at `nonZero`: the first offset among the few
    /// before it (a record's length is little-endian, so its first bytes may be zero) where a whole record decodes.
    static func resynchronize(_ bytes: [UInt8], after offset: Int, nonZero: Int, segment: UInt64) -> Int? {
        for candidate in Swift.max(offset, nonZero - 3)...nonZero {
            if case .record = decode(bytes, at: candidate, segment: segment) { return candidate }
        }
        return nil
    }

    enum Decoded {
        case record(WALRecord)
        /// The length is sane (the record ends inside the file) but the checksum fails.
        case corrupt(length: Int)
        /// Cut short, zeros, or a length that runs past the end.
        case torn
    }

    static func decode(_ bytes: [UInt8], at offset: Int, segment: UInt64) -> Decoded {
        guard offset + recordHeader <= bytes.count else { return .torn }
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[o + $1]) << (8 * UInt32($1)) } }
        let length = Int(u32(offset))
        let crc = u32(offset + 4)
        if length == 0 && crc == 0 { return .torn }  // zeros: never written (an empty record has a CRC)
        guard length <= segmentSize, offset + recordHeader + length <= bytes.count else { return .torn }
        let computed = bytes.withUnsafeBytes {
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[(offset + 8)..<(offset + recordHeader + length)]))
        }
        guard computed == crc else { return .corrupt(length: length) }
        let received = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[offset + 8 + $1]) << (8 * UInt64($1)) }
        return .record(
            WALRecord(
                position: position(segment, offset),
                receivedAt: Int64(bitPattern: received),
                precision: bytes[offset + 16],
                payload: Array(bytes[(offset + recordHeader)..<(offset + recordHeader + length)])
            ))
    }

    private func openSegment(_ n: UInt64, _ s: inout State) throws {
        if s.fd >= 0 {
            fsync(s.fd)
            Glibc.close(s.fd)
            s.fd = -1
        }
        let fd = Glibc.open(segmentPath(n), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw WALError("cannot create \(segmentPath(n)): \(String(cString: strerror(errno)))") }
        var header = Self.magic
        withUnsafeBytes(of: n.littleEndian) { header.append(contentsOf: $0) }
        do {
            try writeFully(fd, header)
        } catch {
            Glibc.close(fd)
            unlink(segmentPath(n))
            throw error
        }
        fsync(fd)
        s = State(fd: fd, segment: n, offset: Self.headerSize)
    }

    /// Appends one batch; returns its position (to pass to ``sync(upTo:)`` and to the rollups). On failure nothing
    /// of the record stays in the log.
    public func append(_ payload: UnsafeRawBufferPointer, receivedAt: Int64, precision: UInt8) throws -> UInt64 {
        var header = [UInt8](repeating: 0, count: Self.recordHeader)
        withUnsafeBytes(of: UInt32(payload.count).littleEndian) { header.replaceSubrange(0..<4, with: $0) }
        withUnsafeBytes(of: receivedAt.littleEndian) { header.replaceSubrange(8..<16, with: $0) }
        header[16] = precision
        var crc = header.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[8..<17])) }
        crc = CRC32C.checksum(payload, seed: crc)
        withUnsafeBytes(of: crc.littleEndian) { header.replaceSubrange(4..<8, with: $0) }
        return try state.withLock { s in
            if s.fd < 0
                || (s.offset + Self.recordHeader + payload.count > Self.segmentSize && s.offset > Self.headerSize)
            {
                try openSegment(s.segment + 1, &s)
            }
            let position = Self.position(s.segment, s.offset)
            let total = Self.recordHeader + payload.count
            try header.withUnsafeBytes { h in
                // Written at the record's offset, retrying short writes; a failure is undone whole.
                var done = 0
                while done < total {
                    var iov: [iovec] = []
                    if done < Self.recordHeader {
                        iov.append(
                            iovec(
                                iov_base: UnsafeMutableRawPointer(mutating: h.baseAddress! + done),
                                iov_len: Self.recordHeader - done))
                    }
                    let payloadDone = Swift.max(0, done - Self.recordHeader)
                    if payload.count > payloadDone {
                        iov.append(
                            iovec(
                                iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress! + payloadDone),
                                iov_len: payload.count - payloadDone))
                    }
                    let n = pwritev(s.fd, iov, Int32(iov.count), off_t(s.offset + done))
                    if n < 0 {
                        let code = errno
                        if code == EINTR { continue }
                        ftruncate(s.fd, off_t(s.offset))
                        throw WALError("WAL write failed: \(String(cString: strerror(code)))")
                    }
                    if n == 0 {
                        ftruncate(s.fd, off_t(s.offset))
                        throw WALError("WAL write failed: nothing written")
                    }
                    done += n
                }
            }
            s.offset += total
            written.store(Self.position(s.segment, s.offset), ordering: .releasing)
            return position
        }
    }

    /// Makes everything up to `position` durable; concurrent callers share one fsync. Throws when the sync fails:
    /// what was written is then not known to be on disk (the kernel may have dropped it), so the segment is closed
    /// and the next append starts a new one.
    public func sync(upTo position: UInt64) throws {
        try syncLock.withLock { synced throws in
            guard synced <= position else { return }
            let (fd, end) = state.withLock { ($0.fd, Self.position($0.segment, $0.offset)) }
            guard fd >= 0 else { throw WALError("WAL sync failed: no open segment") }
            // Fault injection for tests (a failing disk): while `inject-sync-fault` exists, every sync fails (EIO).
            let injected = access(directory + "/inject-sync-fault", F_OK) == 0
            if injected || fdatasync(fd) != 0 {
                let code = injected ? EIO : errno
                state.withLock { s in
                    if s.fd == fd {
                        Glibc.close(s.fd)
                        s.fd = -1  // the next append opens the next segment
                    }
                }
                throw WALError("WAL sync failed: \(String(cString: strerror(code)))")
            }
            synced = end
        }
    }

    /// Fsyncs what was written so far (the `batch` policy's timer, and shutdown).
    /// Nothing written since the last sync: nothing to do (the `batch` timer ticks on idle logs; `sync(upTo:)` takes
    /// a record's start, so given the end it would sync again what is already durable).
    public func syncAll() throws {
        let end = written.load(ordering: .acquiring)
        if syncLock.withLock({ $0 >= end }) { return }
        try sync(upTo: end)
    }

    /// The end of the log: positions below it are written.
    public var end: UInt64 { state.withLock { Self.position($0.segment, $0.offset) } }

    /// Deletes segments wholly below `position` (their records are all in the store).
    public func release(below position: UInt64) {
        let current = state.withLock { $0.segment }
        for n in segments() where n < current && Self.position(n + 1, 0) <= position {
            unlink(segmentPath(n))
        }
    }

    public func close() {
        state.withLock { s in
            if s.fd >= 0 {
                fsync(s.fd)
                Glibc.close(s.fd)
                s.fd = -1
            }
        }
    }
}

public struct WALError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}

/// Writes all of `bytes` to `fd`, retrying short writes and EINTR.
public func writeFully(_ fd: Int32, _ bytes: [UInt8]) throws {
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
        if n < 0 {
            if errno == EINTR { continue }
            throw WALError("write failed: \(String(cString: strerror(errno)))")
        }
        offset += n
    }
}

func readFile(_ path: String) throws -> [UInt8] {
    let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw WALError("cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw WALError("read failed: \(path)")
        }
        if n == 0 { break }
        out.append(contentsOf: chunk[0..<n])
    }
    return out
}
