import Foundation
import LineProtocol
import Testing

/// Golden files: `Fixtures/cases/<case>/input.lp` must render to `expected.jsonl` byte for byte — the
/// `metricsd parse` contract. An optional `precision` file names the precision. A fixed bug adds a case folder
/// named after its issue.
@Suite struct GoldenTests {
    static let cases: [String] = {
        let dir = fixtures.appendingPathComponent("cases")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.sorted()
    }()

    @Test func thereAreGoldenCases() {
        #expect(Self.cases.count >= 9)
    }

    @Test(arguments: cases)
    func rendersExpectedJSON(name: String) throws {
        let dir = fixtures.appendingPathComponent("cases").appendingPathComponent(name)
        let input = try readBytes(dir.appendingPathComponent("input.lp"))
        let expected = try readBytes(dir.appendingPathComponent("expected.jsonl"))
        var precision = Precision.nanoseconds
        if let text = try? String(contentsOf: dir.appendingPathComponent("precision"), encoding: .utf8) {
            precision = try #require(Precision(text.trimmingCharacters(in: .whitespacesAndNewlines)))
        }
        let got = ParseRenderer.render(input, precision: precision)
        #expect(
            got == expected,
            "\(name):\n--- got\n\(String(decoding: got, as: UTF8.self))--- expected\n\(String(decoding: expected, as: UTF8.self))"
        )
        // Every output line is valid JSON.
        for line in splitLines(got) {
            #expect(throws: Never.self) { try JSONSerialization.jsonObject(with: Data(line)) }
        }
    }
}
