import Foundation
import LineProtocol
import Logging
import Query
import TestSupport
import Testing

@testable import ClickHouse
@testable import Export

/// Fleet answers (SQL in a real clickhouse-server) against the local index over the same events: random event sets
/// with many ties, repeated steps, breakdowns, several variants — every answer equal.
@Suite(.serialized) final class FleetTests {
    let server: ClickHouseServer
    let dir: URL

    init() throws {
        server = try ClickHouseServer()
        dir = try temporaryDirectory("fleet-tests")
    }

    deinit { try? FileManager.default.removeItem(at: dir) }

    static let names = ["view", "cart", "buy", "signup", "login", "exposure"]

    /// Random events for a few users over a few days, on a coarse clock (many equal milliseconds).
    static func events(_ rng: inout SplitMix, count: Int, users: Int) -> [StoredEvent] {
        let base: Int64 = 1_793_491_200_000  // 2026-11-01
        return (0..<count).map { i in
            let name = names[Int(rng.next() % UInt64(names.count))]
            let user = "u\(rng.next() % UInt64(users))"
            let time =
                base + Int64(rng.next() % 40) * 3_600_000 * Int64(1 + rng.next() % 3) / 2
                + Int64(rng.next() % 3) * 1_000
            var props: [String] = []
            switch rng.next() % 4 {
            case 0: props.append(#""country":"DE""#)
            case 1: props.append(#""country":"FR""#)
            case 2: props.append(#""country":19.5"#)
            default: break
            }
            switch rng.next() % 7 {
            case 0: props.append(#""n":"12""#)  // a string holding a number
            case 1, 2: break
            default: props.append("\"n\":\(rng.next() % 20)")
            }
            switch rng.next() % 5 {
            case 0, 1: props.append(#""variant":"A""#)
            case 2, 3: props.append(#""variant":"B""#)
            default: break
            }
            return StoredEvent(
                time: time, name: name, userID: user, id: rng.next() % 3 == 0 ? "id-\(i)" : nil,
                received: 1_000 + Int64(i),
                origin: 7, index: i, properties: "{" + props.joined(separator: ",") + "}")
        }
    }

    static func index(_ events: [StoredEvent]) -> EventIndex {
        var index = EventIndex()
        for e in events {
            index.append(
                time: e.time, name: e.name, user: e.userID, properties: EventDecoder.properties(json: e.properties))
        }
        index.compact()
        return index
    }

    /// Forwards `events` from a fresh store into table `name` and waits until ClickHouse acknowledged them all.
    func forward(_ events: [StoredEvent], table name: String, batchSize: Int = 10_000) throws -> ClickHouseConfiguration
    {
        let path = dir.appendingPathComponent("\(name).db").path
        _ = try SQLiteStore(path: path)
        let store = try EventStore(path: path)
        try store.insert(events)
        var configuration = ClickHouseConfiguration()
        configuration.url = server.url
        configuration.database = "fleet_tests"
        configuration.table = name
        configuration.batchSize = batchSize
        configuration.flushInterval = 50_000_000
        let forwarder = try EventForwarder(store: store, configuration: configuration, logger: Logger(label: "test"))
        forwarder.start()
        defer { forwarder.stop() }
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if forwarder.stats.sent + forwarder.stats.rejected == events.count { return configuration }
            usleep(20_000)
        }
        throw ClickHouseServer.Failure(description: "forwarding did not finish: \(forwarder.stats.current)")
    }

    /// A random segment: a few conditions on `country` (text, regex) and `n` (numbers, and a string holding one).
    static func filter(_ rng: inout SplitMix) -> EventFilter {
        let choices: [() -> PropertyCondition] = [
            { PropertyCondition(key: "country", op: .equal, value: "DE") },
            { PropertyCondition(key: "country", op: .notEqual, value: "FR") },
            { PropertyCondition(key: "country", op: .equal, value: "19.5") },
            { PropertyCondition(key: "country", op: .match, value: "^D|R$", regex: { $0.contains(/^D|R$/) }) },
            { PropertyCondition(key: "country", op: .notMatch, value: "E", regex: { $0.contains("E") }) },
            { PropertyCondition(key: "n", op: .greaterOrEqual, value: "10") },
            { PropertyCondition(key: "n", op: .less, value: "5.5") },
            { PropertyCondition(key: "n", op: .equal, value: "12.0") },
            { PropertyCondition(key: "n", op: .notEqual, value: "3") },
            { PropertyCondition(key: "n", op: .greater, value: "1e1") },
        ]
        let count = Int(rng.next() % 3)
        return EventFilter((0..<count).map { _ in choices[Int(rng.next() % UInt64(choices.count))]() })
    }

    @Test func fleetAnswersEqualLocalAnswersOnRandomEventSets() throws {
        var rng = SplitMix(seed: 20_261_203)
        for case_ in 0..<12 {
            let events = Self.events(&rng, count: 40 + Int(rng.next() % 400), users: 3 + Int(rng.next() % 40))
            let configuration = try forward(events, table: "random_\(case_)", batchSize: 1 + Int(rng.next() % 300))
            let fleet = FleetAnalytics(configuration: configuration, timeout: 60, maxRows: 100_000)
            let local = Self.index(events)
            let from: Int64 = 1_793_491_200_000 + Int64(rng.next() % 5) * 3_600_000
            let to = from + Int64(1 + rng.next() % 40) * 3_600_000
            for _ in 0..<4 {
                let k = 2 + Int(rng.next() % 3)
                let steps = (0..<k).map { _ in Self.names[Int(rng.next() % 3)] }
                let window = Int64(rng.next() % 30) * 1_800_000
                let breakdown: String? = rng.next() % 2 == 0 ? "country" : nil
                let filter = Self.filter(&rng)
                var byName: [String: EventFilter] = [:]
                for s in steps where byName[s] == nil { byName[s] = Self.filter(&rng) }
                let stepFilters = steps.map { byName[$0]! }
                let want = try local.funnel(
                    steps: steps, from: from, to: to, window: window, breakdown: breakdown, where: filter,
                    stepFilters: stepFilters, stop: nil)
                let got = try fleet.funnel(
                    steps: steps, from: from, to: to, window: window, breakdown: breakdown, where: filter,
                    stepFilters: stepFilters)
                let what = "case \(case_) funnel \(steps) window \(window) where \(filter) steps \(stepFilters)"
                #expect(got.steps == want.steps, "\(what)")
                #expect(got.breakdown == want.breakdown, "\(what) by country")
            }
            for period in [RetentionPeriod.day, .week] {
                for returnEvent in ["login", nil] {
                    let filter = Self.filter(&rng)
                    let breakdown: String? = rng.next() % 2 == 0 ? "country" : nil
                    let want = try local.retention(
                        cohortEvent: "signup", returnEvent: returnEvent, period: period, periods: 4, from: from, to: to,
                        where: filter, breakdown: breakdown, stop: nil)
                    let got = try fleet.retention(
                        cohortEvent: "signup", returnEvent: returnEvent, period: period, periods: 4, from: from, to: to,
                        where: filter, breakdown: breakdown)
                    let what = "case \(case_) retention \(period) \(returnEvent ?? "any") where \(filter)"
                    #expect(got.cohorts == want.cohorts, "\(what)")
                    #expect(got.breakdown == want.breakdown, "\(what) by \(breakdown ?? "-")")
                }
            }
            let window = Int64(rng.next() % 48) * 3_600_000
            let filter = Self.filter(&rng)
            let want = try local.experiment(
                exposureEvent: "exposure", variantProperty: "variant", goalEvent: "buy", from: from, to: to,
                window: window, control: nil, where: filter, stop: nil)
            let got = try fleet.experiment(
                exposureEvent: "exposure", variantProperty: "variant", goalEvent: "buy", from: from, to: to,
                window: window, control: nil, where: filter)
            #expect(got == want, "case \(case_) experiment where \(filter)")
        }
    }
}

/// The forwarder against ClickHouse's answers: a batch refused for its data is split until the bad events are
/// alone (they are skipped and counted, every good one is stored), and errors are classified by `Code:`.
@Suite(.serialized) final class ForwarderTests {
    let server: ClickHouseServer
    let dir: URL

    init() throws {
        server = try ClickHouseServer()
        dir = try temporaryDirectory("forwarder-tests")
    }

    deinit { try? FileManager.default.removeItem(at: dir) }

    @Test func badEventsAreBisectedOutAndTheRestIsStored() throws {
        // A table whose user_id is a number: events of user "u…" are bad data to it (Code 26/27/72), "42" is not.
        try server.query("CREATE DATABASE IF NOT EXISTS fwd")
        try server.query(
            """
            CREATE TABLE fwd.events (id String, event String, user_id UInt32, ts DateTime, ts_ms UInt64,
            properties String) ENGINE = MergeTree ORDER BY id
            """)
        let path = dir.appendingPathComponent("bisect.db").path
        _ = try SQLiteStore(path: path)
        let store = try EventStore(path: path)
        let events = (0..<100).map { i in
            StoredEvent(
                time: 1_793_491_200_000 + Int64(i), name: "view", userID: i % 17 == 0 ? "u\(i)" : "\(i)",
                id: "b-\(i)", received: 1, origin: 1, index: i, properties: "{}")
        }
        try store.insert(events)
        var configuration = ClickHouseConfiguration()
        configuration.url = server.url
        configuration.database = "fwd"
        configuration.createTable = false
        configuration.batchSize = 64
        configuration.flushInterval = 50_000_000
        let forwarder = try EventForwarder(store: store, configuration: configuration, logger: Logger(label: "test"))
        forwarder.start()
        defer { forwarder.stop() }
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline && forwarder.stats.sent + forwarder.stats.rejected < 100 { usleep(20_000) }
        let bad = events.filter { $0.userID.hasPrefix("u") }.count
        #expect(forwarder.stats.rejected == bad)
        #expect(forwarder.stats.sent == 100 - bad)
        let stored = try server.query("SELECT count() FROM fwd.events").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(Int(stored) == 100 - bad)
        #expect(try store.cursor(EventForwarder.cursorKey) == 100)
    }

    @Test func errorsAreClassifiedByTheirCode() {
        func kind(_ status: Int, _ body: String) -> ClickHouseError.Kind {
            ClickHouseError.classify(status: status, body: body).kind
        }
        #expect(kind(500, "Code: 27, e.displayText() = DB::Exception: Cannot parse input") == .badData)
        #expect(kind(400, "Code: 26, e.displayText() = DB::Exception: Cannot parse JSON string") == .badData)
        #expect(kind(404, "Code: 60, e.displayText() = DB::Exception: Table x.y doesn't exist") == .refused)
        #expect(kind(500, "Code: 192, e.displayText() = DB::Exception: Unknown user nobody") == .refused)
        #expect(kind(500, "Code: 252, e.displayText() = DB::Exception: Too many parts") == .unavailable)
        #expect(kind(502, "Bad Gateway") == .unavailable)
        #expect(kind(403, "Forbidden") == .refused)
        #expect(ClickHouseError.code(in: "Code: 241, e.displayText()") == 241)
    }
}
