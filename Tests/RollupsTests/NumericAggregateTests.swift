import TestSupport
import Testing

@testable import Rollups

@Suite struct NumericAggregateTests {

    static func exactStddev(_ xs: [Double]) -> Double? {
        guard xs.count > 1 else { return nil }
        let mean = xs.reduce(0, +) / Double(xs.count)
        let ss = xs.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
        return (ss / Double(xs.count - 1)).squareRoot()
    }

    @Test func addComputesEveryAggregate() throws {
        var a = NumericAggregate()
        for (i, v) in [3.0, 1.0, 4.0, 1.0, 5.0].enumerated() { a.add(v, at: Int64(i)) }
        #expect(a.count == 5)
        #expect(a.sum == 14)
        #expect(a.min == 1)
        #expect(a.max == 5)
        #expect(a.first == 3)
        #expect(a.last == 5)
        #expect(a.mean == 2.8)
        let sd = try #require(a.stddev)
        #expect(abs(sd - Self.exactStddev([3, 1, 4, 1, 5])!) < 1e-12)
    }

    @Test func firstAndLastFollowTimestampsNotArrival() {
        var a = NumericAggregate()
        a.add(10, at: 200)
        a.add(20, at: 100)
        a.add(30, at: 150)
        #expect(a.first == 20)
        #expect(a.last == 10)
    }

    /// Property: splitting a stream across N partial aggregates and merging gives the aggregate of the whole.
    @Test(arguments: 1...40) func mergeOfPartsEqualsWhole(seed: Int) throws {
        var rng = SplitMix(state: UInt64(seed))
        let n = Int.random(in: 1...300, using: &rng)
        let parts = Int.random(in: 1...8, using: &rng)
        let offset = Double.random(in: -1e6...1e6, using: &rng)
        var whole = NumericAggregate()
        var partials = Array(repeating: NumericAggregate(), count: parts)
        var values: [Double] = []
        for i in 0..<n {
            let v = offset + Double.random(in: -100...100, using: &rng)
            let t = Int64.random(in: 0...1_000, using: &rng)
            values.append(v)
            whole.add(v, at: t * 1000 + Int64(i))  // distinct timestamps: first/last are unambiguous
            partials[Int.random(in: 0..<parts, using: &rng)].add(v, at: t * 1000 + Int64(i))
        }
        var merged = NumericAggregate()
        for p in partials.shuffled(using: &rng) {
            let before = p
            merged.merge(p)
            #expect(p == before, "merge must not change its argument")
        }
        merged.merge(NumericAggregate())  // merging an empty aggregate is a no-op
        #expect(merged.count == whole.count)
        #expect(merged.min == whole.min)
        #expect(merged.max == whole.max)
        #expect(merged.first == whole.first)
        #expect(merged.last == whole.last)
        #expect(abs(merged.sum - whole.sum) <= 1e-9 * max(1, abs(whole.sum)))
        if let exact = Self.exactStddev(values) {
            let got = try #require(merged.stddev)
            #expect(abs(got - exact) <= 1e-6 * max(1, exact), "stddev \(got) vs exact \(exact)")
        }
    }
}
