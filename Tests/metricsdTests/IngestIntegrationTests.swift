import Export
import Foundation
import TestSupport
import Testing

@testable import metricsd

/// End to end: the real binary, real sockets on 127.0.0.1, rollups read back through /api/v1/query and compared with
/// the exact aggregates of the points sent.
@Suite(.serialized) struct IngestIntegrationTests {
    struct Expected {
        var values: [Double] = []
        var times: [Int64] = []

        mutating func add(_ v: Double, _ t: Int64) {
            values.append(v)
            times.append(t)
        }

        var sorted: [Double] { values.sorted() }
        var first: Double { values[times.firstIndex(of: times.min()!)!] }
        var last: Double { values[times.lastIndex(of: times.max()!)!] }
        var mean: Double { values.reduce(0, +) / Double(values.count) }
        var stddev: Double {
            let m = mean
            return (values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(values.count - 1)).squareRoot()
        }
        func quantile(_ q: Double) -> Double { sorted[Int((q * Double(values.count - 1)).rounded(.down))] }
    }

    /// Points of one series, all inside one minute bucket that is still open.
    static func points(_ n: Int, seed: UInt64) -> (lines: [String], expected: Expected, minute: Int64) {
        let now = Int64(Date().timeIntervalSince1970 * 1e9)
        let minute = now / 60_000_000_000 * 60_000_000_000
        var rng = SplitMix(seed: seed)
        var expected = Expected()
        var lines: [String] = []
        for i in 0..<n {
            let v = (Double(rng.next() % 100_000) / 100).rounded(toPlaces: 2)
            let t = minute + Int64(i) * 1_000_000 + Int64(rng.next() % 1000)
            expected.add(v, t)
            lines.append("\(v) \(t)")
        }
        return (lines, expected, minute)
    }

    func check(_ daemon: Daemon, measurement: String, expected: Expected, minute: Int64) throws {
        let from = minute / 1_000_000
        let to = from + 60_000
        func value(_ agg: String) throws -> Double? {
            let json = try daemon.query("measurement=\(measurement)&field=v&agg=\(agg)&from=\(from)&to=\(to)")
            let series = json["series"] as? [[String: Any]] ?? []
            let points = series.first?["points"] as? [[Double]] ?? []
            return points.first?[1]
        }
        let ok = daemon.eventually { (try? value("count")) == Double(expected.values.count) }
        #expect(ok, "\(measurement): count \(String(describing: try? value("count"))) != \(expected.values.count)")
        #expect(try value("sum").map { abs($0 - expected.values.reduce(0, +)) < 1e-6 } == true, "\(measurement) sum")
        #expect(try value("min") == expected.sorted.first, "\(measurement) min")
        #expect(try value("max") == expected.sorted.last, "\(measurement) max")
        #expect(try value("first") == expected.first, "\(measurement) first")
        #expect(try value("last") == expected.last, "\(measurement) last")
        #expect(try value("mean").map { abs($0 - expected.mean) < 1e-9 * max(1, expected.mean) } == true)
        #expect(try value("stddev").map { abs($0 - expected.stddev) < 1e-6 * max(1, expected.stddev) } == true)
        for (agg, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            let estimate = try #require(try value(agg))
            let exact = expected.quantile(q)
            #expect(abs(estimate - exact) <= 0.01 * abs(exact) + 1e-9, "\(measurement) \(agg): \(estimate) vs \(exact)")
        }
    }

    @Test func everyListenerGivesExactRollups() throws {
        let daemon = try Daemon()
        // UDP: several datagrams of many lines.
        let udp = Self.points(600, seed: 1)
        for chunk in stride(from: 0, to: udp.lines.count, by: 100) {
            let text = udp.lines[chunk..<min(chunk + 100, udp.lines.count)].map { "udp,host=a v=\($0)" }
            daemon.sendUDP(Array(text.joined(separator: "\n").utf8))
            usleep(2_000)
        }
        // TCP: one connection, CRLF line endings.
        let tcp = Self.points(2_000, seed: 2)
        try daemon.sendTCP(Array(tcp.lines.map { "tcp,host=a v=\($0)\r\n" }.joined().utf8))
        // HTTP v1, plain.
        let v1 = Self.points(1_000, seed: 3)
        let r1 = try daemon.http(
            "POST", "/write?db=metrics", body: Data(v1.lines.map { "v1,host=a v=\($0)" }.joined(separator: "\n").utf8))
        #expect(r1.status == 204)
        #expect(r1.headers["x-influxdb-version"] != nil)
        // HTTP v1, gzip, precision in microseconds.
        let gz = Self.points(1_000, seed: 4)
        let gzBody = Array(
            gz.lines.map { line -> String in
                let parts = line.split(separator: " ")
                return "gz,host=a v=\(parts[0]) \(Int64(parts[1])! / 1000)"
            }.joined(separator: "\n").utf8
        )
        let r2 = try daemon.http(
            "POST",
            "/write?db=metrics&precision=u",
            body: Data(Gzip.compress(gzBody)),
            headers: ["Content-Encoding": "gzip"]
        )
        #expect(r2.status == 204, "\(r2.text)")
        // HTTP v2.
        let v2 = Self.points(1_000, seed: 5)
        let r3 = try daemon.http(
            "POST",
            "/api/v2/write?org=o&bucket=b&precision=ns",
            body: Data(v2.lines.map { "v2,host=a v=\($0)" }.joined(separator: "\n").utf8),
            headers: ["Authorization": "Token anything"]
        )
        #expect(r3.status == 204)

        try check(daemon, measurement: "udp", expected: udp.expected, minute: udp.minute)
        try check(daemon, measurement: "tcp", expected: tcp.expected, minute: tcp.minute)
        try check(daemon, measurement: "v1", expected: v1.expected, minute: v1.minute)
        var gzExpected = Expected()  // microsecond precision truncates the times
        for (v, t) in zip(gz.expected.values, gz.expected.times) { gzExpected.add(v, t / 1000 * 1000) }
        try check(daemon, measurement: "gz", expected: gzExpected, minute: gz.minute)
        try check(daemon, measurement: "v2", expected: v2.expected, minute: v2.minute)

        let counters = try daemon.counters()
        #expect(counters["udp_lines"] as? Int == 600)
        #expect(counters["tcp_lines"] as? Int == 2_000)
        #expect(counters["http_lines"] as? Int == 3_000)
        #expect(daemon.stop() == 0, "SIGTERM must give a clean exit 0")
        #expect(daemon.log().contains("clean shutdown"))
    }

    /// UDP sockets bound to one port with SO_REUSEPORT: the kernel gives each sender (address and port) to one of
    /// them; every datagram is counted once, whichever socket read it.
    @Test func udpSocketsShareThePortAndEveryDatagramCountsOnce() throws {
        let daemon = try Daemon(config: "[listen]\nudp_sockets = 3\n")
        let suffix = String(format: ":%04X", daemon.udpPort)
        let table = try String(contentsOfFile: "/proc/net/udp", encoding: .utf8)
        let bound = table.split(separator: "\n").dropFirst().filter {
            $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first?.hasSuffix(suffix) == true
        }
        #expect(bound.count == 3, "sockets on port \(daemon.udpPort): \(bound)")
        let udp = Self.points(600, seed: 11)
        for chunk in stride(from: 0, to: udp.lines.count, by: 10) {
            // Each datagram from a new socket (a new source port), so the kernel spreads them over the three.
            let text = udp.lines[chunk..<min(chunk + 10, udp.lines.count)].map { "udp,host=a v=\($0)" }
            daemon.sendUDP(Array(text.joined(separator: "\n").utf8))
            usleep(1_000)
        }
        try check(daemon, measurement: "udp", expected: udp.expected, minute: udp.minute)
        #expect(try daemon.counters()["udp_lines"] as? Int == 600)
        // A second daemon on the same UDP port fails to start instead of sharing the port's datagrams.
        let second = Process()
        second.executableURL = try metricsdBinary()
        second.arguments = [
            "serve", "--data-dir", try temporaryDirectory("udp-second").path, "--udp", "127.0.0.1:\(daemon.udpPort)",
            "--tcp", "", "--http", "127.0.0.1:\(try freePort())",
        ]
        second.standardOutput = FileHandle.nullDevice
        second.standardError = FileHandle.nullDevice
        try second.run()
        let deadline = Date().addingTimeInterval(20)
        while second.isRunning && Date() < deadline { usleep(50_000) }
        if second.isRunning { second.terminate() }
        second.waitUntilExit()
        #expect(second.terminationStatus != 0, "the second daemon must not bind the port")
        #expect(daemon.stop() == 0)
    }

    @Test func partialWritesKeepTheGoodLines() throws {
        let daemon = try Daemon()
        let body = "m v=1\nm v=oops\nm v=2\nm,bad\nm v=3"
        let reply = try daemon.http("POST", "/write", body: Data(body.utf8))
        #expect(reply.status == 400)
        let message = reply.json["error"] as? String ?? ""
        #expect(message.hasPrefix("partial write: unable to parse 'm v=oops' (line 2): column 5:"), "\(message)")
        #expect(message.hasSuffix("dropped=2"))
        let count = try daemon.query("measurement=m&field=v&agg=count")
        let points = (count["series"] as? [[String: Any]])?.first?["points"] as? [[Double]]
        #expect(points?.first?[1] == 3)
        #expect(try daemon.counter("http_invalid") == 2)
    }

    @Test func authTokenIsEnforced() throws {
        let daemon = try Daemon(config: "[auth]\ntoken = \"s3cret\"\n")
        daemon.token = "s3cret"  // for the queries below; every request but /ping and /health needs it
        let line = Data("m v=1".utf8)
        #expect(try daemon.http("POST", "/write", body: line).status == 401)
        #expect(try daemon.http("POST", "/write", body: line, headers: ["Authorization": "Token wrong"]).status == 401)
        #expect(try daemon.http("POST", "/write?u=x&p=nope", body: line).status == 401)
        #expect(try daemon.http("POST", "/write", body: line, headers: ["Authorization": "Token s3cret"]).status == 204)
        #expect(
            try daemon.http("POST", "/write", body: line, headers: ["Authorization": "Bearer s3cret"]).status == 204)
        #expect(try daemon.http("POST", "/write?u=me&p=s3cret", body: line).status == 204)
        let basic = Data("me:s3cret".utf8).base64EncodedString()
        #expect(
            try daemon.http("POST", "/write", body: line, headers: ["Authorization": "Basic \(basic)"]).status == 204)
        let v2 = try daemon.http(
            "POST",
            "/api/v2/write?org=o&bucket=b",
            body: line,
            headers: ["Authorization": "Token s3cret"]
        )
        #expect(v2.status == 204)
        let denied = try daemon.http("POST", "/write", body: line)
        #expect(denied.json["error"] as? String == "authorization failed")
        // Only the five authorized writes were applied.
        // The writes may straddle a minute boundary: add the counts of every minute.
        let json = try daemon.query("measurement=m&field=v&agg=count")
        #expect(Daemon.pointValues(json).reduce(0, +) == 5)
    }

    @Test func badInputIsCountedAndTheDaemonKeepsServing() throws {
        let daemon = try Daemon(
            config: """
                [rollup]
                max_series = 500
                [limits]
                max_body_size = "1MiB"
                max_line_length = "64KiB"
                max_connections = 40
                """
        )
        var rng = SplitMix(seed: 99)
        #expect(try daemon.http("POST", "/write", body: Data("good v=1".utf8)).status == 204)
        // Random bytes on every listener.
        for _ in 0..<50 {
            daemon.sendUDP((0..<Int(rng.next() % 2000)).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
        }
        try daemon.sendTCP((0..<200_000).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
        let junk = Data((0..<50_000).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
        #expect(try daemon.http("POST", "/write", body: junk).status == 400)
        // A 1 MB line over TCP and HTTP (limit 64 KiB): skipped and counted, the next line still counts.
        let long = "m,host=a v=\"" + String(repeating: "x", count: 1 << 20) + "\""
        try daemon.sendTCP(Array((long + "\nok v=1\n").utf8))
        // A 100 MB body (limit 1 MiB): 413, or the server closing the upload early.
        let huge = Data(repeating: UInt8(ascii: "a"), count: 100 << 20)
        if let status = try? daemon.http("POST", "/write", body: huge).status { #expect(status == 413) }
        // Half-open TCP connections holding partial lines, beyond the connection limit.
        var fds: [Int32] = []
        for _ in 0..<60 {
            if let fd = try? daemon.connectTCP() {
                _ = "m v=".withCString { write(fd, $0, 4) }
                fds.append(fd)
            }
        }
        // A flood of new series beyond max_series.
        var flood = ""
        for i in 0..<2_000 { flood += "flood,id=\(i) v=1\n" }
        _ = try daemon.http("POST", "/write", body: Data(flood.utf8))
        // Still serving: a write to a known series and a query work.
        #expect(try daemon.http("POST", "/write", body: Data("good v=42".utf8)).status == 204)
        // `good v=1` and `good v=42` may fall in different minutes (the test takes seconds): the largest of the
        // per-minute maxima is 42 either way.
        let json = try daemon.query("measurement=good&field=v&agg=max")
        #expect(Daemon.pointValues(json).max() == 42)
        #expect(daemon.eventually { ((try? daemon.counter("tcp_connections_rejected")) ?? 0) >= 20 })
        let counters = try daemon.counters()
        // Memory stays bounded: past max_series the flood's points fold into one overflow series.
        #expect((counters["series_active"] as? Int ?? 0) <= 500 + 1)
        #expect((counters["series_overflowed"] as? Int ?? 0) > 0)
        #expect((counters["lines_overlong"] as? Int ?? 0) >= 1)
        #expect((counters["udp_invalid"] as? Int ?? 0) > 0)
        #expect((counters["tcp_invalid"] as? Int ?? 0) > 0)
        #expect(daemon.residentBytes() < 512 << 20, "memory stays bounded: \(daemon.residentBytes()) bytes")
        for fd in fds { close(fd) }
        #expect(try daemon.counter("tcp_lines") >= 1)
        #expect(daemon.stop() == 0)
    }

    @Test func pythonInfluxClientsWriteUnchanged() throws {
        let daemon = try Daemon(config: "[auth]\ntoken = \"tok\"\n")
        daemon.token = "tok"
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "influx_clients.py")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        // The clients are installed by `make deps-test` into the tools' virtualenv, and run from there.
        process.arguments = [toolsPython, script.path, "\(daemon.httpPort)", "tok"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        process.waitUntilExit()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0, "\(output)")
        for measurement in ["py_v1", "py_v2"] {
            let json = try daemon.query("measurement=\(measurement)&field=value&agg=count&group_by=client")
            let series = json["series"] as? [[String: Any]] ?? []
            let total = series.compactMap { ($0["points"] as? [[Double]])?.reduce(0) { $0 + $1[1] } }.reduce(0, +)
            #expect(total == 100, "\(measurement): \(json)")
        }
    }

    @Test func checkConfigPrintsTheEffectiveSettings() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let good = dir.appendingPathComponent("good.toml")
        try "[rollup]\ninterval = \"10s\"\n".write(to: good, atomically: true, encoding: .utf8)
        let (status, out, _) = try runMetricsd(["check-config", good.path], input: [])
        #expect(status == 0)
        #expect(out.contains("interval = \"10s\""))
        #expect(out.contains("lateness = \"2m\""))
        let bad = dir.appendingPathComponent("bad.toml")
        try "[rollup]\nmax_series = \"lots\"\n".write(to: bad, atomically: true, encoding: .utf8)
        let (badStatus, _, err) = try runMetricsd(["check-config", bad.path], input: [])
        #expect(badStatus != 0)
        #expect(err.contains("'rollup.max_series' must be an integer"))
    }
}

extension Double {
    func rounded(toPlaces places: Int) -> Double {
        let scale = pow(10, Double(places))
        return (self * scale).rounded() / scale
    }
}
