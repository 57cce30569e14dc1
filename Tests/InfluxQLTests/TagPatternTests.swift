import Foundation
import Testing

@testable import InfluxQL

/// Regex tag conditions answered by set membership (`/^(a|b)$/`, as Grafana writes a multi-value variable) must
/// match exactly what the regex engine matches.
@Suite struct TagPatternTests {
    static func engine(_ pattern: String, _ value: String) throws -> Bool {
        let re = try NSRegularExpression(pattern: pattern)
        return re.firstMatch(in: value, range: NSRange(value.startIndex..., in: value)) != nil
    }

    /// Grafana's escaping of a variable value (its `regexEscape`): every regex metacharacter gets a backslash.
    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            if "\\^$.|?*+()[]{}/-".contains(c) { out.append("\\") }
            out.append(c)
        }
        return out
    }

    @Test func literalAlternativesAgreeWithTheRegexEngine() throws {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("ab.-|()[]*+?$^\\{}é0 ")
        func word() -> String {
            String((0..<Int.random(in: 0...4, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! })
        }
        for _ in 0..<400 {
            let values = (0..<Int.random(in: 1...4, using: &rng)).map { _ in word() }
            let pattern =
                values.count == 1 && Bool.random(using: &rng)
                ? "^\(Self.escape(values[0]))$"
                : "^(\(Bool.random(using: &rng) ? "?:" : "")\(values.map(Self.escape).joined(separator: "|")))$"
            let tag = try TagPattern(pattern)
            #expect(tag.literals != nil, "\(pattern) should be read as literals")
            for candidate in values + (0..<6).map({ _ in word() }) {
                #expect(tag.matches(candidate) == (try Self.engine(pattern, candidate)), "\(pattern) on \(candidate)")
            }
        }
    }

    @Test(arguments: [
        ("^a|b$", ["a", "b", "ab", "xb", "ax", ""]),  // (^a)|(b$): not literals
        ("^(a|b)$", ["a", "b", "ab", ""]),
        ("^(a|)$", ["a", "", "b"]),
        ("^$", ["", "a"]),
        ("^\\$$", ["$", ""]),
        ("^a\\$", ["a$", "a"]),  // the closing `$` is escaped: unanchored at the end
        ("^\\d$", ["1", "d"]),
        ("^h.*$", ["h1", "x"]),
        ("^(a)|(b)$", ["a", "b", "xb"]),
        ("cpu", ["cpu0", "x"]),
    ])
    func otherPatternsMatchAsTheRegexEngineDoes(pattern: String, candidates: [String]) throws {
        let tag = try TagPattern(pattern)
        for candidate in candidates {
            #expect(tag.matches(candidate) == (try Self.engine(pattern, candidate)), "\(pattern) on \(candidate)")
            #expect(tag.matches(candidate) == (try Self.engine(pattern, candidate)))  // remembered answer
        }
    }
}
