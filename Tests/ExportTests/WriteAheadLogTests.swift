import Foundation
import Testing

@testable import Export

@Suite struct WriteAheadLogTests {
    static func tempDir() -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("wal-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Writes `n` records through a log, closes it, returns (directory, payloads, positions).
    static func written(_ n: Int) throws -> (String, [[UInt8]], [UInt64]) {
        let dir = tempDir()
        let wal = WriteAheadLog(directory: dir, durability: .fsync)
        _ = try wal.open(replayFrom: 0)
        var payloads: [[UInt8]] = []
        var positions: [UInt64] = []
        for i in 0..<n {
            let p = Array("m,i=\(i) v=\(i)\n".utf8)
            payloads.append(p)
            positions.append(try p.withUnsafeBytes { try wal.append($0, receivedAt: Int64(i), precision: 0) })
        }
        try wal.syncAll()
        wal.close()
        return (dir, payloads, positions)
    }

    static func segmentFiles(_ dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".wal") }.sorted()
            .map { dir + "/" + $0 }
    }

    @Test func replaysEverythingFromAPosition() throws {
        let (dir, payloads, positions) = try Self.written(50)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let recovery = try WriteAheadLog(directory: dir, durability: .none).open(replayFrom: positions[20])
        #expect(recovery.records.map(\.payload) == Array(payloads[20...]))
        #expect(recovery.records.map(\.receivedAt) == (20..<50).map(Int64.init))
        #expect(recovery.problems.isEmpty)
    }

    @Test func aTornLastRecordIsTruncatedAndReported() throws {
        let (dir, payloads, _) = try Self.written(10)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let segment = Self.segmentFiles(dir)[0]
        let size = try FileManager.default.attributesOfItem(atPath: segment)[.size] as! Int
        truncate(segment, off_t(size - 3))  // a write cut short by a crash
        let recovery = try WriteAheadLog(directory: dir, durability: .none).open(replayFrom: 0)
        #expect(recovery.records.map(\.payload) == Array(payloads[0..<9]))
        #expect(recovery.problems.count == 1)
        #expect(recovery.truncatedBytes > 0)
        // The repair sticks: opening again finds a clean log.
        let again = try WriteAheadLog(directory: dir, durability: .none).open(replayFrom: 0)
        #expect(again.records.count == 9 && again.problems.isEmpty)
    }

    /// A flipped byte inside a record (its length intact) costs that record only: it is skipped by its length and
    /// reported, every record after it is replayed, and a copy of the segment is kept for inspection. (It used to
    /// end the segment there: up to 64 MiB of acknowledged records after it were truncated away.)
    @Test func aFlippedByteSkipsOnlyItsRecord() throws {
        let (dir, payloads, positions) = try Self.written(10)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let segment = Self.segmentFiles(dir)[0]
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: segment)))
        let offset = Int(positions[5] & 0xFF_FFFF_FFFF) + 20
        bytes[offset] ^= 0x10
        try Data(bytes).write(to: URL(fileURLWithPath: segment))
        let recovery = try WriteAheadLog(directory: dir, durability: .none).open(replayFrom: 0)
        #expect(recovery.records.map(\.payload) == Array(payloads[0..<5]) + Array(payloads[6...]))
        #expect(recovery.skippedRecords == 1 && recovery.truncatedBytes == 0)
        #expect(recovery.problems.first?.contains("fails its checksum: skipped") == true, "\(recovery.problems)")
        let kept = try Data(contentsOf: URL(fileURLWithPath: segment + ".corrupt"))
        #expect([UInt8](kept) == bytes, "the segment as it was read is kept for inspection")
        // The segment itself is not cut: opening again finds the same records.
        let again = try WriteAheadLog(directory: dir, durability: .none).open(replayFrom: 0)
        #expect(again.records.map(\.payload) == recovery.records.map(\.payload))
    }

    /// A run of zeros between records (a file extended but not written there) is skipped to the next record;
    /// zeros up to the end are a torn tail, truncated.
    @Test func holesOfZerosAreSkippedAndZeroTailsTruncated() throws {
        let (dir, payloads, positions) = try Self.written(6)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let segment = Self.segmentFiles(dir)[0]
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: segment)))
        let at = Int(positions[3] & 0xFF_FFFF_FFFF)
        bytes.insert(contentsOf: [UInt8](repeating: 0, count: 1000), at: at)
        bytes += [UInt8](repeating: 0, count: 300)
        try Data(bytes).write(to: URL(fileURLWithPath: segment))
        let recovery = try WriteAheadLog(directory: dir, durability: .none).open(replayFrom: 0)
        #expect(recovery.records.map(\.payload) == payloads)
        #expect(recovery.problems.contains { $0.contains("1000 unreadable bytes") }, "\(recovery.problems)")
        #expect(recovery.truncatedBytes == 300)
    }

    /// A segment copied under another number would replay its records twice: its header names its own number, so
    /// the copy is set aside. A name that is no segment number (`ffffffffffffffff.wal`, beyond what a position
    /// holds) is ignored, never a crash at start-up.
    @Test func copiedSegmentsAndStrayNamesAreSetAside() throws {
        let (dir, payloads, _) = try Self.written(4)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let segment = Self.segmentFiles(dir)[0]
        try FileManager.default.copyItem(atPath: segment, toPath: dir + "/0000000000000007.wal")
        try FileManager.default.copyItem(atPath: segment, toPath: dir + "/ffffffffffffffff.wal")
        let recovery = try WriteAheadLog(directory: dir, durability: .none).open(replayFrom: 0)
        #expect(recovery.records.map(\.payload) == payloads, "each record once")
        #expect(FileManager.default.fileExists(atPath: dir + "/0000000000000007.wal.misnamed"))
        #expect(recovery.problems.contains { $0.contains("ffffffffffffffff.wal: not a segment number") })
    }

    /// Segments of format 1 (8-byte header, no number), as earlier versions wrote them, still replay.
    @Test func version1SegmentsStillReplay() throws {
        let dir = Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var bytes: [UInt8] = [0x4D, 0x57, 0x41, 0x4C, 1, 0, 0, 0]
        let payload = Array("old v=1\n".utf8)
        var header = [UInt8](repeating: 0, count: 17)
        withUnsafeBytes(of: UInt32(payload.count).littleEndian) { header.replaceSubrange(0..<4, with: $0) }
        withUnsafeBytes(of: Int64(42).littleEndian) { header.replaceSubrange(8..<16, with: $0) }
        var crc = header.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[8..<17])) }
        crc = payload.withUnsafeBytes { CRC32C.checksum($0, seed: crc) }
        withUnsafeBytes(of: crc.littleEndian) { header.replaceSubrange(4..<8, with: $0) }
        bytes += header + payload
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/0000000000000001.wal"))
        let recovery = try WriteAheadLog(directory: dir, durability: .none).open(replayFrom: 0)
        #expect(recovery.records.map(\.payload) == [payload] && recovery.records.first?.receivedAt == 42)
        #expect(recovery.problems.isEmpty)
    }

    /// With `inject-sync-fault` in the log's directory fdatasync counts as failed: `sync` throws (the write is not
    /// acknowledged) and the next append goes to a new segment; without it everything is durable again.
    @Test func aFailedSyncIsAnErrorNotAnAcknowledgment() throws {
        let dir = Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let wal = WriteAheadLog(directory: dir, durability: .fsync)
        _ = try wal.open(replayFrom: 0)
        let first = try Array("a v=1\n".utf8).withUnsafeBytes { try wal.append($0, receivedAt: 1, precision: 0) }
        try wal.sync(upTo: first)
        _ = FileManager.default.createFile(atPath: dir + "/inject-sync-fault", contents: Data())
        let second = try Array("a v=2\n".utf8).withUnsafeBytes { try wal.append($0, receivedAt: 2, precision: 0) }
        #expect(throws: WALError.self) { try wal.sync(upTo: second) }
        try FileManager.default.removeItem(atPath: dir + "/inject-sync-fault")
        let third = try Array("a v=3\n".utf8).withUnsafeBytes { try wal.append($0, receivedAt: 3, precision: 0) }
        try wal.sync(upTo: third)
        #expect(third >> 40 > first >> 40, "after a failed sync the log writes a new segment")
        wal.close()
    }

    /// The `batch` timer synced an idle log on every tick (an fdatasync, and a second of a forwarding drain's CPU in
    /// every thirty): a sync with nothing written since the last one does not touch the disk — with a failing disk it
    /// does not fail either, because there is nothing to lose.
    @Test func aSyncWithNothingNewDoesNotSync() throws {
        let dir = Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let wal = WriteAheadLog(directory: dir, durability: .batch)
        _ = try wal.open(replayFrom: 0)
        let first = try Array("a v=1\n".utf8).withUnsafeBytes { try wal.append($0, receivedAt: 1, precision: 0) }
        try wal.sync(upTo: first)
        _ = FileManager.default.createFile(atPath: dir + "/inject-sync-fault", contents: Data())
        try wal.syncAll()
        _ = try Array("a v=2\n".utf8).withUnsafeBytes { try wal.append($0, receivedAt: 2, precision: 0) }
        #expect(throws: WALError.self) { try wal.syncAll() }
        wal.close()
    }

    @Test func emptyAndNewerSegmentsAreHandled() throws {
        let (dir, payloads, _) = try Self.written(3)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // An empty segment (created, nothing written before a crash).
        _ = FileManager.default.createFile(atPath: dir + "/00000000000000ff.wal", contents: Data())
        // A segment from a newer format version.
        _ = FileManager.default.createFile(
            atPath: dir + "/0000000000000100.wal",
            contents: Data([0x4D, 0x57, 0x41, 0x4C, 9, 0, 0, 0, 1, 2, 3])
        )
        let recovery = try WriteAheadLog(directory: dir, durability: .none).open(replayFrom: 0)
        #expect(recovery.records.map(\.payload) == payloads)
        #expect(recovery.problems.contains { $0.contains("format version 9 is newer") })
        #expect(FileManager.default.fileExists(atPath: dir + "/0000000000000100.wal.unsupported"))
    }

    @Test func releaseDeletesOnlyWholeSegmentsBelowThePosition() throws {
        let (dir, _, _) = try Self.written(3)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let wal = WriteAheadLog(directory: dir, durability: .none)
        _ = try wal.open(replayFrom: 0)  // opens segment 2 for writing
        #expect(Self.segmentFiles(dir).count == 2)
        wal.release(below: wal.end)
        #expect(Self.segmentFiles(dir).count == 1, "the finished segment goes, the current one stays")
        wal.close()
    }

    @Test func crc32cMatchesTheStandardCheckValue() {
        let check = Array("123456789".utf8).withUnsafeBytes { CRC32C.checksum($0) }
        #expect(check == 0xE306_9283)
    }
}

/// The log on a real full filesystem (a small tmpfs the test mounts; skipped, saying so, where mounting is not
/// allowed).
@Suite(.serialized) struct WriteAheadLogFullDiskTests {
    static func run(_ arguments: [String]) -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = arguments
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        guard (try? p.run()) != nil else { return (-1, "cannot run \(arguments[0])") }
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, text)
    }

    /// A write cut short by ENOSPC is undone, and the next record goes where the undone one began: every record
    /// acknowledged after the disk filled and emptied again replays. (The file offset used to stay past the
    /// undone bytes: the next record landed behind a hole of zeros, and replay truncated it and all after it.)
    @Test func aShortWriteOnAFullDiskLeavesNoHole() throws {
        let mount = WriteAheadLogTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: mount) }
        let (status, why) = Self.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount])
        guard status == 0 else {
            print("skipped: cannot mount a tmpfs here (\(why.trimmingCharacters(in: .whitespacesAndNewlines)))")
            return
        }
        defer { _ = Self.run(["umount", "-l", mount]) }
        let wal = WriteAheadLog(directory: mount + "/wal", durability: .fsync)
        _ = try wal.open(replayFrom: 0)
        // Fill the disk but for a little, so the next records are cut short.
        let ballast = mount + "/ballast"
        var fs = statvfs()
        #expect(statvfs(mount, &fs) == 0)
        let room = Int(fs.f_bavail) * Int(fs.f_frsize) - 40 * 1024
        #expect(FileManager.default.createFile(atPath: ballast, contents: Data(repeating: 7, count: room)))
        var acknowledged: [[UInt8]] = []
        var refused = 0
        for i in 0..<200 {
            let payload = Array("full,i=\(i) v=\(i) ".utf8) + [UInt8](repeating: 0x61, count: 3000) + [0x0A]
            do {
                let at = try payload.withUnsafeBytes { try wal.append($0, receivedAt: Int64(i), precision: 0) }
                try wal.sync(upTo: at)
                acknowledged.append(payload)
            } catch let error as WALError {
                refused += 1
                #expect(error.description.contains("No space left on device"), "\(error)")
            }
            if refused == 3 && FileManager.default.fileExists(atPath: ballast) {
                try FileManager.default.removeItem(atPath: ballast)  // space again
            }
        }
        wal.close()
        #expect(refused >= 3, "the disk filled up")
        #expect(acknowledged.count > 100)
        let recovery = try WriteAheadLog(directory: mount + "/wal", durability: .none).open(replayFrom: 0)
        #expect(recovery.records.map(\.payload) == acknowledged)
        #expect(recovery.problems.isEmpty, "\(recovery.problems)")
    }
}
