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
            // PARSEBENCH_NEW_MINUTES=1: only the new-minutes passes (for a profile of that path alone).
            let openRuns = ProcessInfo.processInfo.environment["PARSEBENCH_NEW_MINUTES"] == nil ? runs : 1
            for _ in 0..<openRuns {
                let before = counter?() ?? 0
                let t0 = monotonicSeconds()
                _ = ingestState.ingest(data, blocks, engine: engine, now: now)
                ingestSeconds.append(monotonicSeconds() - t0)
                ingestMallocs = (counter?() ?? 0) - before
            }
            // New minutes, as a daemon sees them: each timed pass moves every point one file span (139 minutes)
            // later, with the engine's clock following the points, so each cell is made as its points arrive (6 a
            // cell, Telegraf's 10 s interval) and, as each new minute starts, the minutes before it close — untimed,
            // as the flush service closes them on another thread — and their memory is used again.
            var minutesConfig = RollupConfiguration()
            minutesConfig.lateness = minutesConfig.interval
            let span: Int64 = 1 << 43  // ~2.4 h in ns, past the file's 139 minutes
            let shiftStep = span - span % config.interval  // whole minutes
            let fresh = RollupEngine(configuration: minutesConfig)
            _ = ingestState.minutes(data, blocks, engine: fresh, shift: 0, counter: nil)
            var freshSeconds: [Double] = []
            var freshMallocs: UInt = 0
            for run in 1...runs {
                let timed = ingestState.minutes(
                    data, blocks, engine: fresh, shift: Int64(run) * shiftStep, counter: counter)
                freshSeconds.append(timed.seconds)
                freshMallocs = timed.mallocs
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

    /// ``ingest(_:_:engine:now:shift:)`` with the engine's clock at each point's time, closing finished minutes as a
    /// new one starts; returns the time and the allocations of the ingesting alone (the closes are not counted).
    @inline(never) nonisolated func minutes(
        _ data: [UInt8], _ blocks: [Range<Int>], engine: RollupEngine, shift: Int64, counter: (() -> UInt)?
    ) -> (seconds: Double, mallocs: UInt) {
        var late = LateCells()
        let decoder = self.decoder
        let interval = engine.configuration.interval
        var seconds = 0.0
        var mallocs: UInt = 0
        var minute = Int64.min
        var m0 = counter?() ?? 0
        var t0 = ParseBench.monotonicSeconds()
        data.withUnsafeBytes { raw in
            for block in blocks {
                framer.feed(UnsafeRawBufferPointer(rebasing: raw[block])) { framed in
                    guard case .line(let line) = framed, (try? decoder.decode(line)) == true else { return }
                    var point = PointView(decoder)
                    let t = (point.timestamp ?? 0) &+ shift
                    point.timestamp = t
                    if t / interval != minute {
                        if minute != .min {
                            seconds += ParseBench.monotonicSeconds() - t0
                            mallocs &+= (counter?() ?? 0) &- m0
                            _ = engine.closeFinished(now: t)
                            m0 = counter?() ?? 0
                            t0 = ParseBench.monotonicSeconds()
                        }
                        minute = t / interval
                    }
                    _ = engine.ingest(point, now: t, lateCells: &late)
                }
                framer.finish { _ in }
            }
        }
        seconds += ParseBench.monotonicSeconds() - t0
        mallocs &+= (counter?() ?? 0) &- m0
        _ = engine.closeAll()
        return (seconds, mallocs)
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
