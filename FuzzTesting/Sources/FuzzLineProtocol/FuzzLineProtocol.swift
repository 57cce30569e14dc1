// libFuzzer target for the line-protocol decoder. Property: whatever decodes re-encodes, and the encoding decodes
// to the same point. Any crash, sanitizer report or broken property aborts with the input saved by libFuzzer.
import LineProtocol

// libFuzzer calls the target from one thread only.
nonisolated(unsafe) let decoder = LineDecoder()
nonisolated(unsafe) let again = LineDecoder()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var framer = LineFramer(maxLineLength: 4096)
    let input = UnsafeRawBufferPointer(start: data, count: size)
    var body: (FramedLine) -> Void = { _ in }
    body = { framed in
        guard case .line(let line) = framed else { return }
        guard (try? decoder.decode(line)) == true else { return }
        let point = decoder.makePoint()
        // Point holds Strings: invalid UTF-8 is replaced by U+FFFD, which can reorder or merge tag keys, so the
        // round trip is only asserted for valid UTF-8 lines. Invalid ones must still decode without crashing.
        guard String(validating: line, as: UTF8.self) != nil else { return }
        var bytes: [UInt8] = []
        do {
            try LineEncoder.append(point, to: &bytes)
        } catch {
            fatalError("decoded point does not re-encode: \(error) for \(point)")
        }
        bytes.removeLast()  // the newline
        let reparsed = bytes.withUnsafeBufferPointer { l in
            Result { () throws(LineError) in try again.decode(l) ? again.makePoint() : nil }
        }
        guard case .success(let p?) = reparsed, p == point else {
            fatalError("round trip changed the point: \(point) -> \(reparsed)")
        }
    }
    framer.feed(input, body)
    framer.finish(body)
    return 0
}
