// StorageBench: flush speed of the SQLite store (1,000,000 series-minutes: a first flush that creates the series,
// then the next minute of the same series — the steady state) and WAL replay speed. Prints JSON lines.
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
        let first = bucket(0)
        let second = bucket(60_000_000_000)
        let merge = bucket(60_000_000_000)
        let t1 = try seconds { try store.store([first]) }
        let t2 = try seconds { try store.store([second]) }
        let t3 = try seconds { try store.store([merge]) }  // every cell merges into an existing row
        print(
            #"{"benchmark":"flush","cells":\#(cellsPerFlush),"first_flush_new_series_s":\#(t1),"steady_flush_s":\#(t2),"merge_flush_s":\#(t3)}"#
        )

        // WAL replay: 256 MiB of 64 KiB line-protocol records.
        let walDir = dir.appendingPathComponent("wal").path
        let wal = WriteAheadLog(directory: walDir, durability: .none)
        _ = try wal.open(replayFrom: 0)
        let payload = [UInt8](repeating: UInt8(ascii: "x"), count: 64 << 10)
        let records = 4096
        let tw = try seconds {
            for _ in 0..<records { _ = try payload.withUnsafeBytes { try wal.append($0, receivedAt: 1, precision: 0) } }
            wal.syncAll()
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
