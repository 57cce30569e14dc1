import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

@testable import Export
@testable import Rollups

/// While the receiver is down the forwarder retries and keeps `/health`'s backlog current, but it passes over the
/// outbox (a cost that grows with the backlog) only when the outbox may have changed: not on every retry round.
@Suite struct ForwarderOutageTests {
    static let minute: Int64 = 60_000_000_000

    static func bucket(_ start: Int64, series: Int) -> ClosedBucket {
        ClosedBucket(
            start: start,
            cells: (0..<series).map { i in
                var r = FieldRollup(kind: .numeric)
                r.add(Double(i), at: start)
                return ClosedCell(
                    series: SeriesInfo(measurement: "cpu", tags: [TagPair("host", "h\(i)")]), field: "v", rollup: r)
            })
    }

    @Test func retryRoundsWithNothingStoredMakeNoNewPass() throws {
        let path = temporaryPath("outage", suffix: ".sqlite")
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let store = try SQLiteStore(path: path, recordsOutbox: true)
        try store.store([Self.bucket(Self.minute, series: 50)])
        var configuration = ForwarderConfiguration()
        configuration.url = "http://127.0.0.1:\(try freePort())"  // nobody listens: every send is refused at once
        configuration.retryInitial = 1_000_000
        configuration.retryMax = 5_000_000
        let forwarder = Forwarder(store: store, configuration: configuration, logger: Logger(label: "test"))
        forwarder.start()
        defer { forwarder.stop() }
        // 400 retry rounds (each 1–5 ms of backoff: over a second, five times the shortest gap between passes that
        // a pass's cost alone allows), with nothing stored or sent meanwhile: the first round's pass stands.
        #expect(eventually(timeout: 30, every: 0.01) { forwarder.stats.retries.load(ordering: .relaxed) >= 400 })
        #expect(forwarder.backlogPasses.load(ordering: .relaxed) == 1)
        #expect(forwarder.stats.state.withLock { $0.backlogPoints } == 50)
        // A minute stored: the next rounds pass again, and report it.
        try store.store([Self.bucket(2 * Self.minute, series: 30)])
        #expect(eventually(timeout: 30, every: 0.01) { forwarder.stats.state.withLock { $0.backlogPoints } == 80 })
        #expect(forwarder.backlogPasses.load(ordering: .relaxed) >= 2)
    }
}
