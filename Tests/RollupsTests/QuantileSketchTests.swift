import Foundation
import LineProtocol
import TestSupport
import Testing

@testable import Rollups

@Suite struct QuantileSketchTests {
    /// The exact value the sketch estimates for quantile q: rank ⌊q·(n−1)⌋ of the sorted data.
    static func exact(_ sorted: [Double], _ q: Double) -> Double {
        sorted[Int((q * Double(sorted.count - 1)).rounded(.down))]
    }

    static func withinBound(_ estimate: Double, _ exact: Double) -> Bool {
        if exact == 0 { return estimate == 0 }
        return abs(estimate - exact) <= QuantileSketch.relativeAccuracy * abs(exact) * (1 + 1e-9)
    }

    /// Property: split a stream across N sketches, merge in any order, and every quantile stays within 1 % of the
    /// exact one — for positive, negative, mixed and heavy-tailed data.
    @Test(arguments: 0..<24)
    func mergedQuantilesStayWithinTheBound(seed: Int) {
        var rng = SplitMix(state: UInt64(seed) &* 1_000_003)
        let n = Int.random(in: 1...2_000, using: &rng)
        let parts = Int.random(in: 1...6, using: &rng)
        var values: [Double] = []
        var sketches = Array(repeating: QuantileSketch(), count: parts)
        for _ in 0..<n {
            let v: Double
            switch seed % 4 {
            case 0: v = Double.random(in: 0.001...1_000, using: &rng)
            case 1: v = -Double.random(in: 1...1e6, using: &rng)
            case 2: v = Double.random(in: -50...50, using: &rng).rounded()  // includes zeros
            default: v = exp(Double.random(in: -20...20, using: &rng))  // heavy tail
            }
            values.append(v)
            sketches[Int.random(in: 0..<parts, using: &rng)].add(v)
        }
        var merged = QuantileSketch()
        merged.merge(QuantileSketch())  // merging an empty sketch is a no-op
        for s in sketches.shuffled(using: &rng) {
            let before = s
            merged.merge(s)
            #expect(s == before, "merge must not change its argument")
        }
        #expect(merged.count == UInt64(n))
        let sorted = values.sorted()
        for q in [0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1] {
            let estimate = merged.quantile(q)!
            let truth = Self.exact(sorted, q)
            #expect(Self.withinBound(estimate, truth), "q=\(q): \(estimate) vs exact \(truth)")
        }
    }

    @Test func emptyAndSerialization() throws {
        var s = QuantileSketch()
        #expect(s.quantile(0.5) == nil)
        for v in [1.0, 2, 3, -4, 0, 1e9] { s.add(v) }
        let copy = try #require(QuantileSketch(serialized: s.serialized()))
        #expect(copy == s)
        #expect(QuantileSketch(serialized: [1, 2, 3]) == nil)
    }
}

@Suite struct RollupEngineTests {
    @Test func rollupsEqualExactAggregatesAndCloseOnTime() throws {
        var config = RollupConfiguration()
        config.interval = 60_000_000_000
        config.lateness = 0
        let engine = RollupEngine(configuration: config)
        let decoder = LineProtocolDecoderFixture()
        let t0: Int64 = 1_800_000_000_000_000_000 / 60_000_000_000 * 60_000_000_000
        var late = LateCells()
        var values: [Double] = []
        for i in 0..<100 {
            let v = Double(i % 17) * 1.5
            values.append(v)
            _ = engine.ingest(
                decoder.decode("cpu,host=a usage=\(v) \(t0 + Int64(i) * 100_000_000)"), now: t0, lateCells: &late)
        }
        #expect(late.isEmpty)
        #expect(engine.activeSeries == 1)
        let closed = engine.closeFinished(now: t0 + 60_000_000_000)
        #expect(closed.count == 1)
        let rollup = try #require(closed.first?.cells.first?.rollup)
        #expect(rollup.count == 100)
        #expect(rollup.numeric.sum == values.reduce(0, +))
        #expect(rollup.numeric.min == values.min())
        #expect(rollup.numeric.max == values.max())
        #expect(rollup.numeric.first == values.first)
        #expect(rollup.numeric.last == values.last)
        // A point for the closed bucket comes back as a late cell.
        let r = engine.ingest(
            decoder.decode("cpu,host=a usage=1 \(t0 + 1)"), now: t0 + 61_000_000_000, lateCells: &late)
        #expect(r.late == 1)
        #expect(late.count == 1)
    }

    /// Field names are looked up by their first 24 bytes kept inline and the rest apart: names that differ only
    /// past a word boundary, or only in length, are different fields.
    @Test func fieldNamesDifferingAnywhereAreDifferentFields() throws {
        let engine = RollupEngine(configuration: RollupConfiguration())
        let decoder = LineProtocolDecoderFixture()
        let t0: Int64 = 1_800_000_000_000_000_000
        var late = LateCells()
        var names: [String] = []
        for length in [1, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 40, 70] {
            let base = String(repeating: "f", count: length)
            names.append(base)
            names.append(String(base.dropLast()) + "g")  // differs in the last byte
        }
        names.append(String(repeating: "f", count: 30) + "h" + String(repeating: "f", count: 9))  // past byte 24
        for (i, name) in names.enumerated() {
            _ = engine.ingest(decoder.decode("m,host=a \(name)=\(i) \(t0)"), now: t0, lateCells: &late)
        }
        // Each again, in reverse order (found by name, not by position).
        for (i, name) in names.enumerated().reversed() {
            _ = engine.ingest(decoder.decode("m,host=a \(name)=\(i) \(t0 + 1)"), now: t0, lateCells: &late)
        }
        let cells = engine.closeAll().flatMap(\.cells)
        let fields = try #require(engine.allSeries().first?.fields.map(\.name))
        #expect(fields == names)
        #expect(cells.count == Set(names).count)
        for cell in cells {
            #expect(cell.rollup.count == 2)
            #expect(cell.rollup.numeric.min == cell.rollup.numeric.max)
        }
    }

    /// A cell's side state (a string's first and last value, a numeric cell's sketch) is copied on write: a copy
    /// changed later does not change the cell it came from.
    /// The common cell stays small: a minute of Telegraf's points inline, the aggregate derived from them, the kinds'
    /// rare state out of line (memory per series-field, step 11).
    @Test func aCellIsAtMost128BytesWithSixPoints() {
        #expect(MemoryLayout<FieldRollup>.size <= 128, "FieldRollup is \(MemoryLayout<FieldRollup>.size) bytes")
        var cell = FieldRollup(kind: .numeric)
        for i in 0..<FieldRollup.inlineLimit { cell.add(Double(i), at: Int64(5 - i)) }
        #expect(cell.points.map(\.time) == [0, 1, 2, 3, 4, 5])
        #expect(cell.numeric.min == 0 && cell.numeric.max == 5 && cell.numeric.first == 5 && cell.numeric.last == 0)
        // Past the inline points, then past the kept ones: the same aggregate, incrementally.
        var exact = NumericAggregate()
        for i in 0..<40 {
            if i >= FieldRollup.inlineLimit { cell.add(Double(i), at: Int64(i)) }
            exact.add(Double(i), at: Int64(i < FieldRollup.inlineLimit ? 5 - i : i))
            if i == 10 { #expect(cell.isExact && cell.pointCount == 11) }
        }
        #expect(!cell.isExact && cell.count == 40)
        #expect(cell.numeric.sum == exact.sum && cell.numeric.min == exact.min && cell.numeric.max == exact.max)
        #expect(cell.numeric.first == exact.first && cell.numeric.last == exact.last)
        #expect(abs(cell.numeric.value(of: .stddev)! - exact.value(of: .stddev)!) < 1e-12)
    }

    @Test func cellsKeepValueSemantics() {
        var a = FieldRollup(kind: .string)
        Array("one".utf8).withUnsafeBufferPointer { a.add($0, at: 1) }
        let b = a
        Array("two".utf8).withUnsafeBufferPointer { a.add($0, at: 2) }
        #expect(b.lastString == "one" && b.count == 1)
        #expect(a.lastString == "two" && a.firstString == "one" && a.count == 2)
        var n = FieldRollup(kind: .numeric)
        for i in 0..<40 { n.add(Double(i), at: Int64(i)) }  // past the kept points: the sketch
        let m = n
        for _ in 0..<40 { n.add(1_000, at: 100) }
        #expect(m.sketch.count == 40 && n.sketch.count == 80)
        #expect(m.value(of: .quantile(0.99))! < 100)
    }

    @Test func maxSeriesBoundsMemory() {
        var config = RollupConfiguration()
        config.maxSeries = 10
        config.maxOverflowSeries = 0
        let engine = RollupEngine(configuration: config)
        let decoder = LineProtocolDecoderFixture()
        var late = LateCells()
        var rejected = 0
        let now: Int64 = 1_800_000_000_000_000_000
        for i in 0..<100 {
            rejected += engine.ingest(decoder.decode("m,id=\(i) v=1"), now: now, lateCells: &late).rejectedSeries
        }
        #expect(engine.activeSeries == 10)
        #expect(rejected == 90)
    }

    /// Past max_series a new series' points go to its measurement's overflow series (one more series), so the
    /// measurement's totals stay exact; past max_series_per_measurement the same, leaving other measurements room.
    @Test func newSeriesPastTheLimitsAreFoldedIntoAnOverflowSeries() {
        var config = RollupConfiguration()
        config.maxSeries = 20
        config.maxSeriesPerMeasurement = 5
        let engine = RollupEngine(configuration: config)
        let decoder = LineProtocolDecoderFixture()
        var late = LateCells()
        var result = IngestResult()
        let now: Int64 = 1_800_000_000_000_000_000
        for i in 0..<100 { result += engine.ingest(decoder.decode("m,id=\(i) v=\(i)"), now: now, lateCells: &late) }
        for i in 0..<5 { result += engine.ingest(decoder.decode("other,id=\(i) v=1"), now: now, lateCells: &late) }
        #expect(result.rejected == 0)
        #expect(result.overflowed == 95)
        #expect(engine.activeSeries == 5 + 1 + 5, "five of m, its overflow series, five of other")
        var sum = 0.0
        var count: Int64 = 0
        var overflow: Int64 = 0
        for bucket in engine.closeAll() {
            for cell in bucket.cells where cell.series.measurement == "m" {
                count += cell.rollup.count
                sum += FieldSummary(cell.rollup).numeric.sum
                if cell.series.tags == [TagPair("_overflow", "true")] { overflow += cell.rollup.count }
            }
        }
        #expect(count == 100 && sum == 4950 && overflow == 95)
        let report = engine.cardinality.report(now: now)
        let m = report.measurements.first { $0.measurement == "m" }
        #expect(m?.series == 6 && m?.overflowPoints == 95)
        #expect(report.growing.first?.measurement == "m" && report.growing.first?.tag.key == "id")
        #expect(abs((m?.tags.first?.distinctValues ?? 0) - 100) <= 5)
    }

    @Test func fieldTypeConflictsAreRejected() {
        let engine = RollupEngine()
        let decoder = LineProtocolDecoderFixture()
        var late = LateCells()
        let now: Int64 = 1_800_000_000_000_000_000
        _ = engine.ingest(decoder.decode("m v=1"), now: now, lateCells: &late)
        let r = engine.ingest(decoder.decode("m v=\"text\""), now: now, lateCells: &late)
        #expect(r.typeConflicts == 1)
    }
}

/// Decodes a line and keeps its bytes alive for the engine call that follows.
final class LineProtocolDecoderFixture {
    let decoder = LineDecoder()
    var bytes: [UInt8] = []

    func decode(_ line: String) -> LineDecoder {
        bytes = Array(line.utf8)
        let ok = bytes.withUnsafeBufferPointer { (try? decoder.decode($0)) ?? false }
        precondition(ok, "fixture line must parse: \(line)")
        return decoder
    }
}

/// What a hostile sender could make the engine do (issue: step 9).
@Suite struct RollupEngineLimitTests {
    let now: Int64 = 1_800_000_000_000_000_000

    /// Late points merge per series, field and bucket as they come: half a million late points of a few series are
    /// a few cells, not one each.
    @Test func latePointsMergeWithinABatch() {
        var config = RollupConfiguration()
        config.lateness = 0
        let engine = RollupEngine(configuration: config)
        let decoder = LineProtocolDecoderFixture()
        var late = LateCells()
        let old = now - 3_600_000_000_000
        for i in 0..<10_000 {
            let t = old + Int64(i % 120) * 1_000_000_000  // two minutes of late points
            _ = engine.ingest(decoder.decode("late,host=h\(i % 3) v=\(i) \(t)"), now: now, lateCells: &late)
        }
        #expect(late.count == 6, "3 series × 2 minutes")
        let buckets = late.buckets(walPosition: 7)
        #expect(buckets.count == 2 && buckets.allSatisfy { $0.isLate && $0.walPosition == 7 })
        #expect(buckets.flatMap(\.cells).reduce(0) { $0 + $1.rollup.count } == 10_000)
        #expect(buckets.flatMap(\.cells).reduce(0) { $0 + $1.rollup.numeric.sum } == Double((0..<10_000).reduce(0, +)))
    }

    /// A series takes at most `maxFieldsPerSeries` fields; fields in a stable order are found at their place, and
    /// a series with many fields finds them by hash — every value lands in its own field.
    @Test func fieldsPerSeriesAreBoundedAndFound() {
        var config = RollupConfiguration()
        config.maxFieldsPerSeries = 100
        let engine = RollupEngine(configuration: config)
        let decoder = LineProtocolDecoderFixture()
        var late = LateCells()
        let fields = (0..<150).map { "f\($0)=\($0)" }
        let first = engine.ingest(decoder.decode("w " + fields.joined(separator: ",")), now: now, lateCells: &late)
        #expect(first.applied == 100 && first.rejectedFields == 50)
        let shuffled = engine.ingest(
            decoder.decode("w " + fields.prefix(100).reversed().joined(separator: ",")), now: now, lateCells: &late)
        #expect(shuffled.applied == 100 && shuffled.rejectedFields == 0)
        let cells = engine.closeAll().flatMap(\.cells)
        #expect(cells.count == 100)
        for cell in cells {
            let k = Double(cell.field.dropFirst())!
            #expect(cell.rollup.count == 2 && cell.rollup.numeric.sum == 2 * k, "\(cell.field)")
        }
    }

    /// Names that are not valid UTF-8 would be repaired into one stored name: such series and fields are refused.
    @Test func namesMustBeUTF8() {
        let engine = RollupEngine()
        let decoder = LineDecoder()
        var late = LateCells()
        for bytes in [Array("m,t=".utf8) + [0xFF] + Array(" v=1".utf8), Array("m ".utf8) + [0xC3] + Array("=1".utf8)] {
            let ok = bytes.withUnsafeBufferPointer { (try? decoder.decode($0)) ?? false }
            #expect(ok)
            let r = bytes.withUnsafeBufferPointer { _ in engine.ingest(decoder, now: now, lateCells: &late) }
            #expect(r.invalidNames == 1 && r.applied == 0)
        }
        #expect(engine.allSeries().allSatisfy { $0.fields.isEmpty }, "no field was made of the bad name")
    }

    /// Idle series are dropped; the others keep every cell, under their new slot numbers, and take points again.
    @Test func droppingIdleSeriesKeepsTheRest() {
        var config = RollupConfiguration()
        config.shards = 2
        let engine = RollupEngine(configuration: config)
        let decoder = LineProtocolDecoderFixture()
        var late = LateCells()
        for i in 0..<200 {
            _ = engine.ingest(
                decoder.decode("idle,host=h\(i) v=1,w=2 \(now - 600_000_000_000)"), now: now - 600_000_000_000,
                lateCells: &late)
        }
        _ = engine.closeAll()  // their minutes are stored: nothing of them is open
        for i in 0..<50 { _ = engine.ingest(decoder.decode("busy,host=h\(i) v=\(i)"), now: now, lateCells: &late) }
        #expect(engine.activeSeries == 250)
        #expect(engine.dropIdleSeries(before: now - 60_000_000_000) == 200)
        #expect(engine.activeSeries == 50)
        for i in 0..<50 { _ = engine.ingest(decoder.decode("busy,host=h\(i) v=\(i)"), now: now, lateCells: &late) }
        let open = engine.openCells(
            measurement: "busy", fields: ["v"], from: 0, to: .max, series: { $0.tag("host") != "h0" }, condition: "x")
        #expect(open.count == 49)
        let cells = engine.closeAll().flatMap(\.cells)
        #expect(cells.count == 50)
        for cell in cells {
            let k = Double(cell.series.tag("host")!.dropFirst())!
            #expect(cell.rollup.count == 2 && cell.rollup.numeric.sum == 2 * k)
        }
        // A dropped series comes back with its next point.
        let back = engine.ingest(decoder.decode("idle,host=h7 v=1"), now: now, lateCells: &late)
        #expect(back.applied == 1 && engine.activeSeries == 51)
    }
}
