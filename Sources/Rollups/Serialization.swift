/// A compact little-endian binary form of rollups, for storage (the SQLite `data` column).
///
/// Format 3 (written): version byte; a kind byte whose low bits are the kind, bit 7 set for an integer field and bit
/// 6 for a cell that keeps its points; count as a varint; then per kind — numeric: the aggregate as in format 2 and
/// the times of the minimum and the maximum (zigzag deltas from the first time), then either the points (each a
/// time delta from the previous and a ``ByteWriter/number(_:)``) or the sketch; boolean: true count, first time
/// (delta from the base) and value, last time (delta from the first) and value, then the points' time deltas and
/// their values as bits; string: first time and bytes, last time and bytes, then each point's time delta and
/// bytes; distinct: last time (delta), the sketch. Times of a boolean or string cell are relative to its first time.
///
/// Format 2 (read): version byte, kind byte, count as a varint, then per kind —
/// numeric: the aggregate (count; a flags byte saying which of last, min, max and shift repeat an earlier value;
/// first and the values that do not repeat, then sum, shifted sum and shifted sum of squares, each as
/// ``ByteWriter/number(_:)``; first time as a zigzag delta from a base, last time as a delta from the first) and
/// the sketch (count, zero count, then per sign the bin count and each bin as an index delta and a count, all
/// varints); boolean: true count, last time (delta from the base), last value byte; string: last time (delta),
/// length, bytes; distinct: last time (delta), the sketch (``DistinctSketch/write(to:)``).
/// Format 1 (the first release: fixed 8-byte words) is still read, for migrating old databases. Reading rejects
/// anything malformed or from a newer version instead of guessing.
public struct ByteWriter: ~Copyable {
    /// `capacity` bytes of memory owned by the writer; `count` of them are written. Writes check the capacity once
    /// and store through the pointer, so a writer reused per row (``reset()``) allocates nothing in steady state.
    /// Non-copyable: exactly one owner frees the memory, and access checks are static (no runtime cost).
    private var base: UnsafeMutableRawPointer
    private var capacity: Int
    public private(set) var count = 0

    public init(capacity: Int = 256) {
        self.capacity = Swift.max(capacity, 64)
        base = .allocate(byteCount: self.capacity, alignment: 8)
    }

    deinit { base.deallocate() }

    /// The written bytes (a copy).
    public var bytes: [UInt8] { Array(UnsafeRawBufferPointer(start: base, count: count)) }

    /// Calls `body` with the written bytes, without copying them.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        body(UnsafeRawBufferPointer(start: base, count: count))
    }

    /// Empties the buffer, keeping its memory.
    public mutating func reset() { count = 0 }

    @inline(__always)
    private mutating func reserve(_ n: Int) {
        if count + n > capacity { grow(n) }
    }

    private mutating func grow(_ n: Int) {
        let bigger = Swift.max(capacity * 2, count + n)
        let fresh = UnsafeMutableRawPointer.allocate(byteCount: bigger, alignment: 8)
        fresh.copyMemory(from: base, byteCount: count)
        base.deallocate()
        base = fresh
        capacity = bigger
    }

    @inline(__always)
    private mutating func store<T: FixedWidthInteger>(_ v: T) {
        reserve(MemoryLayout<T>.size)
        base.storeBytes(of: v.littleEndian, toByteOffset: count, as: T.self)
        count += MemoryLayout<T>.size
    }

    public mutating func u8(_ v: UInt8) { store(v) }
    public mutating func u64(_ v: UInt64) { store(v) }
    public mutating func i64(_ v: Int64) { store(v) }
    public mutating func f64(_ v: Double) { store(v.bitPattern) }
    /// LEB128: seven bits per byte, low first.
    public mutating func varint(_ v: UInt64) {
        reserve(10)
        var v = v
        var at = count
        while v >= 0x80 {
            base.storeBytes(of: UInt8(truncatingIfNeeded: v) | 0x80, toByteOffset: at, as: UInt8.self)
            v >>= 7
            at += 1
        }
        base.storeBytes(of: UInt8(v), toByteOffset: at, as: UInt8.self)
        count = at + 1
    }
    /// A signed varint (zigzag: small magnitudes of either sign stay short).
    public mutating func zigzag(_ v: Int64) { varint(UInt64(bitPattern: (v << 1) ^ (v >> 63))) }
    /// A double, exactly: an integral value of magnitude below 2⁵³ as a varint of `zigzag(v) << 1` (one byte for
    /// 0, two up to ±31, …), anything else as the byte 1 and its eight bytes.
    public mutating func number(_ v: Double) {
        if v.rounded(.towardZero) == v, v.magnitude < 9_007_199_254_740_992, v != 0 || v.sign == .plus {
            let i = Int64(v)
            varint(UInt64(bitPattern: (i << 1) ^ (i >> 63)) << 1)
        } else {
            u8(1)
            f64(v)
        }
    }
    public mutating func bytes(_ v: [UInt8]) { v.withUnsafeBytes { bytes($0) } }
    public mutating func bytes(_ v: UnsafeRawBufferPointer) {
        guard let source = v.baseAddress, !v.isEmpty else { return }
        reserve(v.count)
        (base + count).copyMemory(from: source, byteCount: v.count)
        count += v.count
    }
    /// The UTF-8 bytes of `s` (no length).
    public mutating func utf8(_ s: String) {
        var s = s
        s.withUTF8 { bytes(UnsafeRawBufferPointer($0)) }
    }
    /// Reserves one byte for the length of what follows; ``endLength(_:)`` fills it in. Most parts are shorter
    /// than 128 bytes, so the length costs one byte and no move.
    public mutating func beginLength() -> Int {
        u8(0)
        return count - 1
    }

    /// Writes the length of the bytes after `mark` (from ``beginLength()``) as a varint at `mark`, moving them
    /// only when it needs more than one byte.
    public mutating func endLength(_ mark: Int) {
        let length = count - mark - 1
        if length < 0x80 {
            base.storeBytes(of: UInt8(length), toByteOffset: mark, as: UInt8.self)
        } else {
            (base + mark).copyMemory(from: base + mark + 1, byteCount: length)
            count -= 1
            insertVarint(UInt64(length), at: mark)
        }
    }

    /// Inserts `v` as a varint at `offset`, moving the bytes after it (a length put in front of its payload once
    /// the payload is written: a few dozen bytes moved, cheaper than writing it twice).
    public mutating func insertVarint(_ v: UInt64, at offset: Int) {
        precondition(offset <= count)
        var width = 1
        while width < 10 && v >> (7 * UInt64(width)) != 0 { width += 1 }
        reserve(width)
        (base + offset + width).copyMemory(from: base + offset, byteCount: count - offset)
        var v = v
        for k in 0..<width {
            base.storeBytes(
                of: UInt8(truncatingIfNeeded: v) | (k < width - 1 ? 0x80 : 0), toByteOffset: offset + k, as: UInt8.self)
            v >>= 7
        }
        count += width
    }
}

public struct ByteReader {
    let bytes: [UInt8]
    public private(set) var offset = 0
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public var atEnd: Bool { offset == bytes.count }
    /// Moves to `offset` (at most the end): past a part whose length is known.
    public mutating func seek(to offset: Int) { self.offset = Swift.min(Swift.max(offset, 0), bytes.count) }
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
    public mutating func varint() -> UInt64? {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while offset < bytes.count, shift < 64 {
            let b = bytes[offset]
            offset += 1
            v |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return v }
            shift += 7
        }
        return nil
    }
    public mutating func zigzag() -> Int64? {
        varint().map { Int64(bitPattern: ($0 >> 1) ^ (0 &- ($0 & 1))) }
    }
    /// Reads ``ByteWriter/number(_:)``.
    public mutating func number() -> Double? {
        guard let word = varint() else { return nil }
        if word & 1 == 0 {
            let z = word >> 1
            return Double(Int64(bitPattern: (z >> 1) ^ (0 &- (z & 1))))
        }
        guard word == 1 else { return nil }
        return f64()
    }
    public mutating func raw(limit: Int = 1 << 24) -> [UInt8]? {
        guard let n = u64(), n <= UInt64(limit) else { return nil }
        return take(Int(n))
    }
    /// The next `n` bytes, or `nil` if fewer remain.
    public mutating func take(_ n: Int) -> [UInt8]? {
        guard n >= 0, offset + n <= bytes.count else { return nil }
        defer { offset += n }
        return Array(bytes[offset..<(offset + n)])
    }
}

extension NumericAggregate {
    /// Writes the aggregate compactly: values that repeat another (a constant series has first = last = min =
    /// max = shift) cost two bits of a flags byte instead of eight bytes; integral values are varints; times are
    /// deltas (first from `base`, last from first), so fields of one point — which share a timestamp — cost a byte.
    func write(to w: inout ByteWriter, base: Int64) {
        func same(_ a: Double, _ b: Double?) -> Bool { a.bitPattern == b?.bitPattern }
        func code(_ v: Double, _ a: Double, _ b: Double? = nil, _ c: Double? = nil) -> UInt8 {
            same(v, a) ? 1 : same(v, b) ? 2 : same(v, c) ? 3 : 0
        }
        let lastCode = code(last, first)
        let minCode = code(min, first, last)
        let maxCode = code(max, first, last)
        let shiftCode = code(shift, first, last, min)
        w.varint(UInt64(bitPattern: count))
        w.u8(lastCode | minCode << 2 | maxCode << 4 | shiftCode << 6)
        w.number(first)
        if lastCode == 0 { w.number(last) }
        if minCode == 0 { w.number(min) }
        if maxCode == 0 { w.number(max) }
        if shiftCode == 0 { w.number(shift) }
        w.number(sum)
        w.number(shiftedSum)
        w.number(shiftedSquares)
        w.zigzag(firstTime &- base)
        w.zigzag(lastTime &- firstTime)
        w.zigzag(minTime &- firstTime)
        w.zigzag(maxTime &- firstTime)
    }

    /// Reads what ``write(to:base:)`` wrote (format 3), or format 2 (`version` 2: no times of the minimum and
    /// maximum, which read as the first time).
    init?(reading r: inout ByteReader, base: Int64, version: UInt8 = FieldRollup.formatVersion) {
        guard let count = r.varint(), let flags = r.u8(), let first = r.number() else { return nil }
        func value(_ code: UInt8, _ a: Double, _ b: Double? = nil, _ c: Double? = nil) -> Double? {
            switch code {
            case 0: r.number()
            case 1: a
            case 2: b
            default: c
            }
        }
        guard let last = value(flags & 3, first), let min = value(flags >> 2 & 3, first, last),
            let max = value(flags >> 4 & 3, first, last), let shift = value(flags >> 6, first, last, min),
            let sum = r.number(), let shiftedSum = r.number(), let shiftedSquares = r.number(),
            let firstDelta = r.zigzag(), let lastDelta = r.zigzag()
        else { return nil }
        let firstTime = base &+ firstDelta
        var minTime = firstTime
        var maxTime = firstTime
        if version >= 3 {
            guard let minDelta = r.zigzag(), let maxDelta = r.zigzag() else { return nil }
            minTime = firstTime &+ minDelta
            maxTime = firstTime &+ maxDelta
        }
        self.init(
            count: Int64(bitPattern: count), shiftedSum: shiftedSum, shiftedSquares: shiftedSquares, shift: shift,
            min: min, max: max, first: first, firstTime: firstTime, last: last,
            lastTime: firstTime &+ lastDelta, sum: sum)
        self.minTime = minTime
        self.maxTime = maxTime
    }

    init(
        count: Int64, shiftedSum: Double, shiftedSquares: Double, shift: Double, min: Double, max: Double,
        first: Double, firstTime: Int64, last: Double, lastTime: Int64, sum: Double
    ) {
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
        minTime = firstTime
        maxTime = firstTime
    }

    /// Format 1: eleven fixed 8-byte words.
    init?(readingVersion1 r: inout ByteReader) {
        guard let count = r.i64(), let shiftedSum = r.f64(), let shiftedSquares = r.f64(), let shift = r.f64(),
            let min = r.f64(), let max = r.f64(), let first = r.f64(), let firstTime = r.i64(), let last = r.f64(),
            let lastTime = r.i64(), let sum = r.f64()
        else { return nil }
        self.init(
            count: count, shiftedSum: shiftedSum, shiftedSquares: shiftedSquares, shift: shift, min: min, max: max,
            first: first, firstTime: firstTime, last: last, lastTime: lastTime, sum: sum)
        minTime = firstTime
        maxTime = firstTime
    }
}

extension FieldRollup {
    public static let formatVersion: UInt8 = 3
    /// The oldest format still read.
    public static let oldestReadableVersion: UInt8 = 2

    static let integerFlag: UInt8 = 0x80
    static let exactFlag: UInt8 = 0x40

    /// The storage form of this rollup: the format version byte, then ``write(to:base:)`` with base 0.
    public func serialized() -> [UInt8] {
        var w = ByteWriter()
        w.u8(Self.formatVersion)
        write(to: &w, base: 0)
        return w.bytes
    }

    /// The time this rollup's times are written relative to, for the next rollup of the same row: a numeric cell's
    /// first time, a boolean or string cell's first time, a distinct cell's last time.
    public var timeAnchor: Int64 {
        switch kind {
        case .numeric:
            // Kept points are in time order: the first one's time, without deriving the whole aggregate.
            isExact && pointCount > 0 ? withPoints { $0[0].time } : numeric.firstTime
        case .boolean, .string: firstTime
        case .distinct: lastTime
        }
    }

    /// Appends this rollup in the current format, without the version byte (the caller writes it once for many).
    /// Times are written relative to `base`: the bucket start, or the previous field's ``timeAnchor``.
    public func write(to w: inout ByteWriter, base: Int64) {
        let exact = isExact && count > 0
        var flags = kind.rawValue
        if kind == .numeric && isInteger { flags |= Self.integerFlag }
        if exact { flags |= Self.exactFlag }
        w.u8(flags)
        w.varint(UInt64(bitPattern: count))
        switch kind {
        case .numeric:
            let aggregate = numeric
            aggregate.write(to: &w, base: base)
            if exact {
                var previous = aggregate.firstTime
                withPoints { points in
                    for p in points {
                        w.zigzag(p.time &- previous)
                        w.number(p.value)
                        previous = p.time
                    }
                }
            } else {
                sketch.write(to: &w)
            }
        case .boolean:
            w.varint(UInt64(bitPattern: trueCount))
            w.zigzag(firstTime &- base)
            w.u8(firstBool ? 1 : 0)
            w.zigzag(lastTime &- firstTime)
            w.u8(lastBool ? 1 : 0)
            if exact {
                withPoints { points in
                    var previous = firstTime
                    for p in points {
                        w.zigzag(p.time &- previous)
                        previous = p.time
                    }
                    var byte: UInt8 = 0
                    for (k, p) in points.enumerated() {
                        if p.value != 0 { byte |= 1 << UInt8(k & 7) }
                        if k & 7 == 7 || k == points.count - 1 {
                            w.u8(byte)
                            byte = 0
                        }
                    }
                }
            }
        case .string:
            w.zigzag(firstTime &- base)
            w.varint(UInt64(firstBytes.count))
            w.bytes(firstBytes)
            w.zigzag(lastTime &- firstTime)
            w.varint(UInt64(lastBytes.count))
            w.bytes(lastBytes)
            if exact {
                var previous = firstTime
                for p in points {  // one array: a string cell's points come with its bytes
                    w.zigzag(p.time &- previous)
                    previous = p.time
                    withBytes(of: p) { bytes in
                        w.varint(UInt64(bytes.count))
                        bytes.withUnsafeBytes { w.bytes($0) }
                    }
                }
            }
        case .distinct:
            w.zigzag(lastTime &- base)
            distinct.write(to: &w)
        }
    }

    /// Reads ``serialized()`` (format 1, 2 or 3); `nil` for malformed bytes or an unknown (newer) format version.
    public init?(serialized bytes: [UInt8]) {
        var r = ByteReader(bytes)
        switch r.u8() {
        case 1: self.init(readingVersion1: &r)
        case let v? where v >= Self.oldestReadableVersion && v <= Self.formatVersion:
            self.init(reading: &r, base: 0, version: v)
        default: return nil
        }
        guard r.atEnd else { return nil }
    }

    /// Reads what ``write(to:base:)`` wrote with the same `base` (format 3), or format 2. With `sketches` false a
    /// numeric rollup's quantile sketch is skipped and left empty (for reads that compute no quantile: nothing is
    /// allocated); its points are always read.
    public init?(reading r: inout ByteReader, base: Int64, sketches: Bool = true, version: UInt8 = formatVersion) {
        guard let flags = r.u8(), let kind = FieldKind(rawValue: flags & 0x3F), let count = r.varint(),
            count <= UInt64(Int64.max)
        else { return nil }
        if version < 3 && flags > 3 { return nil }
        self.init(kind: kind)
        self.count = Int64(bitPattern: count)
        let exact = flags & Self.exactFlag != 0
        if exact && (count > 4_096 || kind == .distinct) { return nil }
        var decoded: [ExactPoint] = []
        switch kind {
        case .numeric:
            guard let numeric = NumericAggregate(reading: &r, base: base, version: version) else { return nil }
            // A cell keeping its points derives its aggregate from them (the stored one is the same).
            if !exact { self.numeric = numeric }
            isInteger = version >= 3 && flags & Self.integerFlag != 0
            if exact {
                // Straight into the cell (inline for up to six points: no array); points come in time order, a
                // row that says otherwise is not trusted.
                var time = numeric.firstTime
                var previous = Int64.min
                for _ in 0..<count {
                    guard let delta = r.zigzag(), let value = r.number() else { return nil }
                    time &+= delta
                    guard time >= previous else { return nil }
                    previous = time
                    appendReadPoint(ExactPoint(time: time, value: value), of: Int(count))
                }
            } else if sketches {
                guard let sketch = QuantileSketch(reading: &r) else { return nil }
                self.sketch = sketch
            } else {
                guard QuantileSketch.skip(reading: &r) else { return nil }
            }
        case .boolean:
            guard let t = r.varint() else { return nil }
            trueCount = Int64(bitPattern: t)
            if version >= 3 {
                guard let first = r.zigzag(), let firstValue = r.u8(), let last = r.zigzag(), let lastValue = r.u8()
                else { return nil }
                firstTime = base &+ first
                firstBool = firstValue != 0
                lastTime = firstTime &+ last
                lastBool = lastValue != 0
                if exact {
                    var time = firstTime
                    var times: [Int64] = []
                    times.reserveCapacity(Int(count))
                    for _ in 0..<count {
                        guard let delta = r.zigzag() else { return nil }
                        time &+= delta
                        times.append(time)
                    }
                    decoded.reserveCapacity(times.count)
                    var byte: UInt8 = 0
                    for (k, t) in times.enumerated() {
                        if k & 7 == 0 {
                            guard let b = r.u8() else { return nil }
                            byte = b
                        }
                        decoded.append(ExactPoint(time: t, value: byte & (1 << UInt8(k & 7)) != 0 ? 1 : 0))
                    }
                }
            } else {
                guard let time = r.zigzag(), let b = r.u8() else { return nil }
                lastTime = base &+ time
                lastBool = b != 0
                firstTime = lastTime
                firstBool = lastBool
            }
        case .string:
            if version >= 3 {
                guard let first = r.zigzag(), let n = r.varint(), n <= 1 << 24, let firstValue = r.take(Int(n)),
                    let last = r.zigzag(), let m = r.varint(), m <= 1 << 24, let lastValue = r.take(Int(m))
                else { return nil }
                firstTime = base &+ first
                firstBytes = firstValue
                lastTime = firstTime &+ last
                lastBytes = lastValue
                if exact {
                    var time = firstTime
                    for _ in 0..<count {
                        guard let delta = r.zigzag(), let n = r.varint(), n <= 1 << 24, let bytes = r.take(Int(n))
                        else { return nil }
                        time &+= delta
                        let word = UInt64(text.count) << 32 | UInt64(bytes.count)
                        text.append(contentsOf: bytes)
                        decoded.append(ExactPoint(time: time, value: Double(bitPattern: word)))
                    }
                }
            } else {
                guard let time = r.zigzag(), let n = r.varint(), n <= 1 << 24, let s = r.take(Int(n)) else {
                    return nil
                }
                lastTime = base &+ time
                lastBytes = s
                firstTime = lastTime
                firstBytes = s
            }
        case .distinct:
            guard let time = r.zigzag(), let sketch = DistinctSketch(reading: &r) else { return nil }
            lastTime = base &+ time
            distinct = sketch
        }
        // Points come in time order; a row that says otherwise is not trusted (numeric cells checked as read).
        if exact && kind != .numeric {
            for k in decoded.indices.dropFirst() where decoded[k - 1].time > decoded[k].time { return nil }
            guard decoded.count == count else { return nil }
            setPoints(decoded)
        }
    }

    /// The ``timeAnchor`` of a rollup written by ``write(to:base:)``, read without building the rollup: `r` is
    /// left inside it (the caller moves on by the rollup's length). `nil` when malformed.
    public static func timeAnchor(reading r: inout ByteReader, base: Int64, version: UInt8 = formatVersion)
        -> Int64?
    {
        guard let flags = r.u8(), let kind = FieldKind(rawValue: flags & 0x3F), r.varint() != nil else { return nil }
        switch kind {
        case .numeric:
            return NumericAggregate(reading: &r, base: base, version: version)?.firstTime
        case .boolean:
            guard r.varint() != nil, let time = r.zigzag() else { return nil }
            return base &+ time
        case .string, .distinct:
            return r.zigzag().map { base &+ $0 }
        }
    }

    /// Format 1 (after the version byte): kind, count, then fixed 8-byte words.
    init?(readingVersion1 r: inout ByteReader) {
        guard let kindByte = r.u8(), let kind = FieldKind(rawValue: kindByte), let count = r.i64() else { return nil }
        self.init(kind: kind)
        self.count = count
        isInteger = false
        switch kind {
        case .numeric:
            guard let numeric = NumericAggregate(readingVersion1: &r), let sketchBytes = r.raw(),
                let sketch = QuantileSketch(version1: sketchBytes)
            else { return nil }
            self.numeric = numeric
            self.sketch = sketch
        case .boolean:
            guard let t = r.i64(), let time = r.i64(), let b = r.u8() else { return nil }
            trueCount = t
            lastTime = time
            lastBool = b != 0
            firstTime = time
            firstBool = lastBool
        case .string:
            guard let time = r.i64(), let s = r.raw() else { return nil }
            lastTime = time
            lastBytes = s
            firstTime = time
            firstBytes = s
        case .distinct:
            return nil  // format 1 had no distinct-count fields
        }
    }
}
