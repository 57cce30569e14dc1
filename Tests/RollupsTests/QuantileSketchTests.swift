import Foundation
import LineProtocol
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
        var rng = NumericAggregateTests.SplitMix(state: UInt64(seed) &* 1_000_003)
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

    @Test func maxSeriesBoundsMemory() {
        var config = RollupConfiguration()
        config.maxSeries = 10
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
