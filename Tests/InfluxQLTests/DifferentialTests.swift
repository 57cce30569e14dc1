import Export
import Foundation
import Testing

@testable import InfluxQL

/// metricsd's engine against a real influxd: the committed corpus (Grafana's query forms, `queries.txt`) over the
/// committed data (`data.lp.gz`, Telegraf-like), compared with influxd 1.6's answers (`answers.jsonl`, recorded by
/// `tools/influxql_oracle.py`, re-verified against a live influxd by `make test`). Every difference must be listed
/// with its reason in `known-differences.tsv` (and docs/influxql.md); a listed query that now matches fails too,
/// so the list stays true.
@Suite(.serialized) struct DifferentialTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/differential")
    static let t0: Int64 = 1_795_132_800_000_000_000
    static let hour: Int64 = 3_600_000_000_000

    static func lines() throws -> [String] {
        let gz = try Data(contentsOf: directory.appendingPathComponent("data.lp.gz"))
        let bytes = try gz.withUnsafeBytes { try Gzip.decompress($0, limit: 64 << 20) }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    struct Case {
        var query: String
        var epoch: String?
        var answer: Any
    }

    static func cases() throws -> [Case] {
        let text = try String(contentsOf: directory.appendingPathComponent("answers.jsonl"), encoding: .utf8)
        return try text.split(separator: "\n").map { line in
            let o = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            return Case(query: o["q"] as! String, epoch: o["epoch"] as? String, answer: o["answer"]!)
        }
    }

    /// Query (with ` [epoch]` when asked without epoch=ms) → reason.
    static func known() throws -> [String: String] {
        let text = try String(contentsOf: directory.appendingPathComponent("known-differences.tsv"), encoding: .utf8)
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: "\t", maxSplits: 1)
            if parts.count == 2 { out[String(parts[0])] = String(parts[1]) }
        }
        return out
    }

    /// Our answer to a case, as `/query` gives it (parse errors as InfluxDB's top-level error).
    static func ours(_ fixture: EngineFixture, _ c: Case, now: Int64) throws -> Any {
        let text: String
        do {
            text = try fixture.json(c.query, now: now, epoch: c.epoch)
        } catch let error as QueryError {
            return ["error": "error parsing query: \(error.message)"]
        }
        return normalize(try JSONSerialization.jsonObject(with: Data(text.utf8)))
    }

    /// Rows of one series with equal times in a fixed order (as the recorder orders influxd's).
    static func normalize(_ answer: Any) -> Any {
        guard var o = answer as? [String: Any], let results = o["results"] as? [[String: Any]] else { return answer }
        o["results"] = results.map { r -> [String: Any] in
            var r = r
            if let series = r["series"] as? [[String: Any]] {
                r["series"] = series.map { s -> [String: Any] in
                    var s = s
                    if var values = s["values"] as? [[Any]], (s["columns"] as? [String])?.first == "time" {
                        let times = values.map { "\($0[0])" }
                        if Set(times).count != times.count {
                            func key(_ row: [Any]) -> String {
                                String(
                                    decoding: try! JSONSerialization.data(withJSONObject: row, options: [.sortedKeys]),
                                    as: UTF8.self)
                            }
                            values.sort { key($0) < key($1) }
                            values.sort { a, b in
                                if let x = a[0] as? Int, let y = b[0] as? Int { return x < y }
                                return "\(a[0])" < "\(b[0])"
                            }
                            s["values"] = values
                        }
                    }
                    return s
                }
            }
            return r
        }
        return o
    }

    /// Equal as JSON, numbers within 1e-9 relative (InfluxDB sums in another order); errors equal by message with
    /// the parser's position dropped.
    static func same(_ a: Any, _ b: Any) -> Bool {
        switch (a, b) {
        case (let x as [String: Any], let y as [String: Any]):
            guard Set(x.keys) == Set(y.keys) else { return false }
            return x.keys.allSatisfy { same(x[$0]!, y[$0]!) }
        case (let x as [Any], let y as [Any]):
            return x.count == y.count && zip(x, y).allSatisfy { same($0, $1) }
        case (let x as String, let y as String):
            return strip(x) == strip(y)
        case (let x as NSNumber, let y as NSNumber):
            let bx = isBool(x)
            let by = isBool(y)
            if bx || by { return bx == by && x.boolValue == y.boolValue }
            let p = x.doubleValue
            let q = y.doubleValue
            return p == q || abs(p - q) <= 1e-9 * max(abs(p), abs(q))
        case (is NSNull, is NSNull): return true
        default: return false
        }
    }

    /// JSON booleans come back as NSNumbers of type char (`c`) or bool (`B`).
    static func isBool(_ n: NSNumber) -> Bool {
        let t = String(cString: n.objCType)
        return t == "c" || t == "B"
    }

    static func strip(_ s: String) -> String {
        guard let r = s.range(of: " at line ") else { return s }
        return String(s[..<r.lowerBound])
    }

    static func describe(_ v: Any) -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: v, options: [.sortedKeys]) else { return "\(v)" }
        return String(decoding: data.prefix(600), as: UTF8.self)
    }

    @Test func answersAsInfluxdDoes() throws {
        // The last half hour stays open in memory, the rest is stored: both paths answer.
        let fixture = try EngineFixture(lines: try Self.lines(), storeBefore: Self.t0 + 5 * Self.hour / 2)
        let now = Self.t0 + 3 * Self.hour + 600_000_000_000
        let known = try Self.known()
        let cases = try Self.cases()
        var identical = 0
        var listed = 0
        var unlisted: [String] = []
        var stale: [String] = []
        for c in cases {
            let key = c.query + (c.epoch == nil ? " [rfc3339]" : "")
            let ours = try Self.ours(fixture, c, now: now)
            if Self.same(ours, c.answer) {
                identical += 1
                if known[key] != nil { stale.append(key) }
            } else if known[key] != nil {
                listed += 1
            } else {
                unlisted.append("\(key)\n  metricsd: \(Self.describe(ours))\n  influxd:  \(Self.describe(c.answer))")
            }
        }
        let share = Double(identical) / Double(cases.count) * 100
        print(
            "influxql differential: \(identical) of \(cases.count) answers identical to influxd (\(String(format: "%.1f", share)) %), \(listed) listed differences (docs/influxql.md), \(unlisted.count) unlisted"
        )
        for u in unlisted { print("UNLISTED DIFFERENCE: \(u)") }
        #expect(cases.count >= 150)
        #expect(unlisted.isEmpty, "\(unlisted.count) answers differ from influxd without a listed reason")
        #expect(stale.isEmpty, "listed as different but now identical: \(stale)")
    }
}
