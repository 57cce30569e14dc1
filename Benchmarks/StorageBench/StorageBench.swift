// StorageBench: flush speed of the SQLite store (1,000,000 series-minutes: a first flush that creates the series,
// then the next minutes of the same series — the steady state — then a flush that merges into every stored row) and
// WAL replay speed; then what forwarding spends per point before the network: reading the outbox (50,000 rows:
// 5,000 series × 10 minutes of `make bench-forward`'s cpu shape) and writing it as line protocol. Prints JSON lines.
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
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("storagebench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        if arguments.count > 1 && arguments[1] == "forward" {  // `StorageBench forward`: that part alone
            return try forward(dir.appendingPathComponent("forward.db").path)
        }
        let cellsPerFlush = arguments.count > 1 ? Int(arguments[1])! : 1_000_000
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

        try forward(dir.appendingPathComponent("forward.db").path)

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

    /// The outbox read and the line-protocol encoding of the forwarder (what `Forwarder.prepare` does), timed
    /// without the network: the CPU a forwarded point costs before libcurl.
    static func forward(_ path: String) throws {
        let store = try SQLiteStore(path: path, recordsOutbox: true)
        let series = (0..<5000).map {
            SeriesInfo(measurement: "cpu", tags: [TagPair("host", "h\($0 / 8)"), TagPair("cpu", "cpu\($0 % 8)")])
        }
        let fields = ["usage_user", "usage_system", "usage_idle", "usage_iowait"]
        for m in 0..<10 {
            let start = Int64(1_700_000_000 + m * 60) * 1_000_000_000
            var cells: [ClosedCell] = []
            for (s, info) in series.enumerated() {
                for (f, name) in fields.enumerated() {
                    var r = FieldRollup(kind: .numeric)
                    for k in 0..<6 {
                        let v = Double((s * 7 + m * 3 + k) % 97)
                        let value = [v + 0.5, Double(Int(v) / 2) + 0.25, 100 - v, Double(Int(v) % 5) + 0.125][f]
                        r.add(value, at: start + Int64(k) * 10_000_000_000)
                    }
                    cells.append(ClosedCell(series: info, field: name, rollup: r))
                }
            }
            try store.store([ClosedBucket(start: start, cells: cells)])
        }
        var encoder = ForwardEncoder(ForwarderConfiguration())
        var runs: [(read: Double, encode: Double)] = []
        var points = 0
        var bytes = 0
        for _ in 0..<9 {  // the first run fills the encoder's and the store's caches, as a long drain would
            var cursor = SQLiteStore.OutboxCursor.start
            var read = 0.0
            var encode = 0.0
            points = 0
            bytes = 0
            while true {
                var batch: (rows: [SQLiteStore.OutboxRow], cursor: SQLiteStore.OutboxCursor) = ([], cursor)
                read += try seconds { batch = try store.outboxBatch(after: cursor, limit: 5000) }
                if batch.rows.isEmpty { break }
                var out: [UInt8] = []
                encode += seconds { points += encoder.append(batch.rows, to: &out) { _, _ in } }
                bytes += out.count
                cursor = batch.cursor
            }
            runs.append((read, encode))
        }
        // One pass over the whole backlog, as the forwarder measures it (`/health`'s backlog, `max_backlog`).
        var pass = Double.infinity
        for _ in 0..<5 { pass = min(pass, try seconds { _ = try store.outboxBacklog(after: .start) }) }
        let best = runs.dropFirst().min { $0.read + $0.encode < $1.read + $1.encode }!
        let us = { (s: Double) in s / Double(points) * 1e6 }
        print(
            #"{"benchmark":"forward","points":\#(points),"read_us_per_point":\#(us(best.read)),"encode_us_per_point":\#(us(best.encode)),"bytes_per_point":\#(bytes / max(1, points)),"backlog_pass_ms":\#(pass * 1000)}"#
        )
    }
}
