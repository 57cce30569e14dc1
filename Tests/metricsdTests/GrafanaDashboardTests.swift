import Foundation
import Testing

/// The provisioned dashboards: valid Grafana JSON whose every query — with Grafana's macros expanded as Grafana
/// expands them — runs without error and returns data, live against metricsd and long term against a real influxd
/// holding what metricsd forwarded.
@Suite(.serialized) struct GrafanaDashboardTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
        "../../grafana"
    )
    .standardized

    static func dashboards() throws -> [(name: String, json: [String: Any])] {
        let dir = root.appendingPathComponent("dashboards")
        return try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".json") }.sorted()
            .map { name in
                let data = try Data(contentsOf: dir.appendingPathComponent(name))
                return (name, try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any]))
            }
    }

    static func provisionedUIDs() throws -> Set<String> {
        let text = try String(
            contentsOf: root.appendingPathComponent("provisioning/datasources/metricsd.yaml"), encoding: .utf8)
        return Set(
            text.split(separator: "\n").compactMap { line -> String? in
                let t = line.trimmingCharacters(in: .whitespaces)
                return t.hasPrefix("uid:") ? t.dropFirst(4).trimmingCharacters(in: .whitespaces) : nil
            })
    }

    /// Every query of a dashboard (panel targets and query variables) with its data source uid.
    static func queries(_ board: [String: Any]) -> [(uid: String, query: String, interval: String?)] {
        var out: [(uid: String, query: String, interval: String?)] = []
        for p in board["panels"] as? [[String: Any]] ?? [] {
            for t in p["targets"] as? [[String: Any]] ?? [] {
                let uid = ((t["datasource"] ?? p["datasource"]) as? [String: Any])?["uid"] as? String ?? ""
                out.append((uid, t["query"] as? String ?? "", p["interval"] as? String))
            }
        }
        for v in (board["templating"] as? [String: Any])?["list"] as? [[String: Any]] ?? []
        where v["type"] as? String == "query" {
            out.append(((v["datasource"] as? [String: Any])?["uid"] as? String ?? "", v["query"] as? String ?? "", nil))
        }
        return out
    }

    /// Grafana's expansion: `$timeFilter` → `time >= <from>ms and time <= <to>ms`, `$__interval` → the panel's
    /// minimum interval or 1m, a multi-value `$host` or `$event` inside a regex → `(a|b)`.
    static func expand(_ query: String, interval: String?, hosts: [String], events: [String] = ["view", "signup"])
        -> String
    {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        return query.replacingOccurrences(of: "$timeFilter", with: "time >= \(now - 3_600_000)ms and time <= \(now)ms")
            .replacingOccurrences(of: "$__interval", with: interval ?? "1m")
            .replacingOccurrences(of: "$host", with: "(" + hosts.joined(separator: "|") + ")")
            .replacingOccurrences(of: "$event", with: "(" + events.joined(separator: "|") + ")")
    }

    @Test func dashboardsAreValidAndEveryDataSourceIsProvisioned() throws {
        let uids = try Self.provisionedUIDs()
        #expect(uids == ["metricsd", "influxdb-longterm"])
        let boards = try Self.dashboards()
        #expect(boards.map(\.name) == ["events.json", "hosts.json", "long-term.json", "metricsd.json"])
        var dashboardUIDs = Set<String>()
        for (name, board) in boards {
            #expect((board["schemaVersion"] as? Int ?? 0) >= 36, "\(name)")
            #expect(dashboardUIDs.insert(board["uid"] as? String ?? "").inserted, "\(name): unique uid")
            let panels = board["panels"] as? [[String: Any]] ?? []
            #expect(!panels.isEmpty)
            let ids = panels.compactMap { $0["id"] as? Int }
            #expect(Set(ids).count == panels.count, "\(name): unique panel ids")
            for (uid, query, _) in Self.queries(board) {
                #expect(uids.contains(uid), "\(name): data source \(uid) is provisioned")
                #expect(!query.isEmpty)
                // Variables used in a query are defined by the dashboard (or are Grafana's own).
                let defined = Set(
                    ((board["templating"] as? [String: Any])?["list"] as? [[String: Any]] ?? []).compactMap {
                        $0["name"] as? String
                    })
                for variable in query.split(separator: "$").dropFirst().map({
                    String($0.prefix { $0.isLetter || $0 == "_" })
                })
                where !variable.isEmpty
                    && !["timeFilter", "__interval", "tag_host", "tag_event", "col"].contains(variable)
                {
                    #expect(defined.contains(variable), "\(name): $\(variable) is defined")
                }
            }
        }
    }

    /// Telegraf-like points for two hosts over the last few minutes.
    static func telegraf(hosts: [String], now: Int64) -> String {
        var lines: [String] = []
        for (h, host) in hosts.enumerated() {
            for k in 0..<12 {
                let t = now - Int64(k) * 20
                let v = Double((h * 7 + k * 3) % 50) + 0.5
                lines += [
                    "cpu,host=\(host),cpu=cpu-total usage_user=\(v),usage_system=\(v / 2),usage_iowait=\(v / 10) \(t)",
                    "mem,host=\(host) used_percent=\(40 + v / 5) \(t)",
                    "disk,host=\(host),path=/ used_percent=\(60 + v / 10) \(t)",
                    "diskio,host=\(host),name=sda read_bytes=\(1000 * (12 - k))i,write_bytes=\(2000 * (12 - k))i \(t)",
                    "net,host=\(host),interface=eth0 bytes_recv=\(5000 * (12 - k))i,bytes_sent=\(3000 * (12 - k))i \(t)",
                ]
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func run(_ base: String, _ query: String) throws -> (error: String?, series: Int) {
        let encoded = query.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? query
        let json = try httpRequest("GET", "\(base)/query?db=metrics&q=\(encoded)").json
        if let e = json["error"] as? String { return (e, 0) }
        let results = json["results"] as? [[String: Any]] ?? []
        if let e = results.first?["error"] as? String { return (e, 0) }
        return (nil, (results.first?["series"] as? [[String: Any]])?.count ?? 0)
    }

    @Test func everyPanelQueryReturnsDataLiveAndLongTerm() throws {
        let influx = try Influxd()
        // 1 s buckets so the daemon's own `metricsd` measurement has points within seconds.
        let daemon = try Daemon(
            config: """
                [rollup]
                interval = "1s"
                lateness = "1s"
                [influx]
                url = "\(influx.url)"
                create_database = true
                flush_interval = "200ms"
                retry_initial = "100ms"
                retry_max = "1s"
                """)
        let hosts = ["host-a", "host-b"]
        let now = Int64(Date().timeIntervalSince1970)
        let reply = try daemon.http(
            "POST", "/write?precision=s", body: Data(Self.telegraf(hosts: hosts, now: now - 3).utf8))
        #expect(reply.status == 204)
        let events = (0..<6).map { #"{"event":"\#($0 % 2 == 0 ? "view" : "signup")","user_id":"u\#($0)"}"# }
        #expect(
            try daemon.http("POST", "/api/v1/events", body: Data(events.joined(separator: "\n").utf8)).status == 200)
        // Self metrics and forwarding need a few ticks.
        let ready = try daemon.eventually(30) {
            let forwarding = try daemon.http("GET", "/health").json["forwarding"] as? [String: Any]
            guard (forwarding?["points_forwarded"] as? Int ?? 0) > 0 else { return false }
            guard try Self.run(influx.url, "SHOW MEASUREMENTS").series > 0 else { return false }
            let live = "http://127.0.0.1:\(daemon.httpPort)"
            return try Self.run(live, "SELECT last(series_active) FROM metricsd").series > 0
        }
        #expect(ready)
        _ = try daemon.eventually(15) {
            try Self.run(influx.url, "SELECT count(bytes_recv_count) FROM net_1m").series > 0
        }
        for (name, board) in try Self.dashboards() {
            for (uid, query, interval) in Self.queries(board) {
                let base = uid == "metricsd" ? "http://127.0.0.1:\(daemon.httpPort)" : influx.url
                let expanded = Self.expand(query, interval: interval, hosts: hosts)
                let result = try Self.run(base, expanded)
                #expect(result.error == nil, "\(name): \(expanded): \(result.error ?? "")")
                #expect(result.series > 0, "\(name) on \(uid): no data for \(expanded)")
            }
        }
        #expect(daemon.stop() == 0)
    }
}
