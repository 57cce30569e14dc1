import LineProtocol

/// A small JSON writer for `/query` answers: InfluxQL results can hold hundreds of thousands of values, and
/// Foundation's JSONSerialization spends most of a query's time casting each `Any` (measured: the top of the
/// profile). Typed rows are written directly; small untyped parts (SHOW answers) go through `value(_:)`.
struct JSONText {
    var bytes: [UInt8] = []

    mutating func raw(_ s: String) {
        var s = s
        s.withUTF8 { bytes.append(contentsOf: $0) }
    }

    mutating func byte(_ b: UInt8) { bytes.append(b) }

    mutating func string(_ s: String) {
        bytes.append(0x22)
        for b in s.utf8 {
            switch b {
            case 0x22: raw("\\\"")
            case 0x5C: raw("\\\\")
            case 0x0A: raw("\\n")
            case 0x0D: raw("\\r")
            case 0x09: raw("\\t")
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                raw("\\u00")
                bytes.append(hex[Int(b >> 4)])
                bytes.append(hex[Int(b & 15)])
            default: bytes.append(b)
            }
        }
        bytes.append(0x22)
    }

    /// A number as InfluxDB writes it: integral values without a fraction, others in the shortest exact form;
    /// NaN and infinities (not JSON) as null.
    mutating func number(_ v: Double?) {
        guard let v, v.isFinite else { return raw("null") }
        if v == v.rounded(), abs(v) < 1e15 { return integer(Int64(v)) }
        raw(v.description)
    }

    /// Decimal digits of `v`, written in place (times and integral values: no string per value).
    mutating func integer(_ v: Int64) {
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

    /// Untyped values: String, Int, Int64, Double, Bool, nil/NSNull-like, arrays and string-keyed dictionaries
    /// (keys sorted, as JSONSerialization's `.sortedKeys`).
    mutating func value(_ v: Any?) {
        switch v {
        case nil: raw("null")
        case let s as String: string(s)
        case let b as Bool: raw(b ? "true" : "false")
        case let i as Int: raw(String(i))
        case let i as Int64: raw(String(i))
        case let d as Double: number(d)
        case let a as [Any]:
            bytes.append(0x5B)
            for (k, e) in a.enumerated() {
                if k > 0 { bytes.append(0x2C) }
                value(e)
            }
            bytes.append(0x5D)
        case let o as [String: Any]:
            bytes.append(0x7B)
            for (k, key) in o.keys.sorted().enumerated() {
                if k > 0 { bytes.append(0x2C) }
                string(key)
                bytes.append(0x3A)
                value(o[key]!)
            }
            bytes.append(0x7D)
        case let typed as SelectSeries: typed.write(to: &self)
        default: raw("null")
        }
    }
}

/// One series of a SELECT answer, typed: written without per-value casts.
struct SelectSeries {
    var name: String
    var tags: [(key: String, value: String)]?
    var columns: [String]
    /// Epoch times (with `epoch=`) or RFC 3339 strings.
    var times: [Int64]
    var epochScale: Int64?
    /// The rows' values, row after row (`columns.count - 1` a row).
    var values: [Double?]
    /// Cut at the answer's row limit (InfluxDB marks such a series `"partial": true`).
    var partial = false

    func write(to json: inout JSONText) {
        json.raw("{\"columns\":[")
        for (k, c) in columns.enumerated() {
            if k > 0 { json.raw(",") }
            json.string(c)
        }
        json.raw("],\"name\":")
        json.string(name)
        if let tags {
            json.raw(",\"tags\":{")
            for (k, t) in tags.sorted(by: { $0.key < $1.key }).enumerated() {
                if k > 0 { json.raw(",") }
                json.string(t.key)
                json.raw(":")
                json.string(t.value)
            }
            json.raw("}")
        }
        json.raw(",\"values\":[")
        let width = columns.count - 1
        for (k, time) in times.enumerated() {
            if k > 0 { json.byte(0x2C) }
            json.byte(0x5B)
            if let scale = epochScale {
                json.integer(time / scale)
            } else {
                json.string(RFC3339.format(time))
            }
            for v in values[(k * width)..<((k + 1) * width)] {
                json.byte(0x2C)
                json.number(v)
            }
            json.byte(0x5D)
        }
        json.raw(partial ? "],\"partial\":true}" : "]}")
    }
}
