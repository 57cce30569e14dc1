import Foundation
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
    @Test func slowClientsDoNotStarveOthers() throws {
        let daemon = try Daemon()
        var slow: [Int32] = []
        for _ in 0..<64 {
            let fd = try connect(port: daemon.httpPort)
            _ = "POST /write?db=x HTTP/1.1\r\nHost: a\r\n".withCString { write(fd, $0, strlen($0)) }
            slow.append(fd)
        }
        defer { for fd in slow { close(fd) } }
        // A slow body too: headers promise 1 MB, a few bytes arrive.
        let body = try connect(port: daemon.httpPort)
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
        #expect(reply.text.contains("outside the accepted range dropped=4"), "\(reply.text)")
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

    func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else {
            close(fd)
            throw CLIError("connect: \(String(cString: strerror(errno)))")
        }
        return fd
    }
}
