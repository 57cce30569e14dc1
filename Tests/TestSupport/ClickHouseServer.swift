public import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A private `clickhouse-server` (Debian's package, installed by `make test`) on free loopback ports, with its
/// config, data and logs in a temporary directory (written by `scripts/peers.sh clickhouse-config`: nothing under
/// /etc or /var is read), stopped by PID. `start()` after `stop()` brings it back on the same ports and data.
public final class ClickHouseServer: @unchecked Sendable {
    public static let binary = "/usr/sbin/clickhouse-server"
    public let httpPort: Int
    public let dir: URL
    private var pid: pid_t?

    public init() throws {
        httpPort = try freePort()
        dir = try temporaryDirectory("clickhouse-test")
        try start()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: dir)
    }

    public var url: String { "http://127.0.0.1:\(httpPort)" }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    public func start() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            throw Failure(description: "\(Self.binary) is missing: `make deps-test` installs clickhouse-server")
        }
        for attempt in 1...3 {
            // The native and interserver ports are chosen free at each start, never derived from the HTTP port.
            var tcp = try freePort()
            while tcp == httpPort { tcp = try freePort() }
            var inter = try freePort()
            while inter == httpPort || inter == tcp { inter = try freePort() }
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("../../scripts/peers.sh").standardized
            let setup = Process()
            setup.executableURL = URL(fileURLWithPath: "/bin/bash")
            setup.arguments = [script.path, "clickhouse-config", dir.path, "\(httpPort)", "\(tcp)", "\(inter)"]
            try setup.run()
            setup.waitUntilExit()
            guard setup.terminationStatus == 0 else { throw Failure(description: "peers.sh clickhouse-config failed") }
            let log = dir.appendingPathComponent("log/stdout.log").path
            let pid = try Self.spawn(
                [Self.binary, "--config-file=\(dir.appendingPathComponent("config.xml").path)"], log: log)
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline && Self.alive(pid) {
                if (try? query("SELECT 1")) == "1\n" {
                    self.pid = pid
                    return
                }
                usleep(50_000)
            }
            Self.terminate(pid, signal: SIGKILL, within: 5)
            // Exit 70 after ~1 s: a port was taken between choosing and binding; try others.
            if attempt == 3 { throw Failure(description: "clickhouse-server did not start (see \(dir.path)/log)") }
        }
    }

    /// Stops the server (SIGTERM, SIGKILL after 20 s) and reaps it.
    public func stop() {
        guard let pid else { return }
        self.pid = nil
        Self.terminate(pid, signal: SIGTERM, within: 20)
    }

    // clickhouse-server closes every file descriptor it inherits, and Foundation's `Process` takes the close of
    // the one it passes as the child's exit: its monitor thread then blocks in waitpid on the running server and
    // reaps no other child of the test process. So the server is spawned and reaped here, by PID.

    static func spawn(_ arguments: [String], log: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, arguments[0], &actions, nil, &argv, environ)
        guard rc == 0 else {
            throw Failure(description: "posix_spawn \(arguments[0]): \(String(cString: strerror(rc)))")
        }
        return pid
    }

    static func alive(_ pid: pid_t) -> Bool {
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == 0
    }

    static func terminate(_ pid: pid_t, signal: Int32, within seconds: Double) {
        kill(pid, signal)
        let deadline = Date().addingTimeInterval(seconds)
        var status: Int32 = 0
        while Date() < deadline {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid || r < 0 { return }
            usleep(20_000)
        }
        kill(pid, SIGKILL)
        _ = waitpid(pid, &status, 0)
    }

    /// Runs `sql` over HTTP; the body of a 200, else throws with ClickHouse's message.
    @discardableResult
    public func query(_ sql: String) throws -> String {
        var request = URLRequest(url: URL(string: url + "/")!)
        request.httpMethod = "POST"
        request.httpBody = Data(sql.utf8)
        request.timeoutInterval = 60
        let box = ResultBox()
        let done = DispatchSemaphore(value: 0)
        URLSession.shared.dataTask(with: request) { data, response, error in
            box.set(data, (response as? HTTPURLResponse)?.statusCode, error)
            done.signal()
        }.resume()
        done.wait()
        let (data, status, error) = box.get()
        if let error { throw error }
        let text = String(decoding: data ?? Data(), as: UTF8.self)
        guard status == 200 else { throw Failure(description: "ClickHouse \(status ?? 0): \(text)") }
        return text
    }

    private final class ResultBox: @unchecked Sendable {
        private let lock = NSLock()
        private var value: (Data?, Int?, (any Error)?) = (nil, nil, nil)
        func set(_ d: Data?, _ s: Int?, _ e: (any Error)?) { lock.withLock { value = (d, s, e) } }
        func get() -> (Data?, Int?, (any Error)?) { lock.withLock { value } }
    }
}
