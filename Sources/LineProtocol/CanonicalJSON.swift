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

    /// Appends a JSON string. Each byte that is not part of a valid UTF-8 sequence becomes one U+FFFD (the rule
    /// Go's encoding/json uses, so output can be compared with InfluxDB's tools byte for byte).
    public static func appendString(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        out.append(0x22)
        var i = 0
        let n = bytes.count
        while i < n {
            let b = bytes[i]
            if b < 0x80 {
                appendASCII(b, to: &out)
                i += 1
                continue
            }
            let length = validSequenceLength(bytes, at: i)
            if length == 0 {
                out.append(contentsOf: [0xEF, 0xBF, 0xBD])
                i += 1
            } else {
                out.append(contentsOf: bytes[i..<(i + length)])
                i += length
            }
        }
        out.append(0x22)
    }

    /// The length of the well-formed UTF-8 sequence starting at `i` (Unicode Table 3-7), or 0 if there is none.
    static func validSequenceLength(_ s: UnsafeBufferPointer<UInt8>, at i: Int) -> Int {
        let b0 = s[i]
        let n = s.count - i
        func cont(_ k: Int, _ lo: UInt8 = 0x80, _ hi: UInt8 = 0xBF) -> Bool {
            k < n && s[i + k] >= lo && s[i + k] <= hi
        }
        switch b0 {
        case 0xC2...0xDF: return cont(1) ? 2 : 0
        case 0xE0: return cont(1, 0xA0) && cont(2) ? 3 : 0
        case 0xE1...0xEC, 0xEE...0xEF: return cont(1) && cont(2) ? 3 : 0
        case 0xED: return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0
        case 0xF0: return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0
        case 0xF1...0xF3: return cont(1) && cont(2) && cont(3) ? 4 : 0
        case 0xF4: return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0
        default: return 0
        }
    }

    /// Appends a JSON string with RFC 8259 escaping.
    public static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(0x22)
        for b in s.utf8 { appendASCII(b, to: &out) }
        out.append(0x22)
    }

    /// Appends one byte, escaped if JSON requires it (bytes ≥ 0x80 pass through unchanged).
    @inline(__always)
    static func appendASCII(_ b: UInt8, to out: inout [UInt8]) {
        switch b {
        case 0x22: out.append(contentsOf: #"\""#.utf8)
        case 0x5C: out.append(contentsOf: #"\\"#.utf8)
        case 0x0A: out.append(contentsOf: #"\n"#.utf8)
        case 0x0D: out.append(contentsOf: #"\r"#.utf8)
        case 0x09: out.append(contentsOf: #"\t"#.utf8)
        case 0x00..<0x20:
            let hex: StaticString = "0123456789abcdef"
            out.append(contentsOf: #"\u00"#.utf8)
            out.append(hex.utf8Start[Int(b >> 4)])
            out.append(hex.utf8Start[Int(b & 0xF)])
        default: out.append(b)
        }
    }
}

/// Turns a stream of line protocol into the canonical JSON of `metricsd parse`, chunk by chunk.
///
/// Lines are split on `\n` (one trailing `\r` ignored) and numbered from 1, counting blank and comment lines,
/// which print nothing.
public struct ParseRenderer {
    public private(set) var output: [UInt8] = []
    private let decoder: LineDecoder
    private var framer = LineFramer(maxLineLength: Int(Int32.max))
    private var lineNumber = 0

    public init(precision: Precision = .nanoseconds) {
        decoder = LineDecoder(precision: precision)
    }

    /// Feeds the next chunk of input; complete lines are rendered into ``output``.
    public mutating func feed(_ chunk: UnsafeRawBufferPointer) {
        var framer = self.framer
        framer.feed(chunk) { render($0) }
        self.framer = framer
    }

    /// Renders a final line that has no trailing newline.
    public mutating func finish() {
        var framer = self.framer
        framer.finish { render($0) }
        self.framer = framer
    }

    /// Returns the rendered output so far and empties it (capacity is kept).
    public mutating func takeOutput() -> [UInt8] {
        defer { output.removeAll(keepingCapacity: true) }
        return output
    }

    /// Renders a whole input at once.
    public static func render(_ input: [UInt8], precision: Precision = .nanoseconds) -> [UInt8] {
        var renderer = ParseRenderer(precision: precision)
        input.withUnsafeBytes { renderer.feed($0) }
        renderer.finish()
        return renderer.output
    }

    private mutating func render(_ framed: FramedLine) {
        lineNumber += 1
        guard case .line(let line) = framed else { return }
        do {
            if try decoder.decode(line) {
                CanonicalJSON.appendPoint(of: decoder, line: lineNumber, to: &output)
            }
        } catch {
            CanonicalJSON.appendError(error, line: lineNumber, to: &output)
        }
    }
}

@available(*, unavailable) extension ParseRenderer: Sendable {}
