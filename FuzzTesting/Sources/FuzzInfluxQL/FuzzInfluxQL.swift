// libFuzzer target for the InfluxQL parser. Properties: any input parses or fails with a QueryError (no crash, no
// hang, no sanitizer report), and parsing is deterministic.
import InfluxQL

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let first = Result { () throws(QueryError) in try Parser.parse(text) }
    let second = Result { () throws(QueryError) in try Parser.parse(text) }
    switch (first, second) {
    case (.success(let a), .success(let b)) where a == b: break
    case (.failure(let a), .failure(let b)) where a == b: break
    default: fatalError("parsing is not deterministic for \(text)")
    }
    return 0
}
