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
/// Empty sketches hold no memory. A sketch of few values keeps only its non-zero registers (sorted, 4 bytes each, up
/// to ``sparseLimit``) and becomes the 4,096-byte array past that: a minute of an event that a handful of users
/// sent costs bytes, not 4 KiB. Both forms estimate and merge alike (equal sketches compare equal in either form).
public struct DistinctSketch: Sendable, Equatable {
    public static let precision = 12
    public static let registerCount = 1 << precision
    /// Relative standard error of ``estimate``.
    public static let standardError = 1.04 / Double(registerCount).squareRoot()
    /// Non-zero registers kept sparse at most (a quarter of the dense form's bytes).
    public static let sparseLimit = 256

    /// Every register, once past ``sparseLimit`` non-zero ones (else empty).
    private var dense: [UInt8] = []
    /// The non-zero registers as `index << 8 | rank`, sorted by index, while few.
    private var sparse: [UInt32] = []

    public init() {}

    /// The 4,096 registers (built from the sparse form when the sketch holds few).
    public var registers: [UInt8] {
        if !dense.isEmpty { return dense }
        if sparse.isEmpty { return [] }
        var out = [UInt8](repeating: 0, count: Self.registerCount)
        for e in sparse { out[Int(e >> 8)] = UInt8(truncatingIfNeeded: e) }
        return out
    }

    /// Adds a value by its 64-bit hash (see ``hash(_:)``; any well-mixed hash works if used consistently).
    @inline(__always)
    public mutating func add(hash: UInt64) {
        let index = Int(truncatingIfNeeded: hash >> UInt64(64 - Self.precision))
        // The rank of the first 1 bit in the remaining 52 bits (1-based), at most 53.
        let rest = hash << UInt64(Self.precision) | (1 << UInt64(Self.precision - 1))
        let rank = UInt8(truncatingIfNeeded: rest.leadingZeroBitCount + 1)
        set(index, rank)
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

    /// Register `index` is at least `rank` afterwards.
    @inline(__always)
    private mutating func set(_ index: Int, _ rank: UInt8) {
        if !dense.isEmpty {
            dense.withUnsafeMutableBufferPointer { r in
                if rank > r[index] { r[index] = rank }
            }
            return
        }
        var lo = 0
        var hi = sparse.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if Int(sparse[mid] >> 8) < index { lo = mid + 1 } else { hi = mid }
        }
        if lo < sparse.count, Int(sparse[lo] >> 8) == index {
            if rank > UInt8(truncatingIfNeeded: sparse[lo]) { sparse[lo] = UInt32(index) << 8 | UInt32(rank) }
            return
        }
        sparse.insert(UInt32(index) << 8 | UInt32(rank), at: lo)
        if sparse.count > Self.sparseLimit { densify() }
    }

    private mutating func densify() {
        dense = registers
        sparse = []
    }

    /// Register-wise maximum: afterwards `self` is the sketch of the union.
    public mutating func merge(_ other: DistinctSketch) {
        if other.dense.isEmpty && other.sparse.isEmpty { return }
        if dense.isEmpty && sparse.isEmpty {
            self = other
            return
        }
        if !other.dense.isEmpty {
            if dense.isEmpty { densify() }
            dense.withUnsafeMutableBufferPointer { r in
                other.dense.withUnsafeBufferPointer { o in
                    for i in 0..<Self.registerCount where o[i] > r[i] { r[i] = o[i] }
                }
            }
            return
        }
        for e in other.sparse { set(Int(e >> 8), UInt8(truncatingIfNeeded: e)) }
    }

    public static func == (a: DistinctSketch, b: DistinctSketch) -> Bool {
        if a.dense.isEmpty && b.dense.isEmpty { return a.sparse == b.sparse }
        return a.registers == b.registers
    }

    /// The estimated number of distinct values added.
    public var estimate: Double {
        if dense.isEmpty && sparse.isEmpty { return 0 }
        let m = Double(Self.registerCount)
        var sum = 0.0
        var zeros = 0
        if dense.isEmpty {
            zeros = Self.registerCount - sparse.count
            sum = Double(zeros)
            for e in sparse { sum += 1 / Double(UInt64(1) << UInt64(e & 0xFF)) }
        } else {
            for r in dense {
                sum += 1 / Double(UInt64(1) << UInt64(r))
                if r == 0 { zeros += 1 }
            }
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
        if dense.isEmpty && sparse.isEmpty {
            w.u8(0)
            return
        }
        if dense.isEmpty {
            w.u8(1)
            w.varint(UInt64(sparse.count))
            var previous = 0
            for e in sparse {
                let i = Int(e >> 8)
                w.varint(UInt64(i - previous))
                w.u8(UInt8(truncatingIfNeeded: e))
                previous = i
            }
            return
        }
        let nonZero = dense.reduce(0) { $0 + ($1 == 0 ? 0 : 1) }
        if nonZero * 3 < Self.registerCount {
            w.u8(1)
            w.varint(UInt64(nonZero))
            var previous = 0
            for (i, r) in dense.enumerated() where r != 0 {
                w.varint(UInt64(i - previous))
                w.u8(r)
                previous = i
            }
        } else {
            w.u8(2)
            w.bytes(dense)
        }
    }

    public init?(reading r: inout ByteReader) {
        switch r.u8() {
        case 0:
            return
        case 1:
            guard let n = r.varint(), n <= UInt64(Self.registerCount) else { return nil }
            var entries: [UInt32] = []
            entries.reserveCapacity(Int(n))
            var index = 0
            for k in 0..<Int(n) {
                guard let delta = r.varint(), let value = r.u8(), value <= 64 - UInt8(Self.precision) + 1 else {
                    return nil
                }
                guard delta < UInt64(Self.registerCount), k == 0 || delta > 0 else { return nil }
                index += Int(delta)
                guard index < Self.registerCount, value > 0 else { return nil }
                entries.append(UInt32(index) << 8 | UInt32(value))
            }
            sparse = entries
            if sparse.count > Self.sparseLimit { densify() }
        case 2:
            guard let bytes = r.take(Self.registerCount) else { return nil }
            dense = bytes
        default:
            return nil
        }
    }
}
