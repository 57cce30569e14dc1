import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Mixed load at a fixed rate on every listener plus events, with forwarding to a real influxd, for
/// `METRICSD_SOAK_SECONDS` (60 in `make test`; `make soak` runs longer and writes docs/SOAK.md). Every acknowledged
/// value (HTTP 204, events 200) and every TCP line must be stored exactly once and forwarded exactly once; UDP loss
/// is reported (it is a lossy transport); resident memory must stay flat once the series exist.
@Suite(.serialized) struct SoakTests {
    static let seconds = Double(ProcessInfo.processInfo.environment["METRICSD_SOAK_SECONDS"] ?? "") ?? 60
    static let report = ProcessInfo.processInfo.environment["METRICSD_SOAK_REPORT"]

    /// Counts one sender's progress.
    final class Tally: Sendable {
        let sent = Atomic<Int>(0)
        let acknowledged = Atomic<Int>(0)
        let failed = Atomic<Int>(0)
    }

    @Test func mixedLoadLosesNothingAcknowledged() throws {
        let influx = try Influxd()
        let daemon = try Daemon(
            config: """
                [rollup]
                interval = "10s"
                lateness = "5s"
                [influx]
                url = "\(influx.url)"
                create_database = true
                flush_interval = "1s"
                retry_initial = "200ms"
                retry_max = "2s"
                """)
        let series = 500
        let deadline = Date().addingTimeInterval(Self.seconds)
        let stop = Atomic<Bool>(false)
        let http = Tally()
        let tcp = Tally()
        let udp = Tally()
        let events = Tally()

        // HTTP: 20 batches of 250 lines a second (5,000 values/s), each counted once acknowledged.
        let httpThread = Thread {
            var round = 0
            while !stop.load(ordering: .relaxed) {
                let started = Date()
                var body = ""
                for i in 0..<250 { body += "soak_http,series=s\((round * 250 + i) % series) v=1i\n" }
                http.sent.add(250, ordering: .relaxed)
                if (try? daemon.http("POST", "/write?db=soak", body: Data(body.utf8)).status) == 204 {
                    http.acknowledged.add(250, ordering: .relaxed)
                } else {
                    http.failed.add(250, ordering: .relaxed)
                }
                round += 1
                Self.pace(started, 0.05)
            }
        }
        // TCP: one connection, 3,000 lines a second in writes of 150.
        let tcpThread = Thread {
            guard let fd = try? daemon.connectTCP() else { return }
            var round = 0
            while !stop.load(ordering: .relaxed) {
                let started = Date()
                var chunk = ""
                for i in 0..<150 { chunk += "soak_tcp,series=s\((round * 150 + i) % series) v=1i\n" }
                let bytes = Array(chunk.utf8)
                var offset = 0
                while offset < bytes.count {
                    let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
                    if n <= 0 { break }
                    offset += n
                }
                if offset == bytes.count {
                    tcp.sent.add(150, ordering: .relaxed)
                } else {
                    tcp.failed.add(150, ordering: .relaxed)
                }
                round += 1
                Self.pace(started, 0.05)
            }
            close(fd)
        }
        // UDP: 2,000 lines a second in datagrams of 50.
        let udpThread = Thread {
            var round = 0
            while !stop.load(ordering: .relaxed) {
                let started = Date()
                var datagram = ""
                for i in 0..<50 { datagram += "soak_udp,series=s\((round * 50 + i) % series) v=1i\n" }
                daemon.sendUDP(Array(datagram.utf8))
                udp.sent.add(50, ordering: .relaxed)
                round += 1
                Self.pace(started, 0.025)
            }
        }
        // Events: 10 batches of 20 a second, with ids (a retried batch would be deduplicated).
        let eventsThread = Thread {
            var round = 0
            while !stop.load(ordering: .relaxed) {
                let started = Date()
                var body = ""
                for i in 0..<20 {
                    let n = round * 20 + i
                    body += #"{"id":"e\#(n)","event":"soak","user_id":"u\#(n % 300)"}"# + "\n"
                }
                events.sent.add(20, ordering: .relaxed)
                let reply = try? daemon.http("POST", "/api/v1/events", body: Data(body.utf8))
                if reply?.status == 200, (reply?.json["accepted"] as? Int) == 20 {
                    events.acknowledged.add(20, ordering: .relaxed)
                } else {
                    events.failed.add(20, ordering: .relaxed)
                }
                round += 1
                Self.pace(started, 0.1)
            }
        }
        for thread in [httpThread, tcpThread, udpThread, eventsThread] { thread.start() }

        // Resident memory every 2 s.
        var rss: [(Double, Int)] = []
        let start = Date()
        while Date() < deadline {
            Thread.sleep(forTimeInterval: min(2, max(0, deadline.timeIntervalSinceNow)))
            rss.append((Date().timeIntervalSince(start), daemon.residentBytes()))
        }
        stop.store(true, ordering: .relaxed)
        Thread.sleep(forTimeInterval: 0.5)  // the senders finish their round

        // Everything received is applied before the counters are read: TCP lines are in flight until read.
        #expect(
            try daemon.eventually(20) {
                (try daemon.counter("tcp_lines")) == tcp.sent.load(ordering: .relaxed)
            }, "tcp_lines \((try? daemon.counter("tcp_lines")) ?? -1) of \(tcp.sent.load(ordering: .relaxed))")
        let udpReceived = try daemon.counter("udp_lines")
        #expect(try daemon.http("POST", "/api/v1/flush").status == 200)
        let stored = [
            "http": try Self.storedCount(daemon, "soak_http"), "tcp": try Self.storedCount(daemon, "soak_tcp"),
            "udp": try Self.storedCount(daemon, "soak_udp"),
        ]
        let storedEvents = try Self.storedCount(daemon, "events", field: "count")
        let counters = try daemon.counters()

        // A graceful stop stores the open buckets and drains the outbox into influxd.
        #expect(daemon.stop() == 0)
        let forwarded = [
            "http": try Self.forwardedCount(influx, "soak_http_1m"),
            "tcp": try Self.forwardedCount(influx, "soak_tcp_1m"),
            "udp": try Self.forwardedCount(influx, "soak_udp_1m"),
        ]
        let forwardedEvents = try Self.forwardedCount(influx, "events_1m", field: "count_count")

        let httpAcked = http.acknowledged.load(ordering: .relaxed)
        let eventsAcked = events.acknowledged.load(ordering: .relaxed)
        #expect(httpAcked > 0 && eventsAcked > 0)
        #expect(http.failed.load(ordering: .relaxed) == 0 && events.failed.load(ordering: .relaxed) == 0)
        #expect(stored["http"] == httpAcked, "HTTP: acknowledged \(httpAcked), stored \(stored["http"] ?? -1)")
        #expect(forwarded["http"] == httpAcked, "HTTP: acknowledged \(httpAcked), forwarded \(forwarded["http"] ?? -1)")
        #expect(stored["tcp"] == tcp.sent.load(ordering: .relaxed))
        #expect(forwarded["tcp"] == stored["tcp"])
        #expect(stored["udp"] == udpReceived, "every UDP line received is stored")
        #expect(forwarded["udp"] == stored["udp"])
        #expect(storedEvents == eventsAcked, "events: acknowledged \(eventsAcked), stored \(storedEvents)")
        #expect(forwardedEvents == eventsAcked, "events: acknowledged \(eventsAcked), forwarded \(forwardedEvents)")

        // Memory: flat once the series exist. Compare the last third with the middle third (the first third
        // includes start-up and the series arriving); bounded growth allows noise of 20 % or 16 MiB.
        let third = rss.count / 3
        let middle = rss[third..<(2 * third)].map(\.1).max() ?? 0
        let last = rss[(2 * third)...].map(\.1).max() ?? 0
        #expect(third >= 3, "too short a run to judge memory")
        #expect(last <= max(middle + middle / 5, middle + 16 << 20), "RSS grew from \(middle) to \(last) bytes")

        let udpSent = udp.sent.load(ordering: .relaxed)
        let lines = [
            "# Soak test", "",
            "`METRICSD_SOAK_SECONDS=\(Int(Self.seconds)) make soak` (Tests/metricsdTests/SoakTests.swift), on \(ProcessInfo.processInfo.hostName), \(Date()).",
            "Rollup interval 10 s, forwarding to a real influxd (Debian's influxdb) with a 1 s flush interval; \(series) series per listener.",
            "", "| source | sent | acknowledged | stored | forwarded | lost of acknowledged |",
            "|---|---|---|---|---|---|",
            "| HTTP /write (20 × 250 lines/s) | \(http.sent.load(ordering: .relaxed)) | \(httpAcked) | \(stored["http"] ?? -1) | \(forwarded["http"] ?? -1) | \(httpAcked - (forwarded["http"] ?? 0)) |",
            "| TCP (3,000 lines/s) | \(tcp.sent.load(ordering: .relaxed)) | (written) \(tcp.sent.load(ordering: .relaxed)) | \(stored["tcp"] ?? -1) | \(forwarded["tcp"] ?? -1) | \(tcp.sent.load(ordering: .relaxed) - (forwarded["tcp"] ?? 0)) |",
            "| UDP (2,000 lines/s) | \(udpSent) | (received) \(udpReceived) | \(stored["udp"] ?? -1) | \(forwarded["udp"] ?? -1) | UDP loss: \(udpSent - udpReceived) |",
            "| events (10 × 20/s) | \(events.sent.load(ordering: .relaxed)) | \(eventsAcked) | \(storedEvents) | \(forwardedEvents) | \(eventsAcked - forwardedEvents) |",
            "",
            "Counters at the end: udp_drops \(counters["udp_drops"] ?? 0), series_active \(counters["series_active"] ?? 0), buckets_closed \(counters["buckets_closed"] ?? 0).",
            "",
            "Resident memory (MiB) every 2 s: "
                + rss.map { String(format: "%.0f", Double($0.1) / 1_048_576) }.joined(separator: " "),
            "",
            "Memory check: max of the last third \(last >> 20) MiB vs the middle third \(middle >> 20) MiB (allowed +20 % or +16 MiB).",
            "What may still grow, by design and bounded: SQLite's page caches (up to 64 MiB for rollups and 16 MiB for events) fill as the database grows, and the event index keeps every stored event in memory for `[events] retention` (docs/events.md); here \(eventsAcked) events were stored.",
        ]
        let text = lines.joined(separator: "\n") + "\n"
        print(text)
        if let path = Self.report { try text.write(toFile: path, atomically: true, encoding: .utf8) }
    }

    static func pace(_ started: Date, _ period: Double) {
        let left = period - Date().timeIntervalSince(started)
        if left > 0 { Thread.sleep(forTimeInterval: left) }
    }

    /// The sum of `count` of `field` over every stored bucket of the last day.
    static func storedCount(_ daemon: Daemon, _ measurement: String, field: String = "v") throws -> Int {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let json = try daemon.query(
            "measurement=\(measurement)&field=\(field)&agg=count&from=\(now - 86_400_000)&to=\(now + 3_600_000)&step=1h"
        )
        let series = (json["series"] as? [[String: Any]]) ?? []
        return Int(series.flatMap { ($0["points"] as? [[Double]]) ?? [] }.reduce(0) { $0 + $1[1] })
    }

    static func forwardedCount(_ influx: Influxd, _ measurement: String, field: String = "v_count") throws -> Int {
        let rows = try influx.rows("SELECT sum(\"\(field)\") FROM \"\(measurement)\"")
        return (rows.first?["sum"] as? Int) ?? Int((rows.first?["sum"] as? Double) ?? -1)
    }
}
