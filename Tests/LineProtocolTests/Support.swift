import Foundation
import LineProtocol

/// Where the fixture folders live (next to this file, so no resource bundle is needed).
let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

/// Splits bytes on `\n` exactly as `metricsd parse` and the InfluxDB oracle do (a trailing newline ends the last
/// line rather than starting an empty one).
func splitLines(_ data: [UInt8]) -> [[UInt8]] {
    var lines = data.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
    if data.last == 0x0A { lines.removeLast() }
    return lines
}

/// One line of canonical JSON (ours or the oracle's), decoded for structural comparison.
struct CanonicalLine: Decodable, Equatable {
    var line: Int
    var error: String?
    var measurement: String?
    var tags: [String: String]?
    var fields: [String: CanonicalField]?
    var time: Int64?

    static func == (a: CanonicalLine, b: CanonicalLine) -> Bool {
        a.line == b.line && (a.error == nil) == (b.error == nil) && a.measurement == b.measurement
            && a.tags == b.tags && a.fields == b.fields && a.time == b.time
    }
}

struct CanonicalField: Decodable, Equatable {
    var value: Value

    enum CodingKeys: String, CodingKey { case type, value }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        switch try c.decode(String.self, forKey: .type) {
        case "float": value = .float(try c.decode(Double.self, forKey: .value))
        case "integer": value = .integer(try c.decode(Int64.self, forKey: .value))
        case "unsigned": value = .unsigned(try c.decode(UInt64.self, forKey: .value))
        case "boolean": value = .boolean(try c.decode(Bool.self, forKey: .value))
        case "string": value = .string(try c.decode(String.self, forKey: .value))
        case let other:
            throw DecodingError.dataCorruptedError(forKey: .type, in: c, debugDescription: "unknown type \(other)")
        }
    }

    static func == (a: CanonicalField, b: CanonicalField) -> Bool { a.value.isIdentical(to: b.value) }
}

/// Decodes a JSON-lines document into lines keyed by their `line` number.
func decodeCanonical(_ bytes: [UInt8]) throws -> [Int: CanonicalLine] {
    var out: [Int: CanonicalLine] = [:]
    let decoder = JSONDecoder()
    for line in splitLines(bytes) where !line.isEmpty {
        let parsed = try decoder.decode(CanonicalLine.self, from: Data(line))
        out[parsed.line] = parsed
    }
    return out
}

func readBytes(_ url: URL) throws -> [UInt8] { [UInt8](try Data(contentsOf: url)) }
