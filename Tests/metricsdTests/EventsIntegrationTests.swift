import Export
import Foundation
import Testing

@testable import metricsd

/// JSON events end to end against the real daemon: ingest over HTTP, UDP and TCP, a mixed valid/invalid batch,
/// dedup across a restart, no double count after `kill -9`, the analytics endpoints over stored events, and the
/// `events` measurement in InfluxQL.
@Suite(.serialized) struct EventsIntegrationTests {
    static func tempDir(_ name: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("metricsd-\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    static func ndjson(_ events: [[String: Any]]) -> Data {
        Data(
            events.map { String(decoding: try! JSONSerialization.data(withJSONObject: $0), as: UTF8.self) }
                .joined(separator: "\n").utf8)
    }

    static var nowMs: Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    func funnel(_ d: Daemon, _ query: String) throws -> [Int] {
        let reply = try d.http("GET", "/api/v1/funnel?\(query)")
        #expect(reply.status == 200, "\(reply.text)")
        return ((reply.json["steps"] as? [[String: Any]]) ?? []).map { $0["users"] as? Int ?? -1 }
    }

    @Test func mixedBatchKeepsValidEventsAndNamesTheBadOnes() throws {
        let d = try Daemon()
        defer { d.stop() }
        let t = Self.nowMs - 60_000
        let body = Data(
            """
            [{"event":"view","user_id":"a","timestamp":\(t)},
             {"event":"view"},
             {"event":"cart","user_id":"a","timestamp":\(t + 1)},
             {"event":"cart","user_id":"b","properties":{"x":{"nested":true}}},
             "not an event"]
            """.utf8)
        let reply = try d.http("POST", "/api/v1/events", body: body)
        #expect(reply.status == 400)
        #expect(reply.json["accepted"] as? Int == 2)
        #expect((reply.json["error"] as? String)?.hasPrefix("event 1: \"user_id\" is required (and 2 more)") == true)
        // Regression: an applied body's bytes were counted twice.
        #expect(try d.counter("http_bytes") == body.count)
        let rejected = (reply.json["rejected"] as? [[String: Any]]) ?? []
        #expect(rejected.map { $0["index"] as? Int } == [1, 3, 4])
        #expect(try funnel(d, "steps=view,cart&from=\(t - 1000)&to=\(t + 1000)") == [1, 1])
        // Gzip bodies, as for /write.
        let gz = Data(Gzip.compress(Array(#"{"event":"view","user_id":"z","timestamp":\#(t)}"#.utf8)))
        let zipped = try d.http("POST", "/api/v1/events", body: gz, headers: ["Content-Encoding": "gzip"])
        #expect(zipped.status == 200 && zipped.json["accepted"] as? Int == 1, "\(zipped.text)")
        #expect(try funnel(d, "steps=view,cart&from=\(t - 1000)&to=\(t + 1000)") == [2, 1])
        // A body with nothing usable, bad JSON, and an empty body.
        #expect(try d.http("POST", "/api/v1/events", body: Data("{\"event\":".utf8)).status == 400)
        #expect(try d.http("POST", "/api/v1/events", body: Data()).status == 400)
        #expect(try d.counter("events_accepted") == 3)
    }

    @Test func udpAndTCPLinesStartingWithABraceAreEvents() throws {
        let d = try Daemon()
        defer { d.stop() }
        let t = Self.nowMs - 30_000
        d.sendUDP(Array("{\"event\":\"signup\",\"user_id\":\"u1\",\"timestamp\":\(t)}\ncpu,host=a v=1\n".utf8))
        try d.sendTCP(Array("{\"event\":\"signup\",\"user_id\":\"u2\",\"timestamp\":\(t)}\n{\"event\":1}\n".utf8))
        #expect(
            try d.eventually {
                try funnel(d, "steps=signup,login&from=\(t)&to=\(t + 1)").first == 2
            })
        #expect(try d.eventually { try d.counter("events_invalid") == 1 })
        // The line protocol next to the event still counts.
        #expect(try d.eventually { try d.counter("udp_points") >= 1 })
    }

    @Test func duplicateIDsAreIgnoredAcrossARestart() throws {
        let dir = try Self.tempDir("events-dedup")
        defer { try? FileManager.default.removeItem(at: dir) }
        let t = Self.nowMs - 120_000
        let event: [String: Any] = ["id": "evt-1", "event": "purchase", "user_id": "u9", "timestamp": t]
        do {
            let d = try Daemon(dataDir: dir)
            let first = try d.http("POST", "/api/v1/events", body: Self.ndjson([event]))
            #expect(first.status == 200 && first.json["accepted"] as? Int == 1)
            let again = try d.http("POST", "/api/v1/events", body: Self.ndjson([event]))
            #expect(again.status == 200 && again.json["duplicates"] as? Int == 1)
            #expect(d.stop() == 0)
        }
        let d = try Daemon(dataDir: dir)
        defer { d.stop() }
        var changed = event
        changed["user_id"] = "someone-else"  // the id alone decides
        let retry = try d.http("POST", "/api/v1/events", body: Self.ndjson([changed]))
        #expect(retry.status == 200 && retry.json["duplicates"] as? Int == 1 && retry.json["accepted"] as? Int == 0)
        let q = "steps=purchase,refund&from=\(t - 1)&to=\(t + 1)"
        #expect(try funnel(d, q) == [1, 0])
        // A new id is accepted.
        var other = event
        other["id"] = "evt-2"
        other["user_id"] = "u10"
        #expect(try d.http("POST", "/api/v1/events", body: Self.ndjson([other])).json["accepted"] as? Int == 1)
        #expect(try funnel(d, q) == [2, 0])
    }

    /// `kill -9` right after acknowledged events (durability = "fsync"): after the restart every event is stored
    /// once and rolled up once — WAL replay re-inserts by identity, so nothing is lost and nothing doubles.
    @Test func killNineLosesNoEventAndCountsNoneTwice() throws {
        let dir = try Self.tempDir("events-crash")
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = "[storage]\ndurability = \"fsync\"\n"
        let base = Self.nowMs - 10_000
        var sent = 0
        for round in 0..<3 {
            let d = try Daemon(config: config, dataDir: dir)
            for batch in 0..<5 {
                let events: [[String: Any]] = (0..<20).map { i in
                    let n = round * 1_000 + batch * 100 + i
                    return [
                        "event": "tick", "user_id": "u\(n % 37)", "timestamp": base + Int64(n % 5),
                        "id": i % 2 == 0 ? "id-\(n)" : NSNull(),
                    ]
                }
                let reply = try d.http("POST", "/api/v1/events", body: Self.ndjson(events))
                #expect(reply.status == 200, "\(reply.text)")
                sent += 20
            }
            if round == 1 { _ = try d.http("GET", "/api/v1/funnel?steps=tick,x") }  // some stored before the kill
            d.killHard()
        }
        let d = try Daemon(config: config, dataDir: dir)
        defer { d.stop() }
        let retention = try d.http(
            "GET", "/api/v1/retention?cohort_event=tick&return_event=tick&periods=1&from=\(base - 1)&to=\(base + 10)")
        let cohorts = (retention.json["cohorts"] as? [[String: Any]]) ?? []
        #expect(cohorts.reduce(0) { $0 + ($1["size"] as? Int ?? 0) } == 37)
        // Exactly `sent` events in the table and in the rollups.
        let store = try EventStore(path: dir.appendingPathComponent("var/metricsd.db").path)
        #expect(try store.count() == sent)
        let influxql = try d.http(
            "GET",
            "/query?q="
                + "SELECT sum(\"count\"), count(distinct(\"users\")) FROM \"events\" WHERE time >= \(base - 60_000)ms"
                .addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)
        let values =
            (((influxql.json["results"] as? [[String: Any]])?.first?["series"] as? [[String: Any]])?.first?[
                "values"] as? [[Any]])?.first
        #expect(values?[1] as? Int == sent, "\(influxql.text)")
        #expect(values?[2] as? Int == 37)
    }

    /// The analytics endpoints over events posted through HTTP: the funnel fixture of the unit tests, shifted to
    /// recent times, with a breakdown by a numeric and a string property; parameter errors.
    @Test func analyticsEndpointsAnswerFromStoredEvents() throws {
        let d = try Daemon()
        defer { d.stop() }
        let t0 = Self.nowMs - 3_600_000 * 3
        let hour: Int64 = 3_600_000
        let rows: [(String, String, Int64, [String: Any])] = [
            ("u1", "purchase", 2_000, [:]), ("u1", "view", 1_000, ["plan": "pro", "n": 1]), ("u1", "cart", 1_000, [:]),
            ("u2", "cart", 500, [:]), ("u2", "view", 1_000, ["plan": "free", "n": 2]), ("u2", "purchase", 1_500, [:]),
            ("u3", "view", 1_000, ["plan": "pro", "n": 1]), ("u3", "cart", 1_000 + hour, [:]),
            ("u3", "purchase", 1_000 + hour + 1, [:]),
        ]
        let body = Self.ndjson(
            rows.map { ["event": $0.1, "user_id": $0.0, "timestamp": t0 + $0.2, "properties": $0.3] })
        #expect(try d.http("POST", "/api/v1/events", body: body).status == 200)
        let q = "steps=view,cart,purchase&from=\(t0)&to=\(t0 + 10_000)&window=1h"
        let reply = try d.http("GET", "/api/v1/funnel?\(q)&breakdown=plan")
        let steps = (reply.json["steps"] as? [[String: Any]]) ?? []
        #expect(steps.map { $0["users"] as? Int } == [3, 2, 1])
        #expect(steps.map { $0["dropoff"] as? Int } == [0, 1, 1])
        #expect(steps[1]["median_ms_from_first"] as? Double == Double(hour) / 2)
        #expect(steps[0]["median_ms_from_first"] is NSNull)
        let breakdown = (reply.json["breakdown"] as? [String: [String: Any]]) ?? [:]
        #expect(Set(breakdown.keys) == ["pro", "free"])
        let pro = (breakdown["pro"]?["steps"] as? [[String: Any]])?.map { $0["users"] as? Int }
        #expect(pro == [2, 2, 1])
        let byNumber = try d.http("GET", "/api/v1/funnel?\(q)&breakdown=n").json["breakdown"] as? [String: Any]
        #expect(Set(byNumber?.keys.map { $0 } ?? []) == ["1", "2"])
        // Experiment over the same events: variant = plan on the view event, goal = purchase within 1h.
        let ab = try d.http(
            "GET",
            "/api/v1/experiment?exposure_event=view&variant_property=plan&goal_event=purchase&from=\(t0)&to=\(t0 + 10_000)&window=1h&control=free"
        )
        #expect(ab.status == 200, "\(ab.text)")
        #expect(ab.json["control"] as? String == "free")
        let variants = (ab.json["variants"] as? [[String: Any]]) ?? []
        #expect(variants.map { $0["variant"] as? String } == ["free", "pro"])
        #expect(variants.map { $0["exposed"] as? Int } == [1, 2])
        #expect(variants.map { $0["converted"] as? Int } == [1, 1])  // u3 buys 1 ms after the window
        // Parameter errors name the parameter.
        for (path, word) in [
            ("/api/v1/funnel?steps=view", "steps"), ("/api/v1/funnel?steps=a,b&window=soon", "window"),
            ("/api/v1/retention?cohort_event=a&return_event=b&period=month", "period"),
            ("/api/v1/experiment?exposure_event=e&goal_event=g", "variant_property"),
            ("/api/v1/funnel?steps=a,b&from=yesterday", "from"),
        ] {
            let r = try d.http("GET", path)
            #expect(r.status == 400 && (r.json["error"] as? String)?.contains(word) == true, "\(path): \(r.text)")
        }
    }
}
