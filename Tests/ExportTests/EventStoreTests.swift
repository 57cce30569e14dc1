import Foundation
import Testing

@testable import Export

@Suite struct EventStoreTests {
    static func event(_ n: Int, time: Int64, id: String? = nil, received: Int64 = 1_000) -> StoredEvent {
        StoredEvent(
            time: time, name: "view", userID: "u\(n)", id: id, received: received, origin: 42, index: n,
            properties: #"{"n":\#(n)}"#)
    }

    /// Inserting the same events again (WAL replay) changes nothing; another identity is another event; retention
    /// deletes by event time in bounded steps; ids come back for dedup after a restart.
    @Test func insertsAreIdempotentAndRetentionDeletesOldEvents() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("events-\(UUID().uuidString).db").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = try SQLiteStore(path: path)  // creates the schema
        let store = try EventStore(path: path)
        let batch = (0..<10).map { Self.event($0, time: Int64($0) * 1_000, id: $0 % 2 == 0 ? "id-\($0)" : nil) }
        #expect(try store.insert(batch) == 10)
        #expect(try store.insert(batch) == 0)  // replayed: same identities
        #expect(try store.insert([Self.event(0, time: 0, received: 2_000)]) == 1)  // another batch: a new event
        #expect(try store.count() == 11)
        #expect(try store.recentIDs(since: 1_000).map(\.id).sorted() == ["id-0", "id-2", "id-4", "id-6", "id-8"])
        #expect(try store.recentIDs(since: 1_001).isEmpty)
        var seen: [String] = []
        try store.visitAll { _, _, user, json in seen.append("\(user) \(json)") }
        #expect(seen.count == 11 && seen[3] == #"u3 {"n":3}"#)
        #expect(try store.deleteOlder(than: 5_000, limit: 3) == 3)
        // The rest of the 6 events older than 5 s but the newest row (seq is the rowid: the table never empties, so
        // a forwarding cursor never finds new events below it).
        #expect(try store.deleteOlder(than: 5_000) == 2)
        #expect(try store.count() == 6)
    }

    /// The events outbox: batches in seq order after a cursor, the cursor kept in meta, retention keeping what is
    /// past the cursor (not yet forwarded) whatever its age, and one instance id per data directory.
    @Test func theOutboxIsReadFromACursorAndRetentionKeepsWhatIsUnsent() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("events-\(UUID().uuidString).db").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = try SQLiteStore(path: path)
        let store = try EventStore(path: path)
        try store.insert((0..<10).map { Self.event($0, time: Int64($0)) })
        let first = try store.queued(after: 0, limit: 4)
        #expect(first.map(\.event.userID) == ["u0", "u1", "u2", "u3"])
        #expect(try store.queued(after: first.last!.seq, limit: 100).count == 6)
        #expect(try store.cursor("c") == 0)
        try store.setCursor("c", first.last!.seq)
        #expect(try store.cursor("c") == first.last!.seq)
        #expect(try store.count(after: first.last!.seq) == 6)
        #expect(try store.deleteOlder(than: 1_000, keepAfter: first.last!.seq) == 4)  // only the sent ones
        #expect(try store.count() == 6)
        let id = try store.instanceID()
        #expect(try EventStore(path: path).instanceID() == id)
    }

    @Test func openingADatabaseWithoutTheEventsSchemaFails() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("events-\(UUID().uuidString).db").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: StoreError.self) { try EventStore(path: path) }
    }
}
