import API
import Foundation
import Testing

/// `/query` parameters as Grafana, the `influx` CLI and client libraries send them (form encoding in the URL and
/// in POST bodies).
@Suite struct FormDecodingTests {
    @Test func decodesWhatClientsSend() {
        let q = #"SELECT mean("usage") FROM "cpu" WHERE "host" =~ /^(a|b)$/ AND time >= now() - 6h"#
        let encoded = q.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        let p = Form("db=metrics&epoch=ms&q=" + encoded).values
        #expect(p == ["db": "metrics", "epoch": "ms", "q": q])
        // '+' is a space; "%2B" a plus; UTF-8 sequences; lower-case hex; a key without '='; an empty value.
        #expect(
            Form("q=a+b%2Bc&n=%C2%B5s&h=%e2%82%ac&flag&e=").values == [
                "q": "a b+c", "n": "µs", "h": "€", "flag": "", "e": "",
            ])
        // A '%' not followed by two hex digits stays as it is; invalid UTF-8 is repaired, never a crash.
        #expect(Form("a=100%&b=%zz&c=%4").values == ["a": "100%", "b": "%zz", "c": "%4"])
        #expect(Form("a=%FF%FE").values == ["a": "\u{FFFD}\u{FFFD}"])
        #expect(Form("").values == [:])
        // A repeated key: the first value, as InfluxDB reads it (Go's `url.Values.Get`).
        #expect(Form("a=1&a=2").values == ["a": "1"])
    }

    /// Random strings survive percent-encoding and decoding unchanged (what URLComponents-based clients send).
    @Test func roundTripsRandomText() {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array(#"abcXYZ019 +%&=/"'\^$|()µ€😀"#)
        for _ in 0..<500 {
            let text = String(
                (0..<Int.random(in: 0...40, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! })
            let encoded = text.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
            #expect(Form("q=" + encoded)["q"] == text, "\(text)")
        }
    }
}
