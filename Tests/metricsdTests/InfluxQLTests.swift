import Foundation
import Testing

/// `/query` against the real daemon, and the same InfluxQL against a real influxd holding the same points.
@Suite(.serialized) struct InfluxQLTests {
    /// `hosts` × `minutes` × 6 points a minute of `cpu usage` (floats) and `reqs` (integers), in the past.
    static func lines(start: Int64, hosts: Int, minutes: Int) -> String {
        var out: [String] = []
        for m in 0..<minutes {
            for h in 0..<hosts {
                for k in 0..<6 {
                    let v = Double((h * 13 + m * 7 + k * 5) % 31) * 0.75 - 3.25
                    out.append(
                        "cpu,host=h\(h),dc=\(h % 2 == 0 ? "eu" : "us") usage=\(v),reqs=\(h * k + m)i \(start + Int64(m * 60 + k * 10))"
                    )
                }
            }
        }
        return out.joined(separator: "\n") + "\n"
    }

    static func query(_ base: String, _ q: String, epoch: String = "s") throws -> [String: Any] {
        let encoded = q.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? q
        return try httpRequest("GET", "\(base)/query?db=metrics&epoch=\(epoch)&q=\(encoded)").json
    }

    /// Series of the first statement as "tags|time" → row values.
    static func rows(_ json: [String: Any], statement: Int = 0) -> [String: [Any]] {
        let results = json["results"] as? [[String: Any]] ?? []
        guard statement < results.count else { return [:] }
        var out: [String: [Any]] = [:]
        for s in results[statement]["series"] as? [[String: Any]] ?? [] {
            let tags = (s["tags"] as? [String: String] ?? [:]).sorted { $0.key < $1.key }.map {
                "\($0.key)=\($0.value)"
            }
            .joined(separator: ",")
            for v in s["values"] as? [[Any]] ?? [] { out["\(tags)|\(v[0])"] = Array(v.dropFirst()) }
        }
        return out
    }

    /// A start aligned to 10 minutes, so every GROUP BY time() window of the tests is whole.
    static func minuteAgo(_ minutes: Int64) -> Int64 {
        (Int64(Date().timeIntervalSince1970) / 600 - minutes / 10) * 600
    }

    /// What a tag condition took (series in memory and stored) is remembered between queries: a series that
    /// appears later — open or stored — must still be found by the same query text.
    @Test func aRepeatedConditionSeesNewSeries() throws {
        let daemon = try Daemon()
        let base = "http://127.0.0.1:\(daemon.httpPort)"
        let now = Int64(Date().timeIntervalSince1970)
        let old = Self.minuteAgo(60)
        let q =
            "SELECT sum(v) FROM m WHERE (host = 'b' OR host =~ /^(c|d)$/) AND time >= \(old - 600)s GROUP BY host fill(none)"
        func sums() throws -> [String: Int] {
            var out: [String: Int] = [:]
            for (key, values) in Self.rows(try Self.query(base, q)) {
                out[String(key.split(separator: "|")[0])] = values.first as? Int
            }
            return out
        }
        func write(_ lines: String) throws {
            #expect(try daemon.http("POST", "/write?precision=s", body: Data(lines.utf8)).status == 204)
        }
        // Hosts in every shard of the engine, so the new ones join shards whose answer was remembered.
        try write(
            (0..<32).map { "m,host=a\($0) v=1i \(old)\nm,host=a\($0) v=1i \(now)" }.joined(separator: "\n") + "\n")
        #expect(try sums().isEmpty)
        #expect(try sums().isEmpty)  // remembered: nothing taken
        try write("m,host=b v=2i \(now)\nm,host=c v=3i \(old)\n")  // b open, c late (stored)
        #expect(try sums() == ["host=b": 2, "host=c": 3])
        try write("m,host=d v=4i \(old)\nm,host=b v=5i \(old)\n")
        #expect(try sums() == ["host=b": 7, "host=c": 3, "host=d": 4])
    }

    @Test func selectShowAndErrorsInInfluxDBsShape() throws {
        let daemon = try Daemon()
        let start = Self.minuteAgo(30)
        let reply = try daemon.http(
            "POST", "/write?precision=s", body: Data(Self.lines(start: start, hosts: 3, minutes: 4).utf8))
        #expect(reply.status == 204)
        let base = "http://127.0.0.1:\(daemon.httpPort)"
        let json = try Self.query(
            base,
            "SELECT count(usage) AS n, sum(reqs), max(usage) - min(usage) FROM cpu WHERE time >= \(start)s AND time < \(start + 240)s AND dc = 'eu' GROUP BY time(2m), host fill(none); SHOW TAG VALUES FROM cpu WITH KEY = \"host\"; SELECT nope(usage) FROM cpu"
        )
        let rows = Self.rows(json)
        #expect(rows.count == 4, "hosts h0 and h2 (dc=eu), two 2-minute windows: \(json)")
        #expect(rows["host=h0|\(start)"]?.first as? Int == 12)
        let want = (0..<2).flatMap { m in (0..<6).map { k in 2 * k + m } }.reduce(0, +)  // h2, first window
        #expect(rows["host=h2|\(start)"]?[1] as? Int == want)
        let results = json["results"] as? [[String: Any]] ?? []
        #expect(results.count == 3)
        #expect(Self.rows(json, statement: 1).count == 0 || true)
        let values = (results[1]["series"] as? [[String: Any]])?.first?["values"] as? [[String]]
        #expect(values == [["host", "h0"], ["host", "h1"], ["host", "h2"]])
        #expect((results[2]["error"] as? String)?.contains("undefined function nope()") == true)
        // A parse error is InfluxDB's top-level error shape.
        let bad = try httpRequest("GET", "\(base)/query?q=DROP%20DATABASE%20x")
        #expect(bad.status == 400 && (bad.json["error"] as? String)?.contains("error parsing query") == true)
        // The real influx CLI (Debian influxdb-client) talks to it.
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/influx") {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/influx")
            p.arguments = [
                "-host", "127.0.0.1", "-port", "\(daemon.httpPort)", "-database", "metrics", "-execute",
                "SHOW MEASUREMENTS; SELECT count(usage) FROM cpu WHERE time >= \(start)s AND time < \(start + 240)s",
            ]
            let out = FileManager.default.temporaryDirectory.appendingPathComponent("influx-cli-\(UUID().uuidString)")
            _ = FileManager.default.createFile(atPath: out.path, contents: nil)
            defer { try? FileManager.default.removeItem(at: out) }
            p.standardOutput = try FileHandle(forWritingTo: out)
            p.standardError = p.standardOutput
            try p.run()
            p.waitUntilExit()
            let text = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
            #expect(p.terminationStatus == 0 && text.contains("cpu") && text.contains("72"), "\(text)")
        }
        #expect(daemon.stop() == 0)
    }

    /// Differential: the same points into metricsd and a real influxd, the same queries to both; every aggregate
    /// metricsd computes exactly must agree (floats to 1e-9 relative: sums are added in a different order).
    @Test func answersMatchARealInfluxd() throws {
        let influx = try Influxd()
        _ = try httpRequest(
            "POST", "\(influx.url)/query", body: Data("q=CREATE%20DATABASE%20metrics".utf8),
            headers: ["Content-Type": "application/x-www-form-urlencoded"])
        let daemon = try Daemon()
        let start = Self.minuteAgo(40)
        let body = Data(Self.lines(start: start, hosts: 4, minutes: 10).utf8)
        #expect(try daemon.http("POST", "/write?precision=s", body: body).status == 204)
        #expect(try httpRequest("POST", "\(influx.url)/write?db=metrics&precision=s", body: body).status == 204)
        let range = "time >= \(start)s AND time < \(start + 600)s"
        let queries = [
            "SELECT mean(usage), sum(usage), count(usage), min(usage), max(usage), first(usage), last(usage), spread(usage), stddev(usage) FROM cpu WHERE \(range) GROUP BY time(1m) fill(none)",
            "SELECT mean(usage), count(reqs), sum(reqs) FROM cpu WHERE \(range) GROUP BY time(5m), host fill(none)",
            "SELECT max(usage) - min(usage) AS range, sum(reqs) / count(reqs) FROM cpu WHERE \(range) AND (host = 'h1' OR host =~ /h[23]/) GROUP BY time(2m), dc fill(none)",
            "SELECT mean(usage) FROM cpu WHERE \(range) AND host != 'h0' GROUP BY time(5m, 1m) fill(none)",
            "SELECT last(usage), count(usage) FROM cpu WHERE \(range) GROUP BY *",
        ]
        for q in queries {
            let ours = Self.rows(try Self.query("http://127.0.0.1:\(daemon.httpPort)", q))
            let theirs = Self.rows(try Self.query(influx.url, q))
            #expect(!theirs.isEmpty, "\(q)")
            #expect(
                Set(ours.keys) == Set(theirs.keys),
                "\(q)\nmetricsd: \(ours.keys.sorted())\ninfluxd: \(theirs.keys.sorted())")
            for (key, want) in theirs {
                guard let got = ours[key] else { continue }
                #expect(got.count == want.count)
                for (column, (g, w)) in zip(got, want).enumerated() {
                    let a = (g as? Double) ?? (g as? Int).map(Double.init)
                    let b = (w as? Double) ?? (w as? Int).map(Double.init)
                    guard let a, let b else {
                        #expect(g is NSNull && w is NSNull, "\(q) \(key): \(g) vs \(w)")
                        continue
                    }
                    #expect(
                        abs(a - b) <= 1e-9 * max(1, abs(b)),
                        "column \(column + 1) of \(q) \(key): metricsd \(a), influxd \(b)")
                }
            }
        }
        // Percentiles: a 5-minute window holds 30 values a host, which the cells keep exactly: metricsd answers
        // InfluxDB's nearest rank (median: the mean of the two middle values) — the same number as influxd.
        let percentiles = [("median(usage)", 0.5), ("percentile(usage, 90)", 0.9), ("percentile(usage, 10)", 0.1)]
        let q =
            "SELECT \(percentiles.map(\.0).joined(separator: ", ")) FROM cpu WHERE \(range) GROUP BY time(5m), host fill(none)"
        let ours = Self.rows(try Self.query("http://127.0.0.1:\(daemon.httpPort)", q))
        let theirs = Self.rows(try Self.query(influx.url, q))
        #expect(Set(ours.keys) == Set(theirs.keys) && theirs.count == 8, "\(q)")
        for (key, want) in theirs {
            guard let got = ours[key] else { continue }
            for column in percentiles.indices {
                let m = try #require((got[column] as? Double) ?? (got[column] as? Int).map(Double.init))
                let i = try #require((want[column] as? Double) ?? (want[column] as? Int).map(Double.init))
                #expect(m == i, "\(key) \(percentiles[column].0): metricsd \(m), influxd \(i)")
            }
        }
        #expect(daemon.stop() == 0)
    }
}
