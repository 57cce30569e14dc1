// libFuzzer target for the configuration parser (TOML → Configuration; Configuration.swift is the daemon's own
// file, linked here). Properties: any input is accepted or rejected with an error (no crash, no hang, no
// sanitizer report), and an accepted configuration that validates prints (`check-config`) as TOML that parses
// back to the same configuration.
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    guard let configuration = try? Configuration(toml: text) else { return 0 }
    guard (try? configuration.validate()) != nil else { return 0 }
    let printed = configuration.tomlText
    guard let again = try? Configuration(toml: printed) else {
        fatalError("the printed settings do not parse:\n\(printed)\nfrom:\n\(text)")
    }
    if again != configuration { fatalError("the printed settings differ when read back:\n\(printed)\nfrom:\n\(text)") }
    return 0
}
