import Foundation
import TestSupport
import Testing

@testable import ClickHouse
@testable import Export

/// The events forwarder keeps its backlog (what `max_backlog` bounds and `/health` shows) by the ranges it sends
/// and the rows stored since: it counted every unsent row for every batch, which made draining a backlog of a
/// million events quadratic (`make bench-events`: 47,000 events/s, 20 µs of CPU each).
@Suite struct BacklogTallyTests {
    static func event(_ n: Int, _ rng: inout SplitMix) -> StoredEvent {
        // Non-ASCII sometimes: the weight is SQLite's length(), in characters, on both sides.
        let name = Bool.random(using: &rng) ? "view" : "achat-été"
        return StoredEvent(
            time: Int64(n), name: name, userID: "u\(Int.random(in: 0..<50, using: &rng))",
            id: Bool.random(using: &rng) ? "id-\(n)" : nil, received: 1_000, origin: 7, index: n,
            properties: String(repeating: "x", count: Int.random(in: 0..<40, using: &rng)))
    }

    /// After any mix of inserts, cursor moves (as sends and `drop_oldest` make them) and retention of sent rows,
    /// the tally equals a full count of what is stored after the cursor.
    @Test(arguments: 1...6) func theTallyEqualsAFullCount(seed: Int) throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tally-\(UUID().uuidString).db").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = try SQLiteStore(path: path)  // creates the schema
        let store = try EventStore(path: path)
        var rng = SplitMix(state: UInt64(seed))
        var tally: EventForwarder.Tally?
        var cursor: Int64 = 0
        var now: Int64 = 1_000_000_000_000
        var made = 0
        var recounts = 0
        for step in 0..<150 {
            switch Int.random(in: 0..<4, using: &rng) {
            case 0, 1:
                let events = (0..<Int.random(in: 0...25, using: &rng)).map { _ in
                    made += 1
                    return Self.event(made, &rng)
                }
                _ = try store.insert(events)
            case 2:
                let newest = try store.maxSeq()
                if newest > cursor { cursor = Int64.random(in: cursor...newest, using: &rng) }
            default:
                _ = try store.deleteOlder(than: .max, limit: 7, keepAfter: cursor)
            }
            now += Int64.random(in: 0...12_000_000_000, using: &rng)  // past the 30 s recount now and then
            let before = tally
            tally = try EventForwarder.advance(tally, to: cursor, now: now, store: store)
            if tally?.counted != before?.counted { recounts += 1 }
            let full = try store.backlog(after: cursor)
            #expect(tally?.events == full.events && tally?.bytes == full.bytes, "seed \(seed), step \(step)")
        }
        #expect(recounts < 30, "the tally was counted in full \(recounts) times in 150 steps")
    }
}
