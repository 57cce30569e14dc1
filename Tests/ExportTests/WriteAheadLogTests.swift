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

    @Test func flippedBitsInTheMiddleStopAtTheCorruptRecord() throws {
        let (dir, payloads, positions) = try Self.written(10)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let segment = Self.segmentFiles(dir)[0]
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: segment)))
        let offset = Int(positions[5] & 0xFF_FFFF_FFFF) + 20
        bytes[offset] ^= 0x10
        try Data(bytes).write(to: URL(fileURLWithPath: segment))
        let recovery = try WriteAheadLog(directory: dir, durability: .none).open(replayFrom: 0)
        #expect(
            recovery.records.map(\.payload) == Array(payloads[0..<5]), "records after a CRC failure are not trusted")
        #expect(recovery.problems.first?.contains("corrupt or torn record") == true)
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
