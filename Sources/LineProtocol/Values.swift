/// Timestamp precision of a line-protocol batch.
///
/// InfluxDB 1.x accepts `n`, `u`, `ms`, `s`, `m` and `h` on `/write`; the v2 API and Telegraf use `ns`, `us`,
/// `ms` and `s`. Both spellings are accepted.
public enum Precision: Sendable, Hashable, CaseIterable {
    case nanoseconds
    case microseconds
    case milliseconds
    case seconds
    case minutes
    case hours

    /// Parses `ns|n`, `us|u|µs`, `ms`, `s`, `m`, `h`. An empty string means nanoseconds, as on InfluxDB's `/write`.
    public init?(_ text: String) {
        switch text {
        case "", "n", "ns": self = .nanoseconds
        case "u", "us", "µs": self = .microseconds
        case "ms": self = .milliseconds
        case "s": self = .seconds
        case "m": self = .minutes
        case "h": self = .hours
        default: return nil
        }
    }

    /// Nanoseconds per unit.
    public var nanosecondsPerUnit: Int64 {
        switch self {
        case .nanoseconds: 1
        case .microseconds: 1_000
        case .milliseconds: 1_000_000
        case .seconds: 1_000_000_000
        case .minutes: 60_000_000_000
        case .hours: 3_600_000_000_000
        }
    }

    /// The canonical short name (`ns`, `us`, `ms`, `s`, `m`, `h`).
    public var name: String {
        switch self {
        case .nanoseconds: "ns"
        case .microseconds: "us"
        case .milliseconds: "ms"
        case .seconds: "s"
        case .minutes: "m"
        case .hours: "h"
        }
    }
}

/// The smallest and largest timestamps InfluxDB 1.x accepts (nanoseconds since the epoch).
///
/// InfluxDB reserves `Int64.min` and `Int64.min + 1` as sentinels and uses `Int64.max` as an exclusive bound, so
/// those three values are rejected.
public enum TimeRange {
    public static let minNanoseconds: Int64 = .min + 2
    public static let maxNanoseconds: Int64 = .max - 1
}

/// A field value as decoded. String values borrow the decoder's buffers (see ``LineDecoder``).
public enum FieldValue {
    case float(Double)
    case integer(Int64)
    case unsigned(UInt64)
    case boolean(Bool)
    case string(UnsafeBufferPointer<UInt8>)

    /// The line-protocol type name used in `metricsd parse` output.
    public var typeName: String {
        switch self {
        case .float: "float"
        case .integer: "integer"
        case .unsigned: "unsigned"
        case .boolean: "boolean"
        case .string: "string"
        }
    }
}

/// One tag of a decoded line; both spans are unescaped and borrow the decoder's buffers.
public struct Tag {
    public var key: UnsafeBufferPointer<UInt8>
    public var value: UnsafeBufferPointer<UInt8>

    @inline(__always)
    public init(key: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>) {
        self.key = key
        self.value = value
    }
}

/// One field of a decoded line; the key is unescaped and borrows the decoder's buffers.
public struct Field {
    public var key: UnsafeBufferPointer<UInt8>
    public var value: FieldValue

    @inline(__always)
    public init(key: UnsafeBufferPointer<UInt8>, value: FieldValue) {
        self.key = key
        self.value = value
    }
}

@available(*, unavailable) extension FieldValue: Sendable {}
@available(*, unavailable) extension Tag: Sendable {}
@available(*, unavailable) extension Field: Sendable {}

extension UnsafeBufferPointer where Element == UInt8 {
    /// Byte-wise equality (memcmp semantics).
    @inlinable
    func bytesEqual(_ other: UnsafeBufferPointer<UInt8>) -> Bool {
        guard count == other.count else { return false }
        if count == 0 { return true }
        return memcmpBytes(baseAddress!, other.baseAddress!, count) == 0
    }

    /// Lexicographic byte order, as `bytes.Compare` in Go.
    @inlinable
    func bytesLess(_ other: UnsafeBufferPointer<UInt8>) -> Bool {
        let n = Swift.min(count, other.count)
        if n > 0 {
            let c = memcmpBytes(baseAddress!, other.baseAddress!, n)
            if c != 0 { return c < 0 }
        }
        return count < other.count
    }
}

@inlinable
func memcmpBytes(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Int32 {
    var i = 0
    while i < n {
        let x = a[i]
        let y = b[i]
        if x != y { return x < y ? -1 : 1 }
        i &+= 1
    }
    return 0
}

extension Precision {
    /// The precision's byte where batches are kept (a WAL record, a dead letter): line-protocol batches use 0…5,
    /// event bodies their own code.
    public var walCode: UInt8 { UInt8(Precision.allCases.firstIndex(of: self)!) }
    public init?(walCode: UInt8) {
        guard Int(walCode) < Precision.allCases.count else { return nil }
        self = Precision.allCases[Int(walCode)]
    }
}
