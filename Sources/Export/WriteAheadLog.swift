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
    public var problems: [String] = []
}

/// The write-ahead log under `<data_dir>/wal/`: accepted batches are appended here before they touch the rollups.
///
/// Segments `%016x.wal` start with an 8-byte header (`MWAL`, format version 1, 3 reserved bytes); each record is
/// `[length u32][crc32c u32][received_at i64][precision u8][payload]`, little-endian, the CRC covering everything
/// after it. A position is `segment << 40 | offset`. On open, a torn or corrupt record ends its segment: the rest
/// is truncated and reported, never a crash; a segment of a newer format is set aside (renamed `.unsupported`).
///
/// Durability (`[storage] durability`): `fsync` — ``sync(upTo:)`` returns after the record is on disk, and callers
/// waiting at the same time share one fsync (group commit); `batch` — a background fsync at most every 100 ms;
/// `none` — the OS decides.
public final class WriteAheadLog: Sendable {
    public enum Durability: String, Sendable {
        case fsync, batch, none
    }

    static let magic: [UInt8] = [0x4D, 0x57, 0x41, 0x4C, 1, 0, 0, 0]  // "MWAL", version 1
    static let headerSize = 8
    static let recordHeader = 17
    public static let segmentSize = 64 << 20

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
            if name.hasSuffix(".wal"), let n = UInt64(name.dropLast(4), radix: 16) { out.append(n) }
        }
        return out.sorted()
    }

    /// Reads every record at or after `from`, repairing torn or corrupt tails, and opens a new segment for writing.
    public func open(replayFrom from: UInt64) throws -> WALRecovery {
        mkdir(directory, 0o755)
        var recovery = WALRecovery()
        let all = segments()
        for n in all {
            let path = segmentPath(n)
            let bytes = try readFile(path)
            if bytes.count < Self.headerSize {
                if !bytes.isEmpty { recovery.problems.append("\(path): header torn, segment ignored") }
                continue
            }
            guard Array(bytes[0..<4]) == Array(Self.magic[0..<4]) else {
                recovery.problems.append("\(path): not a WAL segment, ignored")
                continue
            }
            guard bytes[4] == Self.magic[4] else {
                recovery.problems.append("\(path): format version \(bytes[4]) is newer than this metricsd, set aside")
                rename(path, path + ".unsupported")
                continue
            }
            var offset = Self.headerSize
            while offset < bytes.count {
                guard let record = Self.decode(bytes, at: offset, segment: n) else {
                    let torn = bytes.count - offset
                    recovery.truncatedBytes += torn
                    recovery.problems.append(
                        "\(path): corrupt or torn record at offset \(offset), \(torn) bytes truncated")
                    truncate(path, off_t(offset))
                    break
                }
                if record.position >= from { recovery.records.append(record) }
                offset += Self.recordHeader + record.payload.count
            }
        }
        // Always write into a fresh segment: the old ones stay read-only until they are released.
        let next = (all.last ?? 0) + 1
        try state.withLock { s in try openSegment(next, &s) }
        return recovery
    }

    static func decode(_ bytes: [UInt8], at offset: Int, segment: UInt64) -> WALRecord? {
        guard offset + recordHeader <= bytes.count else { return nil }
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[o + $1]) << (8 * UInt32($1)) } }
        let length = Int(u32(offset))
        let crc = u32(offset + 4)
        guard length <= segmentSize, offset + recordHeader + length <= bytes.count else { return nil }
        let computed = bytes.withUnsafeBytes {
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[(offset + 8)..<(offset + recordHeader + length)]))
        }
        guard computed == crc else { return nil }
        let received = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[offset + 8 + $1]) << (8 * UInt64($1)) }
        return WALRecord(
            position: position(segment, offset),
            receivedAt: Int64(bitPattern: received),
            precision: bytes[offset + 16],
            payload: Array(bytes[(offset + recordHeader)..<(offset + recordHeader + length)])
        )
    }

    private func openSegment(_ n: UInt64, _ s: inout State) throws {
        if s.fd >= 0 {
            fsync(s.fd)
            Glibc.close(s.fd)
        }
        let fd = Glibc.open(segmentPath(n), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw WALError("cannot create \(segmentPath(n)): \(String(cString: strerror(errno)))") }
        try writeFully(fd, Self.magic)
        fsync(fd)
        s = State(fd: fd, segment: n, offset: Self.headerSize)
    }

    /// Appends one batch; returns its position (to pass to ``sync(upTo:)`` and to the rollups).
    public func append(_ payload: UnsafeRawBufferPointer, receivedAt: Int64, precision: UInt8) throws -> UInt64 {
        var header = [UInt8](repeating: 0, count: Self.recordHeader)
        withUnsafeBytes(of: UInt32(payload.count).littleEndian) { header.replaceSubrange(0..<4, with: $0) }
        withUnsafeBytes(of: receivedAt.littleEndian) { header.replaceSubrange(8..<16, with: $0) }
        header[16] = precision
        var crc = header.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[8..<17])) }
        crc = CRC32C.checksum(payload, seed: crc)
        withUnsafeBytes(of: crc.littleEndian) { header.replaceSubrange(4..<8, with: $0) }
        return try state.withLock { s in
            if s.offset + Self.recordHeader + payload.count > Self.segmentSize && s.offset > Self.headerSize {
                try openSegment(s.segment + 1, &s)
            }
            let position = Self.position(s.segment, s.offset)
            var iov = [
                iovec(
                    iov_base: UnsafeMutableRawPointer(mutating: header.withUnsafeBytes { $0.baseAddress }),
                    iov_len: Self.recordHeader),
                iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count),
            ]
            try header.withUnsafeBytes { h in
                iov[0].iov_base = UnsafeMutableRawPointer(mutating: h.baseAddress)
                let total = Self.recordHeader + payload.count
                let n = writev(s.fd, &iov, 2)
                if n != total {
                    // Undo a partial record so the segment stays well-formed.
                    ftruncate(s.fd, off_t(s.offset))
                    throw WALError("WAL write failed: \(String(cString: strerror(errno)))")
                }
            }
            s.offset += Self.recordHeader + payload.count
            written.store(Self.position(s.segment, s.offset), ordering: .releasing)
            return position
        }
    }

    /// Makes everything up to `position` durable. Concurrent callers share one fsync.
    public func sync(upTo position: UInt64) {
        syncLock.withLock { synced in
            guard synced <= position else { return }
            let (fd, end) = state.withLock { ($0.fd, Self.position($0.segment, $0.offset)) }
            fdatasync(fd)
            synced = end
        }
    }

    /// Fsyncs what was written so far (the `batch` policy's timer, and shutdown).
    public func syncAll() { sync(upTo: written.load(ordering: .acquiring)) }

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
