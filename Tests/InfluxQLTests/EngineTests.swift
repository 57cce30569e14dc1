import Foundation
import LineProtocol
import Testing

@testable import InfluxQL

@Suite struct EngineTests {
    static let t0: Int64 = 1_795_132_800_000_000_000  // 2026-11-20T00:00:00Z
    static let s: Int64 = 1_000_000_000

    /// Six points a minute (Telegraf's 10 s) for two hosts over three minutes.
    static func lines() -> [String] {
        var out: [String] = []
        for host in 0..<2 {
            for k in 0..<18 {
                let v = Double((host * 13 + k * 7) % 31) * 0.75 - 3.25
                out.append("cpu,host=h\(host) usage=\(v),n=\(k)i \(t0 + Int64(k) * 10 * s)")
            }
        }
        return out
    }

    @Test func percentilesAreExactNearestRanks() throws {
        for storeBefore in [Int64.max, Self.t0] {
            let f = try EngineFixture(lines: Self.lines(), storeBefore: storeBefore)
            let q =
                "SELECT percentile(usage, 90), median(usage), count(usage) FROM cpu WHERE time >= \(Self.t0) AND time < \(Self.t0 + 180 * Self.s) GROUP BY time(1m), host"
            let r = try f.results(q, now: Self.t0 + 3600 * Self.s)
            let series = try #require(r.first?.series)
            #expect(series.count == 2)
            for (h, s) in series.enumerated() {
                #expect(s.rowCount == 3)
                for w in 0..<3 {
                    var values: [Double] = []
                    for k in (w * 6)..<(w * 6 + 6) { values.append(Double((h * 13 + k * 7) % 31) * 0.75 - 3.25) }
                    values.sort()
                    let i = Int((6 * 0.9 + 0.5).rounded(.down)) - 1
                    #expect(s.values[w * 3] == .float(values[i]), "host \(h) window \(w)")
                    #expect(s.values[w * 3 + 1] == .float(values[2] + (values[3] - values[2]) / 2))
                    #expect(s.values[w * 3 + 2] == .integer(6))
                }
            }
        }
    }
}

@Suite struct EngineRuleTests {
    static let t0: Int64 = 1_795_132_800_000_000_000
    static let s: Int64 = 1_000_000_000
    static let hour: Int64 = 3_600 * 1_000_000_000

    /// Three hours of one series at 10 s, all stored (SQLite's minute and hour tiers both hold them).
    static func fixture() throws -> EngineFixture {
        var lines: [String] = []
        for k in 0..<(3 * 360) {
            lines.append("cpu,host=a usage=\(Double(k % 37) * 0.5) \(t0 + Int64(k) * 10 * s)")
        }
        return try EngineFixture(lines: lines)
    }

    static func values(_ f: EngineFixture, _ q: String, now: Int64) throws -> [(Int64, ResultValue)] {
        let r = try f.results(q, now: now)
        if let e = r.first?.error { throw QueryError(e) }
        guard let s = r.first?.series.first, let times = s.times else { return [] }
        return times.enumerated().map { ($0.element, s.values[$0.offset * s.width]) }
    }

    /// A range past retention_1m answers from the hour tier (never an error): whole-hour steps exactly as from
    /// minutes, finer steps in windows of an hour, no step both tiers merged.
    @Test func rangesPastRetentionAnswerFromHours() throws {
        let f = try Self.fixture()
        let range = "time >= \(Self.t0) AND time < \(Self.t0 + 3 * Self.hour)"
        let fresh = Self.t0 + 4 * Self.hour
        let aged = Self.t0 + 10 * 24 * Self.hour  // retention_1m is 7 days
        try f.downsample(now: aged)
        let hourly = "SELECT mean(usage) FROM cpu WHERE \(range) GROUP BY time(1h)"
        let recent = try Self.values(f, hourly, now: fresh)
        let old = try Self.values(f, hourly, now: aged)
        #expect(recent.count == 3 && old.count == 3)
        for (a, b) in zip(recent, old) {
            #expect(a.0 == b.0)
            #expect(abs((a.1.double ?? 0) - (b.1.double ?? 1)) < 1e-9)
        }
        let fine = try Self.values(f, "SELECT mean(usage) FROM cpu WHERE \(range) GROUP BY time(10m)", now: aged)
        #expect(fine.map(\.0) == recent.map(\.0), "10m windows past retention_1m are hours")
        let seven = try Self.values(
            f, "SELECT count(usage) FROM cpu WHERE time >= \(aged - 14 * 24 * Self.hour) GROUP BY time(10m)", now: aged)
        #expect(seven.reduce(0) { $0 + (Int($1.1.double ?? 0)) } == 1_080)
        let last = try Self.values(
            f, "SELECT last(usage) FROM cpu WHERE time >= \(aged - 30 * 24 * Self.hour)", now: aged)
        #expect(last.count == 1 && last[0].1 == .float(Double(1_079 % 37) * 0.5))
    }

    /// One rule for a bound inside a bucket: points of cells that keep them are filtered by time; a cell past 16
    /// points counts whole when the range touches its bucket — with and without GROUP BY time.
    @Test func boundsInsideABucket() throws {
        var lines: [String] = []
        for k in 0..<6 { lines.append("few v=\(k) \(Self.t0 + Int64(k) * 10 * Self.s)") }
        for k in 0..<30 { lines.append("many v=\(k) \(Self.t0 + Int64(k) * 2 * Self.s)") }
        let f = try EngineFixture(lines: lines)
        let now = Self.t0 + Self.hour
        let inside = "time >= \(Self.t0 + 25 * Self.s) AND time < \(Self.t0 + 60 * Self.s)"
        for suffix in ["", " GROUP BY time(1m)"] {
            let few = try Self.values(f, "SELECT count(v) FROM few WHERE \(inside)\(suffix)", now: now)
            #expect(few.first?.1 == .integer(3), "exact points: 30 s, 40 s, 50 s")
            let many = try Self.values(f, "SELECT count(v) FROM many WHERE \(inside)\(suffix)", now: now)
            #expect(many.first?.1 == .integer(30), "a summarized cell counts whole")
        }
        // What rollups cannot answer is a clear error, never a wrong number.
        #expect(throws: QueryError.self) { try Self.values(f, "SELECT v FROM many WHERE \(inside)", now: now) }
        #expect(throws: QueryError.self) { try Self.values(f, "SELECT mode(v) FROM many WHERE \(inside)", now: now) }
        #expect(try Self.values(f, "SELECT v FROM few WHERE \(inside)", now: now).count == 3)
    }

    /// The bucket a range's start cuts is answered from each cell's summary when its points lie on one side of the
    /// cut, and point by point only where they straddle it — the same answer, with and without a tag condition,
    /// from stored minutes and from open buckets.
    @Test(arguments: [false, true]) func aCutBucketCountsOnlyPointsInRange(stored: Bool) throws {
        let lines = [
            "m,host=a v=1 \(Self.t0)", "m,host=a v=2 \(Self.t0 + 10 * Self.s)",  // before the cut
            "m,host=b v=4 \(Self.t0 + 10 * Self.s)", "m,host=b v=8 \(Self.t0 + 40 * Self.s)",  // across it
            "m,host=c v=16 \(Self.t0 + 35 * Self.s)", "m,host=c v=32 \(Self.t0 + 50 * Self.s)",  // after it
            "m,host=a v=64 \(Self.t0 + 70 * Self.s)", "m,host=b v=64 \(Self.t0 + 70 * Self.s)",
            "m,host=c v=64 \(Self.t0 + 70 * Self.s)",
        ]
        let f = try EngineFixture(lines: lines, storeBefore: stored ? Self.t0 + Self.hour : 0)
        let now = Self.t0 + Self.hour
        let range = "time >= \(Self.t0 + 30 * Self.s) AND time < \(Self.t0 + 2 * 60 * Self.s)"
        for condition in ["", " AND host =~ /./"] {
            let q = "SELECT sum(v), count(v) FROM m WHERE \(range)\(condition) GROUP BY time(1m), host fill(none)"
            let series = try f.results(q, now: now).flatMap(\.series)
            let rows = series.map { s in
                (s.tags?.first?.value ?? "", s.times ?? [], s.values.compactMap(\.double))
            }
            #expect(rows.map(\.0) == ["a", "b", "c"], "\(q)")
            #expect(rows.first { $0.0 == "a" }?.2 == [64, 1], "a: nothing of the cut minute, \(q)")
            #expect(rows.first { $0.0 == "b" }?.2 == [8, 1, 64, 1], "b: the point after the cut, \(q)")
            #expect(rows.first { $0.0 == "c" }?.2 == [48, 2, 64, 1], "c: the whole cut minute, \(q)")
        }
    }

    /// tz(): a day's window starts at local midnight.
    @Test func timeZonesAlignDays() throws {
        let f = try Self.fixture()
        let q =
            "SELECT count(usage) FROM cpu WHERE time >= \(Self.t0) AND time < \(Self.t0 + 3 * Self.hour) GROUP BY time(1d) tz('Europe/Paris')"
        let rows = try Self.values(f, q, now: Self.t0 + 4 * Self.hour)
        #expect(rows.map(\.0) == [Self.t0 - Self.hour], "2026-11-20T00:00:00+01:00")
        let json = try f.json(q, now: Self.t0 + 4 * Self.hour)
        #expect(json.contains("\"2026-11-20T00:00:00+01:00\""))
    }

    /// Go's encoding/json float layout (what InfluxDB writes).
    @Test func numbersAsGoWritesThem() {
        let cases: [(Double, String)] = [
            (1e21, "1e+21"), (1e20, "100000000000000000000"), (1e-7, "1e-7"), (0.000001, "0.000001"),
            (123456789.125, "123456789.125"), (-2.5e-8, "-2.5e-8"), (0.1, "0.1"), (1.5e300, "1.5e+300"),
        ]
        for (v, text) in cases { #expect(JSONTextProbe.float(v) == text, "\(v)") }
    }
}

enum JSONTextProbe {
    static func float(_ v: Double) -> String {
        var j = JSONText()
        j.number(v)
        return String(decoding: j.bytes, as: UTF8.self)
    }
}

@Suite struct EngineHostileTests {
    static let t0: Int64 = 1_795_132_800_000_000_000

    /// Times and intervals a client writes never trap: each statement answers rows, nothing or an error.
    @Test func timeArithmeticNeverTraps() throws {
        let f = try EngineFixture(lines: ["t v=1 \(Self.t0)", "t v=2 \(Self.t0 + 60_000_000_000)"])
        let now = Self.t0 + 3_600_000_000_000
        for condition in [
            "time > 1e300", "time > 9223372036854775807", "time > now() + 106751d", "time > now() - 100000d - 100000d",
            "time <= 9223372036854775807ns", "time > -9223372036854775808", "time < -1e300",
            "time > now() - 1h GROUP BY time(1m, -153722867m)", "time > now() - 1h GROUP BY time(153722867m)",
            "time > now() - 1h GROUP BY time(1m, 153722867m)", "time >= -9223372036854775806 GROUP BY time(1m)",
            "time > -9223372036854775806", "1 = 1 GROUP BY time(1m)",
        ] {
            for select in ["count(v)", "derivative(mean(v))", "v", "top(v, 1)"] {
                _ = try? f.results("SELECT \(select) FROM t WHERE \(condition)", now: now)
            }
        }
    }

    /// Without a lower bound, GROUP BY time fills from each series' first window (InfluxDB's rule), and a group
    /// costs its own windows, not the retention's.
    @Test func unboundedRangesFillFromTheFirstPoint() throws {
        let f = try EngineFixture(lines: ["t v=1 \(Self.t0)", "t v=2 \(Self.t0 + 180_000_000_000)"])
        let r = try f.results("SELECT count(v) FROM t GROUP BY time(1m)", now: Self.t0 + 300_000_000_000)
        let s = try #require(r.first?.series.first)
        #expect(s.times?.first == Self.t0 && s.times?.count == 6)
        #expect(s.values == [.integer(1), .integer(0), .integer(0), .integer(1), .integer(0), .integer(0)])
    }
}

extension EngineHostileTests {
    /// A chain of thousands of tag conditions stays balanced through the split into tag and field conditions (it
    /// was rebuilt left-deep, and matching it overflowed a query thread's stack).
    @Test func longConditionChainsStayShallow() throws {
        let f = try EngineFixture(lines: ["n,host=h0 v=1 \(Self.t0)", "n,host=h1 v=2 \(Self.t0)"])
        let chain = Array(repeating: "host = 'h0'", count: 5_000).joined(separator: " AND ")
        let r = try f.results("SELECT count(v) FROM n WHERE \(chain)", now: Self.t0 + 3_600_000_000_000)
        #expect(r.first?.series.first?.values == [.integer(1)])
        let mixed = try f.results(
            "SELECT count(v) FROM n WHERE \(chain) AND v > 0", now: Self.t0 + 3_600_000_000_000)
        #expect(mixed.first?.series.first?.values == [.integer(1)])
    }
}

extension EngineHostileTests {
    /// holt_winters()'s forecast length is the client's: past `[query] max_select_buckets` it is refused (it
    /// allocated the whole forecast up front).
    @Test func forecastsAreBounded() throws {
        var lines: [String] = []
        for k in 0..<20 { lines.append("t v=\(k % 7) \(Self.t0 + Int64(k) * 60_000_000_000)") }
        let f = try EngineFixture(lines: lines)
        let range = "time >= \(Self.t0) AND time < \(Self.t0 + 20 * 60_000_000_000)"
        #expect(throws: QueryLimitExceeded.self) {
            try f.results(
                "SELECT holt_winters(mean(v), 1000000000, 0) FROM t WHERE \(range) GROUP BY time(1m)",
                now: Self.t0 + 3_600_000_000_000)
        }
        let r = try f.results(
            "SELECT holt_winters(mean(v), 3, 0) FROM t WHERE \(range) GROUP BY time(1m)",
            now: Self.t0 + 3_600_000_000_000)
        #expect(r.first?.series.first?.rowCount == 3)
    }
}
