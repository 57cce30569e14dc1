// StorageBench: flush speed of the SQLite store (1,000,000 series-minutes: a first flush that creates the series,
// then the next minutes of the same series — the steady state — then a flush that merges into every stored row) and
// WAL replay speed. Prints JSON lines.
import Export
import Foundation
import Rollups

@main
enum StorageBench {
    static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let t0 = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }

    nonisolated static func main() throws {
        let arguments = CommandLine.arguments
        let cellsPerFlush = arguments.count > 1 ? Int(arguments[1])! : 1_000_000
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("storagebench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try SQLiteStore(path: dir.appendingPathComponent("metricsd.db").path)
        let series = (0..<(cellsPerFlush / 4)).map {
            SeriesInfo(measurement: "cpu", tags: [TagPair("host", "host-\($0 / 10)"), TagPair("cpu", "cpu\($0 % 10)")])
        }
        func bucket(_ minute: Int64) -> ClosedBucket {
            var cells: [ClosedCell] = []
            cells.reserveCapacity(cellsPerFlush)
            for (i, s) in series.enumerated() {
                for f in ["usage_user", "usage_system", "usage_idle", "usage_iowait"] {
                    var r = FieldRollup(kind: .numeric)
                    for k in 0..<6 { r.add(Double((i + k) % 100) + 0.5, at: minute + Int64(k) * 10_000_000_000) }
                    cells.append(ClosedCell(series: s, field: f, rollup: r))
                }
            }
            return ClosedBucket(start: minute, cells: cells)
        }
        let probe = bucket(0)
        var bytes = 0
        let ts = seconds { for c in probe.cells { bytes += c.rollup.serialized().count } }
        print(
            #"{"benchmark":"serialize","cells":\#(probe.cells.count),"seconds":\#(ts),"bytes_per_cell":\#(bytes / probe.cells.count)}"#
        )
        // Each flush is timed to its commit (durable in SQLite's log); the checkpoint that folds the log into the
        // database file runs after it on the ticker, and is timed separately.
        func flush(_ bucket: ClosedBucket) throws -> (flush: Double, checkpoint: Double) {
            let f = try seconds { try store.store([bucket]) }
            let c = try seconds { try store.checkpoint() }
            return (f, c)
        }
        let first = try flush(bucket(0))
        // The steady state: the next minutes of the same series, five times (this machine is noisy; the median is
        // reported, with the fastest run).
        var steady: [(flush: Double, checkpoint: Double)] = []
        for minute in 1...5 { steady.append(try flush(bucket(Int64(minute) * 60_000_000_000))) }
        let merge = try flush(bucket(5 * 60_000_000_000))  // every cell merges into an existing row
        let rows = try store.rowCount()
        let flushes = steady.map(\.flush).sorted()
        let checkpoints = steady.map(\.checkpoint).sorted()
        print(
            #"{"benchmark":"flush","cells":\#(cellsPerFlush),"rows":\#(rows),"first_flush_new_series_s":\#(first.flush),"steady_flush_s":\#(flushes[2]),"steady_flush_min_s":\#(flushes[0]),"steady_flush_runs":\#(flushes),"steady_checkpoint_s":\#(checkpoints[2]),"merge_flush_s":\#(merge.flush)}"#
        )

        // WAL replay: 256 MiB of 64 KiB line-protocol records.
        let walDir = dir.appendingPathComponent("wal").path
        let wal = WriteAheadLog(directory: walDir, durability: .none)
        _ = try wal.open(replayFrom: 0)
        let payload = [UInt8](repeating: UInt8(ascii: "x"), count: 64 << 10)
        let records = 4096
        let tw = try seconds {
            for _ in 0..<records { _ = try payload.withUnsafeBytes { try wal.append($0, receivedAt: 1, precision: 0) } }
            try wal.syncAll()
        }
        wal.close()
        var replayed = 0
        let tr = try seconds {
            replayed = try WriteAheadLog(directory: walDir, durability: .none).open(replayFrom: 0).records.count
        }
        precondition(replayed == records)
        let mb = Double(records * payload.count) / 1e6
        print(
            #"{"benchmark":"wal","megabytes":\#(mb),"append_mb_per_s":\#(mb / tw),"replay_mb_per_s":\#(mb / tr)}"#
        )
    }
}
