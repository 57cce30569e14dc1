/// A product event (see docs/events.md):
/// `{"id":"e-123","event":"purchase","user_id":"u42","timestamp":"2026-11-28T10:00:00Z","properties":{...}}`.
public struct Event: Sendable, Equatable {
    /// Optional: events with an id are deduplicated.
    public var id: String?
    public var name: String
    public var userID: String
    /// Milliseconds since the epoch; `nil` when the event had none (the server's time is used).
    public var timestamp: Int64?
    /// The properties as compact JSON (an object of strings, numbers and booleans), keys in input order.
    public var propertiesJSON: String
    /// The same properties as text: strings as they are, numbers and booleans as the JSON writes them.
    public var properties: [EventProperty]

    public init(
        id: String? = nil, name: String, userID: String, timestamp: Int64? = nil, propertiesJSON: String = "{}",
        properties: [EventProperty] = []
    ) {
        self.id = id
        self.name = name
        self.userID = userID
        self.timestamp = timestamp
        self.propertiesJSON = propertiesJSON
        self.properties = properties
    }
}

/// One property of an event, its value as text.
public struct EventProperty: Sendable, Hashable {
    public var key: String
    public var value: String
    public init(_ key: String, _ value: String) {
        self.key = key
        self.value = value
    }
}

/// Why an event was rejected; `index` is the event's position in its batch (0-based) when known.
public struct EventError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Size limits for one event, enforced with a clear error.
public struct EventLimits: Sendable, Hashable {
    public var maxNameBytes = 200
    public var maxUserIDBytes = 200
    public var maxIDBytes = 200
    public var maxProperties = 64
    public var maxPropertyKeyBytes = 128
    public var maxPropertyValueBytes = 1_024
    public init() {}
}

/// Decodes JSON events: one object, an array of objects, or NDJSON (objects one after another). A strict JSON
/// parser (RFC 8259: no comments, no trailing commas, no NaN, valid UTF-8 escapes) over raw bytes, nesting at most
/// 8 levels deep.
///
/// A body yields one result per event: an event, or the reason it was rejected. A syntax error inside an array
/// rejects the rest of the array (the structure is lost); in NDJSON it rejects only its line.
public enum EventDecoder {
    /// The events of a body, in order.
    public static func decodeBody(_ bytes: UnsafeBufferPointer<UInt8>, limits: EventLimits = EventLimits())
        -> [Result<Event, EventError>]
    {
        var out: [Result<Event, EventError>] = []
        forEachEvent(bytes, limits: limits) { _, result in out.append(result) }
        return out
    }

    /// Each event of a body, in order, with its index, decoded one at a time: a body of a million events never
    /// holds more than one of them decoded (`decodeBody` collects them). An array with a syntax error anywhere is
    /// one failure (its structure is lost); it is checked whole first, keeping nothing.
    public static func forEachEvent(
        _ bytes: UnsafeBufferPointer<UInt8>, limits: EventLimits = EventLimits(),
        _ body: (Int, Result<Event, EventError>) -> Void
    ) {
        forEachEvent(bytes, limits: limits) { index, result, _ in body(index, result) }
    }

    /// ``forEachEvent(_:limits:_:)`` with each event's byte range in `bytes` (a whole array that does not parse:
    /// all of it; an NDJSON line that does not: that line).
    public static func forEachEvent(
        _ bytes: UnsafeBufferPointer<UInt8>, limits: EventLimits = EventLimits(),
        _ body: (Int, Result<Event, EventError>, Range<Int>) -> Void
    ) {
        var p = JSONParser(bytes)
        p.skipSpace()
        if p.atEnd { return }
        if p.peek == UInt8(ascii: "[") {
            // First pass: the syntax of the whole array, one element at a time.
            var check = p
            do throws(EventError) {
                _ = try check.parseArray(depth: 0) { _ in }
                check.skipSpace()
                if !check.atEnd { throw check.error("unexpected data after the array") }
            } catch {
                body(0, .failure(error), 0..<bytes.count)
                return
            }
            var index = 0
            _ = try? p.parseArray(depth: 0) { element, range in
                body(index, validate(element, limits: limits), range)
                index += 1
            }
            return
        }
        // One object, or several (NDJSON).
        var index = 0
        while true {
            p.skipSpace()
            if p.atEnd { break }
            let start = p.i
            do throws(EventError) {
                let value = try p.parseValue(depth: 0)
                let end = p.i
                // In NDJSON an event ends its line.
                while !p.atEnd, p.peek == 0x20 || p.peek == 0x09 || p.peek == 0x0D { p.i += 1 }
                if !p.atEnd, p.peek != 0x0A { throw p.error("unexpected data after the event object") }
                body(index, validate(value, limits: limits), start..<end)
            } catch {
                p.skipLine()
                var end = p.i
                while end > start, bytes[end - 1] == 0x0A || bytes[end - 1] == 0x0D { end -= 1 }
                body(index, .failure(error), start..<end)
            }
            index += 1
        }
    }

    public static func unquote(_ json: String) -> String? {
        var bytes = Array(json.utf8)
        return bytes.withUnsafeMutableBufferPointer { b -> String? in
            var p = JSONParser(UnsafeBufferPointer(b))
            guard !p.atEnd, p.peek == UInt8(ascii: "\""), let s = try? p.parseString(), p.atEnd else { return nil }
            return s
        }
    }

    /// One event from one line (UDP/TCP: a line starting with `{`).
    public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, limits: EventLimits = EventLimits())
        throws(EventError) -> Event
    {
        var p = JSONParser(bytes)
        p.skipSpace()
        let value = try p.parseValue(depth: 0)
        p.skipSpace()
        if !p.atEnd { throw p.error("unexpected data after the event object") }
        return try validate(value, limits: limits).get()
    }

    static func validate(_ value: JSONValue, limits: EventLimits) -> Result<Event, EventError> {
        guard case .object(let members) = value else {
            return .failure(EventError("an event must be a JSON object, got \(value.typeName)"))
        }
        var id: String?
        var name: String?
        var user: String?
        var timestamp: Int64?
        var properties = ("{}", [EventProperty]())
        var seen: Set<String> = []
        func text(_ key: String, _ v: JSONValue, max: Int) throws(EventError) -> String {
            guard case .string(let s) = v else {
                throw EventError("\"\(key)\" must be a string, got \(v.typeName)")
            }
            if s.isEmpty { throw EventError("\"\(key)\" must not be empty") }
            if s.utf8.count > max { throw EventError("\"\(key)\" is longer than \(max) bytes") }
            if s.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) {
                throw EventError("\"\(key)\" must not contain control characters")
            }
            return s
        }
        do throws(EventError) {
            for (key, v) in members {
                switch key {
                case "id", "event", "user_id", "timestamp", "properties":
                    if !seen.insert(key).inserted { throw EventError("duplicate key \"\(key)\"") }
                default:
                    continue  // other keys (context, sent_at, ...) are ignored
                }
                switch key {
                case "id":
                    if case .null = v { continue }
                    id = try text(key, v, max: limits.maxIDBytes)
                case "event": name = try text(key, v, max: limits.maxNameBytes)
                case "user_id":
                    // Numeric user ids are common in SDKs: accept integers, keep them as their decimal text.
                    if case .number(_, let exact?) = v {
                        user = String(exact)  // the digits as written: 2^53 + 1 stays 9007199254740993
                    } else {
                        user = try text(key, v, max: limits.maxUserIDBytes)
                    }
                case "timestamp": timestamp = try Self.timestamp(v)
                default: properties = try Self.properties(v, limits: limits)
                }
            }
            guard let name else { throw EventError("\"event\" is required") }
            guard let user else { throw EventError("\"user_id\" is required") }
            return .success(
                Event(
                    id: id, name: name, userID: user, timestamp: timestamp, propertiesJSON: properties.0,
                    properties: properties.1))
        } catch {
            return .failure(error)
        }
    }

    /// RFC 3339 text, or epoch milliseconds as an integer.
    static func timestamp(_ v: JSONValue) throws(EventError) -> Int64? {
        switch v {
        case .null: return nil
        case .string(let s):
            guard let ns = RFC3339.nanoseconds(s) else {
                throw EventError("\"timestamp\" \"\(s.prefix(40))\" is not RFC 3339 (e.g. 2026-11-28T10:00:00Z)")
            }
            return ns >= 0 ? ns / 1_000_000 : -((-ns + 999_999) / 1_000_000)
        case .number(let n, let exact):
            guard let exact, exact >= 0, exact < 1_000_000_000_000_000 else {
                throw EventError("\"timestamp\" must be RFC 3339 text or whole epoch milliseconds, got \(n)")
            }
            return exact
        default:
            throw EventError("\"timestamp\" must be RFC 3339 text or epoch milliseconds, got \(v.typeName)")
        }
    }

    /// The properties of a stored event (the compact JSON ``Event/propertiesJSON`` wrote), as text pairs.
    public static func properties(json: String) -> [EventProperty] {
        var bytes = Array(json.utf8)
        return bytes.withUnsafeMutableBufferPointer { b in
            var p = JSONParser(UnsafeBufferPointer(b))
            guard let value = try? p.parseValue(depth: 0),
                let decoded = try? properties(value, limits: EventLimits())
            else { return [] }
            return decoded.1
        }
    }

    /// The properties object re-encoded as compact JSON (nulls dropped), and as text pairs.
    static func properties(_ v: JSONValue, limits: EventLimits) throws(EventError) -> (String, [EventProperty]) {
        if case .null = v { return ("{}", []) }
        guard case .object(let members) = v else {
            throw EventError("\"properties\" must be an object, got \(v.typeName)")
        }
        if members.count > limits.maxProperties {
            throw EventError("\"properties\" has more than \(limits.maxProperties) keys")
        }
        var out = "{"
        var pairs: [EventProperty] = []
        var keys: Set<String> = []
        for (key, value) in members {
            if key.isEmpty || key.utf8.count > limits.maxPropertyKeyBytes {
                throw EventError("property key \"\(key.prefix(40))\" must be 1 to \(limits.maxPropertyKeyBytes) bytes")
            }
            if !keys.insert(key).inserted { throw EventError("duplicate property \"\(key)\"") }
            let encoded: String
            let text: String
            switch value {
            case .null: continue
            case .bool(let b):
                encoded = b ? "true" : "false"
                text = encoded
            case .number(let n, let exact):
                encoded = exact.map { String($0) } ?? "\(n)"
                text = encoded
            case .string(let s):
                if s.utf8.count > limits.maxPropertyValueBytes {
                    throw EventError("property \"\(key)\" is longer than \(limits.maxPropertyValueBytes) bytes")
                }
                encoded = JSONParser.quote(s)
                text = s
            case .array, .object:
                throw EventError(
                    "property \"\(key)\" must be a string, number or boolean, got \(value.typeName)")
            }
            if out.utf8.count > 1 { out += "," }
            out += JSONParser.quote(key) + ":" + encoded
            pairs.append(EventProperty(key, text))
        }
        return (out + "}", pairs)
    }
}

/// A parsed JSON value. A number written as an integer (no fraction, no exponent) that fits Int64 keeps its exact
/// value (`exact`): as a Double alone, 2^53 + 1 would read back as 2^53.
enum JSONValue {
    case null
    case bool(Bool)
    case number(Double, exact: Int64?)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

struct JSONParser {
    let b: UnsafeBufferPointer<UInt8>
    var i = 0
    static let maxDepth = 8

    init(_ bytes: UnsafeBufferPointer<UInt8>) { b = bytes }

    var atEnd: Bool { i >= b.count }
    var peek: UInt8 { b[i] }

    func error(_ what: String) -> EventError {
        EventError("invalid JSON at byte \(i + 1): \(what)")
    }

    mutating func skipSpace() {
        while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
    }

    /// After a syntax error in NDJSON: continue at the next line.
    mutating func skipLine() {
        while i < b.count, b[i] != 0x0A { i += 1 }
    }

    mutating func expect(_ c: UInt8) throws(EventError) {
        skipSpace()
        guard i < b.count else { throw error("unexpected end, expected '\(Character(Unicode.Scalar(c)))'") }
        guard b[i] == c else {
            throw error("expected '\(Character(Unicode.Scalar(c)))', found '\(Character(Unicode.Scalar(b[i])))'")
        }
        i += 1
    }

    /// An array at the cursor, each element handed to `element` as it is parsed (not kept).
    mutating func parseArray(depth: Int, _ element: (JSONValue) -> Void) throws(EventError) {
        try parseArray(depth: depth) { value, _ in element(value) }
    }

    /// Each element with its byte range in the input.
    mutating func parseArray(depth: Int, _ element: (JSONValue, Range<Int>) -> Void) throws(EventError) {
        guard depth < Self.maxDepth else { throw error("nested deeper than \(Self.maxDepth) levels") }
        i += 1
        skipSpace()
        if i < b.count, b[i] == UInt8(ascii: "]") {
            i += 1
            return
        }
        while true {
            skipSpace()
            let start = i
            let value = try parseValue(depth: depth + 1)
            element(value, start..<i)
            skipSpace()
            guard i < b.count else { throw error("unexpected end inside an array") }
            if b[i] == UInt8(ascii: ",") {
                i += 1
                continue
            }
            if b[i] == UInt8(ascii: "]") {
                i += 1
                return
            }
            throw error("expected ',' or ']'")
        }
    }

    mutating func parseValue(depth: Int) throws(EventError) -> JSONValue {
        skipSpace()
        guard i < b.count else { throw error("unexpected end of input") }
        switch b[i] {
        case UInt8(ascii: "{"):
            guard depth < Self.maxDepth else { throw error("nested deeper than \(Self.maxDepth) levels") }
            i += 1
            var members: [(String, JSONValue)] = []
            skipSpace()
            if i < b.count, b[i] == UInt8(ascii: "}") {
                i += 1
                return .object(members)
            }
            while true {
                skipSpace()
                guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw error("expected a quoted key") }
                let key = try parseString()
                try expect(UInt8(ascii: ":"))
                members.append((key, try parseValue(depth: depth + 1)))
                skipSpace()
                guard i < b.count else { throw error("unexpected end inside an object") }
                if b[i] == UInt8(ascii: ",") {
                    i += 1
                    continue
                }
                if b[i] == UInt8(ascii: "}") {
                    i += 1
                    return .object(members)
                }
                throw error("expected ',' or '}'")
            }
        case UInt8(ascii: "["):
            var elements: [JSONValue] = []
            try parseArray(depth: depth) { elements.append($0) }
            return .array(elements)
        case UInt8(ascii: "\""):
            return .string(try parseString())
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return try parseNumber()
        default:
            throw error("unexpected character '\(Character(Unicode.Scalar(b[i])))'")
        }
    }

    mutating func literal(_ word: StaticString) throws(EventError) {
        let n = word.utf8CodeUnitCount
        guard i + n <= b.count else { throw error("invalid literal") }
        for k in 0..<n where b[i + k] != word.utf8Start[k] { throw error("invalid literal") }
        i += n
    }

    mutating func parseNumber() throws(EventError) -> JSONValue {
        let start = i
        if b[i] == UInt8(ascii: "-") { i += 1 }
        func digits(_ i: inout Int) -> Int {
            let s = i
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { i += 1 }
            return i - s
        }
        let intStart = i
        let n = digits(&i)
        guard n > 0 else { throw error("invalid number") }
        if n > 1 && b[intStart] == 0x30 { throw error("invalid number (leading zero)") }
        var integral = true
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            integral = false
            guard digits(&i) > 0 else { throw error("invalid number (no digits after '.')") }
        }
        if i < b.count, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
            i += 1
            integral = false
            if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") { i += 1 }
            guard digits(&i) > 0 else { throw error("invalid number (no exponent digits)") }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: b[start..<i]), as: UTF8.self)
        guard let v = Double(text), v.isFinite else { throw error("number out of range") }
        return .number(v, exact: integral ? Int64(text) : nil)
    }

    mutating func parseString() throws(EventError) -> String {
        i += 1  // opening quote
        let start = i
        // Fast path: no escapes.
        while i < b.count, b[i] != UInt8(ascii: "\""), b[i] != UInt8(ascii: "\\"), b[i] >= 0x20 { i += 1 }
        guard i < b.count else { throw error("unterminated string") }
        if b[i] == UInt8(ascii: "\"") {
            let s = UnsafeBufferPointer(rebasing: b[start..<i])
            i += 1
            return try utf8(s)
        }
        var out = Array(b[start..<i])
        while true {
            guard i < b.count else { throw error("unterminated string") }
            let c = b[i]
            if c == UInt8(ascii: "\"") {
                i += 1
                return try out.withUnsafeBufferPointer { buffer throws(EventError) in try utf8(buffer) }
            }
            if c < 0x20 { throw error("control character in a string (escape it)") }
            if c != UInt8(ascii: "\\") {
                out.append(c)
                i += 1
                continue
            }
            i += 1
            guard i < b.count else { throw error("unterminated escape") }
            let e = b[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if (0xD800...0xDBFF).contains(scalar) {
                    guard i + 1 < b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else {
                        throw error("unpaired surrogate in \\u escape")
                    }
                    i += 2
                    let low = try hex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw error("unpaired surrogate in \\u escape") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(scalar) {
                    throw error("unpaired surrogate in \\u escape")
                }
                guard let u = Unicode.Scalar(scalar) else { throw error("invalid \\u escape") }
                out.append(contentsOf: Array(String(Character(u)).utf8))
            default:
                throw error("invalid escape '\\\(Character(Unicode.Scalar(e)))'")
            }
        }
    }

    mutating func hex4() throws(EventError) -> UInt32 {
        guard i + 4 <= b.count else { throw error("short \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = b[i]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw error("invalid hex digit in \\u escape")
            }
            v = v << 4 | d
            i += 1
        }
        return v
    }

    func utf8(_ bytes: UnsafeBufferPointer<UInt8>) throws(EventError) -> String {
        guard let s = String(validating: bytes, as: UTF8.self) else { throw error("invalid UTF-8 in a string") }
        return s
    }

    /// `s` as a JSON string literal.
    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20 || u.value == 0x7F:
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}
