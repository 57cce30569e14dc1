import Foundation
import TestSupport
import Testing

/// The pages under /ui/ in a real browser: Debian's chromium (installed by `make test`), headless, against the real
/// daemon. Each page must show what the JSON API answers (read from the DOM), with no console error and no request
/// outside the daemon; screenshots go under `.build-ui/`.
@Suite(.serialized) struct UITests {
    static let chromium = "/usr/bin/chromium"

    /// Loads `url` in a fresh headless chromium, lets its scripts and requests run (virtual time), and returns the
    /// DOM then and what the browser logged (console messages among it).
    static func load(_ url: String, screenshot: String? = nil, width: Int = 1200) throws -> (dom: String, log: String) {
        let profile = FileManager.default.temporaryDirectory.appendingPathComponent("chromium-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: profile) }
        var arguments = [
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
            "--user-data-dir=\(profile.path)", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=8000",
            "--window-size=\(width),900",
            // Any host but the daemon's fails to resolve: a request outside it would be logged as a failed load.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ]
        if let screenshot {
            let dir = repositoryRoot.appendingPathComponent(".build-ui")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            arguments += ["--screenshot=\(dir.appendingPathComponent(screenshot).path)"]
        } else {
            arguments += ["--dump-dom"]
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: chromium)
        process.arguments = arguments + [url]
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Bounded: a browser that hangs is killed.
        let deadline = Date().addingTimeInterval(60)
        let outData = ReadAll(out.fileHandleForReading)
        let errData = ReadAll(err.fileHandleForReading)
        while process.isRunning && Date() < deadline { usleep(50_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return (String(decoding: outData.wait(), as: UTF8.self), String(decoding: errData.wait(), as: UTF8.self))
    }

    /// Reads a pipe to its end on a thread of its own (so a full pipe never blocks the browser).
    final class ReadAll: @unchecked Sendable {
        private var data = Data()
        private let done = DispatchSemaphore(value: 0)
        init(_ handle: FileHandle) {
            Thread {
                self.data = handle.readDataToEndOfFile()
                self.done.signal()
            }.start()
        }
        func wait() -> Data {
            done.wait()
            return data
        }
    }

    /// Console errors and failed loads chromium logged.
    static func consoleErrors(_ log: String) -> [String] {
        log.split(separator: "\n").map(String.init).filter {
            ($0.contains("CONSOLE") && ($0.contains("Uncaught") || $0.contains(":ERROR:")))
                || $0.contains("Failed to load resource") || $0.contains("Refused to")
        }
    }

    /// The attribute values `name="…"` on elements of the DOM text.
    static func attributes(_ name: String, in dom: String) -> [String] {
        var out: [String] = []
        var rest = dom[...]
        while let r = rest.range(of: "\(name)=\"") {
            let tail = rest[r.upperBound...]
            guard let end = tail.firstIndex(of: "\"") else { break }
            out.append(String(tail[..<end]))
            rest = tail[end...]
        }
        return out
    }

    static var nowMs: Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    @Test func theFunnelPageShowsWhatTheAPIAnswers() throws {
        let d = try Daemon()
        defer { _ = d.stop() }
        let t = Self.nowMs - 3_600_000
        var lines: [String] = []
        for u in 0..<10 { lines.append(#"{"event":"view","user_id":"u\#(u)","timestamp":\#(t + Int64(u))}"#) }
        for u in 0..<4 { lines.append(#"{"event":"buy","user_id":"u\#(u)","timestamp":\#(t + 60_000 + Int64(u))}"#) }
        let posted = try d.http("POST", "/api/v1/events", body: Data(lines.joined(separator: "\n").utf8))
        #expect(posted.status == 200, "\(posted.text)")
        let from = TimeText(t - 600_000)
        let to = TimeText(Self.nowMs + 60_000)
        let query = "steps=view,buy&window=1h&from=\(from)&to=\(to)"
        let api = try d.http("GET", "/api/v1/funnel?\(query)").json
        let want = (api["steps"] as? [[String: Any]] ?? []).map { $0["users"] as? Int ?? -1 }
        #expect(want == [10, 4], "\(api)")
        let url = "http://127.0.0.1:\(d.httpPort)/ui/#/funnel?\(query)"
        let (dom, log) = try Self.load(url)
        let shown = Self.attributes("data-users", in: dom).compactMap(Int.init)
        #expect(shown == want, "the page's users per step: \(shown)\n\(dom.prefix(3000))")
        #expect(dom.contains("aria-current=\"page\""), "the current view is marked for screen readers")
        #expect(Self.consoleErrors(log).isEmpty, "\(Self.consoleErrors(log))")
        _ = try Self.load(url, screenshot: "funnel.png")
        #expect(
            FileManager.default.fileExists(atPath: repositoryRoot.appendingPathComponent(".build-ui/funnel.png").path))
    }

    @Test func theRetentionAndExperimentPagesShowWhatTheAPIAnswers() throws {
        let d = try Daemon()
        defer { _ = d.stop() }
        let t = Self.nowMs - 2 * 86_400_000
        var lines: [String] = []
        for u in 0..<6 { lines.append(#"{"event":"signup","user_id":"s\#(u)","timestamp":\#(t + Int64(u))}"#) }
        for u in 0..<3 {
            lines.append(#"{"event":"login","user_id":"s\#(u)","timestamp":\#(t + 86_400_000 + Int64(u))}"#)
        }
        for u in 0..<20 {
            let variant = u % 2 == 0 ? "A" : "B"
            lines.append(
                #"{"event":"exposure","user_id":"x\#(u)","timestamp":\#(t + Int64(u)),"properties":{"variant":"\#(variant)"}}"#
            )
            if u % 3 == 0 || (variant == "B" && u % 5 == 1) {
                lines.append(#"{"event":"purchase","user_id":"x\#(u)","timestamp":\#(t + 1000 + Int64(u))}"#)
            }
        }
        let posted = try d.http("POST", "/api/v1/events", body: Data(lines.joined(separator: "\n").utf8))
        #expect(posted.status == 200, "\(posted.text)")
        let range = "from=\(TimeText(t - 86_400_000))&to=\(TimeText(Self.nowMs + 60_000))"

        let retention = "cohort_event=signup&return_event=login&period=day&periods=3&\(range)"
        let cohorts = try d.http("GET", "/api/v1/retention?\(retention)").json["cohorts"] as? [[String: Any]] ?? []
        let (dom, log) = try Self.load("http://127.0.0.1:\(d.httpPort)/ui/#/retention?\(retention)")
        #expect(Self.attributes("data-size", in: dom).compactMap(Int.init) == cohorts.map { $0["size"] as? Int ?? -1 })
        let retained = cohorts.flatMap { $0["retained"] as? [Int] ?? [] }
        #expect(Self.attributes("data-retained", in: dom).compactMap(Int.init) == retained, "\(dom.prefix(2000))")
        #expect(!retained.isEmpty)
        #expect(Self.consoleErrors(log).isEmpty, "\(Self.consoleErrors(log))")
        _ = try Self.load("http://127.0.0.1:\(d.httpPort)/ui/#/retention?\(retention)", screenshot: "retention.png")

        let experiment = "exposure_event=exposure&variant_property=variant&goal_event=purchase&window=1d&\(range)"
        let variants = try d.http("GET", "/api/v1/experiment?\(experiment)").json["variants"] as? [[String: Any]] ?? []
        let (page, log2) = try Self.load("http://127.0.0.1:\(d.httpPort)/ui/#/experiment?\(experiment)")
        #expect(
            Self.attributes("data-exposed", in: page).compactMap(Int.init)
                == variants.map { $0["exposed"] as? Int ?? -1 })
        #expect(
            Self.attributes("data-converted", in: page).compactMap(Int.init)
                == variants.map { $0["converted"] as? Int ?? -1 }, "\(page.prefix(2000))")
        #expect(variants.count == 2)
        #expect(page.contains(" converts "), "the plain sentence")
        #expect(Self.consoleErrors(log2).isEmpty, "\(Self.consoleErrors(log2))")
        _ = try Self.load("http://127.0.0.1:\(d.httpPort)/ui/#/experiment?\(experiment)", screenshot: "experiment.png")
    }

    @Test func theSeriesPageDrawsWhatInfluxQLAnswers() throws {
        let d = try Daemon()
        defer { _ = d.stop() }
        let start = (Int64(Date().timeIntervalSince1970) / 60 - 30) * 60
        var lines: [String] = []
        for m in 0..<5 {
            for (h, host) in ["a", "b"].enumerated() {
                lines.append("cpu,host=\(host) usage=\(Double(m * 10 + h) + 0.5) \(start + Int64(m) * 60 + 5)")
            }
        }
        #expect(try d.http("POST", "/write?precision=s", body: Data(lines.joined(separator: "\n").utf8)).status == 204)
        let range = "from=\(TimeText((start - 600) * 1000))&to=\(TimeText((start + 600) * 1000))"
        let url =
            "http://127.0.0.1:\(d.httpPort)/ui/#/series?measurement=cpu&field=usage&agg=max&group_by=host&\(range)"
        let (dom, log) = try Self.load(url)
        // The page shows the InfluxQL it ran; the same statement on /query gives the points it drew.
        guard let open = dom.range(of: "<code id=\"influxql\">"),
            let close = dom[open.upperBound...].range(of: "</code>")
        else {
            Issue.record("no statement shown: \(dom.prefix(3000))")
            return
        }
        let statement = String(dom[open.upperBound..<close.lowerBound]).replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&amp;", with: "&")
        let q = statement.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? statement
        let answer = try d.http("GET", "/query?epoch=ms&q=\(q)").json
        let series = ((answer["results"] as? [[String: Any]])?.first?["series"] as? [[String: Any]]) ?? []
        let want = series.map { s in ((s["values"] as? [[Any]]) ?? []).compactMap { $0[1] as? Double } }
        let drawn = Self.attributes("data-values", in: dom).map { $0.split(separator: ",").compactMap { Double($0) } }
        #expect(want.count == 2 && want.allSatisfy { $0.count == 5 }, "\(answer)")
        #expect(drawn == want, "\(statement)")
        #expect(Self.attributes("data-series", in: dom) == ["host=a", "host=b"])
        #expect(Self.consoleErrors(log).isEmpty, "\(Self.consoleErrors(log))")
        _ = try Self.load(url, screenshot: "series.png")
    }

    @Test func theOverviewShowsTheDaemonsFigures() throws {
        let d = try Daemon()
        defer { _ = d.stop() }
        #expect(try d.http("POST", "/write", body: Data("cpu,host=a v=1\ncpu,host=b v=2\n".utf8)).status == 204)
        #expect(try d.http("POST", "/api/v1/events", body: Data(#"{"event":"view","user_id":"u"}"#.utf8)).status == 200)
        d.sendUDP(Array(#"{"event":"view","user_id":"v"}"#.utf8))
        #expect(try d.eventually { try d.counter("udp_events") == 1 })
        let (dom, log) = try Self.load("http://127.0.0.1:\(d.httpPort)/ui/#/overview")
        let counters = try d.counters()
        // The figures the page shows are /health's (read a moment later: they only rise, and these do not move).
        let metrics = Self.attributes("data-metric", in: dom)
        let values = Self.attributes("data-value", in: dom).compactMap(Int.init)
        #expect(metrics.contains("series_active") && metrics.contains("http_lines"), "\(dom.prefix(3000))")
        for key in ["http_lines", "http_events", "udp_events"] {
            let i = try #require(metrics.firstIndex(of: key), "\(key) shown")
            #expect(i < values.count && values[i] == counters[key] as? Int, "\(key)")
        }
        #expect(counters["http_events"] as? Int == 1 && counters["udp_events"] as? Int == 1, "events by source")
        #expect(Self.consoleErrors(log).isEmpty, "\(Self.consoleErrors(log))")
        _ = try Self.load("http://127.0.0.1:\(d.httpPort)/ui/#/overview", screenshot: "overview.png")
    }

    /// With [auth] token the files load (they hold no data) but data does not: the page asks for the token.
    @Test func withATokenThePageAsksForIt() throws {
        let d = try Daemon(config: "[auth]\ntoken = \"s3cret\"\n")
        defer { _ = d.stop() }
        #expect(try d.http("GET", "/ui").status == 200)
        #expect(try d.http("GET", "/ui/app.js").status == 200)
        #expect(try d.http("GET", "/api/v1/funnel?steps=a,b").status == 401)
        let (dom, _) = try Self.load("http://127.0.0.1:\(d.httpPort)/ui/#/funnel?steps=view,buy")
        #expect(dom.contains("<form id=\"token-form\">"), "the token form is shown: \(dom.prefix(2000))")
        #expect(dom.contains("authorization required"))
    }

    /// With events forwarded to ClickHouse the event pages offer `scope=fleet`, and pass it on; the API's error (here:
    /// ClickHouse down) is shown as it is.
    @Test func theFleetScopeIsOfferedAndItsErrorsShownAsTheyAre() throws {
        let d = try Daemon(config: "[events.clickhouse]\nurl = \"http://127.0.0.1:\(try freePort())\"\n")
        defer { _ = d.stop() }
        let query = "steps=view,buy&window=1h&scope=fleet"
        let api = try d.http("GET", "/api/v1/funnel?\(query)")
        #expect(api.status == 503)
        let message = try #require(api.json["error"] as? String)
        let (dom, _) = try Self.load("http://127.0.0.1:\(d.httpPort)/ui/#/funnel?\(query)")
        #expect(dom.contains("<option value=\"fleet\">"), "\(dom.prefix(2000))")
        let shown = message.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
        #expect(dom.contains(shown), "the API's words: \(message)\n\(dom.prefix(3000))")
    }

    /// At phone width every view fits without sideways scrolling; and everything one acts on is a native link,
    /// button, input or select with a label (so a keyboard reaches and works all of it), none a clickable div.
    @Test func thePagesFitAPhoneAndWorkWithAKeyboard() throws {
        let d = try Daemon()
        defer { _ = d.stop() }
        let t = Self.nowMs - 3_600_000
        let events = (0..<5).map { #"{"event":"view","user_id":"u\#($0)","timestamp":\#(t + Int64($0))}"# }
        #expect(try d.http("POST", "/api/v1/events", body: Data(events.joined(separator: "\n").utf8)).status == 200)
        let range = "from=\(TimeText(t - 600_000))&to=\(TimeText(Self.nowMs + 60_000))"
        let views = [
            "overview", "funnel?steps=view,view&window=1h&\(range)",
            "retention?cohort_event=view&return_event=any&period=day&periods=2&\(range)",
            "experiment?goal_event=view&\(range)", "series?measurement=events&field=count&agg=sum&\(range)",
        ]
        for v in views {
            let url = "http://127.0.0.1:\(d.httpPort)/ui/#/\(v)"
            let (dom, log) = try Self.load(url, width: 375)
            #expect(dom.contains("data-fits=\"true\""), "\(v) at 375 px: \(dom.prefix(300))")
            #expect(!dom.contains("onclick") && !dom.contains("tabindex=\"0\""), "\(v): only native controls")
            // Every input and select sits in a label.
            let controls =
                dom.components(separatedBy: "<input").count + dom.components(separatedBy: "<select").count - 2
            let labelled = dom.components(separatedBy: "<label").count - 1
            #expect(controls <= labelled + 1, "\(v): \(controls) controls, \(labelled) labels")
            #expect(Self.consoleErrors(log).isEmpty, "\(v): \(Self.consoleErrors(log))")
            _ = try Self.load(url, screenshot: "phone-\(v.prefix { $0 != "?" }).png", width: 375)
        }
    }

    /// Nothing outside the daemon: the files name no other origin (the SVG namespace is a name, not a request), and
    /// their Content-Security-Policy allows only 'self'.
    @Test func thePagesNeedNothingButTheDaemon() throws {
        let d = try Daemon()
        defer { _ = d.stop() }
        for path in ["/ui", "/ui/app.js", "/ui/app.css"] {
            let reply = try d.http("GET", path)
            #expect(reply.status == 200)
            let text = reply.text.replacingOccurrences(of: "https://", with: "http://")
            let urls = text.components(separatedBy: "http://").dropFirst().map { "http://" + $0.prefix(40) }
            #expect(urls.allSatisfy { $0.hasPrefix("http://www.w3.org/2000/svg") }, "\(path): \(urls)")
        }
        #expect(try d.http("GET", "/ui").text.contains("default-src 'self'"))
        #expect(try d.http("GET", "/ui/nope.js").status == 404)
    }
}

/// RFC 3339 in UTC for a time in epoch milliseconds.
private func TimeText(_ ms: Int64) -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return f.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
}
