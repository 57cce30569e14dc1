import Export
import Foundation
import Logging
import TestSupport
import Testing

@testable import metricsd

#if canImport(Glibc)
    import Glibc
#endif

/// The repository root (the tests read the unit, manifests and Makefile from it).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()
/// The Python of the tools' virtualenv `make deps-test` makes (the InfluxDB clients, kubernetes-validate): where the
/// Makefile put them, never whatever python3 PATH happens to hold.
let toolsPython = repositoryRoot.appendingPathComponent(".build-tools/venv/bin/python").path

/// Runs a program (found on PATH) to completion; returns (status, stdout + stderr).
func runTool(_ arguments: [String], environment: [String: String] = [:], directory: URL? = nil) throws -> (
    Int32, String
) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    if !environment.isEmpty {
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    if let directory { process.currentDirectoryURL = directory }
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// An AF_UNIX datagram socket the test listens on, standing in for systemd's notify socket.
final class NotifySocket {
    let path: String
    let fd: Int32

    init(directory: URL) throws {
        path = directory.appendingPathComponent("notify.sock").path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard fd >= 0, rc == 0 else { throw CLIError("cannot bind \(path): \(String(cString: strerror(errno)))") }
    }

    deinit { close(fd) }

    /// The next datagram, or nil after `timeout` seconds.
    func receive(timeout: Double) -> String? {
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&descriptor, 1, Int32(timeout * 1000)) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n > 0 ? String(decoding: buffer[..<n], as: UTF8.self) : nil
    }

    /// Messages until one contains `needle` (returned last), or nil when `timeout` passes first.
    func receive(until needle: String, timeout: Double) -> [String]? {
        let deadline = Date().addingTimeInterval(timeout)
        var seen: [String] = []
        while Date() < deadline {
            guard let message = receive(timeout: deadline.timeIntervalSinceNow) else { break }
            seen.append(message)
            if message.contains(needle) { return seen }
        }
        return nil
    }
}

@Suite struct SystemdUnitTests {
    /// The shipped unit with ExecStart pointed at the built binary (verify checks that it is executable).
    func unitCopy() throws -> URL {
        let directory = try temporaryDirectory("metricsd-unit")
        let text = try String(
            contentsOf: repositoryRoot.appendingPathComponent("systemd/metricsd.service"), encoding: .utf8)
        let binary = try metricsdBinary().path
        #expect(text.contains("/usr/local/bin/metricsd serve"))
        let copy = directory.appendingPathComponent("metricsd.service")
        try text.replacingOccurrences(of: "/usr/local/bin/metricsd", with: binary).write(
            to: copy, atomically: true, encoding: .utf8)
        return copy
    }

    @Test func verifiesWithoutAnyOutput() throws {
        let unit = try unitCopy()
        defer { try? FileManager.default.removeItem(at: unit.deletingLastPathComponent()) }
        // verify exits 0 on unknown keys and bad values and only prints them: any output is a failure.
        let (status, output) = try runTool(["systemd-analyze", "verify", unit.path])
        #expect(status == 0)
        #expect(output.isEmpty, "systemd-analyze verify said:\n\(output)")
    }

    @Test func securityExposureIsOKOrBetter() throws {
        let unit = try unitCopy()
        defer { try? FileManager.default.removeItem(at: unit.deletingLastPathComponent()) }
        let (status, output) = try runTool(["systemd-analyze", "security", "--offline=yes", unit.path])
        #expect(status == 0, "\(output)")
        // "→ Overall exposure level for metricsd.service: 1.1 OK 🙂"
        let line = output.split(separator: "\n").first { $0.contains("Overall exposure level") }
        let words = line.map { $0.split(separator: " ").map(String.init) } ?? []
        let score = words.compactMap(Double.init).last
        let rating = words.last { ["SAFE", "OK", "MEDIUM", "EXPOSED", "UNSAFE"].contains($0) }
        #expect(score != nil && score! <= 2.0, "\(line ?? "no exposure line")")
        #expect(rating == "OK" || rating == "SAFE", "\(line ?? "no exposure line")")
    }

    /// Every system call the daemon makes while starting, ingesting, querying, reloading, backing up and stopping is
    /// one the unit's `SystemCallFilter=` allows: under systemd a refused call fails with EPERM, which no test could
    /// see otherwise (PID 1 is not systemd here). Traced with strace.
    @Test func systemCallsStayInsideTheFilter() throws {
        let unit = try String(
            contentsOf: repositoryRoot.appendingPathComponent("systemd/metricsd.service"), encoding: .utf8)
        var allowed: Set<String> = []
        var denied: Set<String> = []
        for line in unit.split(separator: "\n") where line.hasPrefix("SystemCallFilter=") {
            var value = line.dropFirst("SystemCallFilter=".count)
            let deny = value.hasPrefix("~")
            if deny { value = value.dropFirst() }
            let names = try expandSyscallGroups(value.split(separator: " ").map(String.init))
            if deny { denied.formUnion(names) } else { allowed.formUnion(names) }
        }
        #expect(allowed.count > 100)
        let permitted = allowed.subtracting(denied)

        let directory = try temporaryDirectory("metricsd-strace")
        defer { try? FileManager.default.removeItem(at: directory) }
        let trace = directory.appendingPathComponent("trace").path
        let binary = try metricsdBinary().path
        let daemon = try Daemon(
            config: "[rollup]\ninterval = \"1s\"\nlateness = \"1s\"\n",
            extraArguments: [], executable: URL(fileURLWithPath: "/usr/bin/strace"), waitUntilListening: false,
            wrapping: ["-f", "-qq", "-o", trace, "-e", "trace=all", binary])
        #expect(daemon.waitForPing(timeout: 60), "\(daemon.log())")
        // Signals go to metricsd itself (strace's child), not to strace.
        let straced = daemon.process.processIdentifier
        let children = (try? String(contentsOfFile: "/proc/\(straced)/task/\(straced)/children", encoding: .utf8)) ?? ""
        let pid = try #require(children.split(separator: " ").first.flatMap { Int32($0) }, "no child of strace")
        daemon.sendUDP(Array("cpu,host=a usage=1\ncpu,host=b usage=2\n".utf8))
        #expect(try daemon.http("POST", "/write?db=x", body: Data("mem,host=a free=3i\n".utf8)).status == 204)
        #expect(
            try daemon.http("POST", "/api/v1/events", body: Data(#"{"event":"signup","user_id":"u1"}"#.utf8)).status
                == 200)
        try daemon.sendTCP(Array("disk,host=a used=4\n".utf8))
        #expect(try daemon.http("POST", "/api/v1/flush").status == 200)
        #expect(try daemon.http("GET", "/query?q=SHOW%20MEASUREMENTS").status == 200)
        #expect(try daemon.http("GET", "/metrics").status == 200)
        kill(pid, SIGHUP)
        #expect(daemon.eventually { daemon.log().contains("reload: ") })
        kill(pid, SIGTERM)
        #expect(daemon.eventually(20) { !daemon.process.isRunning })
        #expect(daemon.stop() == 0, "\(daemon.log())")
        #expect(daemon.log().contains("clean shutdown"))

        let calls = Set(
            try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n").compactMap { line -> String? in
                // "1234  name(args) = 0", "1234  <... name resumed>...", "1234  +++ exited with 0 +++"
                let fields = line.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
                guard fields.count == 2 else { return nil }
                var rest = fields[1].drop { $0 == " " }
                if rest.hasPrefix("<... ") { rest = rest.dropFirst(5) }
                let name = rest.prefix { $0.isLetter || $0.isNumber || $0 == "_" }
                return name.isEmpty ? nil : String(name)
            })
        #expect(calls.count > 20, "strace saw too little: \(calls.sorted())")
        // execve is strace starting the binary (systemd does that before the filter applies). SQLite calls fchown
        // only when running as root, as this test may; the service never does (DynamicUser).
        var tolerated: Set<String> = ["execve", "exited", "killed"]
        if geteuid() == 0 { tolerated.insert("fchown") }
        let outside = calls.subtracting(permitted).subtracting(tolerated)
        #expect(outside.isEmpty, "system calls the unit's filter refuses: \(outside.sorted())")
    }

    /// `@group` names expanded by systemd-analyze itself, so the test reads the same tables systemd applies.
    func expandSyscallGroups(_ names: [String]) throws -> Set<String> {
        var result: Set<String> = []
        for name in names {
            guard name.hasPrefix("@") else {
                result.insert(name)
                continue
            }
            let (status, output) = try runTool(["systemd-analyze", "syscall-filter", name])
            #expect(status == 0, "\(output)")
            for line in output.split(separator: "\n").dropFirst() {
                let item = line.trimmingCharacters(in: .whitespaces)
                if item.isEmpty || item.hasPrefix("#") { continue }
                if item.hasPrefix("@") {
                    result.formUnion(try expandSyscallGroups([item]))
                } else {
                    result.insert(item)
                }
            }
        }
        return result
    }
}

@Suite struct SDNotifyTests {
    @Test func readyAfterListenersWatchdogAndStopping() throws {
        let directory = try temporaryDirectory("metricsd-notify")
        defer { try? FileManager.default.removeItem(at: directory) }
        let socket = try NotifySocket(directory: directory)
        let daemon = try Daemon(
            environment: ["NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "600000"], waitUntilListening: false)

        let first = socket.receive(until: "READY=1", timeout: 30)
        #expect(first != nil, "no READY=1:\n\(daemon.log())")
        // READY=1 comes after every listener is bound: all three answer now, without any retry.
        #expect((try? daemon.http("GET", "/ping").status) == 204)
        let fd = try daemon.connectTCP()
        close(fd)
        #expect(first?.last?.contains("STATUS=listening on udp 127.0.0.1:\(daemon.udpPort)") == true)
        #expect(first?.last?.contains("MAINPID=\(daemon.process.processIdentifier)") == true)

        // Watchdog at half of WATCHDOG_USEC: 300 ms, so at least 3 pings in 2 s.
        var pings = 0
        let deadline = Date().addingTimeInterval(2)
        while Date() < deadline {
            if let message = socket.receive(timeout: deadline.timeIntervalSinceNow), message.contains("WATCHDOG=1") {
                pings += 1
            }
        }
        #expect(pings >= 3, "only \(pings) WATCHDOG=1 in 2 s")

        kill(daemon.process.processIdentifier, SIGTERM)
        let stopping = socket.receive(until: "STOPPING=1", timeout: 15)
        #expect(stopping != nil)
        #expect(daemon.stop() == 0)
    }

    @Test func silentWithoutNotifySocketAndWatchdogOnlyForItsPID() {
        #expect(SystemdNotifier(environment: [:]).address == nil)
        #expect(SystemdNotifier(environment: [:]).notify("READY=1") == false)
        let mine = SystemdNotifier(environment: ["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "\(getpid())"])
        #expect(mine.watchdogInterval == .seconds(15))
        let other = SystemdNotifier(environment: ["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"])
        #expect(other.watchdogInterval == nil)
    }

    @Test func abstractSocketNames() throws {
        // "@name" is Linux's abstract namespace (systemd in containers uses it): a leading NUL, no file.
        let name = "metricsd-test-\(UUID().uuidString.prefix(8))"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = [0] + Array(name.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sa_family_t>.size + bytes.count))
            }
        }
        #expect(rc == 0)
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": "@" + name]).notify("READY=1"))
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        #expect(n > 0 && String(decoding: buffer[..<n], as: UTF8.self) == "READY=1")
    }
}

@Suite struct LoggingAndReloadTests {
    @Test func journalLinesCarryPriorityAndNoTimestamp() {
        let journal = DaemonLogHandler.format(
            level: .warning, label: "metricsd", message: "disk\nfull", metadata: ["a": "1"], journal: true,
            time: 1_764_410_400_123_000_000)
        #expect(journal == "<4>disk\\nfull a=1\n")
        let error = DaemonLogHandler.format(
            level: .error, label: "metricsd", message: "x", metadata: [:], journal: true, time: 0)
        #expect(error == "<3>x\n")
        let human = DaemonLogHandler.format(
            level: .info, label: "metricsd", message: "listening", metadata: [:], journal: false,
            time: 1_764_410_400_123_000_000)
        #expect(human == "2025-11-29T10:00:00.123Z info metricsd: listening\n")
        // JOURNAL_STREAM counts only when it names the stream stderr is now.
        #expect(!DaemonLogHandler.isJournalStream([:]))
        #expect(!DaemonLogHandler.isJournalStream(["JOURNAL_STREAM": "1:2"]))
        #expect(!DaemonLogHandler.isJournalStream(["JOURNAL_STREAM": "garbage"]))
    }

    @Test func daemonWritesJournalFormatUnderSystemd() throws {
        // The daemon's stderr is the log file; JOURNAL_STREAM names exactly that file, as systemd would.
        let directory = try temporaryDirectory("metricsd-journal")
        defer { try? FileManager.default.removeItem(at: directory) }
        let log = directory.appendingPathComponent("journal.log")
        #expect(FileManager.default.createFile(atPath: log.path, contents: nil))
        let attributes = try FileManager.default.attributesOfItem(atPath: log.path)
        let device = try #require(attributes[.systemNumber] as? Int)
        let inode = try #require(attributes[.systemFileNumber] as? Int)
        let daemon = try Daemon(environment: ["JOURNAL_STREAM": "\(device):\(inode)"], logFile: log)
        #expect(daemon.stop() == 0)
        let lines = daemon.log().split(separator: "\n")
        #expect(lines.contains { $0.hasPrefix("<6>metricsd 0.2.0 listening: udp") }, "\(daemon.log())")
        #expect(lines.contains { $0 == "<6>clean shutdown" }, "\(daemon.log())")
        #expect(lines.allSatisfy { $0.hasPrefix("<") }, "\(daemon.log())")
    }

    /// Log lines to a stream that refuses them (a full disk, a closed journal stream) are dropped, never fatal:
    /// Foundation's FileHandle.write traps on a write error, which killed the daemon at its first log line.
    @Test func aFullLogStreamDoesNotStopTheDaemon() throws {
        let daemon = try Daemon(logFile: URL(fileURLWithPath: "/dev/full"))
        #expect(try daemon.http("POST", "/write", body: Data("m v=1\n".utf8)).status == 204)
        kill(daemon.process.processIdentifier, SIGHUP)  // logs a reload line
        usleep(200_000)
        #expect(daemon.process.isRunning)
        #expect(daemon.stop() == 0)
    }

    @Test func sighupReloadsTokenLogLevelAndForwardingTarget() throws {
        let directory = try temporaryDirectory("metricsd-reload")
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("metricsd.toml")
        let first = "[auth]\ntoken = \"one\"\n[log]\nlevel = \"info\"\n[influx]\nurl = \"http://127.0.0.1:9\"\n"
        try first.write(to: config, atomically: true, encoding: .utf8)
        let daemon = try Daemon(configFile: config)
        let line = Data("cpu value=1\n".utf8)
        #expect(try daemon.http("POST", "/write?db=x", body: line).status == 401)
        #expect(
            try daemon.http("POST", "/write?db=x", body: line, headers: ["Authorization": "Token one"]).status == 204)

        let second = "[auth]\ntoken = \"two\"\n[log]\nlevel = \"debug\"\n[influx]\nurl = \"http://127.0.0.1:10\"\n"
        try second.write(to: config, atomically: true, encoding: .utf8)
        kill(daemon.process.processIdentifier, SIGHUP)
        #expect(
            try daemon.eventually {
                try daemon.http("POST", "/write?db=x", body: line, headers: ["Authorization": "Token two"]).status
                    == 204
            })
        #expect(
            try daemon.http("POST", "/write?db=x", body: line, headers: ["Authorization": "Token one"]).status == 401)
        let health = try daemon.http("GET", "/health", headers: ["Authorization": "Token two"]).json
        let forwarding = health["forwarding"] as? [String: Any]
        #expect(forwarding?["url"] as? String == "http://127.0.0.1:10", "\(health)")
        #expect(daemon.log().contains("reload: applied log.level=debug, auth.token, influx (now http://127.0.0.1:10)"))

        // A file that does not validate changes nothing.
        try "[log]\nlevel = \"loud\"\n".write(to: config, atomically: true, encoding: .utf8)
        kill(daemon.process.processIdentifier, SIGHUP)
        #expect(daemon.eventually { daemon.log().contains("reload: configuration not changed") })
        #expect(
            try daemon.http("POST", "/write?db=x", body: line, headers: ["Authorization": "Token two"]).status == 204)
        #expect(daemon.stop() == 0)
    }
}

@Suite struct BackupTests {
    /// The number of `cpu` values stored in the two hours around now (summed over 1-minute buckets).
    static func storedCount(_ daemon: Daemon) throws -> Double {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let result = try daemon.query(
            "measurement=cpu&field=usage&agg=count&from=\(now - 3_600_000)&to=\(now + 3_600_000)&step=1m")
        let series = (result["series"] as? [[String: Any]]) ?? []
        return series.flatMap { ($0["points"] as? [[Double]]) ?? [] }.reduce(0) { $0 + $1[1] }
    }

    @Test func onlineBackupWhileWritingAndRestore() throws {
        let daemon = try Daemon()
        // 200 values two minutes ago: stored at once as late data. Then a backup while another writer posts.
        let then = Int64(Date().timeIntervalSince1970) - 120
        var body = ""
        for i in 0..<200 { body += "cpu,host=h\(i) usage=\(i) \(then)\n" }
        #expect(try daemon.http("POST", "/write?db=x&precision=s", body: Data(body.utf8)).status == 204)
        #expect(try daemon.eventually { try Self.storedCount(daemon) == 200 })
        #expect(try daemon.http("POST", "/api/v1/flush").status == 200)
        let writer = Thread {
            for i in 0..<50 { _ = try? daemon.http("POST", "/write?db=x", body: Data("mem,host=h\(i) free=1\n".utf8)) }
        }
        writer.start()
        let copy = daemon.dataDir.appendingPathComponent("backup.db")
        let (status, output, errors) = try runMetricsd(
            ["backup", "--data-dir", daemon.dataDir.appendingPathComponent("var").path, copy.path], input: [])
        #expect(status == 0, "\(errors)")
        #expect(output.contains("integrity ok"))
        // Never overwrites.
        let (again, _, message) = try runMetricsd(
            ["backup", "--data-dir", daemon.dataDir.appendingPathComponent("var").path, copy.path], input: [])
        #expect(again != 0)
        #expect(message.contains("exists"))
        #expect(daemon.stop() == 0)

        // Restore into a fresh data directory: the stored minutes are there.
        let restored = try temporaryDirectory("metricsd-restore")
        defer { try? FileManager.default.removeItem(at: restored) }
        try FileManager.default.createDirectory(
            at: restored.appendingPathComponent("var"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: copy, to: restored.appendingPathComponent("var/metricsd.db"))
        let second = try Daemon(dataDir: restored)
        #expect(try Self.storedCount(second) == 200)
        #expect(second.stop() == 0)
    }
}

@Suite struct InstallTests {
    /// `make install DESTDIR=…` lays out the tree; the installed binary runs with the installed configuration; a
    /// second install keeps an edited configuration; `make uninstall` removes all but the configuration.
    @Test func installTreeRunsAndKeepsTheConfiguration() throws {
        let destination = try temporaryDirectory("metricsd-install")
        defer { try? FileManager.default.removeItem(at: destination) }
        let binary = try metricsdBinary().path
        let make = ["make", "-s", "-C", repositoryRoot.path, "DESTDIR=\(destination.path)", "BIN=\(binary)"]
        let (status, output) = try runTool(make + ["install"])
        #expect(status == 0, "\(output)")
        let expected = [
            "usr/local/bin/metricsd", "usr/local/lib/systemd/system/metricsd.service", "etc/metricsd/metricsd.toml",
            "usr/local/share/metricsd/grafana/dashboards/metricsd.json",
            "usr/local/share/metricsd/grafana/dashboards/events.json",
            "usr/local/share/metricsd/grafana/provisioning/datasources/metricsd.yaml",
            "usr/local/share/metricsd/grafana/provisioning/dashboards/metricsd.yaml",
            "usr/local/share/doc/metricsd/operations.md", "usr/local/share/doc/metricsd/metricsd.example.toml",
        ]
        for path in expected {
            #expect(FileManager.default.fileExists(atPath: destination.appendingPathComponent(path).path), "\(path)")
        }
        let installedBinary = destination.appendingPathComponent("usr/local/bin/metricsd")
        #expect(FileManager.default.isExecutableFile(atPath: installedBinary.path))
        let unit = try String(
            contentsOf: destination.appendingPathComponent("usr/local/lib/systemd/system/metricsd.service"),
            encoding: .utf8)
        #expect(unit.contains("ExecStart=/usr/local/bin/metricsd serve --config /etc/metricsd/metricsd.toml"))

        // The installed binary with the installed configuration.
        let config = destination.appendingPathComponent("etc/metricsd/metricsd.toml")
        let (checked, checkOutput) = try runTool([installedBinary.path, "check-config", config.path])
        #expect(checked == 0, "\(checkOutput)")
        let daemon = try Daemon(executable: installedBinary, configFile: config)
        daemon.sendUDP(Array("cpu,host=a usage=7\n".utf8))
        #expect(
            try daemon.eventually {
                (try daemon.counters()["udp_points"] as? Int) == 1
            })
        #expect(daemon.stop() == 0)

        // An operator's edit survives a reinstall; uninstall leaves it alone.
        try "# edited\n[log]\nlevel = \"warning\"\n".write(to: config, atomically: true, encoding: .utf8)
        let (reinstalled, reinstallOutput) = try runTool(make + ["install"])
        #expect(reinstalled == 0, "\(reinstallOutput)")
        #expect(try String(contentsOf: config, encoding: .utf8).hasPrefix("# edited"))
        let (removed, removeOutput) = try runTool(make + ["uninstall"])
        #expect(removed == 0, "\(removeOutput)")
        #expect(!FileManager.default.fileExists(atPath: installedBinary.path))
        #expect(
            !FileManager.default.fileExists(atPath: destination.appendingPathComponent("usr/local/share/metricsd").path)
        )
        #expect(FileManager.default.fileExists(atPath: config.path))
    }
}

@Suite struct KubernetesManifestTests {
    /// Offline validation against the schemas of a pinned Kubernetes release (kubernetes-validate, pinned in the
    /// Makefile), strict: unknown fields fail.
    @Test func manifestsValidate() throws {
        let directory = repositoryRoot.appendingPathComponent("deploy/kubernetes")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".yaml") }
            .sorted()
        #expect(files.count >= 6)
        let (status, output) = try runTool(
            [validator, "--strict", "-k", kubernetesVersion]
                + files.map { directory.appendingPathComponent($0).path })
        #expect(status == 0, "\(output)")
        #expect(!output.contains("ERROR") && !output.contains("WARN"), "\(output)")
        let kinds = try files.map { try String(contentsOf: directory.appendingPathComponent($0), encoding: .utf8) }
            .joined(separator: "\n")
        for kind in [
            "kind: ConfigMap", "kind: Deployment", "kind: Service", "kind: HorizontalPodAutoscaler",
            "kind: PodDisruptionBudget", "kind: DaemonSet",
        ] {
            #expect(kinds.contains(kind), "\(kind) missing")
        }
        #expect(kinds.contains("apiVersion: autoscaling/v2"))
        #expect(kinds.contains("path: /health"))
    }

    /// The validator rejects what it should: an unknown field (strict) and a missing required one.
    @Test func validatorCatchesMistakes() throws {
        let directory = try temporaryDirectory("metricsd-k8s")
        defer { try? FileManager.default.removeItem(at: directory) }
        let original = try String(
            contentsOf: repositoryRoot.appendingPathComponent("deploy/kubernetes/service.yaml"), encoding: .utf8)
        for (name, text) in [
            ("typo.yaml", original.replacingOccurrences(of: "targetPort: udp", with: "targetPrt: udp")),
            ("missing.yaml", original.replacingOccurrences(of: "      port: 8094\n", with: "")),
        ] {
            #expect(text != original)
            let file = directory.appendingPathComponent(name)
            try text.write(to: file, atomically: true, encoding: .utf8)
            let (status, output) = try runTool([validator, "--strict", "-k", kubernetesVersion, file.path])
            #expect(status != 0, "\(name) passed:\n\(output)")
        }
    }

    let kubernetesVersion = "1.33.0"
    /// Where `make deps-test` installs it (.build-tools/venv), never whatever PATH happens to hold: a fresh machine
    /// has it only there.
    var validator: String {
        repositoryRoot.appendingPathComponent(".build-tools/venv/bin/kubernetes-validate").path
    }
}
