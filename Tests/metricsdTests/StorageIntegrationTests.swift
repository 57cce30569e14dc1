import Export
import Foundation
import Testing

@testable import metricsd

/// Closed minutes reach SQLite and merge: a restart in the middle of a minute (SIGTERM stores the partial
/// minute; later points of the same minute merge in after the restart) and late points give exact rollups.
@Suite(.serialized) struct StorageIntegrationTests {
    @Test func restartMidMinuteMergesExactly() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("metricsd-restart-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let now = Int64(Date().timeIntervalSince1970 * 1e9)
        let minute = now / 60_000_000_000 * 60_000_000_000
        var values: [Double] = []
        func batch(_ range: Range<Int>) -> Data {
            var text = ""
            for i in range {
                let v = Double(i % 13) + 0.5
                values.append(v)
                text += "cpu,host=a usage=\(v) \(minute + Int64(i) * 1_000_000)\n"
            }
            return Data(text.utf8)
        }
        do {
            let daemon = try Daemon(dataDir: dir)
            #expect(try daemon.http("POST", "/write", body: batch(0..<500)).status == 204)
            #expect(daemon.stop() == 0)
            #expect(daemon.log().contains("stored 1 open buckets on shutdown"))
        }
        let daemon = try Daemon(dataDir: dir)
        #expect(try daemon.http("POST", "/write", body: batch(500..<800)).status == 204)
        // A late point for a minute an hour ago goes straight to the store and merges too.
        let old = minute - 3_600_000_000_000
        #expect(try daemon.http("POST", "/write", body: Data("cpu,host=a usage=100 \(old)".utf8)).status == 204)
        let from = minute / 1_000_000
        func value(_ agg: String, _ f: Int64, _ t: Int64) throws -> Double? {
            let json = try daemon.query("measurement=cpu&field=usage&agg=\(agg)&from=\(f)&to=\(t)")
            return ((json["series"] as? [[String: Any]])?.first?["points"] as? [[Double]])?.first?[1]
        }
        #expect(try value("count", from, from + 60_000) == 800)
        #expect(try value("sum", from, from + 60_000).map { abs($0 - values.reduce(0, +)) < 1e-6 } == true)
        #expect(try value("min", from, from + 60_000) == values.min())
        #expect(try value("max", from, from + 60_000) == values.max())
        #expect(try value("count", old / 1_000_000, old / 1_000_000 + 60_000) == 1)
        // After an explicit flush the same answers come from SQLite alone.
        #expect(try daemon.http("POST", "/api/v1/flush").status == 200)
        #expect(try value("count", from, from + 60_000) == 800)
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("var/metricsd.db").path))
    }

    /// A retried batch (every line timestamped) is acknowledged and not applied again — across a restart too;
    /// a batch without timestamps is a new write each time.
    @Test func retriedBatchesAreNotCountedTwice() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("metricsd-dedup-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let now = Int64(Date().timeIntervalSince1970 * 1e9)
        var text = ""
        for i in 0..<50 { text += "dd,host=a v=\(i) \(now + Int64(i))\n" }
        let body = Data(text.utf8)
        func count(_ daemon: Daemon, _ m: String) throws -> Double? {
            let json = try daemon.query("measurement=\(m)&field=v&agg=count")
            return ((json["series"] as? [[String: Any]])?.first?["points"] as? [[Double]])?.reduce(0) { $0 + $1[1] }
        }
        do {
            let daemon = try Daemon(dataDir: dir)
            #expect(try daemon.http("POST", "/write", body: body).status == 204)
            #expect(try daemon.http("POST", "/write", body: body).status == 204)
            #expect(
                try daemon.http("POST", "/write", body: Data(Gzip.gzip(text)), headers: ["Content-Encoding": "gzip"])
                    .status == 204)
            #expect(try count(daemon, "dd") == 50)
            // Without timestamps every write counts.
            #expect(try daemon.http("POST", "/write", body: Data("nots v=1".utf8)).status == 204)
            #expect(try daemon.http("POST", "/write", body: Data("nots v=1".utf8)).status == 204)
            #expect(try count(daemon, "nots") == 2)
            #expect(daemon.stop() == 0)
        }
        let daemon = try Daemon(dataDir: dir)
        #expect(try daemon.http("POST", "/write", body: body).status == 204)
        #expect(try count(daemon, "dd") == 50, "the retry after a restart is still recognised")
    }

    /// A storage fault (injected write error) turns /health degraded, ingestion and queries go on from memory, and
    /// storing resumes by itself when the fault clears — nothing acknowledged is lost.
    @Test func storageFaultsDegradeAndRecover() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("metricsd-fault-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = "[rollup]\ninterval = \"1s\"\nlateness = \"0s\"\n"
        let fault = dir.appendingPathComponent("var/inject-store-fault")
        let start = Int64(Date().timeIntervalSince1970 * 1000) - 60_000
        var total = 0
        func write(_ daemon: Daemon, _ n: Int) throws {
            let now = Int64(Date().timeIntervalSince1970 * 1e9)
            var text = ""
            for i in 0..<n { text += "fault,host=a v=\(i) \(now - Int64(i) * 1_000_000)\n" }
            #expect(try daemon.http("POST", "/write", body: Data(text.utf8)).status == 204)
            total += n
        }
        func count(_ daemon: Daemon) throws -> Double {
            let json = try daemon.query("measurement=fault&field=v&agg=count&from=\(start)&step=1h")
            return ((json["series"] as? [[String: Any]])?.first?["points"] as? [[Double]])?.reduce(0) { $0 + $1[1] }
                ?? 0
        }
        func status(_ daemon: Daemon) throws -> String {
            try daemon.http("GET", "/health").json["status"] as? String ?? ""
        }
        do {
            let daemon = try Daemon(config: config, dataDir: dir)
            _ = FileManager.default.createFile(atPath: fault.path, contents: Data())
            try write(daemon, 200)
            #expect(daemon.eventually(15) { (try? status(daemon)) == "degraded" }, "health turns degraded")
            #expect((try daemon.http("GET", "/health").json["message"] as? String)?.contains("injected fault") == true)
            try write(daemon, 100)
            #expect(daemon.eventually(5) { (try? count(daemon)) == Double(total) }, "pending data stays queryable")
            #expect(try daemon.counter("store_errors") > 0)
            try FileManager.default.removeItem(at: fault)
            #expect(daemon.eventually(15) { (try? status(daemon)) == "pass" }, "storing resumes by itself")
            #expect(daemon.eventually(5) { (try? daemon.counter("store_pending_cells")) == 0 })
            #expect(try count(daemon) == Double(total))
            #expect(daemon.stop() == 0)
        }
        let daemon = try Daemon(config: config, dataDir: dir)
        #expect(try count(daemon) == Double(total), "everything reached SQLite")
    }
}

extension Gzip {
    static func gzip(_ text: String) -> [UInt8] { compress(Array(text.utf8)) }
}
