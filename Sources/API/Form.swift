/// `application/x-www-form-urlencoded` parameters — a URL's query, or a POST body — decoded as Go's `url.Values`
/// (which InfluxDB reads): `+` is a space, `%XX` a byte, pairs split on `&`; a `%` not followed by two hex digits
/// stays as it is and invalid UTF-8 is repaired (U+FFFD), so any bytes decode to something and never fail.
/// The first value of a key wins, as Go's `Values.Get`.
public struct Form: Sendable, Equatable {
    public private(set) var values: [String: String] = [:]

    public init() {}

    public init(_ text: String) {
        var text = text
        values = text.withUTF8 { Self.decode($0) }
    }

    public init(bytes: UnsafeBufferPointer<UInt8>) { values = Self.decode(bytes) }

    private static func decode(_ bytes: UnsafeBufferPointer<UInt8>) -> [String: String] {
        var values: [String: String] = [:]
        var decoded: [UInt8] = []
        decoded.reserveCapacity(Swift.min(bytes.count, 4096))
        func hex(_ b: UInt8) -> UInt8? {
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        func decode(_ part: Slice<UnsafeBufferPointer<UInt8>>) -> String {
            decoded.removeAll(keepingCapacity: true)
            var i = part.startIndex
            while i < part.endIndex {
                let b = part[i]
                if b == UInt8(ascii: "+") {
                    decoded.append(0x20)
                } else if b == UInt8(ascii: "%"), i + 2 < part.endIndex, let high = hex(part[i + 1]),
                    let low = hex(part[i + 2])
                {
                    decoded.append(high << 4 | low)
                    i += 2
                } else {
                    decoded.append(b)
                }
                i += 1
            }
            return String(decoding: decoded, as: UTF8.self)
        }
        for pair in bytes.split(separator: UInt8(ascii: "&")) {
            let key: String
            let value: String
            if let eq = pair.firstIndex(of: UInt8(ascii: "=")) {
                key = decode(pair[pair.startIndex..<eq])
                value = decode(pair[(eq + 1)..<pair.endIndex])
            } else {
                key = decode(pair)
                value = ""
            }
            if values[key] == nil { values[key] = value }
        }
        return values
    }

    public subscript(_ key: String) -> String? { values[key] }

    /// Adds `other`'s keys this form does not have.
    public mutating func add(_ other: Form) {
        values.merge(other.values) { mine, _ in mine }
    }
}
