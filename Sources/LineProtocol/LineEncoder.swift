/// Why a point cannot be written as line protocol.
public struct EncodeError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Writes points as InfluxDB line protocol, escaping each part by its own rules.
///
/// Escaping: tag keys and values `,`, `=` and space; measurement and field keys also `"` (InfluxDB unescapes
/// `\"` there); string values `"` and `\`. Floats are written in the shortest form that reads back to the same bits.
///
/// Some values cannot be expressed in line protocol at all and are rejected with ``EncodeError``: empty names,
/// a newline anywhere, a name that ends in a backslash (it would escape the delimiter after it), a field key with
/// an odd run of backslashes before `,`, `=` or space (``canWriteFieldKey(_:)``), a measurement
/// that starts with `#`, tab or NUL, a point whose field keys all start with tab or NUL, non-finite floats, and timestamps outside InfluxDB's range.
public enum LineEncoder {
    /// Appends `point` and a trailing `\n` to `out`.
    public static func append(_ point: Point, to out: inout [UInt8]) throws(EncodeError) {
        try check(point.measurement, "measurement")
        if let first = point.measurement.utf8.first, first == 0x23 || first == 0x09 || first == 0x00 {
            throw EncodeError("a measurement cannot start with '#', tab or NUL")
        }
        guard !point.fields.isEmpty else { throw EncodeError("a point needs at least one field") }
        appendEscaped(point.measurement, to: &out, escaping: .name)
        for tag in point.tags {
            try check(tag.key, "tag key")
            try check(tag.value, "tag value")
            out.append(0x2C)
            appendEscaped(tag.key, to: &out, escaping: .tag)
            out.append(0x3D)
            appendEscaped(tag.value, to: &out, escaping: .tag)
        }
        out.append(0x20)
        // Whitespace after the tag set is skipped, so the first field key must not start with tab or NUL; write a
        // field whose key does not first (field order carries no meaning).
        var order = Array(point.fields.indices)
        if let first = point.fields.firstIndex(where: { !startsWithWhitespace($0.key) }) {
            order.swapAt(0, first)
        } else {
            throw EncodeError("no field key can come first: every key starts with tab or NUL")
        }
        for (position, index) in order.enumerated() {
            let field = point.fields[index]
            try check(field.key, "field key")
            guard canWriteFieldKey(field.key) else {
                throw EncodeError(
                    "the field key \"\(field.key)\" has an odd run of backslashes before ',', '=' or ' ':"
                        + " InfluxDB's scanner would take the escaping backslash as escaped")
            }
            if position > 0 { out.append(0x2C) }
            appendEscaped(field.key, to: &out, escaping: .name)
            out.append(0x3D)
            try appendValue(field.value, to: &out)
        }
        if let t = point.timestamp {
            guard t >= TimeRange.minNanoseconds && t <= TimeRange.maxNanoseconds else {
                throw EncodeError("timestamp \(t) is outside InfluxDB's range")
            }
            out.append(0x20)
            appendDecimal(t, to: &out)
        }
        out.append(0x0A)
    }

    /// Appends one field value (`1.5`, `3i`, `7u`, `true`, `"text"`).
    public static func appendValue(_ value: Value, to out: inout [UInt8]) throws(EncodeError) {
        switch value {
        case .float(let v):
            guard v.isFinite else { throw EncodeError("NaN and Inf cannot be written in line protocol") }
            out.append(contentsOf: v.description.utf8)
        case .integer(let v):
            appendDecimal(v, to: &out)
            out.append(0x69)
        case .unsigned(let v):
            out.append(contentsOf: String(v).utf8)
            out.append(0x75)
        case .boolean(let v):
            out.append(contentsOf: (v ? "true" : "false").utf8)
        case .string(let s):
            guard !s.utf8.contains(0x0A) else { throw EncodeError("a string value cannot contain a newline") }
            out.append(0x22)
            for b in s.utf8 {
                if b == 0x22 || b == 0x5C { out.append(0x5C) }
                out.append(b)
            }
            out.append(0x22)
        }
    }

    /// Appends a signed decimal integer without going through `String`.
    public static func appendDecimal(_ value: Int64, to out: inout [UInt8]) {
        if value < 0 { out.append(0x2D) }
        var magnitude = value.magnitude
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of room for 20 digits
        var n = 0
        withUnsafeMutableBytes(of: &digits) { raw in
            repeat {
                raw[23 - n] = UInt8(truncatingIfNeeded: magnitude % 10) &+ 0x30
                magnitude /= 10
                n += 1
            } while magnitude > 0
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[(24 - n)...]))
        }
    }

    /// The escape sets match the decoder's unescape sets exactly, which is what makes encode → decode lossless:
    /// every escapable byte gets a backslash, so a literal backslash before it reads back as itself.
    enum Part {
        case name  // measurement and field keys
        case tag  // tag keys and values
    }

    static func appendEscaped(_ s: String, to out: inout [UInt8], escaping part: Part) {
        for b in s.utf8 {
            let escape: Bool =
                switch part {
                case .tag: b == 0x2C || b == 0x20 || b == 0x3D
                case .name: b == 0x2C || b == 0x20 || b == 0x3D || b == 0x22
                }
            if escape { out.append(0x5C) }
            out.append(b)
        }
    }

    /// Whether a field key reads back as itself. InfluxDB's field scanner lets a backslash take the byte after it,
    /// whatever it is, so the escaped `\,` after a literal backslash (`a\` then `,`: written `a\\,`) is read as an
    /// escaped backslash and a separator; such keys (an odd run of backslashes before `,`, `=` or space) cannot be
    /// written at all. Other backslashes are written as they are.
    public static func canWriteFieldKey(_ key: String) -> Bool {
        var run = 0
        for b in key.utf8 {
            if b == 0x5C {
                run += 1
                continue
            }
            if run % 2 == 1 && (b == 0x2C || b == 0x20 || b == 0x3D) { return false }
            run = 0
        }
        return true
    }

    private static func startsWithWhitespace(_ s: String) -> Bool {
        guard let first = s.utf8.first else { return false }
        return first == 0x09 || first == 0x00
    }

    private static func check(_ name: String, _ what: String) throws(EncodeError) {
        guard let last = name.utf8.last else { throw EncodeError("the \(what) is empty") }
        if last == 0x5C { throw EncodeError("the \(what) \"\(name)\" ends with a backslash") }
        if name.utf8.contains(0x0A) { throw EncodeError("the \(what) contains a newline") }
    }
}
