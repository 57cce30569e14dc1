import Foundation
import LineProtocol
import Testing

/// Error positions are marked inline with `¦` (removed before decoding): the error's column must point at the
/// byte right after the marker.
@Suite struct ErrorTests {
    static let table: [(String, LineError.Kind)] = [
        ("¦,host=a v=1", .missingMeasurement),
        ("cpu¦", .missingFields),
        ("cpu,host=a¦", .missingFields),
        ("cpu,¦ v=1", .missingTagKey),
        ("cpu,¦=a v=1", .missingTagKey),
        ("cpu,host¦ v=1", .missingTagValue),
        ("cpu,host¦,a=b v=1", .missingTagValue),
        ("cpu,host=¦ v=1", .missingTagValue),
        ("cpu,host=a¦=b v=1", .unescapedEqualsInTagValue),
        ("cpu,a=1,¦a=2 v=1", .duplicateTag),
        ("cpu ¦=1", .missingFieldKey),
        ("cpu v=1,¦", .missingFieldKey),
        ("cpu v¦", .missingFieldEquals),
        ("cpu v¦,w=1", .missingFieldEquals),
        ("cpu v=¦", .missingFieldValue),
        ("cpu v=¦,w=1", .missingFieldValue),
        ("cpu v=1¦x", .invalidNumber),
        ("cpu v=¦NaN", .invalidNumber),
        ("cpu v=¦-", .invalidNumber),
        ("cpu v=1.5¦i", .invalidNumber),
        ("cpu v=1e¦", .invalidNumber),
        ("cpu v=¦9223372036854775808i", .integerOutOfRange),
        ("cpu v=¦18446744073709551616u", .unsignedOutOfRange),
        ("cpu v=¦1e999", .floatOutOfRange),
        ("cpu v=¦truth", .invalidBoolean),
        ("cpu v=¦\"abc", .unterminatedString),
        ("cpu v=\"abc\"¦d", .expectedFieldSeparator),
        ("cpu v=1 12¦a", .invalidTimestamp),
        ("cpu v=1 ¦99999999999999999999", .timestampOutOfRange),
        ("cpu v=1 ¦9223372036854775807", .timestampOutOfRange),
        ("cpu v=1 1 ¦2", .trailingCharacters),
    ]

    @Test(arguments: table.indices)
    func reportsKindAndColumn(index: Int) throws {
        let (marked, kind) = Self.table[index]
        let marker = marked.utf8.split(separator: 0xC2, maxSplits: 1, omittingEmptySubsequences: false)
        let column = marker[0].count + 1
        let line = Array(marked.replacingOccurrences(of: "¦", with: "").utf8)
        let decoder = LineDecoder()
        let error = try #require(throws: LineError.self) {
            try line.withUnsafeBufferPointer { try decoder.decode($0) }
        }
        #expect(error.kind == kind, "\(marked)")
        #expect(error.column == column, "\(marked): \(error.message)")
        #expect(error.message.hasPrefix("column \(column): expected "))
    }

    @Test func aBadLineDoesNotLoseItsNeighbours() {
        let input = Array("cpu v=1 1\ncpu v=oops 2\ncpu v=3 3\n".utf8)
        let out = String(decoding: ParseRenderer.render(input), as: UTF8.self).split(separator: "\n")
        #expect(out.count == 3)
        #expect(out[0].contains(#""line":1,"measurement""#))
        #expect(out[1].contains(#""line":2,"error":"column 7: expected a boolean"#))
        #expect(out[2].contains(#""line":3,"measurement""#))
    }

    @Test func overlongLinesAreReportedAndSkipped() {
        var framer = LineFramer(maxLineLength: 8)
        var seen: [String] = []
        let input = Array("short\nthis line is too long\nok\n0123456789".utf8)
        input.withUnsafeBytes { raw in
            for k in 0..<raw.count {  // drip-fed: the limit holds across chunks
                framer.feed(UnsafeRawBufferPointer(rebasing: raw[k..<(k + 1)])) { framed in
                    switch framed {
                    case .line(let l): seen.append(String(decoding: l, as: UTF8.self))
                    case .overlong(let n): seen.append("overlong \(n)")
                    }
                }
                #expect(framer.pendingByteCount <= 8)
            }
        }
        framer.finish { framed in
            if case .overlong(let n) = framed { seen.append("overlong \(n)") }
        }
        #expect(seen == ["short", "overlong 21", "ok", "overlong 10"])
    }
}
