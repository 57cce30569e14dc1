#if canImport(Glibc)
    import func Glibc.log
#elseif canImport(Darwin)
    import func Darwin.log
#endif

/// A HyperLogLog distinct-count sketch (Flajolet et al. 2007, with the small-range linear-counting correction),
/// precision 12: 4,096 one-byte registers, relative standard error 1.04 / √4096 ≈ 1.6 %. Below about 10,000
/// distinct values the linear-counting branch applies and the error is smaller still.
///
/// Mergeable exactly: the sketch of a union is the register-wise maximum of the sketches, so per-minute sketches
/// merge into hours, stored rows merge with late ones, and partial rollups from several instances merge at query
/// time — all giving the same registers as one sketch over every value.
///
/// Empty sketches hold no memory; the registers are allocated on the first value.
public struct DistinctSketch: Sendable, Equatable {
    public static let precision = 12
    public static let registerCount = 1 << precision
    /// Relative standard error of ``estimate``.
    public static let standardError = 1.04 / Double(registerCount).squareRoot()

    public private(set) var registers: [UInt8] = []

    public init() {}

    /// Adds a value by its 64-bit hash (see ``hash(_:)``; any well-mixed hash works if used consistently).
    @inline(__always)
    public mutating func add(hash: UInt64) {
        if registers.isEmpty { registers = Array(repeating: 0, count: Self.registerCount) }
        let index = Int(truncatingIfNeeded: hash >> UInt64(64 - Self.precision))
        // The rank of the first 1 bit in the remaining 52 bits (1-based), at most 53.
        let rest = hash << UInt64(Self.precision) | (1 << UInt64(Self.precision - 1))
        let rank = UInt8(truncatingIfNeeded: rest.leadingZeroBitCount + 1)
        registers.withUnsafeMutableBufferPointer { r in
            if rank > r[index] { r[index] = rank }
        }
    }

    /// The hash ``add(hash:)`` expects for a value given as bytes (a user id): FNV-1a, then MurmurHash3's 64-bit
    /// finalizer so that the top bits (the register index) are well mixed.
    public static func hash(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01B3
        }
        h ^= h >> 33
        h = h &* 0xFF51_AFD7_ED55_8CCD
        h ^= h >> 33
        h = h &* 0xC4CE_B9FE_1A85_EC53
        h ^= h >> 33
        return h
    }

    public static func hash(_ text: String) -> UInt64 {
        var t = text
        return t.withUTF8 { hash($0) }
    }

    /// Register-wise maximum: afterwards `self` is the sketch of the union.
    public mutating func merge(_ other: DistinctSketch) {
        guard !other.registers.isEmpty else { return }
        guard !registers.isEmpty else {
            registers = other.registers
            return
        }
        registers.withUnsafeMutableBufferPointer { r in
            other.registers.withUnsafeBufferPointer { o in
                for i in 0..<Self.registerCount where o[i] > r[i] { r[i] = o[i] }
            }
        }
    }

    /// The estimated number of distinct values added.
    public var estimate: Double {
        guard !registers.isEmpty else { return 0 }
        let m = Double(Self.registerCount)
        var sum = 0.0
        var zeros = 0
        for r in registers {
            sum += 1 / Double(UInt64(1) << UInt64(r))
            if r == 0 { zeros += 1 }
        }
        let alpha = 0.7213 / (1 + 1.079 / m)
        let raw = alpha * m * m / sum
        if raw <= 2.5 * m && zeros > 0 {
            return m * log(m / Double(zeros))  // linear counting: exact-ish for small sets
        }
        return raw
    }

    // MARK: - Serialization

    /// Mode byte: 0 empty; 1 sparse — the number of non-zero registers, then each as an index delta and a value
    /// (varints); 2 dense — every register as a byte. Sparse is written when it is the smaller form.
    public func write(to w: inout ByteWriter) {
        guard !registers.isEmpty else {
            w.u8(0)
            return
        }
        let nonZero = registers.reduce(0) { $0 + ($1 == 0 ? 0 : 1) }
        if nonZero * 3 < Self.registerCount {
            w.u8(1)
            w.varint(UInt64(nonZero))
            var previous = 0
            for (i, r) in registers.enumerated() where r != 0 {
                w.varint(UInt64(i - previous))
                w.u8(r)
                previous = i
            }
        } else {
            w.u8(2)
            w.bytes(registers)
        }
    }

    public init?(reading r: inout ByteReader) {
        switch r.u8() {
        case 0:
            return
        case 1:
            guard let n = r.varint(), n <= UInt64(Self.registerCount) else { return nil }
            var registers = Array(repeating: UInt8(0), count: Self.registerCount)
            var index = 0
            for k in 0..<Int(n) {
                guard let delta = r.varint(), let value = r.u8(), value <= 64 - UInt8(Self.precision) + 1 else {
                    return nil
                }
                guard delta < UInt64(Self.registerCount), k == 0 || delta > 0 else { return nil }
                index += Int(delta)
                guard index < Self.registerCount, value > 0 else { return nil }
                registers[index] = value
            }
            self.registers = registers
        case 2:
            guard let bytes = r.take(Self.registerCount) else { return nil }
            registers = bytes
        default:
            return nil
        }
    }
}
