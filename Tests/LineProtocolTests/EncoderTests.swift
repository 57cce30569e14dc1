import LineProtocol
import Testing

@Suite struct EncoderTests {
    func encode(_ point: Point) throws -> String {
        var out: [UInt8] = []
        try LineEncoder.append(point, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    @Test func escapesEachPartByItsOwnRules() throws {
        let point = Point(
            measurement: "cpu load,x=\"y\"",
            tags: [("host name", "a=b,c")],
            fields: [("f=\"k\"", .string("say \"hi\" \\ bye")), ("n", .integer(-3)), ("u", .unsigned(7))],
            timestamp: 1_700_000_000_000_000_000
        )
        #expect(
            try encode(point)
                == #"cpu\ load\,x\=\"y\",host\ name=a\=b\,c f\=\"k\"="say \"hi\" \\ bye",n=-3i,u=7u 1700000000000000000"#
                + "\n"
        )
    }

    @Test func rejectsWhatLineProtocolCannotExpress() {
        let bad: [Point] = [
            Point(measurement: "", fields: [("v", .float(1))]),
            Point(measurement: "m\\", fields: [("v", .float(1))]),
            Point(measurement: "#m", fields: [("v", .float(1))]),
            Point(measurement: "m", tags: [("k", "")], fields: [("v", .float(1))]),
            Point(measurement: "m", fields: []),
            Point(measurement: "m", fields: [("v", .float(.nan))]),
            Point(measurement: "m", fields: [("v", .float(.infinity))]),
            Point(measurement: "m", fields: [("v", .string("a\nb"))]),
            Point(measurement: "m", fields: [("\tv", .float(1))]),
            Point(measurement: "m", fields: [("v", .float(1))], timestamp: .max),
            // InfluxDB's scanner reads `a\\,b` as `a\\` and a separator: a backslash before ',', '=' or ' '.
            Point(measurement: "m", fields: [("a\\,b", .float(1))]),
            Point(measurement: "m", fields: [("a\\ b", .float(1))]),
            Point(measurement: "m", fields: [("a\\=b", .float(1))]),
            Point(measurement: "m", fields: [("a\\\\\\=b", .float(1))]),
        ]
        for point in bad {
            #expect(throws: EncodeError.self, "\(point)") { try encode(point) }
        }
    }

    /// Backslashes in a field key that InfluxDB reads back as they are: before other bytes, and even runs before
    /// an escaped separator.
    @Test func fieldKeysWithBackslashesThatReadBack() throws {
        let decoder = LineDecoder()
        for key in ["a\\b", "a\\\\,b", "a\\\\=b", "\\x", "a\\\"b", "a\\\\\\\\ b"] {
            #expect(LineEncoder.canWriteFieldKey(key), "\(key)")
            let bytes = Array(try encode(Point(measurement: "m", fields: [(key, .float(1))])).utf8.dropLast())
            let decoded = try bytes.withUnsafeBufferPointer { b in try decoder.decode(b) }
            #expect(decoded)
            #expect(decoder.fields.first.map { String(decoding: $0.key, as: UTF8.self) } == key)
        }
    }

    /// Found by the fuzzer (FuzzTesting/FailCases/FuzzLineProtocol/nul-leading-second-field-key): a field key that
    /// starts with NUL is fine after a comma but would be skipped as whitespace in first position. The encoder
    /// used to reject the whole point; it now writes another field first.
    @Test func fieldKeyStartingWithNULIsWrittenAfterAnotherField() throws {
        let point = Point(measurement: "m", fields: [("\0k", .float(1)), ("v", .integer(2))])
        let text = try encode(point)
        #expect(text == "m v=2i,\0k=1.0\n")
        let decoder = LineDecoder()
        let bytes = Array(text.utf8.dropLast())
        let ok = try bytes.withUnsafeBufferPointer { try decoder.decode($0) }
        #expect(ok)
        #expect(decoder.fields.count == 2)
    }
}
