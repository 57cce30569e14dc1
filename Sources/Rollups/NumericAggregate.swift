/// The mergeable summary of the numeric values of one (series, field, bucket).
///
/// Every part merges exactly: counts and sums add, min and max combine, and first and last are chosen by
/// timestamp, a tie going to the larger value (as InfluxDB's `first()`/`last()` do, which also makes the choice
/// independent of arrival and merge order). Two partial aggregates of the same key therefore merge into exactly the
/// aggregate of the union — the property the whole pipeline relies on.
///
/// `stddev` is the sample standard deviation, as InfluxDB's `stddev()`. It is computed from the count, the sum
/// and the sum of squares; to keep that numerically sound the sums are kept relative to a per-aggregate shift
/// (the first value seen), the classic "shifted data" variance algorithm.
public struct NumericAggregate: Sendable, Hashable {
    public internal(set) var count: Int64 = 0
    /// Sum of `value - shift`.
    var shiftedSum: Double = 0
    /// Sum of `(value - shift)²`.
    var shiftedSquares: Double = 0
    var shift: Double = 0
    public internal(set) var min: Double = .infinity
    public internal(set) var max: Double = -.infinity
    /// When the minimum and the maximum were seen (the earliest such time when several points tie, as InfluxDB's
    /// `min()`/`max()` selectors answer).
    public internal(set) var minTime: Int64 = .max
    public internal(set) var maxTime: Int64 = .max
    public internal(set) var first: Double = 0
    public internal(set) var firstTime: Int64 = .max
    public internal(set) var last: Double = 0
    public internal(set) var lastTime: Int64 = .min
    /// The plain sum of the values, kept separately so it is exact for integer-valued data.
    public internal(set) var sum: Double = 0

    public init() {}

    /// Adds one value observed at `time` (nanoseconds).
    public mutating func add(_ value: Double, at time: Int64) {
        if count == 0 { shift = value }
        count &+= 1
        sum += value
        let d = value - shift
        shiftedSum += d
        shiftedSquares += d * d
        if value < min || (value == min && time < minTime) {
            min = value
            minTime = time
        }
        if value > max || (value == max && time < maxTime) {
            max = value
            maxTime = time
        }
        if time < firstTime || (time == firstTime && value > first) {
            firstTime = time
            first = value
        }
        if time > lastTime || (time == lastTime && value > last) {
            lastTime = time
            last = value
        }
    }

    /// Merges `other` into `self`; `other` is unchanged. Merging with an empty aggregate is a no-op.
    public mutating func merge(_ other: NumericAggregate) {
        guard other.count > 0 else { return }
        guard count > 0 else {
            self = other
            return
        }
        // Re-express other's shifted sums relative to our shift: x - s = (x - s') + (s' - s).
        let delta = other.shift - shift
        let n = Double(other.count)
        shiftedSquares += other.shiftedSquares + 2 * delta * other.shiftedSum + n * delta * delta
        shiftedSum += other.shiftedSum + n * delta
        count &+= other.count
        sum += other.sum
        if other.min < min || (other.min == min && other.minTime < minTime) {
            min = other.min
            minTime = other.minTime
        }
        if other.max > max || (other.max == max && other.maxTime < maxTime) {
            max = other.max
            maxTime = other.maxTime
        }
        if other.firstTime < firstTime || (other.firstTime == firstTime && other.first > first) {
            firstTime = other.firstTime
            first = other.first
        }
        if other.lastTime > lastTime || (other.lastTime == lastTime && other.last > last) {
            lastTime = other.lastTime
            last = other.last
        }
    }

    /// The value of `agg` for these values (sum, min, max, mean, first, last, stddev, spread); `nil` when empty,
    /// undefined, or not an aggregate of the values alone (count, quantiles, distinct counts are the caller's).
    public func value(of agg: Aggregate) -> Double? {
        guard count > 0 else { return nil }
        switch agg {
        case .sum: return sum
        case .min: return min
        case .max: return max
        case .mean: return mean
        case .first: return first
        case .last: return last
        case .stddev: return stddev
        case .spread: return max - min
        case .count, .quantile, .distinct: return nil
        }
    }

    /// The arithmetic mean, or `nil` when empty.
    public var mean: Double? { count > 0 ? sum / Double(count) : nil }

    /// The sample standard deviation (n − 1 in the denominator), or `nil` with fewer than two values.
    public var stddev: Double? {
        guard count > 1 else { return nil }
        let n = Double(count)
        let variance = (shiftedSquares - shiftedSum * shiftedSum / n) / (n - 1)
        return variance > 0 ? variance.squareRoot() : 0
    }
}
