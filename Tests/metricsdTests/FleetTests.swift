import Export
import Foundation
import TestSupport
import Testing

/// Events for a fleet, end to end: metricsd daemons forwarding to a private clickhouse-server, each answering
/// `scope=fleet` exactly as one daemon that received every event answers locally (`scope=local`, pinned down by
/// the reference tests of QueryTests).
@Suite(.serialized) final class FleetTests {
    let clickhouse: ClickHouseServer

    init() throws { clickhouse = try ClickHouseServer() }

    static var nowMs: Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    static func ndjson(_ events: [[String: Any]]) -> Data {
        Data(
            events.map { String(decoding: try! JSONSerialization.data(withJSONObject: $0), as: UTF8.self) }
                .joined(separator: "\n").utf8)
    }

    /// Events over the last three days with client timestamps (the same event is the same on every instance), many
    /// equal milliseconds, ids on most.
    static func events(_ count: Int, seed: UInt64, base: Int64) -> [[String: Any]] {
        var rng = SplitMix(seed: seed)
        let names = ["view", "view", "cart", "buy", "signup", "login", "exposure"]
        return (0..<count).map { i in
            var properties: [String: Any] = [:]
            switch rng.next() % 4 {
            case 0: properties["country"] = "DE"
            case 1: properties["country"] = "FR"
            case 2: properties["country"] = 19.5
            default: break
            }
            if rng.next() % 5 < 4 { properties["variant"] = rng.next() % 2 == 0 ? "A" : "B" }
            var e: [String: Any] = [
                "event": names[Int(rng.next() % UInt64(names.count))], "user_id": "u\(rng.next() % 150)",
                "timestamp": base + Int64(rng.next() % 72) * 3_600_000 + Int64(rng.next() % 4) * 600_000
                    + Int64(rng.next() % 2) * 7,
                "properties": properties,
            ]
            if i % 5 != 0 { e["id"] = "ev-\(seed)-\(i)" }
            return e
        }
    }

    func config(table: String, url: String? = nil, extra: String = "") -> String {
        """
        \(extra)
        [events.clickhouse]
        url = "\(url ?? clickhouse.url)"
        database = "fleet_it"
        table = "\(table)"
        flush_interval = "100ms"
        """
    }

    static func post(_ d: Daemon, _ events: [[String: Any]]) throws -> Int {
        let reply = try d.http("POST", "/api/v1/events", body: ndjson(events))
        #expect(reply.status == 200, "\(reply.text)")
        return reply.json["accepted"] as? Int ?? 0
    }

    static func forwarding(_ d: Daemon) throws -> [String: Any] {
        try d.http("GET", "/health").json["events_forwarding"] as? [String: Any] ?? [:]
    }

    /// Waits until every daemon has stored and forwarded everything it accepted.
    static func drained(_ daemons: [Daemon], sentAtLeast total: Int) throws -> Bool {
        try daemons[0].eventually(60) {
            var sent = 0
            for d in daemons {
                let f = try forwarding(d)
                guard f["backlog_events"] as? Int == 0, f["status"] as? String == "idle" else { return false }
                sent += f["events_sent"] as? Int ?? 0
            }
            return sent >= total
        }
    }

    /// The analytics questions asked of every instance, with their scope.
    static func questions(from: Int64, to: Int64) -> [String] {
        let range = "from=\(from)&to=\(to)"
        return [
            "/api/v1/funnel?steps=view,cart,buy&window=1h&breakdown=country&\(range)",
            "/api/v1/funnel?steps=view,view,buy&window=3h&\(range)",
            "/api/v1/funnel?steps=signup,view,cart,buy&window=1d&breakdown=variant&\(range)",
            "/api/v1/retention?cohort_event=signup&return_event=login&period=day&periods=4&\(range)",
            "/api/v1/retention?cohort_event=view&return_event=any&period=week&periods=2&\(range)",
            "/api/v1/experiment?exposure_event=exposure&variant_property=variant&goal_event=buy&window=1d&\(range)",
            // Segments: per-step filters, where=, and retention by a property of the cohort event.
            "/api/v1/funnel?steps=view,cart%7Bcountry=~%5ED%7D,buy&window=2h&where=variant:A&\(range)",
            "/api/v1/retention?cohort_event=signup&return_event=login&periods=3&breakdown=country&where=country!=FR&\(range)",
            "/api/v1/experiment?exposure_event=exposure&variant_property=variant&goal_event=buy&window=1d&where=country:DE&\(range)",
        ]
    }

    /// Every fleet answer of `fleet` equals the local answer of `reference`, and is not trivially empty.
    static func expectSameAnswers(_ fleet: [Daemon], _ reference: Daemon, from: Int64, to: Int64) throws {
        for q in questions(from: from, to: to) {
            let local = try reference.http("GET", q)
            #expect(local.status == 200, "\(q): \(local.text)")
            var want = local.json
            #expect(want["scope"] == nil)
            want["scope"] = "fleet"
            #expect(!local.text.contains("\"users\":0,") || q.contains("signup,view"), "\(q): \(local.text)")
            for d in fleet {
                let reply = try d.http("GET", q + "&scope=fleet")
                #expect(reply.status == 200, "\(q): \(reply.text)")
                #expect(
                    NSDictionary(dictionary: reply.json).isEqual(to: want),
                    "\(q)\nfleet: \(reply.text)\nlocal: \(local.text)")
            }
        }
    }

    /// Three instances behind a round-robin sender, one of them killed with SIGKILL mid-load and restarted; the same
    /// event ids sent to two instances: every fleet answer equals the local answer of a fourth instance that got
    /// every event once, and ClickHouse holds each event once (after merging copies).
    @Test func threeInstancesAnswerForTheFleetAsOneWithEveryEvent() throws {
        let table = "rr_\(UInt32.random(in: 0...UInt32.max))"
        let dirs = try (0..<3).map { try temporaryDirectory("fleet-\($0)") }
        defer { for d in dirs { try? FileManager.default.removeItem(at: d) } }
        let killedConfig = config(table: table, extra: "[storage]\ndurability = \"fsync\"\n")
        var fleet = try (0..<3).map { i in
            try Daemon(config: i == 0 ? killedConfig : config(table: table), dataDir: dirs[i])
        }
        let reference = try Daemon()
        let base = Self.nowMs - 3 * 86_400_000
        let events = Self.events(3_000, seed: 7, base: base)
        var accepted = 0
        for (n, start) in stride(from: 0, to: events.count, by: 150).enumerated() {
            let batch = Array(events[start..<min(events.count, start + 150)])
            accepted += try Self.post(fleet[n % 3], batch)
            _ = try Self.post(reference, batch)
            if n == 10 {
                // Mid-load: SIGKILL, then the same data directory again.
                fleet[0].killHard()
                fleet[0] = try Daemon(config: killedConfig, dataDir: dirs[0])
            }
        }
        // The same events (same ids) to two instances: they count once.
        let twice = events[0..<100].filter { $0["id"] != nil }
        accepted += try Self.post(fleet[1], twice) + Self.post(fleet[2], twice)
        #expect(try Self.post(reference, twice) == 0)  // the reference's own dedup
        // Drained: no backlog anywhere, and ClickHouse holds every event. Not the daemons' `events_sent`: the killed
        // instance's counter starts again at 0, so what it sent before the kill (a loaded machine gives it time to)
        // would never be counted, while the sum of the others can pass `accepted` with resends.
        #expect(
            try fleet[0].eventually(60) {
                for d in fleet {
                    let f = try Self.forwarding(d)
                    guard f["backlog_events"] as? Int == 0, f["status"] as? String == "idle" else { return false }
                }
                let held = try clickhouse.query("SELECT count() FROM fleet_it.\(table) FINAL")
                return Int(held.trimmingCharacters(in: .whitespacesAndNewlines)) == events.count
            })
        #expect(accepted >= events.count)
        try Self.expectSameAnswers(fleet, reference, from: base, to: Self.nowMs)
        // Nothing twice once copies merge; nothing lost: the reference's stored count.
        let stored = try EventStore(path: reference.dataDir.appendingPathComponent("var/metricsd.db").path).count()
        let final = try clickhouse.query("SELECT count() FROM fleet_it.\(table) FINAL")
        #expect(Int(final.trimmingCharacters(in: .whitespacesAndNewlines)) == stored)
        #expect(stored == events.count)
    }

    /// ClickHouse down in the middle of the load: the instances keep accepting, say so in /health, answer fleet
    /// queries 503 with the reason, and send everything once it is back. An instance started with forwarding off
    /// turns it on at SIGHUP and sends what it had stored.
    @Test func anOutageLosesNothingAndAReloadTurnsForwardingOn() throws {
        let table = "outage_\(UInt32.random(in: 0...UInt32.max))"
        let a = try Daemon(config: config(table: table))
        let b = try Daemon(config: config(table: table, url: ""))
        let reference = try Daemon()
        let base = Self.nowMs - 3 * 86_400_000
        let events = Self.events(2_000, seed: 11, base: base)
        var accepted = 0
        for (n, start) in stride(from: 0, to: events.count, by: 100).enumerated() {
            let batch = Array(events[start..<min(events.count, start + 100)])
            if n == 6 { clickhouse.stop() }
            accepted += try Self.post(n % 2 == 0 ? a : b, batch)
            _ = try Self.post(reference, batch)
        }
        let retrying = try a.eventually(30) {
            let f = try Self.forwarding(a)
            return f["status"] as? String == "retrying" && (f["backlog_events"] as? Int ?? 0) > 0
                && f["last_error"] is String
        }
        let state = try Self.forwarding(a)
        #expect(retrying, "\(state)")
        let down = try a.http("GET", Self.questions(from: base, to: Self.nowMs)[0] + "&scope=fleet")
        #expect(down.status == 503 && down.text.contains("ClickHouse"), "\(down.text)")
        let metrics = try a.http("GET", "/metrics").text
        #expect(metrics.contains("metricsd_clickhouse_backlog_events"), "\(metrics)")
        // Forwarding off on b: no section in /health, and scope=fleet says what is missing.
        #expect(try Self.forwarding(b).isEmpty)
        #expect(try b.http("GET", "/api/v1/funnel?steps=view,buy&scope=fleet").status == 503)
        try clickhouse.start()
        try config(table: table).write(
            to: b.dataDir.appendingPathComponent("metricsd.toml"), atomically: true, encoding: .utf8)
        kill(b.process.processIdentifier, SIGHUP)
        #expect(try Self.drained([a, b], sentAtLeast: accepted))
        try Self.expectSameAnswers([a, b], reference, from: base, to: Self.nowMs)
        let metricsAfter = try a.http("GET", "/metrics").text
        #expect(metricsAfter.contains("metricsd_clickhouse_events_sent_total"))
    }
    /// A bounded events outbox under a real ClickHouse outage: each policy does what it says, and the events in
    /// ClickHouse plus those given up are the events accepted (under `block`, exactly the accepted ones; an event
    /// line over UDP meanwhile is kept as a dead letter, `backlog_full`).
    @Test(arguments: ["drop_oldest", "drop_newest", "block"]) func aFullEventsOutboxFollowsItsPolicy(policy: String)
        throws
    {
        let table = "bounded_\(policy)_\(UInt32.random(in: 0...UInt32.max))"
        clickhouse.stop()
        let d = try Daemon(
            config: config(table: table)
                + "\nmax_backlog = \"12KiB\"\nbacklog_policy = \"\(policy)\"\n")
        defer { _ = d.stop() }
        let base = Self.nowMs - 86_400_000
        var accepted = 0
        var refused = 0
        for n in 0..<8 {
            let batch = (0..<100).map { i in
                [
                    "event": "view", "user_id": "u\(i)", "timestamp": base + Int64(n * 100 + i), "id": "b\(n)-\(i)",
                    "properties": ["country": "DE"],
                ] as [String: Any]
            }
            let reply = try d.http("POST", "/api/v1/events", body: Self.ndjson(batch))
            if reply.status == 200 {
                accepted += reply.json["accepted"] as? Int ?? 0
            } else {
                #expect(reply.status == 429, "\(reply.text)")
                refused += 1
            }
            usleep(1_200_000)  // stored, and a forwarding round measured the backlog
        }
        if policy == "block" {
            #expect(refused > 0)
            #expect(try Self.forwarding(d)["blocking"] as? Bool == true)
            d.sendUDP(Array("{\"event\":\"view\",\"user_id\":\"udp\"}\n".utf8))
            #expect(
                try d.eventually {
                    let letters = try d.http("GET", "/api/v1/dead-letters?reason=backlog_full").json
                    return (letters["dead_letters"] as? [Any])?.count == 1
                })
        }
        try clickhouse.start()
        #expect(
            try d.eventually(60) {
                let f = try Self.forwarding(d)
                return f["backlog_events"] as? Int == 0 && f["status"] as? String == "idle"
            }, "\((try? Self.forwarding(d)) ?? [:])")
        let f = try Self.forwarding(d)
        let stored =
            Int(
                try clickhouse.query("SELECT count() FROM fleet_it.\(table) FINAL").trimmingCharacters(
                    in: .whitespacesAndNewlines)) ?? -1
        print("events backlog \(policy): accepted \(accepted), in ClickHouse \(stored), \(f)")
        switch policy {
        case "drop_oldest":
            let dropped = f["dropped_oldest_events"] as? Int ?? 0
            #expect(dropped > 0 && stored + dropped == accepted, "\(stored) + \(dropped) vs \(accepted)")
        case "drop_newest":
            let dropped = f["dropped_newest_events"] as? Int ?? 0
            #expect(dropped > 0 && stored + dropped == accepted, "\(stored) + \(dropped) vs \(accepted)")
        default:
            #expect(stored == accepted)
            #expect(accepted + refused * 100 == 800)
        }
    }
}
