import TestSupport
import Testing

@testable import Rollups

/// A ``FieldSummary`` must answer every aggregate it answers exactly as the full ``FieldRollup`` does: read from
/// the stored bytes, merged, of every kind.
@Suite struct FieldSummaryTests {

    static let aggregates: [Aggregate] = [.count, .sum, .min, .max, .mean, .first, .last, .stddev, .spread]

    /// A random rollup of `kind` with 1…20 values at random times around `base`.
    static func rollup(_ kind: FieldKind, base: Int64, _ rng: inout SplitMix) -> FieldRollup {
        var r = FieldRollup(kind: kind)
        for _ in 0..<Int.random(in: 1...20, using: &rng) {
            let time = base + Int64.random(in: -5_000...60_000, using: &rng)
            switch kind {
            case .numeric:
                // Integral and fractional values, repeats, negatives and ties in time.
                let v =
                    Bool.random(using: &rng)
                    ? Double(Int.random(in: -5...5, using: &rng)) : Double.random(in: -1e6...1e6, using: &rng)
                r.add(v, at: Bool.random(using: &rng) ? base : time)
            case .boolean: r.add(Bool.random(using: &rng), at: time)
            case .string:
                let bytes = Array("value-\(Int.random(in: 0...999, using: &rng))".utf8)
                bytes.withUnsafeBufferPointer { r.add($0, at: time) }
            case .distinct: r.add(distinctHash: rng.next(), at: time)
            }
        }
        return r
    }

    /// - Parameter sums: how far sum, mean and stddev may be apart, relative: 0 (the same bits) unless the rollup
    ///   merged parts while keeping their points (at some step), whose aggregate it computes from the points in time
    ///   order while the summary merges the parts' partial sums — the two then agree to a few units in the last
    ///   place.
    static func expectSame(_ s: FieldSummary, _ r: FieldRollup, _ context: String, sums: Double = 0) {
        #expect(s.kind == r.kind, "\(context)")
        #expect(s.count == r.count, "\(context)")
        for agg in aggregates {
            let a = s.value(of: agg)
            let b = r.value(of: agg)
            if sums > 0, [.sum, .mean, .stddev].contains(agg), let a, let b {
                #expect(abs(a - b) <= sums * max(abs(a), abs(b), 1), "\(context) \(agg): summary \(a), rollup \(b)")
                continue
            }
            #expect(
                a?.bitPattern == b?.bitPattern,
                "\(context) \(agg): summary \(String(describing: a)), rollup \(String(describing: b))")
        }
        #expect(s.value(of: .quantile(0.5)) == nil)
        #expect(s.value(of: .distinct) == nil)
    }

    @Test(arguments: 1...40) func readFromStoredBytesAnswersAsTheRollup(seed: Int) throws {
        var rng = SplitMix(state: UInt64(seed))
        let base: Int64 = 1_795_860_000_000_000_000
        for kind in [FieldKind.numeric, .boolean, .string, .distinct] {
            let rollup = Self.rollup(kind, base: base, &rng)
            var w = ByteWriter()
            rollup.write(to: &w, base: base)
            let bytes = w.bytes
            var reader = ByteReader(bytes)
            let summary = try #require(FieldSummary(reading: &reader, base: base))
            // A numeric rollup is read to its end (its sketch checked); other kinds leave the rest to skip.
            if kind == .numeric { #expect(reader.atEnd) }
            #expect(summary.timeAnchor == rollup.timeAnchor)
            Self.expectSame(summary, rollup, "seed \(seed) \(kind.name)")
            Self.expectSame(FieldSummary(rollup), rollup, "seed \(seed) \(kind.name), converted")
            // Every truncation is rejected or still a valid prefix read, never a crash.
            for cut in 0..<bytes.count {
                var short = ByteReader(Array(bytes[..<cut]))
                _ = FieldSummary(reading: &short, base: base)
            }
        }
    }

    @Test(arguments: 1...40) func mergedSummariesEqualTheMergedRollup(seed: Int) {
        var rng = SplitMix(state: UInt64(seed) &* 7919)
        for kind in [FieldKind.numeric, .boolean, .string, .distinct] {
            let parts = (0..<Int.random(in: 1...6, using: &rng)).map { _ in
                Self.rollup(kind, base: 0, &rng)
            }
            var whole = FieldRollup(kind: kind)
            for p in parts { whole.merge(p) }
            var merged = FieldSummary()
            for p in parts { merged.merge(FieldSummary(p)) }
            Self.expectSame(
                merged, whole, "seed \(seed) \(kind.name), merged",
                sums: parts.count > 1 && kind == .numeric ? 1e-13 : 0)
            // The rollup kept the points: its aggregate is theirs in time order, whatever order the parts came in.
            if kind == .numeric && whole.isExact {
                var reversed = FieldRollup(kind: kind)
                for p in parts.reversed() { reversed.merge(p) }
                for agg in Self.aggregates { #expect(reversed.value(of: agg) == whole.value(of: agg)) }
            }
        }
    }

    @Test func anEmptySummaryMergesAsNothing() {
        var rng = SplitMix(state: 3)
        let r = Self.rollup(.numeric, base: 0, &rng)
        var s = FieldSummary(r)
        s.merge(FieldSummary())
        Self.expectSame(s, r, "merged with empty")
        #expect(FieldSummary().value(of: .count) == nil)
    }

    /// A summary is copied on every step from a stored row to a query's window: at most 128 bytes the compiler
    /// copies it inline (at 160 each copy was a call to memmove, 15 % of a 1,000-series query's profile).
    @Test func aSummaryIsAtMost128Bytes() {
        #expect(MemoryLayout<FieldSummary>.size <= 128)
    }

    /// Booleans and strings keep their first and last times in the numeric aggregate's place: a numeric summary
    /// answers no times of its own there, and a boolean's numeric aggregate is empty.
    @Test func timesOfEachKindStayApart() {
        var b = FieldRollup(kind: .boolean)
        b.add(true, at: 10)
        b.add(false, at: 20)
        let s = FieldSummary(b)
        #expect(s.firstTime == 10 && s.lastTime == 20)
        #expect(s.numeric == NumericAggregate())
        #expect(s.valueTimes?.first == 10 && s.valueTimes?.last == 20)
        var n = FieldRollup(kind: .numeric)
        n.add(1, at: 5, integer: false)
        n.add(2, at: 7, integer: false)
        let t = FieldSummary(n)
        #expect(t.numeric.firstTime == 5 && t.numeric.lastTime == 7)
        #expect(t.valueTimes?.first == 5 && t.valueTimes?.last == 7)
    }
}

/// `values(of:into:)` (every aggregate at once, the kept points sorted once) answers each aggregate as
/// `value(of:)` does, for cells that keep their points and cells past that, of every kind.
@Suite struct ValuesOfAggregatesTests {
    @Test(arguments: 1...20) func answersAsValueOf(seed: Int) {
        var rng = SplitMix(seed: UInt64(seed))
        let aggregates: [Aggregate] = [
            .count, .sum, .min, .max, .mean, .stddev, .first, .last, .quantile(0.5), .quantile(0.9), .quantile(0.99),
            .quantile(0), .quantile(1), .spread, .distinct,
        ]
        var out: [Double?] = []
        for kind in [FieldKind.numeric, .boolean, .distinct] {
            for n in [0, 1, 5, 16, 17, 200] {
                var r = FieldRollup(kind: kind)
                for i in 0..<n {
                    let t = Int64(i) * 1_000_000_000
                    switch kind {
                    case .numeric: r.add(Double(Int(rng.next() % 1000)) / 7, at: t)
                    case .boolean: r.add(rng.next() % 2 == 0, at: t)
                    default: r.add(distinctHash: rng.next(), at: t)
                    }
                }
                r.values(of: aggregates, into: &out)
                #expect(out == aggregates.map { r.value(of: $0) }, "\(kind) with \(n) values")
            }
        }
    }
}
