import ArgumentParser
import Foundation
import LineProtocol
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// `metricsd parse`: line protocol on stdin, one canonical JSON object per non-blank, non-comment line on stdout.
struct ParseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parse",
        abstract: "Parse line protocol from stdin and print one canonical JSON object per line.",
        discussion: """
            Accepted lines print {"line":N,"measurement":...,"tags":{...},"fields":{"f":{"type":...,"value":...}},
            "time":<ns or null>}; rejected lines print {"line":N,"error":"column C: expected ..., found ..."}.
            Blank lines and # comments print nothing. The exit status is 0 even when lines are rejected.
            """
    )

    @Option(help: "Timestamp precision: ns, us, ms, s, m or h (also n and u).")
    var precision: String = "ns"

    func validate() throws {
        guard Precision(precision) != nil else {
            throw ValidationError("--precision must be one of ns, us, ms, s, m, h (got \"\(precision)\")")
        }
    }

    func run() throws {
        var renderer = ParseRenderer(precision: Precision(precision)!)
        let input = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { input.deallocate() }
        while true {
            let n = read(0, input.baseAddress, input.count)
            if n < 0 {
                if errno == EINTR { continue }
                throw ValidationError("reading stdin failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            renderer.feed(UnsafeRawBufferPointer(rebasing: input[0..<n]))
            if renderer.output.count >= 1 << 20 { writeOut(renderer.takeOutput()) }
        }
        renderer.finish()
        writeOut(renderer.takeOutput())
    }

    private func writeOut(_ out: [UInt8]) {
        out.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let w = write(1, raw.baseAddress! + offset, raw.count - offset)
                if w < 0 {
                    if errno == EINTR { continue }
                    return
                }
                offset += w
            }
        }
    }
}
