import Foundation
import Synchronization
import TestSupport
import Testing

/// Acknowledged writes survive `kill -9`: the real binary under HTTP load with `durability = "fsync"`, killed at a
/// random moment five times and restarted on the same data directory. Every acknowledged point must be in the
/// rollups exactly once; a batch in flight at the kill is all there or all absent (one request is one WAL record).
@Suite(.serialized) struct CrashTests {
    final class Writer: @unchecked Sendable {
        let acked = Mutex<[Int]>([])
        let stop = Atomic<Bool>(false)
        let next = Atomic<Int>(0)
    }

    static let linesPerBatch = 100

    @Test func killNineUnderLoadLosesNothingAcknowledged() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("metricsd-crash-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = "[storage]\ndurability = \"fsync\"\n"
        let writer = Writer()
        let firstMinute = Int64(Date().timeIntervalSince1970) / 60 * 60_000
        var rng = SplitMix(seed: 7)
        for _ in 0..<5 {
            let daemon = try Daemon(config: config, dataDir: dir)
            writer.stop.store(false, ordering: .relaxed)
            let done = DispatchSemaphore(value: 0)
            let thread = Thread {
                while !writer.stop.load(ordering: .relaxed) {
                    let id = writer.next.wrappingAdd(1, ordering: .relaxed).oldValue
                    let now = Int64(Date().timeIntervalSince1970 * 1e9)
                    var body = ""
                    for k in 0..<Self.linesPerBatch { body += "crash,batch=\(id) v=\(id)i \(now + Int64(k))\n" }
                    guard let reply = try? daemon.http("POST", "/write", body: Data(body.utf8)) else { break }
                    if reply.status == 204 { writer.acked.withLock { $0.append(id) } }
                }
                done.signal()
            }
            thread.start()
            usleep(useconds_t(300_000 + rng.next() % 900_000))
            daemon.killHard()
            writer.stop.store(true, ordering: .relaxed)
            _ = done.wait(timeout: .now() + 30)
        }
        let acked = writer.acked.withLock { $0 }
        #expect(acked.count > 20, "the writer made progress (\(acked.count) batches acknowledged)")

        let daemon = try Daemon(config: config, dataDir: dir)
        let from = firstMinute - 60_000
        let to = Int64(Date().timeIntervalSince1970) * 1000 + 120_000
        let json = try daemon.query("measurement=crash&field=v&agg=count&from=\(from)&to=\(to)&step=1h&group_by=batch")
        var counts: [Int: Double] = [:]
        for series in json["series"] as? [[String: Any]] ?? [] {
            guard let id = (series["tags"] as? [String: String])?["batch"].flatMap(Int.init) else { continue }
            counts[id] = (series["points"] as? [[Double]] ?? []).reduce(0) { $0 + $1[1] }
        }
        for id in acked {
            #expect(counts[id] == Double(Self.linesPerBatch), "acknowledged batch \(id): \(counts[id] ?? 0) points")
        }
        for (id, count) in counts where !acked.contains(id) {
            #expect(count == Double(Self.linesPerBatch), "unacknowledged batch \(id) is partial: \(count)")
        }
        let sum = try daemon.query("measurement=crash&field=v&agg=sum&from=\(from)&to=\(to)&step=1h")
        let total = ((sum["series"] as? [[String: Any]])?.first?["points"] as? [[Double]])?.reduce(0) { $0 + $1[1] }
        let expected = counts.keys.reduce(0.0) { $0 + Double($1 * Self.linesPerBatch) }
        #expect(total == expected, "sums equal the exact values of the points present: no double count")
        #expect(daemon.log().contains("wal: replayed"))
    }
}
