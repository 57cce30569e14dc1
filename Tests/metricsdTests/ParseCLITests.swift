import Foundation
import Testing

/// Runs the real `metricsd` binary (built by `swift build`, found next to the test bundle or via METRICSD_BIN).
func metricsdBinary() throws -> URL {
    if let path = ProcessInfo.processInfo.environment["METRICSD_BIN"] { return URL(fileURLWithPath: path) }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    for candidate in [".build/debug/metricsd", ".build/release/metricsd"] {
        let url = root.appendingPathComponent(candidate)
        if FileManager.default.isExecutableFile(atPath: url.path) { return url }
    }
    throw CLIError("metricsd binary not found; run `swift build` first or set METRICSD_BIN")
}

struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Runs `metricsd <arguments>` with `input` on stdin; returns (exit status, stdout, stderr).
func runMetricsd(_ arguments: [String], input: [UInt8]) throws -> (Int32, String, String) {
    let process = Process()
    process.executableURL = try metricsdBinary()
    process.arguments = arguments
    let stdin = Pipe()
    let stdout = Pipe()
    let stderr = Pipe()
    process.standardInput = stdin
    process.standardOutput = stdout
    process.standardError = stderr
    try process.run()
    let writer = Thread {
        stdin.fileHandleForWriting.write(Data(input))
        try? stdin.fileHandleForWriting.close()
    }
    writer.start()
    let out = stdout.fileHandleForReading.readDataToEndOfFile()
    let err = stderr.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
}

@Suite struct ParseCLITests {
    @Test func printsTheCanonicalFormat() throws {
        let input = "# header\ncpu,host=a,az=eu usage=1.5,n=3i 1700000000000000000\n\nbad line\nmem free=2u\r\n"
        let (status, out, _) = try runMetricsd(["parse"], input: Array(input.utf8))
        #expect(status == 0)
        #expect(
            out == """
                {"line":2,"measurement":"cpu","tags":{"az":"eu","host":"a"},"fields":{"usage":{"type":"float","value":1.5},"n":{"type":"integer","value":3}},"time":1700000000000000000}
                {"line":4,"error":"column 9: expected '=' and a value after the field key, found end of line"}
                {"line":5,"measurement":"mem","tags":{},"fields":{"free":{"type":"unsigned","value":2}},"time":null}

                """
        )
    }

    @Test(arguments: [("s", "1700000000", "1700000000000000000"), ("ms", "1", "1000000"), ("h", "1", "3600000000000")])
    func appliesPrecision(precision: String, stamp: String, nanoseconds: String) throws {
        let (status, out, _) = try runMetricsd(
            ["parse", "--precision", precision], input: Array("m v=1 \(stamp)\n".utf8))
        #expect(status == 0)
        #expect(out.contains("\"time\":\(nanoseconds)}"))
    }

    @Test func rejectsAnUnknownPrecision() throws {
        let (status, _, err) = try runMetricsd(["parse", "--precision", "weeks"], input: [])
        #expect(status != 0)
        #expect(err.contains("--precision must be one of"))
    }

    @Test func handlesLargeInputsAcrossReadBoundaries() throws {
        // 3 MB of input crosses the 1 MiB read buffer several times; every line must come out, in order.
        var input = ""
        for i in 0..<60_000 { input += "cpu,host=h\(i % 97) v=\(i)i \(i)\n" }
        let (status, out, _) = try runMetricsd(["parse"], input: Array(input.utf8))
        #expect(status == 0)
        let lines = out.split(separator: "\n")
        #expect(lines.count == 60_000)
        #expect(lines.last?.hasPrefix(#"{"line":60000,"#) == true)
    }
}
