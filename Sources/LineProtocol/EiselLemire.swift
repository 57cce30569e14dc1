/// Exact decimal-to-double conversion for a mantissa of at most 19 digits, by the Eisel-Lemire algorithm
/// (Daniel Lemire, "Number Parsing at a Gigabyte per Second", Software: Practice and Experience 51(8), 2021).
///
/// It multiplies the normalized mantissa by a 128-bit truncation of 10^exponent and reads the correctly rounded
/// double off the top bits. In the rare cases where the truncation leaves the rounding ambiguous it returns `nil`
/// and the caller falls back to `strtod`. The result, when there is one, is the correctly rounded value
/// (property-tested against `strtod` in LineProtocolTests).
///
/// - Parameters:
///   - mantissa: the decimal digits as an integer (exact: at most 19 digits).
///   - exponent: the power of ten to scale by.
/// - Returns: the magnitude as a Double, or `nil` when the algorithm cannot decide.
@inline(__always)
func eiselLemire(mantissa: UInt64, exponent: Int) -> Double? {
    if mantissa == 0 { return 0 }
    guard exponent >= powerOfTenMinExponent && exponent <= powerOfTenMaxExponent else { return nil }
    let index = (exponent &- powerOfTenMinExponent) &* 2
    let (high, low) = powerOfTenMantissas.withUnsafeBufferPointer { ($0[index], $0[index &+ 1]) }

    // Normalize so the mantissa's top bit is set.
    let leadingZeros = mantissa.leadingZeroBitCount
    let normalized = mantissa &<< UInt64(leadingZeros)
    // 217706 / 2^16 ≈ log2(10): the binary exponent of 10^exponent, plus the bias and the 64-bit product shift.
    var binaryExponent = UInt64(bitPattern: Int64((217_706 &* exponent) >> 16 &+ 64 &+ 1023)) &- UInt64(leadingZeros)

    var (productHigh, productLow) = normalized.multipliedFullWidth(by: high)
    // When the low bits are all ones the truncation may matter: widen with the next 64 bits of 10^exponent.
    if productHigh & 0x1FF == 0x1FF && productLow &+ normalized < normalized {
        let (carryHigh, carryLow) = normalized.multipliedFullWidth(by: low)
        var mergedHigh = productHigh
        let mergedLow = productLow &+ carryHigh
        if mergedLow < productLow { mergedHigh &+= 1 }
        if mergedHigh & 0x1FF == 0x1FF && mergedLow &+ 1 == 0 && carryLow &+ normalized < normalized { return nil }
        productHigh = mergedHigh
        productLow = mergedLow
    }

    // Keep 54 bits (one more than a double holds) for rounding.
    let topBit = productHigh >> 63
    var significand = productHigh >> (topBit &+ 9)
    binaryExponent &-= 1 ^ topBit

    // Exactly halfway between two doubles: let strtod decide the tie.
    if productLow == 0 && productHigh & 0x1FF == 0 && significand & 3 == 1 { return nil }

    // Round to nearest, ties to even, down to 53 bits.
    significand &+= significand & 1
    significand >>= 1
    if significand >> 53 > 0 {
        significand >>= 1
        binaryExponent &+= 1
    }
    // Subnormal, overflow or infinity: leave it to strtod.
    if binaryExponent &- 1 >= 0x7FF &- 1 { return nil }
    return Double(bitPattern: binaryExponent << 52 | significand & 0x000F_FFFF_FFFF_FFFF)
}
