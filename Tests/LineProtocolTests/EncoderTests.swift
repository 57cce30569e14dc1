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
        ]
        for point in bad {
            #expect(throws: EncodeError.self, "\(point)") { try encode(point) }
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
