import Export
import Foundation
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A real `influxd` (Debian's influxdb package) on a free loopback port with a temporary directory, configured by
/// `scripts/peers.sh` (the same setup the benchmarks use) and stopped by PID. `start()` after `stop()` brings it
/// back on the same port and data (an outage).
final class Influxd: @unchecked Sendable {
    let port: Int
    /// influxd's RPC (backup) listener: chosen free as well, never `port + 1` (two influxd of tests running side by
    /// side collided there).
    let rpcPort: Int
    let dir: URL
    private var process: Process?

    init() throws {
        port = try freePort()
        var rpc = try freePort()
        while rpc == port { rpc = try freePort() }
        rpcPort = rpc
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("influxd-test-\(UUID().uuidString)")
        try start()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: dir)
    }

    var url: String { "http://127.0.0.1:\(port)" }

    func start() throws {
        // The config comes from scripts/peers.sh (the benchmarks' setup); influxd is started here, as a direct
        // child, so it is stopped by PID and never outlives the test.
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "../../scripts/peers.sh"
        ).standardized
        let setup = Process()
        setup.executableURL = URL(fileURLWithPath: "/bin/bash")
        setup.arguments = [script.path, "influxd-config", "\(port)", dir.path, "\(rpcPort)"]
        try setup.run()
        setup.waitUntilExit()
        guard setup.terminationStatus == 0 else { throw CLIError("peers.sh influxd-config failed") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/influxd")
        p.arguments = ["-config", dir.appendingPathComponent("influxdb.conf").path]
        let log = dir.appendingPathComponent("influxd.log")
        if !FileManager.default.fileExists(atPath: log.path) {
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        }
        let handle = try FileHandle(forWritingTo: log)
        handle.seekToEndOfFile()
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if (try? get("/ping").status) == 204 { return }
            if !p.isRunning { throw CLIError("influxd exited early") }
            usleep(100_000)
        }
        throw CLIError("influxd did not start")
    }

    func stop() {
        guard let p = process, p.isRunning else { return }
        process = nil
        kill(p.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(15)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
    }

    func get(_ path: String) throws -> Daemon.Reply { try httpRequest("GET", url + path) }

    /// Rows of an InfluxQL query against database `metrics` (epoch seconds), as column → value maps.
    func rows(_ query: String) throws -> [[String: Any]] {
        let q = query.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? query
        let reply = try get("/query?db=metrics&epoch=s&q=\(q)")
        let results = reply.json["results"] as? [[String: Any]] ?? []
        var out: [[String: Any]] = []
        for series in (results.first?["series"] as? [[String: Any]]) ?? [] {
            let columns = series["columns"] as? [String] ?? []
            let tags = series["tags"] as? [String: String] ?? [:]
            for values in series["values"] as? [[Any]] ?? [] {
                var row: [String: Any] = tags
                for (c, v) in zip(columns, values) where !(v is NSNull) { row[c] = v }
                out.append(row)
            }
        }
        return out
    }
}

/// The scripted receiver (Tests/metricsdTests/fake_influx.py) and what it got.
final class FakeInflux: @unchecked Sendable {
    let port: Int
    let log: URL
    let process = Process()

    init(plan: [String]) throws {
        port = try freePort()
        log = FileManager.default.temporaryDirectory.appendingPathComponent("fake-influx-\(UUID().uuidString).jsonl")
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "fake_influx.py")
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script.path, "\(port)", plan.joined(separator: ","), log.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        _ = pipe.fileHandleForReading.availableData  // "ready"
    }

    deinit {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: log)
    }

    var url: String { "http://127.0.0.1:\(port)" }

    struct Request {
        var time: Double
        var status: Int
        var lines: [String]
        var sent: [String]
        var auth: String?
    }

    func requests() -> [Request] {
        guard let text = try? String(contentsOf: log, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
            return Request(
                time: o["t"] as? Double ?? 0, status: o["status"] as? Int ?? 0, lines: o["lines"] as? [String] ?? [],
                sent: o["sent"] as? [String] ?? [], auth: o["auth"] as? String)
        }
    }

    /// Accepted points by key (series and timestamp): a resent point overwrites, as in InfluxDB.
    func accepted() -> [String: String] {
        var out: [String: String] = [:]
        for r in requests() {
            for line in r.lines {
                let parts = line.split(separator: " ")
                out["\(parts[0]) \(parts.last!)"] = String(parts[1])
            }
        }
        return out
    }
}

/// Forwarding to a real influxd and to scripted receivers: values equal the stored rollups field by field; an outage,
/// 5xx and 429 answers, and a kill -9 of metricsd lose nothing and duplicate nothing.
@Suite(.serialized) struct ForwardingTests {
    static let minute: Int64 = 60

    /// Points in the past (so they go straight to storage as late data): `hosts` series × `minutes` minutes × four
    /// points a minute, with a float field `usage` and an integer field `reqs`.
    static func points(start: Int64, hosts: Int, minutes: Int) -> (body: String, usage: [String: [Double]]) {
        var lines: [String] = []
        var usage: [String: [Double]] = [:]
        for m in 0..<minutes {
            for h in 0..<hosts {
                for k in 0..<4 {
                    let t = start + Int64(m) * minute + Int64(k) * 15
                    let v = Double((h * 7 + m * 3 + k * 5) % 23) * 1.25 + 0.1
                    lines.append("cpu,host=h\(h) usage=\(v),reqs=\(h + k)i \(t)")
                    usage["h\(h) \(start + Int64(m) * minute)", default: []].append(v)
                }
            }
        }
        return (lines.joined(separator: "\n") + "\n", usage)
    }

    static func minuteAgo(_ minutes: Int64) -> Int64 {
        let now = Int64(Date().timeIntervalSince1970)
        return (now / minute - minutes) * minute
    }

    static func config(url: String, extra: String = "") -> String {
        """
        [influx]
        url = "\(url)"
        \(extra.contains("create_database") ? "" : "create_database = true")
        flush_interval = "200ms"
        retry_initial = "100ms"
        retry_max = "1s"
        \(extra)
        """
    }

    static func write(_ daemon: Daemon, _ body: String) throws {
        let reply = try daemon.http("POST", "/write?precision=s", body: Data(body.utf8))
        #expect(reply.status == 204, "\(reply.text)")
    }

    /// metricsd's stored aggregate of `usage` per "host minute-start".
    static func stored(_ daemon: Daemon, _ agg: String, from start: Int64, minutes: Int64) throws -> [String: Double] {
        let json = try daemon.query(
            "measurement=cpu&field=usage&agg=\(agg)&from=\(start * 1000)&to=\((start + minutes * minute) * 1000)&group_by=host"
        )
        var out: [String: Double] = [:]
        for series in json["series"] as? [[String: Any]] ?? [] {
            let host = (series["tags"] as? [String: String])?["host"] ?? ""
            for p in series["points"] as? [[Double]] ?? [] { out["\(host) \(Int64(p[0]) / 1000)"] = p[1] }
        }
        return out
    }

    static func forwarding(_ daemon: Daemon) throws -> [String: Any] {
        (try daemon.http("GET", "/health").json["forwarding"] as? [String: Any]) ?? [:]
    }

    static func caughtUp(_ daemon: Daemon) throws -> Bool {
        let f = try forwarding(daemon)
        return f["backlog_points"] as? Int == 0 && f["status"] as? String == "idle"
            && (f["points_forwarded"] as? Int ?? 0) > 0
    }

    @Test(arguments: ["gzip", "identity"]) func valuesInInfluxEqualTheStoredRollups(contentEncoding: String) throws {
        let influx = try Influxd()
        let daemon = try Daemon(
            config: Self.config(
                url: influx.url, extra: "instance_tag = \"agg\"\ncontent_encoding = \"\(contentEncoding)\""))
        let start = Self.minuteAgo(30)
        let data = Self.points(start: start, hosts: 3, minutes: 4)
        try Self.write(daemon, data.body)
        #expect(try daemon.eventually(30) { try influx.rows("SELECT count(usage_count) FROM cpu_1m").first != nil })
        #expect(try daemon.eventually(30) { try influx.rows("SELECT * FROM cpu_1m").count == 12 })
        let rows = try influx.rows("SELECT * FROM cpu_1m")
        #expect(rows.count == 12, "one point per series and minute")
        let hostname = ForwarderConfiguration().hostname  // $HOSTNAME, else the host name
        let aggregates = ["count", "sum", "min", "max", "mean", "stddev", "first", "last", "p50", "p90", "p99"]
        // What metricsd itself stores, per aggregate, per host and minute.
        var stored: [String: Double] = [:]
        for agg in aggregates {
            for (key, value) in try Self.stored(daemon, agg, from: start, minutes: 4) {
                stored["\(agg) \(key)"] = value
            }
        }
        for row in rows {
            let host = row["host"] as? String ?? ""
            let time = (row["time"] as? Int).map(Int64.init) ?? 0
            #expect(row["agg"] as? String == hostname, "instance tag")
            let values = try #require(data.usage["\(host) \(time)"])
            #expect(row["usage_count"] as? Int == values.count)
            // The stored sum adds partial rollups (late points merge), so it may differ from a left-to-right sum in
            // the last bits; it equals metricsd's own stored value exactly (below).
            #expect(abs((row["usage_sum"] as? Double ?? 0) - values.reduce(0, +)) < 1e-9)
            #expect(row["usage_min"] as? Double == values.min() && row["usage_max"] as? Double == values.max())
            #expect(row["usage_first"] as? Double == values.first && row["usage_last"] as? Double == values.last)
            for agg in aggregates {
                let field = "usage_\(agg)"
                let want = try #require(stored["\(agg) \(host) \(time)"], "\(agg) \(host) \(time)")
                let got = (row[field] as? Double) ?? (row[field] as? Int).map(Double.init)
                #expect(got == want, "\(field) at \(host) \(time): influx \(String(describing: got)), metricsd \(want)")
            }
            #expect(row["reqs_count"] as? Int == 4)
        }
        #expect(daemon.stop() == 0)
    }

    /// influxd down while metricsd ingests several minutes, then back: every minute arrives, once, exactly — and
    /// metricsd killed with -9 while the backlog drains loses and duplicates nothing either.
    @Test func anOutageAndAKillLoseNothing() throws {
        let influx = try Influxd()
        let config = Self.config(url: influx.url, extra: "batch_size = 1")
        var daemon = try Daemon(config: config)
        #expect(try daemon.eventually(20) { (try Self.forwarding(daemon)["status"] as? String) == "idle" })
        influx.stop()
        let start = Self.minuteAgo(40)
        let data = Self.points(start: start, hosts: 20, minutes: 6)
        try Self.write(daemon, data.body)
        #expect(
            try daemon.eventually(20) {
                let f = try Self.forwarding(daemon)
                return f["backlog_points"] as? Int == 120 && (f["retries"] as? Int ?? 0) > 0
            }, "\((try? Self.forwarding(daemon)) ?? [:])")
        let health = try daemon.http("GET", "/health").json
        #expect((health["forwarding"] as? [String: Any])?["last_error"] != nil)
        try influx.start()
        // Kill metricsd while it drains (one point a request), then start it again on the same data.
        _ = try daemon.eventually(20) { (try Self.forwarding(daemon)["points_forwarded"] as? Int ?? 0) >= 5 }
        daemon.killHard()
        daemon = try Daemon(config: config, dataDir: daemon.dataDir)
        #expect(try daemon.eventually(60) { try Self.caughtUp(daemon) }, "\((try? Self.forwarding(daemon)) ?? [:])")
        let rows = try influx.rows("SELECT * FROM cpu_1m")
        #expect(rows.count == 120, "every series-minute, once")
        let stored = try Self.stored(daemon, "sum", from: start, minutes: 6)
        #expect(stored.count == 120)
        for row in rows {
            let key = "\(row["host"] as? String ?? "") \(row["time"] as? Int ?? 0)"
            let values = try #require(data.usage[key])
            #expect(row["usage_count"] as? Int == values.count, "no point lost or counted twice across the kill")
            #expect(row["usage_sum"] as? Double == stored[key], "\(key)")
            #expect(abs((row["usage_sum"] as? Double ?? 0) - values.reduce(0, +)) < 1e-9)
        }
        #expect(daemon.stop() == 0)
    }

    /// A graceful stop sends what the outbox holds before exiting (a replica scaled away by Kubernetes leaves
    /// nothing behind): here the forwarder's next try would be an hour away, so only the drain can send it.
    @Test func shutdownDrainsTheOutbox() throws {
        let influx = try Influxd()
        influx.stop()
        let daemon = try Daemon(
            config:
                "[influx]\nurl = \"\(influx.url)\"\ncreate_database = true\nretry_initial = \"1h\"\nretry_max = \"1h\"\n"
        )
        let start = Self.minuteAgo(30)
        let data = Self.points(start: start, hosts: 5, minutes: 3)
        try Self.write(daemon, data.body)
        #expect(try daemon.eventually(20) { try Self.stored(daemon, "count", from: start, minutes: 3).count == 15 })
        try influx.start()
        usleep(500_000)
        #expect((try Self.forwarding(daemon)["points_forwarded"] as? Int) == 0, "still waiting out the backoff")
        #expect(daemon.stop() == 0)
        let rows = try influx.rows("SELECT * FROM cpu_1m")
        #expect(rows.count == 15, "\(daemon.log())")
        for row in rows {
            let values = try #require(data.usage["\(row["host"] as? String ?? "") \(row["time"] as? Int ?? 0)"])
            #expect(row["usage_count"] as? Int == values.count)
        }
    }

    /// A bounded outbox under a real influxd outage: each backlog policy does what it says, and the counts add up —
    /// the points in InfluxDB plus those each policy gave up are the points written (and under `block`, the points
    /// in InfluxDB are exactly the acknowledged ones).
    @Test(arguments: ["drop_oldest", "drop_newest", "block"]) func aFullOutboxFollowsItsPolicy(policy: String) throws {
        let influx = try Influxd()
        influx.stop()  // an outage from the start
        let daemon = try Daemon(
            config: Self.config(
                url: influx.url,
                extra: "max_backlog = \"6KiB\"\nbacklog_policy = \"\(policy)\""))
        defer { _ = daemon.stop() }
        let writes = 10
        var acknowledged = 0
        var refused = 0
        var firstMinute: Int64 = 0
        var tcp: Int32 = -1
        defer { if tcp >= 0 { close(tcp) } }
        for w in 0..<writes {
            // Ten series-minutes per write, each write its own two minutes, oldest first.
            let start = Self.minuteAgo(Int64(100 - 2 * w))
            if w == 0 { firstMinute = start }
            let data = Self.points(start: start, hosts: 5, minutes: 2)
            let reply = try daemon.http("POST", "/write?precision=s", body: Data(data.body.utf8))
            if reply.status == 204 {
                acknowledged += 10
            } else {
                #expect(reply.status == 429, "\(reply.text)")
                #expect(reply.headers["retry-after"] != nil)
                refused += 1
            }
            // Stored, and a forwarding round has measured the backlog.
            usleep(1_200_000)
        }
        var forwarding = try Self.forwarding(daemon)
        #expect(forwarding["backlog_policy"] as? String == policy)
        if policy == "block" {
            #expect(forwarding["blocking"] as? Bool == true, "\(forwarding)")
            daemon.sendUDP(Array("udp_while_blocked v=1\n".utf8))
            #expect(try daemon.eventually { (try Self.forwarding(daemon)["udp_datagrams_dropped"] as? Int) == 1 })
            // TCP is not read meanwhile: the line waits (in the sockets) until the outbox drains.
            tcp = try daemon.connectTCP()
            _ = "tcp_while_blocked v=1\n".withCString { send(tcp, $0, 22, 0) }
            usleep(1_000_000)
            #expect(try daemon.counter("tcp_lines") == 0)
        } else {
            #expect((forwarding["backlog_bytes"] as? Int ?? .max) <= 6 * 1024 + 4096, "\(forwarding)")
        }
        try influx.start()
        #expect(try daemon.eventually(60) { try Self.caughtUp(daemon) }, "\((try? Self.forwarding(daemon)) ?? [:])")
        forwarding = try Self.forwarding(daemon)
        let rows = try influx.rows("SELECT * FROM cpu_1m")
        let times = rows.compactMap { $0["time"] as? Int }.map(Int64.init)
        print(
            "backlog \(policy): written \(writes * 10), acknowledged \(acknowledged), in InfluxDB \(rows.count), dropped oldest \(forwarding["dropped_oldest_points"] ?? 0), newest \(forwarding["dropped_newest_points"] ?? 0), writes refused \(refused)"
        )
        switch policy {
        case "drop_oldest":
            let dropped = forwarding["dropped_oldest_points"] as? Int ?? 0
            #expect(dropped > 0)
            #expect(rows.count + dropped == writes * 10, "\(rows.count) forwarded + \(dropped) dropped")
            #expect(!times.contains(firstMinute), "the oldest went")
            #expect(acknowledged == writes * 10)
        case "drop_newest":
            let dropped = forwarding["dropped_newest_points"] as? Int ?? 0
            #expect(dropped > 0)
            #expect(rows.count + dropped == writes * 10, "\(rows.count) forwarded + \(dropped) dropped")
            #expect(times.contains(firstMinute), "the oldest were kept")
            #expect(acknowledged == writes * 10)
        default:
            #expect(refused > 0)
            #expect(rows.count == acknowledged, "every acknowledged point forwarded, nothing else")
            #expect(acknowledged + refused * 10 == writes * 10)
            #expect(forwarding["writes_refused"] as? Int == refused)
            #expect(try daemon.eventually(20) { try daemon.counter("tcp_lines") == 1 }, "read once the outbox drained")
            // Drained: writes are taken again.
            let after = Self.points(start: Self.minuteAgo(40), hosts: 1, minutes: 1)
            #expect(
                try daemon.eventually {
                    try daemon.http("POST", "/write?precision=s", body: Data(after.body.utf8)).status == 204
                })
        }
        let metrics = try daemon.http("GET", "/metrics").text
        if policy != "block" {
            #expect(metrics.contains("metricsd_forward_backlog_dropped_total{policy=\"\(policy)\"}"), "\(policy)")
        } else {
            #expect(metrics.contains("metricsd_backlog_blocked_total{what=\"http_write\"} \(refused)"))
        }
    }

    /// A real influxd refusing forwarded points (a field type conflict: `usage_sum` is a string there): the other
    /// measurement's points arrive, the refused ones become dead letters with influxd's own error, and once the
    /// conflict is fixed (the measurement dropped in InfluxDB) a replay sends them, and they equal the stored rollups.
    @Test func pointsInfluxDBRefusesAreDeadLettersAndReplayOnceFixed() throws {
        let influx = try Influxd()
        let start = Self.minuteAgo(30)
        _ = try httpRequest(
            "POST", influx.url + "/query", body: Data("q=CREATE DATABASE metrics".utf8),
            headers: ["Content-Type": "application/x-www-form-urlencoded"])
        let conflict = try httpRequest(
            "POST", influx.url + "/write?db=metrics&precision=s",
            body: Data("cpu_1m,host=zz usage_sum=\"text\" \(start)\n".utf8))
        #expect(conflict.status == 204, "\(conflict.text)")
        let daemon = try Daemon(config: Self.config(url: influx.url))
        defer { _ = daemon.stop() }
        let data = Self.points(start: start, hosts: 2, minutes: 2)
        let mem = (0..<2).map { "mem,host=h\($0) used=\($0 + 10) \(start + 5)" }.joined(separator: "\n")
        try Self.write(daemon, data.body + "\n" + mem)
        #expect(try daemon.eventually(30) { try influx.rows("SELECT * FROM mem_1m").count == 2 })
        #expect(try daemon.eventually(30) { try Self.caughtUp(daemon) })
        var letters: [[String: Any]] = []
        #expect(
            try daemon.eventually(20) {
                letters =
                    try daemon.http("GET", "/api/v1/dead-letters?source=influx").json["dead_letters"]
                    as? [[String: Any]] ?? []
                return letters.count == 4
            }, "\(letters)")
        #expect(letters.allSatisfy { $0["reason"] as? String == "rejected_by_influxdb" })
        #expect(
            letters.allSatisfy { ($0["error"] as? String)?.contains("field type conflict") == true }, "\(letters)")
        #expect(letters.allSatisfy { ($0["text"] as? String)?.hasPrefix("cpu_1m,host=") == true })
        #expect(try influx.rows("SELECT * FROM cpu_1m WHERE host != 'zz'").isEmpty)
        let metrics = try daemon.http("GET", "/metrics").text
        #expect(metrics.contains("metricsd_rejected_total{reason=\"rejected_by_influxdb\"} 4"))

        // Still conflicting: a replay is refused again and keeps them.
        let refused = try daemon.http("POST", "/api/v1/dead-letters/replay?source=influx").json
        #expect(refused["accepted"] as? Int == 0 && refused["still_rejected"] as? Int == 4, "\(refused)")
        // Fixed in InfluxDB: the replay sends them, and they are deleted.
        _ = try httpRequest(
            "POST", influx.url + "/query?db=metrics", body: Data("q=DROP MEASUREMENT cpu_1m".utf8),
            headers: ["Content-Type": "application/x-www-form-urlencoded"])
        let replay = try daemon.http("POST", "/api/v1/dead-letters/replay?source=influx").json
        #expect(replay["accepted"] as? Int == 4 && replay["deleted"] as? Int == 4, "\(replay)")
        let rows = try influx.rows("SELECT * FROM cpu_1m")
        #expect(rows.count == 4)
        let stored = try Self.stored(daemon, "sum", from: start, minutes: 2)
        for row in rows {
            let key = "\(row["host"] as? String ?? "") \(row["time"] as? Int ?? 0)"
            #expect(row["usage_sum"] as? Double == stored[key], "\(key)")
        }
        #expect(try daemon.http("GET", "/api/v1/dead-letters").json["count"] as? Int == 0)
    }

    /// 500s, a 429 with Retry-After, a partial write (400) and a refusal (401): retried, honoured, counted, surfaced.
    @Test func errorsAreHandledTheWayTelegrafDoes() throws {
        let fake = try FakeInflux(plan: ["500", "500", "429:1", "400:partial", "401", "401"])
        let daemon = try Daemon(config: Self.config(url: fake.url, extra: "create_database = false\nbatch_size = 5"))
        let start = Self.minuteAgo(50)
        let data = Self.points(start: start, hosts: 5, minutes: 3)
        try Self.write(daemon, data.body)
        // The 401s turn /health degraded while they last.
        #expect(
            try daemon.eventually(20) { (try daemon.http("GET", "/health").json["status"] as? String) == "degraded" })
        #expect(try daemon.eventually(30) { try Self.caughtUp(daemon) }, "\((try? Self.forwarding(daemon)) ?? [:])")
        let requests = fake.requests()
        #expect(requests.prefix(6).map(\.status) == [500, 500, 429, 400, 401, 401])
        // Retry-After: 1 was honoured.
        #expect(requests[3].time - requests[2].time >= 0.95)
        let f = try Self.forwarding(daemon)
        #expect(f["points_rejected"] as? Int == 4, "the partial write's dropped=4")
        #expect((f["retries"] as? Int ?? 0) >= 5)
        // After the 400 the batch is halved to find the refused points; the 401 on the way keeps the outbox, and the
        // whole batch is sent again once accepted.
        #expect(requests[4].sent == Array(requests[3].sent.prefix(2)))
        #expect(requests[6].sent == requests[3].sent)
        #expect(fake.accepted().count == 15 - 4)
        // The four refused points, each alone, are dead letters with the receiver's error.
        var rows: [[String: Any]] = []
        #expect(
            try daemon.eventually {
                rows =
                    try daemon.http("GET", "/api/v1/dead-letters?source=influx").json["dead_letters"]
                    as? [[String: Any]] ?? []
                return rows.count == 4
            }, "\(rows)")
        #expect(Set(rows.compactMap { $0["text"] as? String }) == Set(requests[3].sent.dropFirst()))
        #expect(rows.allSatisfy { ($0["error"] as? String)?.hasPrefix("partial write: field type conflict") == true })
        #expect(rows.allSatisfy { $0["reason"] as? String == "rejected_by_influxdb" })
        #expect((try daemon.http("GET", "/health").json["status"] as? String) == "pass")
        let metrics = try daemon.http("GET", "/metrics").text
        #expect(metrics.contains("metricsd_forward_points_rejected_total 4"))
        #expect(daemon.stop() == 0)
    }

    /// The v2 path: forwarding to a second metricsd's /api/v2/write with a token.
    @Test func forwardsToAnInfluxV2Endpoint() throws {
        let receiver = try Daemon(config: "[auth]\ntoken = \"s3cret\"\n")
        let sender = try Daemon(
            config: Self.config(
                url: "http://127.0.0.1:\(receiver.httpPort)",
                extra: "version = 2\norg = \"acme\"\nbucket = \"rollups\"\ntoken = \"s3cret\"\ncreate_database = false"
            ))
        let start = Self.minuteAgo(20)
        let data = Self.points(start: start, hosts: 2, minutes: 3)
        try Self.write(sender, data.body)
        #expect(try sender.eventually(30) { try Self.caughtUp(sender) }, "\((try? Self.forwarding(sender)) ?? [:])")
        let json = try receiver.http(
            "GET",
            "/api/v1/query?measurement=cpu_1m&field=usage_sum&agg=sum&from=\(start * 1000)&to=\((start + 3 * Self.minute) * 1000)&group_by=host",
            headers: ["Authorization": "Token s3cret"]
        ).json
        var got: [String: Double] = [:]
        for series in json["series"] as? [[String: Any]] ?? [] {
            let host = (series["tags"] as? [String: String])?["host"] ?? ""
            for p in series["points"] as? [[Double]] ?? [] { got["\(host) \(Int64(p[0]) / 1000)"] = p[1] }
        }
        #expect(got.count == 6, "\(json)")
        let stored = try Self.stored(sender, "sum", from: start, minutes: 3)
        for (key, values) in data.usage {
            #expect(got[key] == stored[key], "\(key): sent once, exactly what the sender stores")
            #expect(abs((got[key] ?? 0) - values.reduce(0, +)) < 1e-9)
        }
        #expect(sender.stop() == 0)
    }
}
