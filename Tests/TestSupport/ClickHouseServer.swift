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
    private var process: Process?

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
            let p = Process()
            p.executableURL = URL(fileURLWithPath: Self.binary)
            p.arguments = ["--config-file=\(dir.appendingPathComponent("config.xml").path)"]
            let log = dir.appendingPathComponent("log/stdout.log")
            if !FileManager.default.fileExists(atPath: log.path) {
                _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            }
            let handle = try FileHandle(forWritingTo: log)
            handle.seekToEndOfFile()
            p.standardOutput = handle
            p.standardError = handle
            try p.run()
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline && p.isRunning {
                if (try? query("SELECT 1")) == "1\n" {
                    process = p
                    return
                }
                usleep(50_000)
            }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
            // Exit 70 after ~1 s: a port was taken between choosing and binding; try others.
            if attempt == 3 { throw Failure(description: "clickhouse-server did not start (see \(dir.path)/log)") }
        }
    }

    public func stop() {
        guard let p = process, p.isRunning else { return }
        process = nil
        kill(p.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(20)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
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
