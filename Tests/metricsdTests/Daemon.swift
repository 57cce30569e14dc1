import Foundation
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The real metricsd binary on free loopback ports with a temporary data directory. Stopped by PID when the test
/// ends (SIGTERM, then SIGKILL after a deadline).
final class Daemon: @unchecked Sendable {
    private(set) var process = Process()
    private(set) var udpPort: Int
    private(set) var tcpPort: Int
    private(set) var httpPort: Int
    let dataDir: URL
    let logFile: URL
    private var stopped = false
    private let ownsDataDir: Bool
    /// `[auth] token` of the daemon, when the test set one: ``query(_:)`` sends it.
    var token: String?

    /// - Parameters:
    ///   - dataDir: reuse a directory (a restart); otherwise a new temporary one, removed at the end.
    ///   - environment: added to the test's environment.
    ///   - executable: another binary (an installed one); `configFile`: its own file instead of `config`.
    ///   - waitUntilListening: false returns at once after the start (the caller watches readiness itself).
    init(
        config: String = "", dataDir existing: URL? = nil, extraArguments: [String] = [],
        environment: [String: String] = [:], executable: URL? = nil, configFile: URL? = nil,
        waitUntilListening: Bool = true, wrapping: [String] = [], logFile existingLog: URL? = nil
    ) throws {
        udpPort = try freePort()
        tcpPort = try freePort()
        httpPort = try freePort()
        ownsDataDir = existing == nil
        dataDir =
            existing
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("metricsd-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dataDir, withIntermediateDirectories: true)
        let ownConfig = dataDir.appendingPathComponent("metricsd.toml")
        try config.write(to: ownConfig, atomically: true, encoding: .utf8)
        let configFile = configFile ?? ownConfig
        logFile = existingLog ?? dataDir.appendingPathComponent("metricsd.log")
        if existingLog == nil { _ = FileManager.default.createFile(atPath: logFile.path, contents: nil) }
        let logHandle = try FileHandle(forWritingTo: logFile)
        // Ports are free when picked but not reserved: a daemon of a test running alongside may take one first.
        // Then this one exits (it cannot bind) while its /ping may answer from the other daemon — so readiness
        // means this process's own listeners answering, and a start that lost a port is retried on new ones.
        for attempt in 1...3 {
            if attempt > 1 {
                process = Process()
                udpPort = try freePort()
                tcpPort = try freePort()
                httpPort = try freePort()
            }
            process.executableURL = try executable ?? metricsdBinary()
            if !environment.isEmpty {
                process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
            }
            process.arguments =
                [
                    "serve", "--config", configFile.path, "--data-dir", dataDir.appendingPathComponent("var").path,
                    "--udp", "127.0.0.1:\(udpPort)", "--tcp", "127.0.0.1:\(tcpPort)", "--http",
                    "127.0.0.1:\(httpPort)",
                ] + extraArguments
            // A wrapper (strace): it runs, its last arguments name the binary.
            if !wrapping.isEmpty { process.arguments = wrapping + (process.arguments ?? []) }
            try logHandle.seekToEnd()
            process.standardOutput = logHandle
            process.standardError = logHandle
            try process.run()
            if !waitUntilListening { return }
            if waitForPing(timeout: 20) { return }
            let running = process.isRunning
            if !running && attempt < 3 && log().contains("Address already in use") { continue }
            stop()
            throw CLIError("metricsd \(running ? "did not start listening" : "exited early"):\n\(log())")
        }
    }

    /// Whether the daemon answering on `httpPort` is this process: its `/health` names this instance's UDP and
    /// TCP listeners (when it has them).
    private func answersAsItself() -> Bool {
        guard let health = try? http("GET", "/health"), health.status == 200 || health.status == 503 else {
            return false
        }
        let listeners = health.json["listeners"] as? [String: String] ?? [:]
        for (kind, port) in [("udp", udpPort), ("tcp", tcpPort)] {
            if let address = listeners[kind], !address.hasSuffix(":\(port)") { return false }
        }
        return true
    }

    /// Waits (bounded) until /ping answers 204; false when the time passes or the process exits.
    func waitForPing(timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if !process.isRunning { return false }
            if (try? http("GET", "/ping").status) == 204 && process.isRunning && answersAsItself() { return true }
            usleep(50_000)
        }
        return false
    }

    deinit {
        stop()
        if ownsDataDir { try? FileManager.default.removeItem(at: dataDir) }
    }

    func log() -> String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    /// SIGTERM and wait (bounded); SIGKILL if it does not exit. Returns the exit status.
    @discardableResult
    func stop() -> Int32 {
        guard !stopped else { return process.terminationStatus }
        stopped = true
        guard process.isRunning else { return process.terminationStatus }
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(15)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        return process.terminationStatus
    }

    /// `kill -9`: no shutdown code runs.
    func killHard() {
        guard !stopped else { return }
        stopped = true
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Resident memory of the daemon in bytes (from /proc).
    func residentBytes() -> Int { status("VmRSS:") }

    /// The most resident memory the daemon has had so far, in bytes (VmHWM).
    func peakResidentBytes() -> Int { status("VmHWM:") }

    private func status(_ key: String) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)
        else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(key) {
            return (Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0) * 1024
        }
        return 0
    }

    /// CPU time the daemon has used so far, in seconds (user + system, from /proc/PID/stat).
    func cpuSeconds() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return 0 }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Whether `/ping` answers 204 within a second — tried three times, so a test machine busy for a moment does
    /// not count as a daemon that stopped answering (a frozen one fails all three).
    func pingsWithinASecond() -> Bool {
        for _ in 0..<3 {
            if (try? httpRequest("GET", "http://127.0.0.1:\(httpPort)/ping", timeout: 1).status) == 204 { return true }
        }
        return false
    }

    struct Reply {
        var status: Int
        var body: Data
        var headers: [String: String]
        var json: [String: Any] { ((try? JSONSerialization.jsonObject(with: body)) as? [String: Any]) ?? [:] }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// A blocking HTTP request to the daemon (URLSession, bounded by a timeout).
    func http(
        _ method: String, _ path: String, body: Data? = nil, headers: [String: String] = [:], timeout: TimeInterval = 30
    ) throws -> Reply {
        try httpRequest(method, "http://127.0.0.1:\(httpPort)\(path)", body: body, headers: headers, timeout: timeout)
    }

    func query(_ parameters: String) throws -> [String: Any] {
        let reply = try http(
            "GET", "/api/v1/query?\(parameters)", headers: token.map { ["Authorization": "Token \($0)"] } ?? [:])
        guard reply.status == 200 else { throw CLIError("query \(parameters): \(reply.status) \(reply.text)") }
        return reply.json
    }

    /// The values of every point of every series in an `/api/v1/query` answer.
    static func pointValues(_ json: [String: Any]) -> [Double] {
        ((json["series"] as? [[String: Any]]) ?? []).flatMap { ($0["points"] as? [[Double]] ?? []).map { $0[1] } }
    }

    func counters() throws -> [String: Any] {
        (try http("GET", "/health").json["counters"] as? [String: Any]) ?? [:]
    }

    func counter(_ name: String) throws -> Int { (try counters()[name] as? Int) ?? -1 }

    /// Waits (bounded) until `condition` holds, re-evaluating every 50 ms.
    func eventually(_ timeout: TimeInterval = 10, _ condition: () throws -> Bool) rethrows -> Bool {
        try TestSupport.eventually(timeout: timeout, condition)
    }

    // MARK: - Raw senders

    func sendUDP(_ payload: [UInt8]) {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = in_port_t(UInt16(udpPort).bigEndian)
        _ = payload.withUnsafeBytes { raw in
            withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, raw.baseAddress, raw.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
    }

    /// Opens a TCP connection to the line listener; the caller writes and closes.
    /// A TCP connection to the line-protocol listener, or to `port` (e.g. the HTTP one).
    func connectTCP(port: Int? = nil) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = in_port_t(UInt16(port ?? tcpPort).bigEndian)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw CLIError("connect failed: \(reason)")
        }
        return fd
    }

    func sendTCP(_ payload: [UInt8]) throws {
        let fd = try connectTCP()
        defer { close(fd) }
        var offset = 0
        while offset < payload.count {
            let n = payload.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            guard n > 0 else { throw CLIError("write failed") }
            offset += n
        }
        shutdown(fd, Int32(SHUT_WR))
        // Wait for the server to close its side, so the data has been processed.
        var byte: UInt8 = 0
        _ = read(fd, &byte, 1)
    }
}

final class ReplyBox: @unchecked Sendable {
    var reply: Daemon.Reply?
    var error: (any Error)?
}

/// A blocking HTTP request (URLSession, bounded by a timeout).
func httpRequest(
    _ method: String, _ url: String, body: Data? = nil, headers: [String: String] = [:], timeout: TimeInterval = 30
) throws -> Daemon.Reply {
    var request = URLRequest(url: URL(string: url)!)
    request.httpMethod = method
    request.httpBody = body
    request.timeoutInterval = timeout
    for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
    let box = ReplyBox()
    let done = DispatchSemaphore(value: 0)
    URLSession.shared.dataTask(with: request) { data, response, error in
        if let response = response as? HTTPURLResponse {
            var h: [String: String] = [:]
            for (k, v) in response.allHeaderFields { h["\(k)".lowercased()] = "\(v)" }
            box.reply = Daemon.Reply(status: response.statusCode, body: data ?? Data(), headers: h)
        } else {
            box.error = error
        }
        done.signal()
    }.resume()
    done.wait()
    if let reply = box.reply { return reply }
    throw box.error ?? CLIError("no response")
}

/// A real small filesystem for disk-full tests: a tmpfs of `megabytes` mounted on a temporary directory (it needs
/// root: the test says so when it cannot mount), unmounted and removed when released.
final class SmallDisk {
    let root: URL
    let mountPoint: URL

    init(megabytes: Int) throws {
        root = try temporaryDirectory("metricsd-smalldisk")
        mountPoint = root.appendingPathComponent("mnt")
        try FileManager.default.createDirectory(at: mountPoint, withIntermediateDirectories: true)
        let (mounted, why) = try runTool(["mount", "-t", "tmpfs", "-o", "size=\(megabytes)m", "tmpfs", mountPoint.path])
        guard mounted == 0 else {
            try? FileManager.default.removeItem(at: root)
            throw CLIError("this test mounts a small tmpfs (needs root): \(why)")
        }
    }

    deinit {
        // Lazily: a daemon's log file on it may still be open in this process; the memory goes once it closes.
        _ = try? runTool(["umount", "-l", mountPoint.path])
        try? FileManager.default.removeItem(at: root)
    }

    var filler: URL { mountPoint.appendingPathComponent("filler") }

    /// Fills the filesystem to the last byte with one file (``empty()`` removes it).
    func fill() throws {
        _ = FileManager.default.createFile(atPath: filler.path, contents: nil)
        let handle = try FileHandle(forWritingTo: filler)
        while (try? handle.write(contentsOf: Data(count: 1 << 16))) != nil {}
        while (try? handle.write(contentsOf: Data(count: 512))) != nil {}
        try handle.close()
    }

    func empty() throws { try FileManager.default.removeItem(at: filler) }
}
