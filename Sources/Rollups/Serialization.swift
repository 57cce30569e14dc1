/// A compact little-endian binary form of rollups, for storage (the SQLite `data` column).
///
/// Layout: version byte (1), kind byte, count, then per kind — numeric: the ten `NumericAggregate` words and the
/// sketch; boolean: true count, last time, last value; string: last time, length, bytes. Reading rejects anything
/// malformed or from a newer version instead of guessing.
public struct ByteWriter {
    public private(set) var bytes: [UInt8] = []
    public init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }
    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    public mutating func f64(_ v: Double) { u64(v.bitPattern) }
    public mutating func raw(_ v: [UInt8]) {
        u64(UInt64(v.count))
        bytes.append(contentsOf: v)
    }
}

public struct ByteReader {
    let bytes: [UInt8]
    var offset = 0
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public var atEnd: Bool { offset == bytes.count }
    public mutating func u8() -> UInt8? {
        guard offset < bytes.count else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }
    public mutating func u64() -> UInt64? {
        guard offset + 8 <= bytes.count else { return nil }
        var v: UInt64 = 0
        for k in 0..<8 { v |= UInt64(bytes[offset + k]) << (8 * UInt64(k)) }
        offset += 8
        return v
    }
    public mutating func i64() -> Int64? { u64().map { Int64(bitPattern: $0) } }
    public mutating func f64() -> Double? { u64().map { Double(bitPattern: $0) } }
    public mutating func raw(limit: Int = 1 << 24) -> [UInt8]? {
        guard let n = u64(), n <= UInt64(limit), offset + Int(n) <= bytes.count else { return nil }
        defer { offset += Int(n) }
        return Array(bytes[offset..<(offset + Int(n))])
    }
}

extension NumericAggregate {
    func write(to w: inout ByteWriter) {
        w.i64(count)
        w.f64(shiftedSum)
        w.f64(shiftedSquares)
        w.f64(shift)
        w.f64(min)
        w.f64(max)
        w.f64(first)
        w.i64(firstTime)
        w.f64(last)
        w.i64(lastTime)
        w.f64(sum)
    }

    init?(reading r: inout ByteReader) {
        guard let count = r.i64(), let shiftedSum = r.f64(), let shiftedSquares = r.f64(), let shift = r.f64(),
            let min = r.f64(), let max = r.f64(), let first = r.f64(), let firstTime = r.i64(), let last = r.f64(),
            let lastTime = r.i64(), let sum = r.f64()
        else { return nil }
        self.init()
        self.count = count
        self.shiftedSum = shiftedSum
        self.shiftedSquares = shiftedSquares
        self.shift = shift
        self.min = min
        self.max = max
        self.first = first
        self.firstTime = firstTime
        self.last = last
        self.lastTime = lastTime
        self.sum = sum
    }
}

extension FieldRollup {
    static let formatVersion: UInt8 = 1

    /// The storage form of this rollup.
    public func serialized() -> [UInt8] {
        var w = ByteWriter()
        w.u8(Self.formatVersion)
        w.u8(kind.rawValue)
        w.i64(count)
        switch kind {
        case .numeric:
            numeric.write(to: &w)
            sketch.write(lengthPrefixedTo: &w)
        case .boolean:
            w.i64(trueCount)
            w.i64(lastTime)
            w.u8(lastBool ? 1 : 0)
        case .string:
            w.i64(lastTime)
            w.raw(lastBytes)
        }
        return w.bytes
    }

    /// Reads ``serialized()``; `nil` for malformed bytes or an unknown (newer) format version.
    public init?(serialized bytes: [UInt8]) {
        var r = ByteReader(bytes)
        guard r.u8() == Self.formatVersion, let kindByte = r.u8(), let kind = FieldKind(rawValue: kindByte),
            let count = r.i64()
        else { return nil }
        self.init(kind: kind)
        self.count = count
        switch kind {
        case .numeric:
            guard let numeric = NumericAggregate(reading: &r), let sketchBytes = r.raw(),
                let sketch = QuantileSketch(serialized: sketchBytes)
            else { return nil }
            self.numeric = numeric
            self.sketch = sketch
        case .boolean:
            guard let t = r.i64(), let time = r.i64(), let b = r.u8() else { return nil }
            trueCount = t
            lastTime = time
            lastBool = b != 0
        case .string:
            guard let time = r.i64(), let s = r.raw() else { return nil }
            lastTime = time
            lastBytes = s
        }
        guard r.atEnd else { return nil }
    }
}
