import Foundation
import Synchronization
import Testing

@testable import metricsd

#if canImport(Glibc)
    import Glibc
#endif

/// The daemon tried as an attacker would (issue: step 9): each reproduction against the real binary, and after
/// each the daemon must still answer `/ping` within a second and its memory stay under a stated bound. Every test
/// prints the daemon's peak resident memory (`hostile: <test> peak RSS …`): docs/operations.md quotes them.
@Suite struct HostileInputTests {
    static let token = "s3cret"
    static let auth = ["Authorization": "Token \(token)"]

    /// Reports a test's peak memory and checks the bound.
    static func checkMemory(_ daemon: Daemon, below bound: Int, _ name: String = #function) {
        let peak = daemon.peakResidentBytes()
        print("hostile: \(name) peak RSS \(peak >> 20) MiB (bound \(bound >> 20) MiB)")
        #expect(peak < bound, "peak RSS \(peak >> 20) MiB over \(bound >> 20) MiB")
    }

    static func urlEncoded(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? s
    }

    /// Lines `m,host=h0 … hN-1` written over HTTP in batches.
    static func writeSeries(_ daemon: Daemon, measurement: String, count: Int, headers: [String: String] = [:])
        throws
    {
        var start = 0
        while start < count {
            var body = ""
            for i in start..<min(count, start + 20_000) { body += "\(measurement),host=h\(i) v=\(i % 97)\n" }
            let reply = try daemon.http("POST", "/write", body: Data(body.utf8), headers: headers)
            #expect(reply.status == 204, "\(reply.text)")
            start += 20_000
        }
    }

    // MARK: - Auth (M2, and the lower findings on credentials)

    /// With a token set, every route but `GET /ping` and `GET /health` needs it — `/api/v1/query` and
    /// `/api/v1/series` answered everyone before — and so do unknown paths. Scheme names in any case, Basic, the
    /// `p` parameter, and `p` in a POST /query form body are accepted, as InfluxDB accepts them.
    @Test func everyRouteNeedsTheToken() throws {
        let daemon = try Daemon(config: "[auth]\ntoken = \"\(Self.token)\"\n")
        daemon.token = Self.token
        try Self.writeSeries(daemon, measurement: "secret", count: 3, headers: Self.auth)
        for route in HTTPRoutes.table {
            let method = route.methodName
            let open = try daemon.http(method, route.path, body: method == "POST" ? Data() : nil)
            if AuthMiddleware<MetricsdRequestContext>.publicPaths.contains(route.path) {
                #expect(open.status != 401, "\(method) \(route.path) is public")
            } else {
                #expect(open.status == 401, "\(method) \(route.path) without the token: \(open.status)")
                #expect(!open.text.contains("secret"), "\(method) \(route.path) leaked data")
            }
            for credential in ["Token \(Self.token)", "token \(Self.token)", "BEARER \(Self.token)"] {
                let reply = try daemon.http(
                    method, route.path, body: method == "POST" ? Data() : nil, headers: ["Authorization": credential])
                #expect(reply.status != 401, "\(method) \(route.path) with \(credential)")
            }
        }
        #expect(try daemon.http("GET", "/nowhere").status == 401, "unknown paths reveal nothing either")
        #expect(try daemon.http("GET", "/api/v1/series?p=wrong").status == 401)
        #expect(try daemon.http("GET", "/api/v1/series?u=me&p=\(Self.token)").status == 200)
        let basic = Data("me:\(Self.token)".utf8).base64EncodedString()
        #expect(try daemon.http("GET", "/api/v1/series", headers: ["Authorization": "basic \(basic)"]).status == 200)
        // InfluxDB reads u/p from a POST /query form too.
        let form = try daemon.http(
            "POST", "/query", body: Data("q=SHOW+MEASUREMENTS&u=me&p=\(Self.token)".utf8),
            headers: ["Content-Type": "application/x-www-form-urlencoded"])
        #expect(form.status == 200 && form.text.contains("secret"), "\(form.text)")
        let wrongForm = try daemon.http(
            "POST", "/query", body: Data("q=SHOW+MEASUREMENTS&p=nope".utf8),
            headers: ["Content-Type": "application/x-www-form-urlencoded"])
        #expect(wrongForm.status == 401)
        #expect(try daemon.counter("http_unauthorized") > 0)
        // A known path with another method: 405 naming what it takes (404 before).
        let delete = try daemon.http("DELETE", "/write", headers: Self.auth)
        #expect(delete.status == 405 && delete.headers["allow"] == "POST", "\(delete.status) \(delete.headers)")
        #expect(daemon.pingsWithinASecond())
        Self.checkMemory(daemon, below: 512 << 20)
    }

    /// The token is compared in time that does not depend on where the first difference is.
    @Test func tokenComparisonIsConstantTime() {
        #expect(Credentials.matches("s3cret", "s3cret"))
        #expect(!Credentials.matches("s3creT", "s3cret"))
        #expect(!Credentials.matches("s3cre", "s3cret"))
        #expect(!Credentials.matches("s3crets", "s3cret"))
        #expect(!Credentials.matches("", ""))
    }

    // MARK: - Parameters (H2, H3)

    /// A negative limit and times whose milliseconds overflow nanoseconds crashed the daemon without credentials;
    /// now they are 401 without the token and 400 naming the parameter with it. The same time parsing serves the
    /// funnel, retention and experiment.
    @Test func outOfRangeParametersAreRefusedNeverFatal() throws {
        let daemon = try Daemon(config: "[auth]\ntoken = \"\(Self.token)\"\n")
        #expect(try daemon.http("GET", "/api/v1/series?limit=-1").status == 401)
        #expect(try daemon.http("GET", "/api/v1/query?measurement=m&field=f&from=10000000000000").status == 401)
        for path in [
            "/api/v1/series?limit=-1", "/api/v1/series?limit=99999999999999999999",
            "/api/v1/query?measurement=m&field=f&from=10000000000000",
            "/api/v1/query?measurement=m&field=f&to=-10000000000000",
            "/api/v1/query?measurement=m&field=f&from=-9223372036854775808&to=9223372036854775807",
            "/api/v1/query?measurement=m&field=f&step=9223372036854775807ns",
            "/api/v1/funnel?steps=a,b&from=10000000000000", "/api/v1/funnel?steps=a,b&window=99999999999999999999d",
            "/api/v1/retention?cohort_event=a&return_event=any&to=9223372036854775807",
            "/api/v1/experiment?exposure_event=a&variant_property=v&goal_event=b&from=-10000000000000",
        ] {
            let reply = try daemon.http("GET", path, headers: Self.auth)
            #expect(reply.status == 400, "\(path): \(reply.status) \(reply.text)")
            #expect(reply.text.contains("parameter") || reply.text.contains("steps"), "\(path): \(reply.text)")
        }
        #expect(daemon.process.isRunning)
        #expect(daemon.pingsWithinASecond())
        Self.checkMemory(daemon, below: 512 << 20)
    }

    // MARK: - InfluxQL (H4, H5)

    /// Time arithmetic a client controls trapped on overflow: every expression answers (an error or nothing).
    @Test func influxQLTimeArithmeticNeverTraps() throws {
        let daemon = try Daemon()
        try Self.writeSeries(daemon, measurement: "t", count: 2)
        for condition in [
            "time > 1e300", "time > 9223372036854775807", "time > now() + 106751d", "time > now() - 100000d - 100000d",
            "time <= 9223372036854775807ns", "time > -9223372036854775808", "time < -1e300",
            "time > now() - 1h GROUP BY time(1m, -153722867m)", "time > now() - 1h GROUP BY time(153722867m)",
            "time > now() - 1h GROUP BY time(1m, 153722867m)", "time >= -9223372036854775806 GROUP BY time(1m)",
        ] {
            let reply = try daemon.http(
                "GET", "/query?q=" + Self.urlEncoded("SELECT count(v) FROM t WHERE \(condition)"))
            #expect([200, 400].contains(reply.status), "\(condition): \(reply.status) \(reply.text)")
            #expect(daemon.process.isRunning, "\(condition) killed the daemon")
        }
        #expect(daemon.pingsWithinASecond())
        Self.checkMemory(daemon, below: 512 << 20)
    }

    /// 20,000 nested parentheses (40 KB, fits a GET) overflowed the stack without a log line; now the parser stops
    /// at `[query] max_nesting_depth`. A chain of thousands of ANDs does not nest (it is built balanced).
    @Test func deepNestingIsAnErrorNotAStackOverflow() throws {
        let daemon = try Daemon()
        try Self.writeSeries(daemon, measurement: "n", count: 1)
        let nested =
            "SELECT count(v) FROM n WHERE " + String(repeating: "(", count: 20_000) + "host = 'h0'"
            + String(repeating: ")", count: 20_000)
        // Parentheses need no escaping in a URL: 40 KB, within the 80 KB a request head may have.
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "()")
        let deep = try daemon.http("GET", "/query?q=" + nested.addingPercentEncoding(withAllowedCharacters: allowed)!)
        #expect(deep.status == 400 && deep.text.contains("max_nesting_depth"), "\(deep.status) \(deep.text)")
        let arithmetic = "SELECT " + Array(repeating: "count(v)", count: 5_000).joined(separator: " + ") + " FROM n"
        let sum = try daemon.http("POST", "/query", body: Data(("q=" + Self.urlEncoded(arithmetic)).utf8))
        #expect(sum.status == 400 && sum.text.contains("max_nesting_depth"), "\(sum.status)")
        let chain =
            "SELECT count(v) FROM n WHERE "
            + Array(repeating: "host = 'h0'", count: 5_000).joined(
                separator: " AND ")
        let wide = try daemon.http("POST", "/query", body: Data(("q=" + Self.urlEncoded(chain)).utf8))
        #expect(wide.status == 200 && wide.text.contains("\"count\""), "\(wide.status) \(wide.text.prefix(300))")
        #expect(daemon.pingsWithinASecond())
        Self.checkMemory(daemon, below: 512 << 20)
    }

    // MARK: - Regexes (H6)

    /// One backtracking regex (`/(a+)+$/` against 500 `a`s) ran for hours inside a shard lock, freezing ingestion,
    /// the ticker and SIGTERM. Regexes are RE2 now (linear time) and are never matched under a lock ingestion
    /// needs: while such queries run back to back, UDP, TCP and HTTP writes and /ping keep answering, and SIGTERM
    /// stops the daemon.
    @Test func aPathologicalRegexFreezesNothing() throws {
        let daemon = try Daemon()
        let tag = String(repeating: "a", count: 500) + "!"
        daemon.sendUDP(Array("re,k=x,t=\(tag) v=1\n".utf8))
        try Self.writeSeries(daemon, measurement: "re", count: 2_000)
        #expect(daemon.eventually { (try? daemon.counter("udp_points")) == 1 })
        let query = "/query?q=" + Self.urlEncoded("SELECT count(v) FROM re WHERE k='x' AND t =~ /(a+)+$/")
        final class Box: @unchecked Sendable {
            let stop = Atomic<Bool>(false)
            let answered = Atomic<Int>(0)
            let failed = Atomic<Int>(0)
        }
        let box = Box()
        let queriers = (0..<3).map { _ in
            Thread {
                while !box.stop.load(ordering: .relaxed) {
                    if let reply = try? daemon.http("GET", query), reply.status == 200 {
                        box.answered.wrappingAdd(1, ordering: .relaxed)
                    } else {
                        box.failed.wrappingAdd(1, ordering: .relaxed)
                    }
                }
            }
        }
        for q in queriers { q.start() }
        for round in 0..<20 {
            daemon.sendUDP(Array("during,via=udp v=\(round)\n".utf8))
            try daemon.sendTCP(Array("during,via=tcp v=\(round)\n".utf8))
            let reply = try daemon.http("POST", "/write", body: Data("during,via=http v=\(round)\n".utf8), timeout: 5)
            #expect(reply.status == 204)
            #expect(daemon.pingsWithinASecond(), "round \(round)")
        }
        box.stop.store(true, ordering: .relaxed)
        #expect(box.answered.load(ordering: .relaxed) > 0 && box.failed.load(ordering: .relaxed) == 0)
        #expect(
            daemon.eventually {
                (try? daemon.counter("udp_points")) == 21 && (try? daemon.counter("tcp_points")) == 20
            })
        // The regex engine matches as InfluxDB's (Go's RE2 syntax); what it cannot do, it refuses.
        let backreference = try daemon.http(
            "GET", "/query?q=" + Self.urlEncoded("SELECT count(v) FROM re WHERE t =~ /(a)\\1/"))
        #expect(backreference.text.contains("invalid regex"), "\(backreference.text)")
        Self.checkMemory(daemon, below: 512 << 20)
        let stopping = Date()
        #expect(daemon.stop() == 0)
        #expect(Date().timeIntervalSince(stopping) < 10, "SIGTERM stops the daemon")
    }

    // MARK: - Query results (H7)

    /// `GROUP BY time(1m),*` over 20,000 hosts built 4.8 GB in 10 s; 2,000 statements in one request over 10 GB.
    /// Now the answer is cut at `[query] max_row_limit` rows (`"partial": true`, as InfluxDB), what a SELECT builds
    /// is bounded, and statements are bounded by `max_statements`.
    @Test func queryResultsAreBounded() throws {
        let daemon = try Daemon()
        try Self.writeSeries(daemon, measurement: "cpu", count: 20_000)
        // A week of minutes filled for every host (without a lower bound InfluxDB fills from each series' first
        // point, which would be one row a host).
        let all = try daemon.http(
            "GET", "/query?q=" + Self.urlEncoded("SELECT mean(v) FROM cpu WHERE time > now() - 7d GROUP BY time(1m),*"))
        #expect(all.status == 200, "\(all.status) \(all.text.prefix(300))")
        let result = ((all.json["results"] as? [[String: Any]]) ?? []).first ?? [:]
        #expect(result["partial"] as? Bool == true, "cut at max_row_limit: \(result.keys)")
        let rows = ((result["series"] as? [[String: Any]]) ?? []).reduce(0) {
            $0 + (($1["values"] as? [Any])?.count ?? 0)
        }
        #expect(rows == Configuration().query.maxRowLimit, "\(rows) rows")
        let many = Array(repeating: "SELECT mean(v) FROM cpu GROUP BY host", count: 2_000).joined(separator: ";")
        let flood = try daemon.http("POST", "/query", body: Data(("q=" + Self.urlEncoded(many)).utf8))
        #expect(flood.status == 400 && flood.text.contains("max_statements"), "\(flood.status) \(flood.text)")
        // Within the limits, a statement that would build more slots than the row limit while reading fails and
        // names the limit.
        let small = try Daemon(config: "[query]\nmax_row_limit = 1000\n")
        try Self.writeSeries(small, measurement: "cpu", count: 5_000)
        let wide = try small.http("GET", "/query?q=" + Self.urlEncoded("SELECT mean(v) FROM cpu GROUP BY host"))
        #expect(wide.status == 400 && wide.text.contains("max_row_limit"), "\(wide.status) \(wide.text)")
        let series = try Daemon(config: "[query]\nmax_select_series = 100\n")
        try Self.writeSeries(series, measurement: "cpu", count: 1_000)
        let read = try series.http("GET", "/query?q=" + Self.urlEncoded("SELECT mean(v) FROM cpu"))
        #expect(read.status == 400 && read.text.contains("max_select_series"), "\(read.status) \(read.text)")
        let buckets = try series.http(
            "GET", "/query?q=" + Self.urlEncoded("SELECT mean(v) FROM cpu WHERE time > now() - 3d GROUP BY time(1s)"))
        #expect(buckets.status == 400 && buckets.text.contains("max_select_buckets"), "\(buckets.text)")
        #expect(try small.counter("queries_limited") >= 1)
        for d in [daemon, small, series] { #expect(d.pingsWithinASecond()) }
        Self.checkMemory(daemon, below: 512 << 20)
    }

    // MARK: - Late events (H8)

    /// 560,000 events stamped a day ago (1.45 MB of gzip) cost 5.8 KB each — a distinct-count sketch per late
    /// cell — and 3.57 GB of memory. Late cells merge per series, field and minute now, and a sketch of few users
    /// keeps only their registers.
    @Test func lateEventsCostLittle() throws {
        let daemon = try Daemon()
        let dayAgo = Int64(Date().timeIntervalSince1970 * 1000) - 86_400_000
        var body = ""
        body.reserveCapacity(34 << 20)
        for i in 0..<560_000 {
            body +=
                "{\"event\":\"e\(i % 7)\",\"user_id\":\"u\(i % 50_000)\",\"timestamp\":\(dayAgo + Int64(i % 600) * 1000)}\n"
        }
        let gzipped = try gzip(Data(body.utf8))
        let reply = try daemon.http(
            "POST", "/api/v1/events", body: gzipped, headers: ["Content-Encoding": "gzip"], timeout: 120)
        #expect(reply.status == 200, "\(reply.status) \(reply.text.prefix(300))")
        #expect(reply.json["accepted"] as? Int == 560_000)
        #expect(daemon.pingsWithinASecond())
        Self.checkMemory(daemon, below: 400 << 20)
    }

    // MARK: - Fields (M1)

    /// One series, 100 lines of 1,000 new field names each: unbounded and quadratic under the shard lock (58 s,
    /// the ticker blocked). Now at most `[rollup] max_fields_per_series`, each found without a scan.
    @Test func fieldNamesPerSeriesAreBounded() throws {
        let daemon = try Daemon()
        var body = ""
        for line in 0..<100 {
            body += "wide " + (0..<1_000).map { "f\(line)_\($0)=1" }.joined(separator: ",") + "\n"
        }
        let reply = try daemon.http("POST", "/write", body: Data(body.utf8), timeout: 60)
        #expect(reply.status == 400 && reply.text.contains("max_fields_per_series"), "\(reply.text)")
        #expect(try daemon.counter("fields_rejected") == 100_000 - 1_024)
        #expect(daemon.pingsWithinASecond())
        let series = try daemon.http("GET", "/api/v1/series?measurement=wide").json["series"] as? [[String: Any]]
        #expect((series?.first?["fields"] as? [String: Any])?.count == 1_024)
        Self.checkMemory(daemon, below: 512 << 20)
    }

    // MARK: - Listing series (M3)

    /// `/api/v1/series?limit=1` built every series' text to sort them: 38.7 s for 200,000, and two at once held
    /// `/ping` 41 s. It sorts the series themselves now, off the event loops.
    @Test func listingSeriesIsCheapForSmallLimits() throws {
        let daemon = try Daemon()
        try Self.writeSeries(daemon, measurement: "many", count: 200_000)
        let listers = (0..<2).map { _ in
            Thread { _ = try? daemon.http("GET", "/api/v1/series?limit=1", timeout: 60) }
        }
        for l in listers { l.start() }
        #expect(daemon.pingsWithinASecond())
        let one = try daemon.http("GET", "/api/v1/series?limit=1", timeout: 60).json
        #expect(one["total"] as? Int == 200_000 && (one["series"] as? [Any])?.count == 1)
        #expect(daemon.pingsWithinASecond())
        Self.checkMemory(daemon, below: 512 << 20)
    }
}

/// Gzip through the system's `gzip` (the test's own copy of what clients send).
func gzip(_ data: Data) throws -> Data {
    let input = FileManager.default.temporaryDirectory.appendingPathComponent("gz-\(UUID().uuidString)")
    try data.write(to: input)
    defer { try? FileManager.default.removeItem(at: input) }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/gzip")
    p.arguments = ["-c", "-1", input.path]
    let out = Pipe()
    p.standardOutput = out
    try p.run()
    let result = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return result
}
