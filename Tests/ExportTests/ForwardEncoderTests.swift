import LineProtocol
import TestSupport
import Testing

@testable import Export
@testable import Rollups

/// The forwarder writes line protocol straight from the rollups with cached series prefixes and field keys; what it
/// writes must read back (with metricsd's own decoder, InfluxDB's rules) as the point the rollups describe.
@Suite struct ForwardEncoderTests {
    static let start: Int64 = 1_700_000_040_000_000_000

    static func numeric(_ values: [Double]) -> FieldRollup {
        var r = FieldRollup(kind: .numeric)
        for (i, v) in values.enumerated() { r.add(v, at: start + Int64(i) * 1_000_000_000) }
        return r
    }

    static func row(_ id: Int64, _ series: SeriesInfo, _ fields: [(String, FieldRollup)]) -> SQLiteStore.OutboxRow {
        SQLiteStore.OutboxRow(
            start: start, rowID: id, series: series, fields: fields.map { (name: $0.0, rollup: $0.1) })
    }

    /// The fields a row should forward, made from the rollups' own aggregates (the forwarder's contract).
    static func expectedFields(_ row: SQLiteStore.OutboxRow, _ aggregates: [String]) -> [String: Value] {
        var out: [String: Value] = [:]
        for (name, rollup) in row.fields where rollup.count > 0 {
            out["\(name)_count"] = .integer(rollup.count)
            switch rollup.kind {
            case .numeric:
                for suffix in aggregates where suffix != "count" {
                    if let v = rollup.value(of: Aggregate(suffix)!), v.isFinite { out["\(name)_\(suffix)"] = .float(v) }
                }
            case .boolean: out["\(name)_last"] = .boolean(rollup.lastBool)
            case .string: if !rollup.lastString.contains("\n") { out["\(name)_last"] = .string(rollup.lastString) }
            case .distinct: out["\(name)_distinct"] = .integer(Int64(rollup.distinct.estimate.rounded()))
            }
        }
        return out
    }

    static func decode(_ bytes: [UInt8], precision: Precision = .seconds) throws -> [Point] {
        let decoder = LineDecoder(precision: precision)
        var points: [Point] = []
        for line in bytes.split(separator: 0x0A) {
            try Array(line).withUnsafeBufferPointer { buffer in
                if try decoder.decode(buffer) { points.append(decoder.makePoint()) }
            }
        }
        return points
    }

    @Test func everyKindOfFieldReadsBackAsItsRollup() throws {
        var configuration = ForwarderConfiguration()
        configuration.instanceTag = "agg"
        configuration.hostname = "node 1"
        var encoder = ForwardEncoder(configuration)
        var boolean = FieldRollup(kind: .boolean)
        boolean.add(true, at: Self.start)
        boolean.add(false, at: Self.start + 1)
        var text = FieldRollup(kind: .string)
        Array("say \"hi\" \\ now".utf8).withUnsafeBufferPointer { text.add($0, at: Self.start) }
        var multiline = FieldRollup(kind: .string)
        Array("two\nlines".utf8).withUnsafeBufferPointer { multiline.add($0, at: Self.start) }
        var users = FieldRollup(kind: .distinct)
        for u in 0..<40 { users.add(distinctHash: UInt64(u) &* 0x9E37_79B9_7F4A_7C15, at: Self.start) }
        let series = SeriesInfo(
            id: 1, measurement: "cpu load",
            tags: [TagPair("agg", "replaced"), TagPair("host", "a,b=c d"), TagPair("region", "eu")])
        let rows = [
            Self.row(
                7, series,
                [
                    ("usage", Self.numeric([1, 2.5, -0.0, 7, 3])),  // kept points: exact quantiles
                    ("big", Self.numeric((0..<200).map { Double($0) * 1.1e10 })),  // sketched
                    ("flag", boolean), ("text", text), ("note", multiline), ("users", users),
                    ("\tlead", Self.numeric([4])),  // a key that must not come first
                    ("odd,key=x", Self.numeric([0.1])),
                    ("empty", FieldRollup(kind: .numeric)),
                ]),
            Self.row(8, SeriesInfo(id: 2, measurement: "m", tags: []), [("v", Self.numeric([0.30000000000000004]))]),
        ]
        var out: [UInt8] = []
        for row in rows { #expect(try encoder.append(row, to: &out)) }
        // A second batch uses the cached prefixes and keys and writes the same bytes.
        var again: [UInt8] = []
        for row in rows { _ = try encoder.append(row, to: &again) }
        #expect(again == out)

        let points = try Self.decode(out)
        try #require(points.count == 2)
        #expect(points[0].measurement == "cpu load_1m")
        #expect(points[0].timestamp == Self.start, "seconds precision, the bucket start")
        #expect(
            Dictionary(uniqueKeysWithValues: points[0].tags.map { ($0.key, $0.value) })
                == ["agg": "node 1", "host": "a,b=c d", "region": "eu"])
        #expect(points[1].measurement == "m_1m" && points[1].tags.map(\.value) == ["node 1"])
        for (point, row) in zip(points, rows) {
            let got = Dictionary(uniqueKeysWithValues: point.fields.map { ($0.key, $0.value) })
            let want = Self.expectedFields(row, configuration.aggregates)
            #expect(Set(got.keys) == Set(want.keys))
            for (key, value) in want {
                #expect(
                    got[key].map { $0.isIdentical(to: value) } == true,
                    "\(key): \(String(describing: got[key])) ≠ \(value)")
            }
        }
        #expect(points[0].fields.first?.key.hasPrefix("\t") == false)
        // The same point written by the general encoder reads back identically.
        var reference: [UInt8] = []
        try LineEncoder.append(points[0], to: &reference)
        #expect(try Self.decode(reference, precision: .nanoseconds) == [points[0]])
    }

    @Test func aPointThatCannotBeWrittenIsRefusedAndLeavesTheBufferAsItWas() throws {
        var encoder = ForwardEncoder(ForwarderConfiguration())
        let good = Self.row(1, SeriesInfo(id: 1, measurement: "ok", tags: []), [("v", Self.numeric([1]))])
        let badTag = Self.row(
            2, SeriesInfo(id: 2, measurement: "m", tags: [TagPair("host", "a\nb")]), [("v", Self.numeric([1]))])
        let badField = Self.row(3, SeriesInfo(id: 3, measurement: "m", tags: []), [("v\nw", Self.numeric([1]))])
        let onlyBlank = Self.row(4, SeriesInfo(id: 4, measurement: "m", tags: []), [("\tv", Self.numeric([1]))])
        let nothing = Self.row(5, SeriesInfo(id: 5, measurement: "m", tags: []), [("v", FieldRollup(kind: .numeric))])
        var out: [UInt8] = []
        #expect(try encoder.append(good, to: &out))
        let written = out
        for _ in 0..<2 {  // the second time from the caches
            for bad in [badTag, badField, onlyBlank] {
                #expect(throws: ForwardEncoder.Failure.self) { try encoder.append(bad, to: &out) }
                #expect(out == written)
            }
            #expect(try encoder.append(nothing, to: &out) == false)
            #expect(out == written)
        }
        #expect(try Self.decode(out).count == 1)
    }

    /// A batch is written as its rows one by one, the rows that cannot be written reported and skipped, whatever
    /// room the previous batch made the encoder reserve.
    @Test func aBatchIsItsRowsInOrderWithoutTheRejectedOnes() throws {
        var encoder = ForwardEncoder(ForwarderConfiguration())
        var single = ForwardEncoder(ForwarderConfiguration())
        func row(_ i: Int) -> SQLiteStore.OutboxRow {
            let host = i % 7 == 3 ? "a\nb" : "h\(i)"
            let values: [Double] = (0...i).map { Double($0) / 3 }
            let fields: [(String, FieldRollup)] = (0..<(i % 5 + 1)).map { ("f\($0)", Self.numeric(values)) }
            return Self.row(
                Int64(i), SeriesInfo(id: UInt64(i), measurement: "m", tags: [TagPair("host", host)]), fields)
        }
        let rows = (0..<50).map(row)
        for batch in [Array(rows[0..<1]), Array(rows[1..<50]), [], Array(rows[0..<50])] {
            var out: [UInt8] = []
            var rejected: [Int64] = []
            let points = encoder.append(batch, to: &out) { row, _ in rejected.append(row.rowID) }
            var expected: [UInt8] = []
            var expectedPoints = 0
            for row in batch where row.series.tag("host") != "a\nb" {
                if try single.append(row, to: &expected) { expectedPoints += 1 }
            }
            #expect(out == expected)
            #expect(points == expectedPoints)
            let bad: [Int64] = batch.filter { $0.series.tag("host") == "a\nb" }.map { $0.rowID }
            #expect(rejected == bad)
        }
    }

    /// Field keys are found by the field's position in the last row first: rows whose fields change names, order
    /// and count from one to the next (and a name that cannot be written, in any position) are written as an encoder
    /// without history writes each.
    @Test(arguments: [1, 2, 3] as [UInt64])
    func fieldsInAnyOrderAreWrittenAsByAFreshEncoder(seed: UInt64) throws {
        var rng = SplitMix(seed: seed)
        let pool = ["usage_idle", "usage_user", "a", "b", "tab\tfirst", "bad\nname", "a_long_field_name_past_24_bytes"]
        var encoder = ForwardEncoder(ForwarderConfiguration())
        for i in 0..<400 {
            var names: [String] = []
            for _ in 0..<Int(rng.next() % 5 + 1) {
                let name = pool[Int(rng.next() % UInt64(pool.count))]
                if !names.contains(name) { names.append(name) }
            }
            let row = Self.row(
                Int64(i % 3), SeriesInfo(id: UInt64(i % 3), measurement: "m", tags: []),
                names.map { ($0, Self.numeric([Double(i), 0.5])) })
            var fresh = ForwardEncoder(ForwarderConfiguration())
            var expected: [UInt8] = []
            var out: [UInt8] = []
            let expectedResult = Result { () throws(ForwardEncoder.Failure) in try fresh.append(row, to: &expected) }
            let result = Result { () throws(ForwardEncoder.Failure) in try encoder.append(row, to: &out) }
            #expect(out == expected, "row \(i): \(names)")
            #expect((try? result.get()) == (try? expectedResult.get()), "row \(i): \(names)")
        }
    }

    /// Outside a drain the backlog is passed over at most every 50 times a pass's cost, from 200 ms to 5 s.
    @Test func retryRoundsPassOverTheOutboxAtABoundedRate() {
        #expect(Forwarder.passGap(lastPassCost: 0) == 200_000_000)
        #expect(Forwarder.passGap(lastPassCost: 27_000_000) == 1_350_000_000, "a 50,000-point backlog")
        #expect(Forwarder.passGap(lastPassCost: 2_000_000_000) == Forwarder.measureInterval)
        #expect(Forwarder.passGap(lastPassCost: .max) == Forwarder.measureInterval)
    }

    @Test(arguments: [
        (3.0, "3"), (-12.0, "-12"), (-0.0, "-0.0"), (0.0, "0"), (0.1, "0.1"), (1e300, "1e+300"),
        (9_007_199_254_740_992.0, "9007199254740992.0"), (1e16, "1e+16"), (9_007_199_254_740_991.0, "9007199254740991"),
        (91.0029, "91.0029"), (-0.5, "-0.5"), (0.0001, "0.0001"), (0.00012, "0.00012"), (1e-5, "1e-05"),
        (0.30000000000000004, "0.30000000000000004"), (123_456_789.125, "123456789.125"),
        (4_503_599_627_370_495.5, "4503599627370495.5"), (1.0 / 3, "0.3333333333333333"),
    ])
    func floatsAreWrittenToReadBackBitForBit(value: Double, text: String) throws {
        var out: [UInt8] = []
        ForwardEncoder.appendFloat(value, to: &out)
        #expect(String(decoding: out, as: UTF8.self) == text)
        let point = try #require(try Self.decode(Array("m v=\(text)".utf8)).first)
        #expect(point.fields.first?.value.isIdentical(to: .float(value)) == true)
    }

    /// Short decimals are written without `String`; whatever the path, the text reads back bit for bit, and where
    /// Swift writes no exponent it is Swift's shortest round-trip text (whole numbers without Swift's `.0`).
    @Test(arguments: [1, 2, 3] as [UInt64])
    func floatTextIsShortestAndReadsBack(seed: UInt64) throws {
        var rng = SplitMix(seed: seed)
        for i in 0..<20_000 {
            let v: Double
            switch i % 4 {
            case 0:  // a short decimal, as gauges send them
                let digits = Double(Int64.random(in: -10_000_000_000...10_000_000_000, using: &rng))
                v = digits / [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e9, 1e12][Int.random(in: 0..<9, using: &rng)]
            case 1:  // a mean: any 17-digit value
                v = Double.random(in: -1e6...1e6, using: &rng) / 7
            case 2:  // any finite bit pattern
                let bits = Double(bitPattern: rng.next())
                v = bits.isFinite ? bits : 1.5
            default:  // near the edges of the fast path
                v =
                    [1e-4, 9e15, 9_007_199_254_740_992][Int.random(in: 0..<3, using: &rng)]
                    * Double.random(in: 0.5...2, using: &rng)
            }
            var out: [UInt8] = []
            ForwardEncoder.appendFloat(v, to: &out)
            let text = String(decoding: out, as: UTF8.self)
            let point = try #require(try Self.decode(Array("m v=\(text)".utf8)).first, "\(v): \(text)")
            #expect(point.fields.first?.value.isIdentical(to: .float(v)) == true, "\(v) written as \(text)")
            if v.magnitude >= 1e-4 && v.magnitude < 9_007_199_254_740_992 {
                let swift = v.description
                #expect(text == (swift.hasSuffix(".0") ? String(swift.dropLast(2)) : swift), "\(v)")
            }
        }
    }
}
