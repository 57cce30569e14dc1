import Foundation
import LineProtocol
import TestSupport
import Testing

@Suite struct EventDecoderTests {
    static func render(_ results: [Result<Event, EventError>]) -> String {
        results.map { result in
            switch result {
            case .success(let e):
                "ok id=\(e.id ?? "-") event=\(e.name) user=\(e.userID) ts=\(e.timestamp.map(String.init) ?? "-") props=\(e.propertiesJSON)"
            case .failure(let error):
                "error: \(error.message)"
            }
        }.joined(separator: "\n") + "\n"
    }

    static func decode(_ text: String) -> [Result<Event, EventError>] {
        Array(text.utf8).withUnsafeBufferPointer { EventDecoder.decodeBody($0) }
    }

    /// Golden file: every line of `Fixtures/events/input.ndjson` (valid events and one of each error) decodes to
    /// the matching line of `expected.txt`.
    @Test func ndjsonGolden() throws {
        let dir = fixtures.appendingPathComponent("events")
        let input = try String(contentsOf: dir.appendingPathComponent("input.ndjson"), encoding: .utf8)
        let expected = try String(contentsOf: dir.appendingPathComponent("expected.txt"), encoding: .utf8)
        let got = Self.render(Self.decode(input))
        if ProcessInfo.processInfo.environment["UPDATE_GOLDEN"] != nil {
            try got.write(to: dir.appendingPathComponent("expected.txt"), atomically: true, encoding: .utf8)
        }
        #expect(got == expected, "got:\n\(got)")
    }

    @Test func arrayAndSingleObject() throws {
        let array = Self.decode(#"[{"event":"a","user_id":"1"}, {"event":"b"}, {"event":"c","user_id":"3"}]"#)
        #expect(array.count == 3)
        #expect(try array[0].get().name == "a")
        #expect(throws: EventError.self) { try array[1].get() }
        #expect(try array[2].get().userID == "3")
        // A pretty-printed object over several lines is one event.
        let pretty = Self.decode("{\n  \"event\": \"a\",\n  \"user_id\": \"1\"\n}\n")
        #expect(pretty.count == 1)
        #expect(try pretty[0].get() == Event(name: "a", userID: "1"))
        #expect(Self.decode("  \n").isEmpty)
        #expect(Self.decode("[]").isEmpty)
        // A syntax error inside an array rejects the array (its structure is lost).
        let broken = Self.decode(#"[{"event":"a","user_id":"1"},"#)
        #expect(broken.count == 1)
        #expect(throws: EventError.self) { try broken[0].get() }
    }

    @Test func deepNestingIsRejectedNotRecursedForever() {
        let deep = String(repeating: "[", count: 100_000)
        let result = Self.decode(deep)
        #expect(result.count == 1)
        if case .failure(let e) = result[0] { #expect(e.message.contains("nested deeper")) }
    }

    @Test func limits() {
        var limits = EventLimits()
        limits.maxProperties = 2
        let text = #"{"event":"a","user_id":"u","properties":{"a":1,"b":2,"c":3}}"#
        let r = Array(text.utf8).withUnsafeBufferPointer { EventDecoder.decodeBody($0, limits: limits) }
        if case .failure(let e) = r[0] { #expect(e.message.contains("more than 2 keys")) } else { Issue.record() }
        let long = #"{"event":"\#(String(repeating: "x", count: 201))","user_id":"u"}"#
        if case .failure(let e) = Self.decode(long)[0] {
            #expect(e.message.contains("longer than 200 bytes"))
        } else {
            Issue.record()
        }
    }

    /// Property: any event Foundation's JSONSerialization writes (random ids, names, unicode, numbers, booleans,
    /// key order) decodes to the same fields, and the properties JSON reads back to the same values.
    @Test(arguments: 0..<8)
    func foundationEncodedEventsRoundTrip(seed: Int) throws {
        var rng = SplitMix(seed: UInt64(seed) &+ 11)
        let alphabet = Array("abcXYZ09 _-\"\\/\n\té€😀")
        func text(_ n: ClosedRange<Int>) -> String {
            String((0..<Int.random(in: n, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! })
        }
        var lines: [String] = []
        var wanted: [(String, String, Int64, [String: Any])] = []
        for _ in 0..<200 {
            let name = text(1...12).filter { $0 != "\n" && $0 != "\t" }
            let user = text(1...12).filter { $0 != "\n" && $0 != "\t" }
            guard !name.isEmpty, !user.isEmpty else { continue }
            let ts = Int64.random(in: 0...2_000_000_000_000, using: &rng)
            var props: [String: Any] = [:]
            for k in 0..<Int.random(in: 0...5, using: &rng) {
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: props["k\(k)" + text(0...3)] = text(0...20)
                case 1: props["k\(k)"] = Double.random(in: -1e9...1e9, using: &rng)
                default: props["k\(k)"] = Bool.random(using: &rng)
                }
            }
            let object: [String: Any] = ["event": name, "user_id": user, "timestamp": ts, "properties": props]
            let data = try JSONSerialization.data(withJSONObject: object)
            lines.append(String(decoding: data, as: UTF8.self))
            wanted.append((name, user, ts, props))
        }
        let results = Self.decode(lines.joined(separator: "\n"))
        #expect(results.count == wanted.count)
        for (result, want) in zip(results, wanted) {
            let event = try result.get()
            #expect(event.name == want.0 && event.userID == want.1 && event.timestamp == want.2)
            // Read back with JSONDecoder (exact; JSONSerialization's reader on Linux is not correctly rounded).
            let back = try JSONDecoder().decode([String: Scalar].self, from: Data(event.propertiesJSON.utf8))
            #expect(back.count == want.3.count)
            for (k, v) in want.3 {
                if let b = v as? Bool {
                    #expect(back[k] == .bool(b))
                } else if let d = v as? Double {
                    #expect(back[k] == .number(d), "\(k)")
                } else {
                    #expect(back[k] == .string(v as! String))
                }
            }
        }
    }

    enum Scalar: Decodable, Equatable {
        case bool(Bool)
        case number(Double)
        case string(String)
        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let b = try? c.decode(Bool.self) {
                self = .bool(b)
            } else if let d = try? c.decode(Double.self) {
                self = .number(d)
            } else {
                self = .string(try c.decode(String.self))
            }
        }
    }

    /// Property: no input, however mangled, crashes the decoder or hangs it; every result names a reason.
    @Test func mutatedInputsNeverCrash() {
        var rng = SplitMix(seed: 99)
        let seed = Array(
            #"{"id":"e","event":"a\u00e9","user_id":"u","timestamp":"2026-11-28T10:00:00Z","properties":{"x":[1],"y":-1.5e3}}"#
                .utf8)
        for _ in 0..<5_000 {
            var bytes = seed
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let k = Int.random(in: 0..<bytes.count, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: bytes[k] = UInt8.random(in: 0...255, using: &rng)
                case 1: bytes.remove(at: k)
                default: bytes.insert(bytes[Int.random(in: 0..<bytes.count, using: &rng)], at: k)
                }
                if bytes.isEmpty { bytes = [0x7B] }
            }
            let results = bytes.withUnsafeBufferPointer { EventDecoder.decodeBody($0) }
            for case .failure(let e) in results { #expect(!e.message.isEmpty) }
        }
    }
}

@Suite struct RFC3339Tests {
    @Test func parsesOffsetsAndFractions() {
        #expect(RFC3339.nanoseconds("1970-01-01T00:00:00Z") == 0)
        #expect(RFC3339.nanoseconds("2026-11-28T10:00:00.5+01:00") == 1_795_856_400_500_000_000)
        #expect(RFC3339.nanoseconds("2026-11-28 10:00:00z") == 1_795_860_000_000_000_000)
        #expect(RFC3339.nanoseconds("2026-11-28T10:00:00") == nil)
        #expect(RFC3339.nanoseconds("2026-13-28T10:00:00Z") == nil)
    }

    /// Regression: a year after 2262 overflowed Int64 nanoseconds and trapped — reachable from a query's time
    /// condition (`time > '9999-01-01T00:00:00Z'`) and from an event's timestamp. Now it is simply out of range.
    @Test func timesBeyondInt64NanosecondsAreOutOfRangeNotACrash() {
        #expect(RFC3339.nanoseconds("9999-12-31T23:59:59Z") == nil)
        #expect(RFC3339.nanoseconds("0001-01-01T00:00:00Z") == nil)
        #expect(RFC3339.nanoseconds("2262-04-11T23:47:16.854775807Z") == Int64.max)
        #expect(RFC3339.nanoseconds("2262-04-11T23:47:16.854775808Z") == nil)
    }
}

@Suite struct JSONUnquoteTests {
    @Test func unquotesOneStringLiteralOnly() {
        #expect(EventDecoder.unquote(#""a\nb\u00e9\"""#) == "a\nbé\"")
        #expect(EventDecoder.unquote(#""""#) == "")
        #expect(EventDecoder.unquote(#""a" "b""#) == nil)
        #expect(EventDecoder.unquote("12") == nil)
        #expect(EventDecoder.unquote(#""open"#) == nil)
    }
}

@Suite struct EventDecoderExactnessTests {
    /// A numeric `user_id` of 2^53 + 1 was read through a Double and stored as 2^53 (two users merged).
    @Test func integerUserIDsStayExact() throws {
        let results = Array(#"{"event":"a","user_id":9007199254740993,"properties":{"n":9007199254740993}}"#.utf8)
            .withUnsafeBufferPointer { EventDecoder.decodeBody($0) }
        let event = try results[0].get()
        #expect(event.userID == "9007199254740993")
        #expect(event.properties == [EventProperty("n", "9007199254740993")])
    }

    /// Events decoded one at a time give the same results as the collected form, index for index.
    @Test func streamingMatchesCollecting() {
        for text in [
            #"[{"event":"a","user_id":"1"},{"event":"b"},{"event":"c","user_id":"3"}]"#,
            "{\"event\":\"a\",\"user_id\":\"1\"}\n{bad\n{\"event\":\"c\",\"user_id\":\"3\"}",
            #"[{"event":"a","user_id":"1"},"#,
        ] {
            var streamed: [(Int, Result<Event, EventError>)] = []
            Array(text.utf8).withUnsafeBufferPointer { EventDecoder.forEachEvent($0) { streamed.append(($0, $1)) } }
            let collected = Array(text.utf8).withUnsafeBufferPointer { EventDecoder.decodeBody($0) }
            #expect(streamed.map(\.0) == Array(0..<collected.count))
            #expect(streamed.map { try? $0.1.get() } == collected.map { try? $0.get() })
        }
    }
}

@Suite struct RFC3339FormatTests {
    /// The writer `/query` answers use (a formatter object per row made RFC 3339 answers 500× slower than epoch
    /// ones) gives Go's RFC3339Nano: whole seconds without a fraction, the fraction's trailing zeros dropped; and it
    /// reads back to the same nanoseconds.
    @Test func formatsAsInfluxDBAndRoundTrips() {
        #expect(RFC3339.format(0) == "1970-01-01T00:00:00Z")
        #expect(RFC3339.format(1_795_860_000_500_000_000) == "2026-11-28T10:00:00.5Z")
        #expect(RFC3339.format(1_795_860_000_000_000_001) == "2026-11-28T10:00:00.000000001Z")
        #expect(RFC3339.format(-1) == "1969-12-31T23:59:59.999999999Z")
        #expect(RFC3339.format(951_782_400_000_000_000) == "2000-02-29T00:00:00Z")
        var state: UInt64 = 42
        for _ in 0..<10_000 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let t = Int64(bitPattern: state) / 2
            #expect(RFC3339.nanoseconds(RFC3339.format(t)) == t, "\(t)")
        }
        #expect(RFC3339.nanoseconds(RFC3339.format(Int64.max)) == Int64.max)
        #expect(RFC3339.nanoseconds(RFC3339.format(Int64.min)) == Int64.min)
    }
}
