// ParseBench: times metricsd's line-protocol decoder (LineFramer + LineDecoder, every field value decoded) on a
// file, in the same blocks the Go peers get. Prints one JSON object. Run through scripts/bench-parse.sh.
import Foundation
import LineProtocol
import Rollups

@main
enum ParseBench {
    nonisolated static func main() throws {
        var arguments = CommandLine.arguments.dropFirst()
        guard let path = arguments.popFirst() else {
            FileHandle.standardError.write(Data("usage: ParseBench FILE [RUNS] [BLOCK]\n".utf8))
            exit(2)
        }
        let runs = arguments.popFirst().flatMap { Int($0) } ?? 5
        let blockSize = arguments.popFirst().flatMap { Int($0) } ?? 64 << 10
        let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let lines = State.countNewlines(data)
        var blocks: [Range<Int>] = []
        var start = 0
        while start < data.count {
            var end = min(data.count, start + blockSize)
            if end < data.count { end = data[start..<end].lastIndex(of: 0x0A)! + 1 }
            blocks.append(start..<end)
            start = end
        }
        let state = State()

        // Sanity check before timing: every line parses.
        let parsed = state.pass(data, blocks)
        guard parsed == lines else { fatalError("parsed \(parsed) points, want \(lines)") }
        let counter = mallocCounter()
        var seconds: [Double] = []
        var mallocs: UInt = 0
        for _ in 0..<runs {
            let before = counter?() ?? 0
            let t0 = monotonicSeconds()
            _ = state.pass(data, blocks)
            seconds.append(monotonicSeconds() - t0)
            mallocs = (counter?() ?? 0) - before
        }
        let sorted = seconds.sorted()
        var result: [String: Any] = [
            "parser": "metricsd", "bytes": data.count, "lines": lines, "seconds": seconds,
            "median_seconds": sorted[sorted.count / 2], "best_seconds": sorted[0], "checksum": state.checksum,
        ]
        if counter != nil { result["mallocs_per_line"] = Double(mallocs) / Double(lines) }
        let json = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        FileHandle.standardOutput.write(json + Data("\n".utf8))

        // Parse → rollup: the same lines into the rollup engine. The first pass creates series, buckets and cells;
        // the timed passes after it measure the steady state (known series, open buckets).
        if ProcessInfo.processInfo.environment["PARSEBENCH_INGEST"] != nil {
            var config = RollupConfiguration()
            config.lateness = 86_400_000_000_000
            config.maxAge = .max / 4
            let engine = RollupEngine(configuration: config)
            let ingestState = State()
            let now: Int64 = 1_764_000_000_000_000_000 + 86_400_000_000_000
            _ = ingestState.ingest(data, blocks, engine: engine, now: now)
            var ingestSeconds: [Double] = []
            var ingestMallocs: UInt = 0
            for _ in 0..<runs {
                let before = counter?() ?? 0
                let t0 = monotonicSeconds()
                _ = ingestState.ingest(data, blocks, engine: engine, now: now)
                ingestSeconds.append(monotonicSeconds() - t0)
                ingestMallocs = (counter?() ?? 0) - before
            }
            // New minutes, as a daemon sees them: each timed pass moves every point one file span (139 minutes)
            // later, so its cells are made as Telegraf's 10 s points arrive (6 a cell); the buckets of the pass
            // before are closed first, untimed (the flush service closes them on another thread).
            let span: Int64 = 1 << 43  // ~2.4 h in ns, past the file's 139 minutes
            let shiftStep = span - span % config.interval  // whole minutes
            let fresh = RollupEngine(configuration: config)
            _ = ingestState.ingest(data, blocks, engine: fresh, now: now)
            var freshSeconds: [Double] = []
            var freshMallocs: UInt = 0
            for run in 1...runs {
                _ = fresh.closeAll()
                let before = counter?() ?? 0
                let t0 = monotonicSeconds()
                _ = ingestState.ingest(data, blocks, engine: fresh, now: now, shift: Int64(run) * shiftStep)
                freshSeconds.append(monotonicSeconds() - t0)
                freshMallocs = (counter?() ?? 0) - before
            }
            var r: [String: Any] = [
                "parser": "metricsd-ingest", "bytes": data.count, "lines": lines, "seconds": ingestSeconds,
                "median_seconds": ingestSeconds.sorted()[ingestSeconds.count / 2], "series": engine.activeSeries,
                "new_minutes_seconds": freshSeconds,
                "new_minutes_median_seconds": freshSeconds.sorted()[freshSeconds.count / 2],
            ]
            if counter != nil {
                r["mallocs_per_line"] = Double(ingestMallocs) / Double(lines)
                r["new_minutes_mallocs_per_line"] = Double(freshMallocs) / Double(lines)
            }
            let j = try JSONSerialization.data(withJSONObject: r, options: [.sortedKeys])
            FileHandle.standardOutput.write(j + Data("\n".utf8))
        }
    }

    static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// The allocation counter of tools/malloccount.c when it is preloaded.
    static func mallocCounter() -> (() -> UInt)? {
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "malloccount_get") else { return nil }
        let function = unsafeBitCast(symbol, to: (@convention(c) () -> UInt).self)
        return { function() }
    }
}

/// The decoding loop lives outside `main` (which is main-actor isolated in Swift 6) so that the per-line
/// closure carries no actor-isolation check: like the daemon's NIO handlers, it runs nonisolated.
final class State {
    static func countNewlines(_ data: [UInt8]) -> Int {
        var n = 0
        for b in data where b == 0x0A { n &+= 1 }
        return n
    }

    let decoder = LineDecoder()
    var framer = LineFramer(maxLineLength: 1 << 20)
    var checksum = 0.0

    @inline(never) nonisolated func ingest(
        _ data: [UInt8], _ blocks: [Range<Int>], engine: RollupEngine, now: Int64, shift: Int64 = 0
    ) -> Int {
        var applied = 0
        var late = LateCells()
        let decoder = self.decoder
        data.withUnsafeBytes { raw in
            for block in blocks {
                framer.feed(UnsafeRawBufferPointer(rebasing: raw[block])) { framed in
                    guard case .line(let line) = framed, (try? decoder.decode(line)) == true else { return }
                    var point = PointView(decoder)
                    if let t = point.timestamp { point.timestamp = t &+ shift }
                    applied &+= engine.ingest(point, now: now &+ shift, lateCells: &late).applied
                }
                framer.finish { _ in }
            }
        }
        return applied
    }

    @inline(never) nonisolated func pass(_ data: [UInt8], _ blocks: [Range<Int>]) -> Int {
        var points = 0
        var sum = 0.0
        let decoder = self.decoder
        data.withUnsafeBytes { raw in
            for block in blocks {
                framer.feed(UnsafeRawBufferPointer(rebasing: raw[block])) { framed in
                    guard case .line(let line) = framed else { return }
                    do {
                        if try decoder.decode(line) {
                            points &+= 1
                            if case .float(let v) = decoder.fields[decoder.fields.count - 1].value { sum += v }
                        }
                    } catch {
                        fatalError("unexpected parse error \(error)")
                    }
                }
                framer.finish { _ in }
            }
        }
        checksum += sum
        return points
    }
}
