import Foundation
import TestSupport
import Testing

@testable import Export

/// Bodies are compressed by libdeflate and inflated by zlib: every compressed body must read back, byte for byte,
/// through zlib and through the system's `gzip`, at every level metricsd uses.
@Suite struct GzipTests {
    /// Line protocol of the forwarder's shape (long repeated keys, digits), then random bytes, then runs.
    static func body(_ rng: inout SplitMix, bytes: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes)
        while out.count < bytes {
            switch rng.next() % 3 {
            case 0:
                let line =
                    "cpu_1m,host=h\(rng.next() % 1000) usage_idle_mean=\(Double(rng.next() % 10_000) / 100),usage_idle_count=6i \(rng.next() % 1_000_000)\n"
                out.append(contentsOf: line.utf8)
            case 1:
                for _ in 0..<Int(rng.next() % 64) { out.append(UInt8(truncatingIfNeeded: rng.next())) }
            default:
                out.append(
                    contentsOf: repeatElement(UInt8(truncatingIfNeeded: rng.next()), count: Int(rng.next() % 300)))
            }
        }
        return Array(out.prefix(bytes))
    }

    @Test(arguments: [0, 1, 17, 4096, 300_000], [Int32(1), 6, 12])
    func compressedBodiesInflateToWhatWasCompressed(size: Int, level: Int32) throws {
        var rng = SplitMix(seed: UInt64(size) &* 31 &+ UInt64(level))
        let input = Self.body(&rng, bytes: size)
        let compressed = Gzip.compress(input, level: level)
        #expect(compressed.prefix(2) == [0x1F, 0x8B])  // gzip framing, as Content-Encoding: gzip promises
        let back = try compressed.withUnsafeBytes { try Gzip.decompress($0, limit: max(size, 1) * 2) }
        #expect(back == input)
    }

    @Test func lineProtocolShrinksAtTheFastestLevel() {
        var rng = SplitMix(seed: 7)
        var input: [UInt8] = []
        while input.count < 200_000 {
            input.append(
                contentsOf:
                    "cpu_1m,cpu=cpu\(rng.next() % 4),host=h\(rng.next() % 500) usage_user_count=6i,usage_user_mean=\(rng.next() % 100).5,usage_user_p99=\(rng.next() % 100).25 1700000000\n"
                    .utf8)
        }
        // What forwarding relies on for `content_encoding = "gzip"`: several times fewer bytes than the body.
        #expect(Gzip.compress(input, level: 1).count * 4 < input.count)
    }

    /// The system's gzip, another implementation, reads what libdeflate writes.
    @Test func theSystemGzipReadsTheBodies() throws {
        var rng = SplitMix(seed: 11)
        let input = Self.body(&rng, bytes: 100_000)
        let compressed = Gzip.compress(input, level: 1)
        let path = temporaryPath("gzip-test", suffix: ".gz")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data(compressed).write(to: URL(fileURLWithPath: path))
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/bin/gzip")
        gzip.arguments = ["-dc", path]
        let out = Pipe()
        gzip.standardOutput = out
        try gzip.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        gzip.waitUntilExit()
        #expect(gzip.terminationStatus == 0)
        #expect([UInt8](data) == input)
    }
}
