import Foundation
import TestSupport
import Testing

@testable import Rollups

@Suite struct DistinctSketchTests {
    static func sketch(_ ids: some Sequence<String>) -> DistinctSketch {
        var s = DistinctSketch()
        for id in ids { s.add(hash: DistinctSketch.hash(id)) }
        return s
    }

    /// Property: splitting any set of values across sketches and merging them in any order gives exactly the
    /// registers of one sketch over the union (so minutes merge into hours, and instances into one answer).
    @Test(arguments: 0..<16)
    func mergeIsTheSketchOfTheUnion(seed: Int) {
        var rng = SplitMix(state: UInt64(seed) &* 7_919 &+ 1)
        let n = Int.random(in: 0...20_000, using: &rng)
        let parts = Int.random(in: 1...5, using: &rng)
        var all: [String] = []
        var sketches = Array(repeating: DistinctSketch(), count: parts)
        for _ in 0..<n {
            // Repeats on purpose: a distinct count must not change when a value comes again.
            let id = "user-\(Int.random(in: 0..<max(1, n / 2), using: &rng))"
            all.append(id)
            sketches[Int.random(in: 0..<parts, using: &rng)].add(hash: DistinctSketch.hash(id))
        }
        var merged = DistinctSketch()
        for s in sketches.shuffled(using: &rng) { merged.merge(s) }
        #expect(merged == Self.sketch(all))
        // Merging is idempotent.
        var twice = merged
        twice.merge(merged)
        #expect(twice == merged)
    }

    /// The estimate stays within four standard errors of the true count (1.6 % each) at every scale, and small
    /// sets (linear counting) are exact or within one.
    @Test(arguments: [0, 1, 2, 10, 100, 1_000, 10_000, 100_000, 300_000])
    func estimateIsWithinTheErrorBound(n: Int) {
        let s = Self.sketch((0..<n).map { "u\($0)" })
        let estimate = s.estimate
        if n <= 100 {
            #expect(abs(estimate.rounded() - Double(n)) <= 1, "n=\(n) estimate=\(estimate)")
        } else {
            let error = abs(estimate - Double(n)) / Double(n)
            #expect(error <= 4 * DistinctSketch.standardError, "n=\(n) estimate=\(estimate)")
        }
    }

    @Test(arguments: [0, 3, 500, 5_000])
    func serializationRoundTrips(n: Int) {
        let s = Self.sketch((0..<n).map { "id-\($0)" })
        var rollup = FieldRollup(kind: .distinct)
        for i in 0..<n { rollup.add(distinctHash: DistinctSketch.hash("id-\(i)"), at: Int64(i)) }
        #expect(rollup.distinct == s)
        let bytes = rollup.serialized()
        let back = FieldRollup(serialized: bytes)
        #expect(back?.distinct == s)
        #expect(back?.count == Int64(n))
        #expect(back?.value(of: .distinct) == rollup.value(of: .distinct))
        // Small sets are written sparse: a few bytes, not 4 KB.
        if n <= 3 { #expect(bytes.count < 32) }
        // Truncation is detected, never misread.
        if bytes.count > 4 { #expect(FieldRollup(serialized: Array(bytes.dropLast())) == nil) }
    }

    @Test func otherAggregatesDoNotApply() {
        var rollup = FieldRollup(kind: .distinct)
        rollup.add(distinctHash: DistinctSketch.hash("a"), at: 1)
        rollup.add(distinctHash: DistinctSketch.hash("a"), at: 2)
        #expect(rollup.value(of: .count) == 2)
        #expect(rollup.value(of: .distinct) == 1)
        #expect(rollup.value(of: .mean) == nil)
        var numeric = FieldRollup(kind: .numeric)
        numeric.add(1.0, at: 1)
        #expect(numeric.value(of: .distinct) == nil)
    }
}

/// Few values keep few registers (issue: step 9: a late cell cost a 4 KiB sketch each).
@Suite struct SparseDistinctSketchTests {
    @Test(arguments: [1, 10, 256, 257, 2_000])
    func sparseAndDenseAgree(n: Int) {
        var sparse = DistinctSketch()
        var dense = DistinctSketch()
        for i in 0..<n { sparse.add(hash: DistinctSketch.hash("v\(i)")) }
        // A dense sketch of the same values: merged into one already dense.
        for i in 0..<5_000 { dense.add(hash: DistinctSketch.hash("other\(i)")) }
        var both = dense
        both.merge(sparse)
        var reference = DistinctSketch()
        for i in 0..<5_000 { reference.add(hash: DistinctSketch.hash("other\(i)")) }
        for i in 0..<n { reference.add(hash: DistinctSketch.hash("v\(i)")) }
        #expect(both == reference)
        // Round trip through the stored form.
        var w = ByteWriter()
        sparse.write(to: &w)
        var r = ByteReader(w.bytes)
        #expect(DistinctSketch(reading: &r) == sparse)
        #expect(abs(sparse.estimate - Double(n)) <= max(1, Double(n) * 0.05))
        #expect(sparse.registers.filter { $0 != 0 }.count <= n)
    }
}
