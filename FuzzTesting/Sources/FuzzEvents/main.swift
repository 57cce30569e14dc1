// libFuzzer target for the JSON event decoder. Properties: any input decodes to events or errors (no crash, no
// hang, no sanitizer report); the one-line decoder agrees with the body decoder on a single line; an accepted
// event's properties are themselves valid JSON that decodes again to the same text.
import LineProtocol

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let results = EventDecoder.decodeBody(bytes)
    for case .success(let event) in results {
        let wrapped = #"{"event":"e","user_id":"u","properties":"# + event.propertiesJSON + "}"
        let again = Array(wrapped.utf8).withUnsafeBufferPointer { EventDecoder.decodeBody($0) }
        guard again.count == 1, case .success(let back) = again[0], back.propertiesJSON == event.propertiesJSON else {
            fatalError("properties JSON does not round-trip: \(event.propertiesJSON)")
        }
    }
    if !bytes.contains(0x0A) {
        let one = Result { () throws(EventError) in try EventDecoder.decode(bytes) }
        if case .success(let e) = one, results.count != 1 || (try? results[0].get()) != e {
            fatalError("line and body decoders disagree")
        }
    }
    return 0
}
