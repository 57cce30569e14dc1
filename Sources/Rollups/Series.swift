public import LineProtocol

/// A tag pair with owned strings.
public struct TagPair: Sendable, Hashable {
    public var key: String
    public var value: String
    public init(_ key: String, _ value: String) {
        self.key = key
        self.value = value
    }
}

/// The identity of a series: measurement and tags (sorted by key). Immutable and shared by reference, so closed
/// buckets can point at their series without copying strings.
public final class SeriesInfo: Sendable, Hashable, CustomStringConvertible {
    /// Stable 64-bit hash of the measurement and tags (the same bytes always give the same id).
    public let id: UInt64
    public let measurement: String
    public let tags: [TagPair]

    public init(id: UInt64, measurement: String, tags: [TagPair]) {
        self.id = id
        self.measurement = measurement
        self.tags = tags
    }

    /// Builds the id from the strings (the same hash the hot path computes from the decoder's bytes).
    public convenience init(measurement: String, tags: [TagPair]) {
        let sorted = tags.sorted { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) }
        var h = SeriesHasher()
        Array(measurement.utf8).withUnsafeBufferPointer { h.addName($0) }
        for t in sorted {
            Array(t.key.utf8).withUnsafeBufferPointer { h.addTagKey($0) }
            Array(t.value.utf8).withUnsafeBufferPointer { h.addTagValue($0) }
        }
        self.init(id: h.value, measurement: measurement, tags: sorted)
    }

    public func tag(_ key: String) -> String? { tags.first(where: { $0.key == key })?.value }

    public static func == (a: SeriesInfo, b: SeriesInfo) -> Bool {
        a === b || (a.id == b.id && a.measurement == b.measurement && a.tags == b.tags)
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(id) }

    /// `measurement,k=v,...` (unescaped; for logs and errors).
    public var description: String {
        ([measurement] + tags.map { "\($0.key)=\($0.value)" }).joined(separator: ",")
    }
}

/// A fast 64-bit hash over the series-key bytes (measurement, then each tag key and value), with separators so
/// that `a,b=c` and `ab=c`-style ambiguities cannot collide by construction. Collisions of the hash itself are
/// handled by the interning table, which compares the full key.
public struct SeriesHasher {
    public private(set) var value: UInt64 = 0x9E37_79B9_7F4A_7C15

    public init() {}

    @inline(__always)
    mutating func mix(_ w: UInt64) {
        var h = (value ^ w) &* 0xFF51_AFD7_ED55_8CCD
        h ^= h >> 32
        value = h
    }

    @inline(__always)
    mutating func add(_ bytes: UnsafeBufferPointer<UInt8>, separator: UInt64) {
        let n = bytes.count
        guard let base = bytes.baseAddress else {
            mix(separator)
            return
        }
        let raw = UnsafeRawPointer(base)
        var i = 0
        while i &+ 8 <= n {
            mix(UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)))
            i &+= 8
        }
        var tail: UInt64 = 0
        var shift: UInt64 = 0
        while i < n {
            tail |= UInt64(base[i]) << shift
            shift &+= 8
            i &+= 1
        }
        mix(tail ^ (UInt64(truncatingIfNeeded: n) << 56) ^ separator)
    }

    public mutating func addName(_ bytes: UnsafeBufferPointer<UInt8>) { add(bytes, separator: 0xA1) }
    public mutating func addTagKey(_ bytes: UnsafeBufferPointer<UInt8>) { add(bytes, separator: 0xB2) }
    public mutating func addTagValue(_ bytes: UnsafeBufferPointer<UInt8>) { add(bytes, separator: 0xC3) }
}

/// One point as the rollups take it: spans borrowed from whatever decoded it — a ``LineDecoder``, an event, the
/// daemon's own figures — valid only during the call it is passed to. Tags are sorted by key, without repeats.
public struct PointView {
    public var measurement: UnsafeBufferPointer<UInt8>
    public var tags: UnsafeBufferPointer<Tag>
    public var fields: UnsafeBufferPointer<Field>
    public var timestamp: Int64?

    @inline(__always)
    public init(
        measurement: UnsafeBufferPointer<UInt8>, tags: UnsafeBufferPointer<Tag>, fields: UnsafeBufferPointer<Field>,
        timestamp: Int64?
    ) {
        self.measurement = measurement
        self.tags = tags
        self.fields = fields
        self.timestamp = timestamp
    }

    /// The last line `decoder` decoded.
    @inline(__always)
    public init(_ decoder: LineDecoder) {
        self.init(
            measurement: decoder.measurement, tags: decoder.tags, fields: decoder.fields, timestamp: decoder.timestamp)
    }

    /// The series hash (measurement and tags).
    @inline(__always)
    func seriesHash() -> UInt64 {
        var h = SeriesHasher()
        h.addName(measurement)
        for tag in tags {
            h.addTagKey(tag.key)
            h.addTagValue(tag.value)
        }
        return h.value
    }
}

@available(*, unavailable) extension PointView: Sendable {}
