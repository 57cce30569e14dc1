import Foundation
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Writes you can act on (step 13), from outside: every refused line listed with where and why, kept as a dead
/// letter with its source, and replayed once fixed.
@Suite(.serialized) struct RejectionTests {
    static let config = """
        [rollup]
        max_series = 2
        max_overflow_series = 0
        max_fields_per_series = 2
        [storage]
        retention_1m = "1h"
        [limits]
        max_line_length = "64B"
        """

    /// Seven lines, seven different faults, among good lines: the answer lists each with its line number and
    /// reason; InfluxDB's answer stays the default.
    static func sevenFaults(now: Int64) -> (body: String, faults: [(line: Int, reason: String)]) {
        let lines = [
            "cpu,host=a v=1",  // 1: good (series 1, field v: float)
            "cpu,host=a v=\"x\"",  // 2: type conflict
            "cpu,host=a v=1 \(now - 2 * 3_600_000_000_000)",  // 3: older than retention_1m
            "cpu,host=b v=1",  // 4: good (series 2)
            "cpu,host=c v=1",  // 5: a third series: past max_series
            "cpu,host=a w=1,x=2",  // 6: x is a third field of host=a: past max_fields_per_series (w is kept)
            "this is bad",  // 7: syntax
            "cpu,host=a v=" + String(repeating: "1", count: 80),  // 8: longer than max_line_length
            "cpu,host=b \u{1}=1",  // 9: a field name made invalid UTF-8 by body(_:)
        ]
        return (
            lines.joined(separator: "\n"),
            [
                (2, "type_conflict"), (3, "out_of_range"), (5, "cardinality"), (6, "field_limit"), (7, "syntax"),
                (8, "too_long"), (9, "invalid_name"),
            ]
        )
    }

    /// The body with line 9's field name made invalid UTF-8 (its byte 0x01 becomes 0xFF).
    static func body(_ text: String) -> Data {
        var bytes = Array(text.utf8)
        if let i = bytes.firstIndex(of: 0x01) { bytes[i] = 0xFF }
        return Data(bytes)
    }

    static var now: Int64 { Int64(Date().timeIntervalSince1970 * 1e9) }

    @Test func aBatchWithSevenFaultsListsAllSeven() throws {
        let d = try Daemon(config: Self.config)
        defer { _ = d.stop() }
        let (text, faults) = Self.sevenFaults(now: Self.now)
        let body = Self.body(text)

        // The default answer is InfluxDB's: the first unparseable line and the count of parse failures.
        let plain = try d.http("POST", "/write", body: body)
        #expect(plain.status == 400)
        let error = plain.json["error"] as? String ?? ""
        #expect(error.hasPrefix("partial write: unable to parse 'this is bad' (line 7):"), "\(error)")
        #expect(error.hasSuffix("dropped=2"), "\(error)")
        #expect(plain.json.count == 1, "nothing but InfluxDB's key by default")

        for (query, headers) in [("?results=lines", [:]), ("", ["X-Metricsd-Results": "lines"])] {
            let reply = try d.http("POST", "/write\(query)", body: body, headers: headers)
            #expect(reply.status == 400)
            let rejected = reply.json["rejected"] as? [[String: Any]] ?? []
            #expect(rejected.map { $0["line"] as? Int ?? 0 } == faults.map(\.line), "\(reply.text)")
            #expect(rejected.map { $0["reason"] as? String ?? "" } == faults.map(\.reason), "\(reply.text)")
            #expect(reply.json["lines"] as? Int == 9)
            #expect(reply.json["rejected_lines"] as? Int == 7)
            #expect(reply.json["truncated"] as? Bool == false)
            let reasons = reply.json["reasons"] as? [String: Int] ?? [:]
            #expect(reasons == Dictionary(uniqueKeysWithValues: faults.map { ($0.reason, 1) }))
            let byLine = Dictionary(uniqueKeysWithValues: rejected.map { ($0["line"] as? Int ?? 0, $0) })
            // The parser's column, expected and found; the rollups' reasons in InfluxDB's words.
            #expect(byLine[7]?["column"] as? Int == 8)
            #expect(byLine[7]?["found"] as? String == "' '")
            #expect(byLine[7]?["expected"] as? String == "'=' and a value after the field key")
            #expect(byLine[7]?["text"] as? String == "this is bad")
            #expect(
                byLine[2]?["error"] as? String
                    == "field type conflict: input field \"v\" on measurement \"cpu\" is type string, already exists as type float"
            )
            #expect(byLine[2]?["expected"] as? String == "a float value")
            #expect(byLine[6]?["partial"] as? Bool == true, "w=1 was kept")
            #expect(byLine[8]?["column"] as? Int == 65)
        }
        // Every refused line of the three writes is a dead letter, with its source and the sender's address.
        #expect(try d.eventually { try Self.letters(d, "source=http&limit=1000").count == 21 })
        let letters = try Self.letters(d, "source=http&limit=7")
        #expect(letters.map { $0["line"] as? Int ?? 0 } == faults.map(\.line))
        #expect(letters.allSatisfy { ($0["remote"] as? String)?.hasPrefix("127.0.0.1:") == true })
        // The refused part of line 6 only, with the point's time: replaying it cannot count w twice.
        let partial = try #require(letters.first { $0["line"] as? Int == 6 })
        #expect((partial["text"] as? String)?.hasPrefix("cpu,host=a x=2.0 ") == true, "\(partial["text"] ?? "")")
        #expect(partial["precision"] as? String == "ns")
        // Counted per reason.
        let metrics = try d.http("GET", "/metrics").text
        for fault in faults {
            #expect(metrics.contains("metricsd_rejected_total{reason=\"\(fault.reason)\"} 3"), "\(fault.reason)")
        }
        // Filters, and DELETE.
        #expect(try Self.letters(d, "reason=syntax&limit=1000").count == 3)
        let deleted = try d.http("DELETE", "/api/v1/dead-letters?reason=syntax")
        #expect(deleted.json["deleted"] as? Int == 3)
        #expect(try Self.letters(d, "limit=1000").count == 18)
        #expect(try d.http("GET", "/api/v1/dead-letters?reason=nonsense").status == 400)
        #expect(try d.http("GET", "/api/v1/dead-letters?from=yesterday").status == 400)
    }

    static func letters(_ d: Daemon, _ query: String) throws -> [[String: Any]] {
        let reply = try d.http("GET", "/api/v1/dead-letters?\(query)")
        #expect(reply.status == 200, "\(reply.text)")
        return reply.json["dead_letters"] as? [[String: Any]] ?? []
    }

    @Test func aBadLineOverUDPOrTCPIsADeadLetterWithItsSource() throws {
        let d = try Daemon()
        defer { _ = d.stop() }
        d.sendUDP(Array("cpu v=1\nbad udp line\n".utf8))
        try d.sendTCP(Array("cpu v=2\ncpu v=3\nbad tcp line\n".utf8))
        #expect(try d.eventually { try Self.letters(d, "source=udp").count == 1 })
        #expect(try d.eventually { try Self.letters(d, "source=tcp").count == 1 })
        let udp = try #require(try Self.letters(d, "source=udp").first)
        #expect(udp["line"] as? Int == 2)
        #expect(udp["text"] as? String == "bad udp line")
        #expect(udp["reason"] as? String == "syntax")
        #expect(udp["column"] as? Int == 8)
        #expect((udp["remote"] as? String)?.hasPrefix("127.0.0.1:") == true)
        let tcp = try #require(try Self.letters(d, "source=tcp").first)
        #expect(tcp["line"] as? Int == 3)
        #expect(tcp["text"] as? String == "bad tcp line")
    }

    /// Events answer in the same shape (`index` stays 0-based beside `line`), and a refused event is a dead letter
    /// whose replay, once the event is fixed upstream, is refused again (still there) — and deleted when accepted.
    @Test func refusedEventsAreListedAndKept() throws {
        let d = try Daemon()
        defer { _ = d.stop() }
        let body =
            "{\"event\":\"view\",\"user_id\":\"a\"}\n{\"event\":\"view\"}\n{\"event\":\"buy\",\"user_id\":\"b\"}\n"
        let reply = try d.http("POST", "/api/v1/events", body: Data(body.utf8))
        #expect(reply.status == 400)
        let rejected = reply.json["rejected"] as? [[String: Any]] ?? []
        #expect(rejected.count == 1)
        #expect(rejected.first?["index"] as? Int == 1)
        #expect(rejected.first?["line"] as? Int == 2)
        #expect(rejected.first?["reason"] as? String == "invalid_event")
        #expect(rejected.first?["text"] as? String == "{\"event\":\"view\"}")
        #expect(try d.eventually { try Self.letters(d, "reason=invalid_event").count == 1 })
        let replay = try d.http("POST", "/api/v1/dead-letters/replay?reason=invalid_event")
        #expect(replay.json["selected"] as? Int == 1)
        #expect(replay.json["accepted"] as? Int == 0)
        #expect(replay.json["still_rejected"] as? Int == 1)
        #expect(try Self.letters(d, "reason=invalid_event").count == 1, "refused again: kept once, not twice")
    }

    /// A replayed line goes in with the time it first came with: a line without a timestamp lands in its minute.
    @Test func replayedLinesKeepTheirTime() throws {
        let d = try Daemon(config: "[rollup]\nmax_series = 1\nmax_overflow_series = 0\n")
        defer { _ = d.stop() }
        #expect(try d.http("POST", "/write", body: Data("cpu,host=a v=1\n".utf8)).status == 204)
        let refused = try d.http("POST", "/write", body: Data("cpu,host=b v=5\n".utf8))
        #expect(refused.status == 400)
        #expect((refused.json["error"] as? String)?.contains("rollup.max_series (1)") == true, "\(refused.text)")
        #expect(try d.eventually { try Self.letters(d, "reason=cardinality").count == 1 })
        // Still over the limit: refused again, kept.
        let again = try d.http("POST", "/api/v1/dead-letters/replay")
        #expect(again.json["accepted"] as? Int == 0)
        #expect(try Self.letters(d, "reason=cardinality").count == 1)
        // Fixed: a daemon with room for it (same data directory) takes it, and the letter goes.
        #expect(d.stop() == 0)
        let fixed = try Daemon(config: "[rollup]\nmax_series = 10\nmax_overflow_series = 0\n", dataDir: d.dataDir)
        defer { _ = fixed.stop() }
        let replay = try fixed.http("POST", "/api/v1/dead-letters/replay")
        #expect(replay.json["accepted"] as? Int == 1, "\(replay.text)")
        #expect(replay.json["deleted"] as? Int == 1)
        #expect(try Self.letters(fixed, "").isEmpty)
        let json = try fixed.query(
            "measurement=cpu&field=v&agg=sum&group_by=host&from=\((Self.now / 1_000_000) - 600_000)")
        let series = json["series"] as? [[String: Any]] ?? []
        let b = series.first { ($0["tags"] as? [String: String])?["host"] == "b" }
        #expect(Daemon.pointValues(["series": b.map { [$0] } ?? []]) == [5], "\(json)")
    }

    /// A partly applied line keeps only its refused field as a letter; a replay refused again renews the letter
    /// with its source and sender; once fixed the replay applies just that field, so nothing counts twice.
    @Test func aPartlyAppliedLineReplaysOnlyWhatWasRefused() throws {
        let d = try Daemon(config: "[rollup]\nmax_fields_per_series = 1\n")
        let t = Int64(Date().timeIntervalSince1970) - 300
        let ns: Int64 = 1_000_000_000
        d.sendUDP(Array("cpu,host=a v=1 \(t * ns)\ncpu,host=a v=2,w=3 \((t + 1) * ns)\n".utf8))
        #expect(try d.eventually { try Self.letters(d, "source=udp").count == 1 })
        let first = try #require(try Self.letters(d, "source=udp").first)
        #expect(first["text"] as? String == "cpu,host=a w=3.0 \((t + 1) * ns)", "\(first)")
        #expect(first["reason"] as? String == "field_limit")
        let again = try d.http("POST", "/api/v1/dead-letters/replay").json
        #expect(again["still_rejected"] as? Int == 1 && again["renewed"] as? Int == 1, "\(again)")
        let renewed = try #require(try Self.letters(d, "").first)
        #expect(renewed["id"] as? Int != first["id"] as? Int)
        #expect(renewed["source"] as? String == "udp" && renewed["remote"] as? String == first["remote"] as? String)
        #expect(renewed["text"] as? String == first["text"] as? String)
        #expect(d.stop() == 0)
        let fixed = try Daemon(config: "[rollup]\nmax_fields_per_series = 10\n", dataDir: d.dataDir)
        defer { _ = fixed.stop() }
        let replay = try fixed.http("POST", "/api/v1/dead-letters/replay").json
        #expect(replay["accepted"] as? Int == 1 && replay["deleted"] as? Int == 1, "\(replay)")
        let from = (t - 600) * 1000
        for (field, want) in [("v", 3.0), ("w", 3.0)] {
            let json = try fixed.query("measurement=cpu&field=\(field)&agg=sum&from=\(from)&step=1h")
            #expect(Daemon.pointValues(json).reduce(0, +) == want, "\(field): \(json)")
        }
    }

    /// A million bad lines in one body: the answer lists max_reported_errors of them and counts all; memory stays
    /// bounded (the dead-letter queue keeps max_pending of them; the rest are counted as dropped).
    @Test func aMillionBadLinesAnswerInBoundedMemory() throws {
        let d = try Daemon(config: "[http]\nmax_body_size = \"64MiB\"\n")
        defer { _ = d.stop() }
        let before = d.residentBytes()
        var body = [UInt8]()
        body.reserveCapacity(1_000_000 * 8)
        for _ in 0..<1_000_000 { body += Array("bad lin\n".utf8) }
        let reply = try d.http("POST", "/write?results=lines", body: Data(body), timeout: 300)
        #expect(reply.status == 400)
        #expect(reply.json["rejected_lines"] as? Int == 1_000_000)
        #expect((reply.json["rejected"] as? [Any])?.count == 1000)
        #expect(reply.json["truncated"] as? Bool == true)
        let peak = d.peakResidentBytes()
        // The body (8 MB) is held while it is applied; the letters and the answer are bounded.
        #expect(peak - before < 200 << 20, "peak \(peak >> 20) MiB, before \(before >> 20) MiB")
        #expect(try d.eventually { try d.counter("dead_letters_dropped") > 0 })
        print("1M bad lines: peak RSS \(peak >> 20) MiB (start \(before >> 20) MiB), answer \(reply.body.count) bytes")
    }
}

/// Cardinality under control (step 13): a series flood keeps the measurement's totals exact in its overflow series,
/// leaves other measurements their room, and names the offending tag.
@Suite(.serialized) struct CardinalityTests {
    @Test func aSeriesFloodKeepsTheTotalExactAndNamesTheTag() throws {
        let d = try Daemon(config: "[rollup]\nmax_series = 60\nmax_series_per_measurement = 20\n")
        defer { _ = d.stop() }
        var lines: [String] = []
        var sum = 0
        for i in 0..<1000 {
            lines.append("api,host=h\(i % 4),req_id=r\(i) latency=\(i)i")
            sum += i
        }
        for h in 0..<10 { lines.append("cpu,host=c\(h) v=\(h)") }
        let reply = try d.http("POST", "/write", body: Data(lines.joined(separator: "\n").utf8))
        #expect(reply.status == 204, "folded, not refused: \(reply.text)")
        // The measurement's totals are exact: its 20 series plus the overflow series hold every point.
        let totals = try d.http(
            "GET", "/query?db=x&q=SELECT+count(latency),sum(latency),min(latency),max(latency)+FROM+api")
        let values =
            ((((totals.json["results"] as? [[String: Any]])?.first?["series"] as? [[String: Any]])?.first?[
                "values"] as? [[Any]])?.first) ?? []
        #expect(values.count == 5, "\(totals.text)")
        if values.count == 5 {
            #expect(values[1] as? Int == 1000)
            #expect(values[2] as? Int == sum)
            #expect(values[3] as? Int == 0 && values[4] as? Int == 999)
        }
        let overflow = try d.http("GET", "/query?db=x&q=SELECT+count(latency)+FROM+api+WHERE+_overflow='true'")
        #expect(overflow.text.contains("980"), "\(overflow.text)")
        // Another measurement keeps its room.
        let cpu = try d.http("GET", "/query?db=x&q=SHOW+SERIES+FROM+cpu")
        #expect(!cpu.text.contains("_overflow"), "\(cpu.text)")
        #expect(cpu.text.components(separatedBy: "cpu,host=c").count - 1 == 10, "\(cpu.text)")
        #expect(try d.counter("series_overflowed") == 980)
        #expect(try d.http("GET", "/metrics").text.contains("metricsd_series_overflow_total 980"))
        // The offending tag, named.
        let card = try d.http("GET", "/api/v1/cardinality").json
        let growing = card["growing"] as? [[String: Any]] ?? []
        #expect(growing.first?["measurement"] as? String == "api", "\(card)")
        #expect(growing.first?["key"] as? String == "req_id")
        let distinct = growing.first?["distinct_values"] as? Int ?? 0
        #expect(abs(distinct - 1000) <= 50, "a sketch within its error: \(distinct)")
        let api = (card["measurements"] as? [[String: Any]] ?? []).first { $0["measurement"] as? String == "api" }
        #expect(api?["series"] as? Int == 21, "20 series and the overflow series")
        #expect(api?["overflow_points"] as? Int == 980)
        let host = (api?["tags"] as? [[String: Any]] ?? []).first { $0["key"] as? String == "host" }
        #expect(host?["distinct_values"] as? Int == 4)
        #expect(try d.http("GET", "/api/v1/cardinality?limit=0").status == 400)
    }
}
