/// The one JSON writer for answers (`/query`, the API, events): InfluxQL results can hold hundreds of thousands
/// of values, and Foundation's JSONSerialization spends most of a query's time casting each `Any` (measured: the
/// top of the profile). Typed values are written directly; small untyped parts go through ``value(_:)``.
///
/// What it writes is what Go's `encoding/json` writes (InfluxDB's answers): `<`, `>`, `&`, U+2028 and U+2029
/// escaped as `\u003c`…, floats in the shortest form that reads back exactly — plain decimals from 1e-6 to 1e21,
/// exponents beyond (`1e+21`, `1e-7`) — and NaN or infinities (not JSON) as null.
public struct JSONText: Sendable {
    public var bytes: [UInt8] = []

    public init() {}

    public mutating func raw(_ s: String) {
        var s = s
        s.withUTF8 { bytes.append(contentsOf: $0) }
    }

    @inline(__always)
    public mutating func byte(_ b: UInt8) { bytes.append(b) }

    public mutating func string(_ s: String) {
        bytes.append(0x22)
        let hex = Array("0123456789abcdef".utf8)
        var utf8 = s.utf8.makeIterator()
        var pending: [UInt8] = []
        while let b = pending.isEmpty ? utf8.next() : pending.removeFirst() {
            switch b {
            case 0x22: raw("\\\"")
            case 0x5C: raw("\\\\")
            case 0x0A: raw("\\n")
            case 0x0D: raw("\\r")
            case 0x09: raw("\\t")
            case 0..<0x20, 0x3C, 0x3E, 0x26:
                raw("\\u00")
                bytes.append(hex[Int(b >> 4)])
                bytes.append(hex[Int(b & 15)])
            case 0xE2:
                // U+2028 and U+2029 (E2 80 A8/A9) are escaped, as Go does.
                let b1 = utf8.next()
                let b2 = b1 == 0x80 ? utf8.next() : nil
                if b1 == 0x80, let b2, b2 == 0xA8 || b2 == 0xA9 {
                    raw(b2 == 0xA8 ? "\\u2028" : "\\u2029")
                } else {
                    bytes.append(b)
                    if let b1 { pending.append(b1) }
                    if let b2 { pending.append(b2) }
                }
            default: bytes.append(b)
            }
        }
        bytes.append(0x22)
    }

    /// A number as Go's `encoding/json` writes a float64; NaN and infinities as null.
    public mutating func number(_ v: Double?) {
        guard let v, v.isFinite else { return raw("null") }
        if v == v.rounded(.towardZero), abs(v) < 1e15 { return integer(Int64(v)) }
        // Between 1e-4 and 2^53 Swift's shortest form is already Go's layout (plain decimals): no reformatting.
        let magnitude = abs(v)
        if magnitude >= 1e-4, magnitude < 9_007_199_254_740_992 { return raw(v.description) }
        raw(Self.goFloat(v))
    }

    /// `v` (finite) in Go's `encoding/json` form: shortest round-trip digits, `%f` layout for 1e-6 ≤ |v| < 1e21,
    /// `%e` beyond with at least one exponent digit (`1e-7`, `1e+21`).
    public static func goFloat(_ v: Double) -> String {
        if v == 0 { return v.sign == .minus ? "-0" : "0" }
        // Swift's description holds the shortest round-trip digits; only the layout differs.
        var text = v.magnitude.description
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = Int(text[text.index(after: e)...]) ?? 0
            text = String(text[..<e])
        }
        var digits = ""
        var pointAt = text.count
        for (k, c) in text.enumerated() {
            if c == "." { pointAt = k } else { digits.append(c) }
        }
        // value = 0.digits × 10^(pointAt + exponent), digits without leading or trailing zeros.
        var scale = pointAt + exponent
        while digits.first == "0" {
            digits.removeFirst()
            scale -= 1
        }
        while digits.last == "0" { digits.removeLast() }
        if digits.isEmpty { return "0" }
        let sign = v < 0 ? "-" : ""
        let magnitude = v.magnitude
        if magnitude < 1e-6 || magnitude >= 1e21 {
            var out = sign + String(digits.first!)
            if digits.count > 1 { out += "." + digits.dropFirst() }
            let e = scale - 1
            out += e < 0 ? "e-" : "e+"
            out += String(e.magnitude)
            return out
        }
        if scale <= 0 { return sign + "0." + String(repeating: "0", count: -scale) + digits }
        if scale >= digits.count { return sign + digits + String(repeating: "0", count: scale - digits.count) }
        let split = digits.index(digits.startIndex, offsetBy: scale)
        return sign + digits[..<split] + "." + digits[split...]
    }

    /// Decimal digits of `v`, written in place (times and integral values: no string per value).
    public mutating func integer(_ v: Int64) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: 19 digits and a sign fit
        withUnsafeMutableBytes(of: &digits) { raw in
            var magnitude = v.magnitude
            var at = raw.count
            repeat {
                at -= 1
                raw[at] = 0x30 + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            if v < 0 {
                at -= 1
                raw[at] = 0x2D
            }
            bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[at...]))
        }
    }

    /// Untyped values: String, Bool, integers, Double, nil, arrays and string-keyed dictionaries (keys sorted, as
    /// Go writes maps); ``JSONWritable`` values write themselves. Anything else is null.
    public mutating func value(_ v: Any?) {
        switch v {
        case nil: raw("null")
        case let s as String: string(s)
        case let b as Bool: raw(b ? "true" : "false")
        case let i as Int: integer(Int64(i))
        case let i as Int64: integer(i)
        case let i as Int32: integer(Int64(i))
        case let i as UInt64: raw(String(i))
        case let d as Double: number(d)
        case let f as Float: number(Double(f))
        case let w as any JSONWritable: w.write(to: &self)
        case let a as [Any]: array(a) { $0 }
        case let a as [Any?]: array(a) { $0 }
        case let o as [String: Any]: object(o) { $0 }
        case let o as [String: Any?]: object(o) { $0 }
        default: raw("null")
        }
    }

    private mutating func array<E>(_ a: [E], _ item: (E) -> Any?) {
        bytes.append(0x5B)
        for (k, e) in a.enumerated() {
            if k > 0 { bytes.append(0x2C) }
            value(item(e))
        }
        bytes.append(0x5D)
    }

    private mutating func object<E>(_ o: [String: E], _ item: (E) -> Any?) {
        bytes.append(0x7B)
        for (k, key) in o.keys.sorted().enumerated() {
            if k > 0 { bytes.append(0x2C) }
            string(key)
            bytes.append(0x3A)
            value(item(o[key]!))
        }
        bytes.append(0x7D)
    }
}

/// A value that writes its own JSON (typed results, written without a cast per value).
public protocol JSONWritable {
    func write(to json: inout JSONText)
}
