/// The canonical JSON form of decoded lines, as printed by `metricsd parse`. This is a contract: conformance suites
/// compare it byte for byte.
///
/// Accepted: `{"line":N,"measurement":"cpu","tags":{"host":"a"},"fields":{"usage":{"type":"float","value":1.5}},
/// "time":1700000000000000000}` (tags sorted by key, fields in input order, `time` in nanoseconds or `null`).
/// Rejected: `{"line":N,"error":"column C: expected X, found Y"}`.
public enum CanonicalJSON {
    /// Appends the decoder's current point as one JSON object and a newline.
    public static func appendPoint(of decoder: LineDecoder, line: Int, to out: inout [UInt8]) {
        out.append(contentsOf: #"{"line":"#.utf8)
        out.append(contentsOf: String(line).utf8)
        out.append(contentsOf: #","measurement":"#.utf8)
        appendString(decoder.measurement, to: &out)
        out.append(contentsOf: #","tags":{"#.utf8)
        for (index, tag) in decoder.tags.enumerated() {
            if index > 0 { out.append(0x2C) }
            appendString(tag.key, to: &out)
            out.append(0x3A)
            appendString(tag.value, to: &out)
        }
        out.append(contentsOf: #"},"fields":{"#.utf8)
        for (index, field) in decoder.fields.enumerated() {
            if index > 0 { out.append(0x2C) }
            appendString(field.key, to: &out)
            out.append(contentsOf: #":{"type":""#.utf8)
            out.append(contentsOf: field.value.typeName.utf8)
            out.append(contentsOf: #"","value":"#.utf8)
            switch field.value {
            case .float(let v): out.append(contentsOf: v.description.utf8)
            case .integer(let v): LineEncoder.appendDecimal(v, to: &out)
            case .unsigned(let v): out.append(contentsOf: String(v).utf8)
            case .boolean(let v): out.append(contentsOf: (v ? "true" : "false").utf8)
            case .string(let s): appendString(s, to: &out)
            }
            out.append(0x7D)
        }
        out.append(contentsOf: #"},"time":"#.utf8)
        if let t = decoder.timestamp {
            LineEncoder.appendDecimal(t, to: &out)
        } else {
            out.append(contentsOf: "null".utf8)
        }
        out.append(contentsOf: "}\n".utf8)
    }

    /// Appends `{"line":N,"error":"..."}` and a newline.
    public static func appendError(_ error: LineError, line: Int, to out: inout [UInt8]) {
        out.append(contentsOf: #"{"line":"#.utf8)
        out.append(contentsOf: String(line).utf8)
        out.append(contentsOf: #","error":"#.utf8)
        appendString(error.message, to: &out)
        out.append(contentsOf: "}\n".utf8)
    }

    /// Appends a JSON string. Invalid UTF-8 is replaced by U+FFFD (the JSON must stay valid).
    public static func appendString(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        if bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x80 && $0 != 0x22 && $0 != 0x5C }) {
            out.append(0x22)
            out.append(contentsOf: bytes)
            out.append(0x22)
        } else {
            appendString(String(decoding: bytes, as: UTF8.self), to: &out)
        }
    }

    /// Appends a JSON string with RFC 8259 escaping.
    public static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(0x22)
        for b in s.utf8 {
            switch b {
            case 0x22: out.append(contentsOf: #"\""#.utf8)
            case 0x5C: out.append(contentsOf: #"\\"#.utf8)
            case 0x0A: out.append(contentsOf: #"\n"#.utf8)
            case 0x0D: out.append(contentsOf: #"\r"#.utf8)
            case 0x09: out.append(contentsOf: #"\t"#.utf8)
            case 0x00..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out.append(contentsOf: #"\u00"#.utf8)
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 0xF)])
            default: out.append(b)
            }
        }
        out.append(0x22)
    }
}
