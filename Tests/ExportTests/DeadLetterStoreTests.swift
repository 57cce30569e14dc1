import Foundation
import Testing

@testable import Export

/// The dead-letter table and queue in process: selection, deletion, the bounds (rows, age, pending bytes).
@Suite struct DeadLetterStoreTests {
    static func letter(_ i: Int, source: String = "http", reason: RejectReason = .syntax, received: Int64) -> DeadLetter
    {
        DeadLetter(
            received: received, source: source, remote: "127.0.0.1:1", reason: reason, kind: .line, line: i,
            column: 3, message: "m\(i)", precision: 0, payload: Array("line \(i)".utf8), origin: 7)
    }

    static func store() throws -> (DeadLetterStore, String) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("dl-\(UUID().uuidString).db").path
        _ = try SQLiteStore(path: path)
        return (try DeadLetterStore(path: path), path)
    }

    @Test func selectionDeletionAndBounds() throws {
        let (store, path) = try Self.store()
        defer { try? FileManager.default.removeItem(atPath: path) }
        var letters: [DeadLetter] = []
        for i in 1...10 {
            letters.append(
                Self.letter(
                    i, source: i % 2 == 0 ? "udp" : "http", reason: i <= 3 ? .typeConflict : .syntax,
                    received: Int64(i) * 1000))
        }
        #expect(try store.insert(letters) == 10)
        #expect(try store.insert(letters) == 0, "the same identity is stored once (WAL replay after a crash)")
        #expect(try store.list(.init(source: "udp", limit: 100)).map(\.line) == [2, 4, 6, 8, 10])
        #expect(try store.list(.init(reason: .typeConflict, limit: 100)).map(\.line) == [1, 2, 3])
        #expect(try store.list(.init(from: 3000, to: 6000, limit: 100)).map(\.line) == [3, 4, 5])
        #expect(try store.list(.init(limit: 2)).map(\.line) == [1, 2], "oldest first")
        let first = try #require(try store.list(.init(limit: 1)).first)
        #expect(first.payload == Array("line 1".utf8) && first.column == 3 && first.remote == "127.0.0.1:1")
        #expect(try store.count(.init(source: "http", reason: .syntax, limit: 0)) == 3)
        #expect(try store.delete(.init(ids: [first.id], limit: 10)) == 1)
        // Bounds: older than retention go, then the oldest past max_rows.
        let trimmed = try store.trim(before: 3000, maxRows: 5)
        #expect(trimmed.expired == 1 && trimmed.evicted == 3, "\(trimmed)")
        #expect(try store.list(.init(limit: 100)).map(\.line) == [6, 7, 8, 9, 10])
    }

    @Test func thePendingQueueKeepsTheNewestWithinItsBounds() {
        let queue = DeadLetterQueue(maxCount: 3, maxBytes: 1 << 20)
        for i in 1...10 { queue.add(Self.letter(i, received: Int64(i))) }
        #expect(queue.count == 3)
        #expect(queue.takeDropped() == 7)
        #expect(queue.takeAll().map(\.line) == [8, 9, 10])
        #expect(queue.count == 0)
        // By bytes: a letter's payload counts.
        let small = DeadLetterQueue(maxCount: 100, maxBytes: 1000)
        for i in 1...20 {
            var l = Self.letter(i, received: 0)
            l.payload = [UInt8](repeating: 0x61, count: 200)
            small.add(l)
        }
        #expect(small.count <= 4 && small.count >= 1)
        #expect(small.takeAll().last?.line == 20)
    }
}
