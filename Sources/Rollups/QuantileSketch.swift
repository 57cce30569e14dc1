#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A mergeable quantile sketch with a relative-error guarantee: DDSketch (Masson, Rim, Lee, "DDSketch: A Fast and
/// Fully-Mergeable Quantile Sketch with Relative-Error Guarantees", VLDB 2019).
///
/// Values are counted in logarithmic bins: a positive `x` goes to bin `ceil(log_γ(x))` with
/// `γ = (1 + α) / (1 − α)`, and a bin is reported as `2γ^i / (γ + 1)`, which is within a relative error α of every
/// value in it. Negative values use a mirrored set of bins; values with `|x| < 1e-9` count as zero.
///
/// - Error bound: any quantile is within **α = 1 %** relative error of the exact rank-`⌊q·(n−1)⌋` value, for any
///   data, and the bound survives any number of merges (merging adds bin counts exactly).
/// - Memory: one 8-byte entry per non-empty bin. At most ``maxBins`` bins per sign; beyond that the lowest bins
///   are collapsed into one (the error bound then no longer holds for the lowest quantiles only — it takes values
///   spanning more than 10^17 to get there with α = 1 %).
/// - Merge: exact and order-independent; merging does not change its argument.
public struct QuantileSketch: Sendable, Hashable {
    public static let relativeAccuracy = 0.01
    public static let maxBins = 2048
    static let gamma = (1 + relativeAccuracy) / (1 - relativeAccuracy)
    static let logGamma = log(gamma)
    static let minIndexable = 1e-9

    /// Non-empty bins as sorted `(index << 32) | count` words (index biased to stay positive).
    private var positive: [UInt64] = []
    private var negative: [UInt64] = []
    public private(set) var zeroCount: UInt64 = 0
    public private(set) var count: UInt64 = 0

    public init() {}

    private static let bias: Int64 = 1 << 31

    @inline(__always)
    static func binIndex(_ magnitude: Double) -> Int64 {
        Int64((log(magnitude) / logGamma).rounded(.up))
    }

    @inline(__always)
    static func binValue(_ index: Int64) -> Double {
        2 * pow(gamma, Double(index)) / (gamma + 1)
    }

    /// Adds one value. NaN and infinities are ignored (line protocol cannot carry them).
    public mutating func add(_ value: Double) {
        guard value.isFinite else { return }
        count &+= 1
        if value > Self.minIndexable {
            Self.increment(&positive, Self.binIndex(value), by: 1)
        } else if value < -Self.minIndexable {
            Self.increment(&negative, Self.binIndex(-value), by: 1)
        } else {
            zeroCount &+= 1
        }
    }

    /// Adds every bin of `other` into `self`. `other` is unchanged.
    public mutating func merge(_ other: QuantileSketch) {
        guard other.count > 0 else { return }
        count &+= other.count
        zeroCount &+= other.zeroCount
        Self.mergeBins(&positive, other.positive)
        Self.mergeBins(&negative, other.negative)
    }

    /// The value at quantile `q` (0...1), i.e. the estimate of the element of rank `⌊q·(n−1)⌋`, or `nil` when empty.
    public func quantile(_ q: Double) -> Double? {
        guard count > 0, q >= 0, q <= 1 else { return nil }
        let rank = UInt64((q * Double(count - 1)).rounded(.down))
        var seen: UInt64 = 0
        // Most negative first: negative bins with the highest index hold the largest magnitudes.
        for word in negative.reversed() {
            seen &+= word & 0xFFFF_FFFF
            if seen > rank { return -Self.binValue(Int64(word >> 32) - Self.bias) }
        }
        seen &+= zeroCount
        if seen > rank { return 0 }
        for word in positive {
            seen &+= word & 0xFFFF_FFFF
            if seen > rank { return Self.binValue(Int64(word >> 32) - Self.bias) }
        }
        return positive.last.map { Self.binValue(Int64($0 >> 32) - Self.bias) }
    }

    /// Number of non-empty bins (for memory accounting).
    public var binCount: Int { positive.count + negative.count }

    // MARK: - Serialization (compact, for storage)

    /// A compact binary form (see ``write(to:)``).
    public func serialized() -> [UInt8] {
        var w = ByteWriter(capacity: 8 + 3 * binCount)
        write(to: &w)
        return w.bytes
    }

    /// Reads ``serialized()`` output; `nil` if the bytes are not a valid sketch.
    public init?(serialized bytes: [UInt8]) {
        var r = ByteReader(bytes)
        guard let sketch = QuantileSketch(reading: &r), r.atEnd else { return nil }
        self = sketch
    }

    /// Appends count and zero count, then per sign the number of bins and each bin as (index delta, count), all
    /// LEB128 varints: a bin costs two or three bytes instead of eight.
    func write(to w: inout ByteWriter) {
        w.varint(count)
        w.varint(zeroCount)
        Self.write(positive, to: &w)
        Self.write(negative, to: &w)
    }

    private static func write(_ bins: [UInt64], to w: inout ByteWriter) {
        w.varint(UInt64(bins.count))
        var previous: UInt64 = 0
        for word in bins {
            let index = word >> 32
            w.varint(index &- previous)
            w.varint(word & 0xFFFF_FFFF)
            previous = index
        }
    }

    init?(reading r: inout ByteReader) {
        guard let count = r.varint(), let zero = r.varint(), let positive = Self.readBins(&r, keep: true),
            let negative = Self.readBins(&r, keep: true)
        else { return nil }
        self.count = count
        self.zeroCount = zero
        self.positive = positive
        self.negative = negative
    }

    /// Moves `r` past a sketch written by ``write(to:)``, checking it as ``init(reading:)`` does but keeping
    /// nothing (queries that ask for no quantile skip the bins: no allocation). `false` when malformed.
    static func skip(reading r: inout ByteReader) -> Bool {
        guard r.varint() != nil, r.varint() != nil, readBins(&r, keep: false) != nil, readBins(&r, keep: false) != nil
        else { return false }
        return true
    }

    /// One sign's bins: their number, then per bin an index delta and a count. With `keep` false the words are
    /// checked and dropped (an empty array: no allocation).
    private static func readBins(_ r: inout ByteReader, keep: Bool) -> [UInt64]? {
        guard let n = r.varint(), n <= UInt64(Self.maxBins) else { return nil }
        var bins: [UInt64] = []
        if keep { bins.reserveCapacity(Int(n)) }
        var index: UInt64 = 0
        for k in 0..<Int(n) {
            guard let delta = r.varint(), let binCount = r.varint(), k == 0 || delta > 0,
                binCount > 0, binCount <= 0xFFFF_FFFF
            else { return nil }
            index &+= delta
            guard index <= 0xFFFF_FFFF else { return nil }
            if keep { bins.append(index << 32 | binCount) }
        }
        return bins
    }

    /// Reads the first storage format (fixed 8-byte words: count, zero count, then per sign n and n bin words),
    /// for migrating databases written by it.
    init?(version1 bytes: [UInt8]) {
        var r = ByteReader(bytes)
        guard let count = r.u64(), let zero = r.u64() else { return nil }
        var sets: [[UInt64]] = []
        for _ in 0..<2 {
            guard let n = r.u64(), n <= UInt64(Self.maxBins) else { return nil }
            var bins: [UInt64] = []
            for _ in 0..<n {
                guard let w = r.u64() else { return nil }
                bins.append(w)
            }
            sets.append(bins)
        }
        guard r.atEnd else { return nil }
        self.count = count
        self.zeroCount = zero
        self.positive = sets[0]
        self.negative = sets[1]
    }

    // MARK: - Bins

    private static func increment(_ bins: inout [UInt64], _ index: Int64, by n: UInt64) {
        let key = UInt64(index + bias) << 32
        // Binary search for the bin.
        var lo = 0
        var hi = bins.count
        while lo < hi {
            let mid = (lo + hi) >> 1
            if bins[mid] & 0xFFFF_FFFF_0000_0000 < key { lo = mid + 1 } else { hi = mid }
        }
        if lo < bins.count && bins[lo] & 0xFFFF_FFFF_0000_0000 == key {
            let c = (bins[lo] & 0xFFFF_FFFF) &+ n
            if c <= 0xFFFF_FFFF {
                bins[lo] = key | c
            } else {
                // A bin holding over 4 billion values: split the count across the neighbouring index.
                bins[lo] = key | 0xFFFF_FFFF
                increment(&bins, index + 1, by: c - 0xFFFF_FFFF)
            }
            return
        }
        bins.insert(key | min(n, 0xFFFF_FFFF), at: lo)
        if bins.count > maxBins { collapseLowest(&bins) }
    }

    private static func mergeBins(_ bins: inout [UInt64], _ other: [UInt64]) {
        guard !other.isEmpty else { return }
        if bins.isEmpty {
            bins = other
            return
        }
        for w in other { increment(&bins, Int64(w >> 32) - bias, by: w & 0xFFFF_FFFF) }
    }

    private static func collapseLowest(_ bins: inout [UInt64]) {
        // Fold the two lowest bins into the second lowest.
        let a = bins[0] & 0xFFFF_FFFF
        let b = bins[1] & 0xFFFF_FFFF
        bins[1] = (bins[1] & 0xFFFF_FFFF_0000_0000) | min(a + b, 0xFFFF_FFFF)
        bins.removeFirst()
    }
}
