import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Faults the daemon must ride out, each bounded in time. (Elsewhere: kill -9 under load in CrashTests, storage
/// faults in StorageIntegrationTests, influxd outages in ForwardingTests, random bytes, oversized lines and bodies,
/// max_series and max_connections in IngestIntegrationTests, auth in IngestIntegrationTests.)
@Suite struct FaultTests {
    /// Slow HTTP clients (slowloris) trickle partial request headers over many connections; meanwhile ordinary
    /// clients write and query and are answered promptly.
    /// Regression: with its HTTP port taken the daemon shut its other services down but never exited (the
    /// systemd readiness service waited forever for an HTTP server that had failed). It must exit non-zero at
    /// once, saying why — for each listener.
    @Test(arguments: ["--http", "--tcp"])
    func aTakenPortStopsTheDaemonWithAnError(flag: String) throws {
        let taken = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(taken) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(taken, $0, len) }
        }
        #expect(listen(taken, 4) == 0)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(taken, $0, &len) }
        }
        let port = Int(UInt16(bigEndian: addr.sin_port))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("metricsd-taken-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        var arguments = [
            "serve", "--data-dir", dir.path, "--udp", "", "--tcp", "", "--http", "127.0.0.1:\(try freePort())",
        ]
        arguments[arguments.firstIndex(of: flag)! + 1] = "127.0.0.1:\(port)"
        let process = Process()
        process.executableURL = try metricsdBinary()
        process.arguments = arguments
        let output = Pipe()
        process.standardError = output
        process.standardOutput = output
        try process.run()
        let deadline = Date().addingTimeInterval(15)
        while process.isRunning && Date() < deadline { usleep(50_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            Issue.record("metricsd still running 15 s after failing to bind \(flag) \(port)")
            return
        }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus != 0)
        #expect(text.contains("Address already in use"), "\(text)")
    }

    @Test func slowClientsDoNotStarveOthers() throws {
        let daemon = try Daemon()
        var slow: [Int32] = []
        for _ in 0..<64 {
            let fd = try daemon.connectTCP(port: daemon.httpPort)
            _ = "POST /write?db=x HTTP/1.1\r\nHost: a\r\n".withCString { write(fd, $0, strlen($0)) }
            slow.append(fd)
        }
        defer { for fd in slow { close(fd) } }
        // A slow body too: headers promise 1 MB, a few bytes arrive.
        let body = try daemon.connectTCP(port: daemon.httpPort)
        defer { close(body) }
        _ = "POST /write HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\nm v=1\n".withCString {
            write(body, $0, strlen($0))
        }
        for round in 0..<20 {
            // Keep trickling one header byte per slow connection.
            for fd in slow { _ = "X".withCString { write(fd, $0, 1) } }
            let started = Date()
            let reply = try daemon.http("POST", "/write?db=x", body: Data("fast,round=\(round) v=1\n".utf8))
            #expect(reply.status == 204)
            #expect(Date().timeIntervalSince(started) < 2, "a write waited behind the slow clients")
        }
        let json = try daemon.query("measurement=fast&field=v&agg=count")
        let total = ((json["series"] as? [[String: Any]]) ?? []).compactMap {
            (($0["points"] as? [[Double]])?.first?[1])
        }.reduce(0, +)
        #expect(total == 20)
        // The slow connections are still open: the shutdown must not wait for them (it did, until SIGKILL).
        let stopping = Date()
        #expect(daemon.stop() == 0)
        #expect(Date().timeIntervalSince(stopping) < 12)
        #expect(daemon.log().contains("clean shutdown"))
    }

    /// The largest UDP datagram (65,507 bytes of payload) holds hundreds of lines; every line of it counts.
    /// A datagram cut in the middle of a line (a sender's bug) keeps its whole lines and counts the cut one.
    @Test func largestUDPDatagramsAreReadWhole() throws {
        let daemon = try Daemon()
        var payload = ""
        var lines = 0
        while true {
            let line = "big,host=h\(lines % 50),region=somewhere-far-away value=\(lines).5,other=\(lines)i\n"
            if payload.utf8.count + line.utf8.count > 65_507 { break }
            payload += line
            lines += 1
        }
        #expect(lines > 600)
        daemon.sendUDP(Array(payload.utf8))
        #expect(
            daemon.eventually { (try? daemon.counter("udp_lines")) == lines },
            "udp_lines \((try? daemon.counter("udp_lines")) ?? -1) of \(lines)")
        #expect(try daemon.counter("udp_invalid") == 0)
        // A datagram that ends inside a line.
        daemon.sendUDP(Array("cut v=1\ncut v=2\ncut,host=a v".utf8))
        #expect(daemon.eventually { (try? daemon.counter("udp_invalid")) == 1 })
        #expect(try daemon.counter("udp_lines") == lines + 3)
        #expect(daemon.stop() == 0)
    }

    /// Clock jumps: points from the far future (beyond an hour ahead) and the far past (beyond retention_1m) are
    /// rejected and counted, on every listener, and never reach the rollups; points inside the window are kept.
    @Test func pointsFromTheFarFutureAndPastAreRejectedAndCounted() throws {
        let daemon = try Daemon(config: "[storage]\nretention_1m = \"1d\"\n")
        let now = Int64(Date().timeIntervalSince1970)
        let future = now + 2 * 3600
        let past = now - 3 * 86_400
        let year2200 = Int64(7_258_118_400)
        let body = [
            "clock,when=future v=1 \(future)", "clock,when=past v=1 \(past)", "clock,when=far v=1 \(year2200)",
            "clock,when=epoch v=1 0", "clock,when=now v=1 \(now)", "clock,when=recent v=1 \(now - 3600)",
        ].joined(separator: "\n")
        // As InfluxDB answers points outside its retention: a partial write naming how many were dropped.
        let reply = try daemon.http("POST", "/write?precision=s", body: Data(body.utf8))
        #expect(reply.status == 400, "\(reply.text)")
        #expect(reply.text.contains("outside the accepted range"), "\(reply.text)")
        #expect(reply.text.contains("(and 3 more lines) dropped=4"), "\(reply.text)")
        daemon.sendUDP(Array("clock,when=udp v=1 \(future)000000000\n".utf8))
        try daemon.sendTCP(Array("clock,when=tcp v=1 \(past)000000000\n".utf8))
        #expect(daemon.eventually { (try? daemon.counter("points_out_of_range")) == 6 })
        let json = try daemon.http("GET", "/api/v1/series?measurement=clock").json
        let tags = ((json["series"] as? [[String: Any]]) ?? []).compactMap {
            ($0["tags"] as? [String: String])?["when"]
        }
        #expect(Set(tags) == ["now", "recent"], "\(json)")
        #expect(daemon.stop() == 0)
    }

    /// A real full disk: the data directory on a 16 MiB tmpfs, filled by another file while writes go on. Writes
    /// are refused (503, not acknowledged) or stored late, `/health` reports the fault, nothing crashes; after the
    /// file is removed, storing resumes by itself and every acknowledged value is stored exactly once.
    @Test func diskFullAndBack() throws {
        let disk = try SmallDisk(megabytes: 16)
        let daemon = try Daemon(
            config: "[rollup]\ninterval = \"1s\"\nlateness = \"0s\"\n", dataDir: disk.mountPoint)
        var acknowledged = 0
        var refused = 0
        var batch = 0
        func write() throws {
            let now = Int64(Date().timeIntervalSince1970 * 1e9)
            var text = ""
            for i in 0..<200 { text += "full,host=h\(i % 20) v=1i \(now - Int64(i))\n" }
            let status = try daemon.http("POST", "/write", body: Data(text.utf8)).status
            if status == 204 { acknowledged += 200 } else { refused += 1 }
            #expect(status == 204 || status == 503 || status == 500, "status \(status)")
            batch += 1
        }
        for _ in 0..<20 { try write() }
        try disk.fill()
        // Writes go on against the full disk for 3 s.
        let until = Date().addingTimeInterval(3)
        while Date() < until {
            try write()
            usleep(50_000)
        }
        let counters = try daemon.counters()
        let faults = (counters["store_errors"] as? Int ?? 0) + (counters["wal_errors"] as? Int ?? 0)
        #expect(faults > 0 || refused > 0, "the full disk was noticed: \(counters)")
        #expect(daemon.process.isRunning)
        // Free the space: storing resumes by itself.
        try disk.empty()
        for _ in 0..<10 { try write() }
        #expect(
            try daemon.eventually(30) {
                let health = try daemon.http("GET", "/health").json
                let pending = (health["counters"] as? [String: Any])?["store_pending_cells"] as? Int
                return health["status"] as? String == "pass" && pending == 0
            }, "\((try? daemon.http("GET", "/health").text) ?? "")")
        #expect(try daemon.http("POST", "/api/v1/flush").status == 200)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let json = try daemon.query(
            "measurement=full&field=v&agg=count&from=\(now - 3_600_000)&to=\(now + 60_000)&step=1h")
        let stored = ((json["series"] as? [[String: Any]]) ?? []).flatMap { ($0["points"] as? [[Double]]) ?? [] }
            .reduce(0) { $0 + $1[1] }
        #expect(Int(stored) == acknowledged, "acknowledged \(acknowledged), stored \(Int(stored)), refused \(refused)")
        #expect(daemon.stop() == 0)
        withExtendedLifetime(disk) {}  // unmounted only after the daemon is gone
    }
}
