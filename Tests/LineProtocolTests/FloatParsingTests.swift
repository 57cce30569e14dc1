import Foundation
import LineProtocol
import TestSupport
import Testing

/// Floats must be correctly rounded whatever path decodes them (Clinger, Eisel-Lemire or strtod): the oracle is
/// glibc's strtod on the same text.
@Suite struct FloatParsingTests {
    static func decodeFloat(_ text: String, using decoder: LineDecoder) throws -> Double? {
        let line = Array("m v=\(text)".utf8)
        _ = try line.withUnsafeBufferPointer { try decoder.decode($0) }
        if case .float(let v) = decoder.fields[0].value { return v }
        return nil
    }

    static func reference(_ text: String) -> Double { strtod(text, nil) }

    @Test(arguments: 0..<8)
    func randomDecimalsMatchStrtod(seed: Int) throws {
        var rng = SplitMix(seed: UInt64(seed) &* 31 &+ 5)
        let decoder = LineDecoder()
        for _ in 0..<20_000 {
            let digits = Int.random(in: 1...19, using: &rng)
            var mantissa = String(UInt64.random(in: 1...UInt64.max, using: &rng) % 10_000_000_000_000_000_000)
            mantissa = String(mantissa.prefix(digits))
            let point = Int.random(in: 0...mantissa.count, using: &rng)
            var text = String(mantissa.prefix(point)) + "." + String(mantissa.dropFirst(point))
            if Bool.random(using: &rng) { text += "e\(Int.random(in: -330...310, using: &rng))" }
            if text.hasPrefix(".") && text.count == 1 { continue }
            let expected = Self.reference(text)
            guard expected.isFinite else { continue }
            let got = try #require(try Self.decodeFloat(text, using: decoder))
            #expect(got.bitPattern == expected.bitPattern, "\(text): got \(got), strtod \(expected)")
        }
    }

    @Test func hardCasesMatchStrtod() throws {
        let decoder = LineDecoder()
        let cases = [
            "9007199254740993", "9007199254740992.5", "2.2250738585072011e-308", "2.2250738585072012e-308",
            "1.7976931348623157e308", "4.9406564584124654e-324", "2.4703282292062328e-324", "0.1", "0.2", "0.3",
            "1e23", "8.98846567431158e307", "1.00000000000000011102230246251565404236316680908203125",
            "7.0420557077594588669468784357561207962098443483187940792729600000e59", "123456789012345678",
            "1234567890123456789", "0.000001", "1e-5", "5e-324", "1e-400", "3.14159265358979323846264338327950288",
            "46.51101568347788", "99.99999999999999", "0.30000000000000004", "1.0000000000000002",
        ]
        for text in cases {
            let got = try #require(try Self.decodeFloat(text, using: decoder))
            #expect(got.bitPattern == Self.reference(text).bitPattern, "\(text)")
        }
    }
}
