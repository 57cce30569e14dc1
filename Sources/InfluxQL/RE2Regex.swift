import CRE2

/// A regular expression for untrusted patterns (InfluxQL `=~`, `!~`, `SHOW ... WITH KEY =~`): RE2, so matching
/// takes time linear in the text whatever the pattern — `/(a+)+$/` against 500 `a`s answers at once instead of
/// backtracking for hours — and the syntax is Go's `regexp` syntax, the one InfluxDB itself accepts.
///
/// Matching is unanchored (a match anywhere in the text, as Go's `MatchString`). Compiled programs are bounded by
/// ``maxMemory``; a pattern that needs more fails to compile with an error. Safe to use from several threads.
public final class RE2Regex: @unchecked Sendable {
    /// The most memory one compiled pattern may use (program and matching caches).
    public static let maxMemory: Int64 = 8 << 20

    public let pattern: String
    // Immutable after init; RE2 objects are safe for concurrent matching.
    private let handle: OpaquePointer

    public init(_ pattern: String) throws(QueryError) {
        var error = [CChar](repeating: 0, count: 256)
        var text = pattern
        let compiled = text.withUTF8 { bytes in
            bytes.withMemoryRebound(to: CChar.self) { chars in
                cre2shim_compile(chars.baseAddress, chars.count, Self.maxMemory, &error, error.count)
            }
        }
        guard let compiled else {
            let reason = String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw QueryError("invalid regex /\(pattern)/: \(reason)")
        }
        self.pattern = pattern
        handle = compiled
    }

    deinit { cre2shim_free(handle) }

    public func matches(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { bytes in
            bytes.withMemoryRebound(to: CChar.self) { cre2shim_match(handle, $0.baseAddress, $0.count) != 0 }
        }
    }
}
