import Foundation
import Ingest
import Logging
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The sd_notify protocol, spoken directly: one datagram of `KEY=VALUE` lines to the AF_UNIX socket named by
/// `NOTIFY_SOCKET` (a path, or an abstract name starting with `@`). Without the variable every call does nothing,
/// so the daemon behaves the same under systemd, in a container or in a terminal.
final class SystemdNotifier: Sendable {
    /// The socket address, or nil when not run under a service manager that listens.
    let address: String?
    /// Half of `WATCHDOG_USEC` (systemd's advice), when the watchdog is on for this process.
    let watchdogInterval: Duration?

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        let socket = environment["NOTIFY_SOCKET"] ?? ""
        address = socket.isEmpty ? nil : socket
        var interval: Duration?
        if let text = environment["WATCHDOG_USEC"], let usec = Int64(text), usec > 0 {
            // WATCHDOG_PID, when set, names the process meant; a child that inherited the variable stays quiet.
            if let pid = environment["WATCHDOG_PID"].flatMap({ Int32($0) }), pid != getpid() {
                interval = nil
            } else {
                interval = .microseconds(usec / 2)
            }
        }
        watchdogInterval = interval
    }

    /// Sends `state` (e.g. "READY=1\nSTATUS=…"); reports whether the datagram went out.
    @discardableResult
    func notify(_ state: String) -> Bool {
        guard let target = self.address else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var path = Array(target.utf8)
        let abstract = path.first == UInt8(ascii: "@")
        if abstract { path[0] = 0 }  // Linux abstract namespace: a leading NUL, no terminator
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.count < capacity else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path)
            if !abstract { raw[path.count] = 0 }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count + (abstract ? 0 : 1))
        let bytes = Array(state.utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), generic, length) }
            }
        }
        return sent == bytes.count
    }
}

/// Tells the service manager the daemon is ready once every listener is bound, keeps its watchdog fed while the
/// ticker (the loop that stores data) is alive, publishes a one-line STATUS, and says STOPPING=1 as soon as a
/// graceful shutdown begins. Placed last in the service group, so it hears the shutdown first.
struct NotifyService: Service {
    let notifier: SystemdNotifier
    let stats: Stats
    let status: @Sendable () -> String
    /// Resolves when the HTTP server is listening (or at once when it is off).
    let listening: ReadyLatch

    func run() async throws {
        // Until HTTP listens — or the daemon stops before it ever does (its port was taken): then the latch is
        // released so this service ends with the others instead of holding the process.
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                await listening.wait()
            } onCancel: {
                listening.open()
            }
        } onGracefulShutdown: {
            listening.open()
        }
        guard !Task.isShuttingDownGracefully, !Task.isCancelled else { return }
        notifier.notify("READY=1\nSTATUS=\(status())\nMAINPID=\(getpid())")
        let watchdog = notifier.watchdogInterval
        let period = min(watchdog ?? .seconds(5), .seconds(5))
        var lastStatus = ContinuousClock.now
        await withGracefulShutdownHandler {
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                try? await Task.sleep(for: period)
                if Task.isShuttingDownGracefully || Task.isCancelled { break }
                var message = ""
                if let watchdog {
                    // Fed only while the ticker turns: a stuck store loop lets systemd restart the daemon.
                    let sinceTick = nowNanoseconds() - stats.lastTickNanoseconds.load(ordering: .relaxed)
                    if Duration.nanoseconds(sinceTick) < watchdog * 2 { message += "WATCHDOG=1\n" }
                }
                if ContinuousClock.now - lastStatus >= .seconds(5) {
                    lastStatus = .now
                    message += "STATUS=\(status())\n"
                }
                if !message.isEmpty { notifier.notify(message) }
            }
        } onGracefulShutdown: {
            notifier.notify("STOPPING=1\nSTATUS=stopping: storing open buckets")
        }
    }
}

/// A one-shot signal: `open()` once (by the HTTP server when it listens, or on shutdown to release waiters),
/// `wait()` from anywhere.
final class ReadyLatch: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func open() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.open = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }

    func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { s -> Bool in
                if s.open { return true }
                s.waiters.append(c)
                return false
            }
            if resumeNow { c.resume() }
        }
    }
}

/// The daemon's log lines. Under systemd (`JOURNAL_STREAM` set) they are `<N>message` with the syslog priority
/// and no timestamp, since journald adds both; elsewhere `2026-11-29T10:00:00.123Z info metricsd: message`.
/// The level is shared by every logger of the process, so a SIGHUP reload changes it everywhere at once; a
/// logger may raise its own floor (the HTTP server logs warnings and worse only).
struct DaemonLogHandler: LogHandler {
    /// The process-wide level, changed on reload.
    static let level = Atomic<UInt8>(Logger.Level.info.index)
    /// Whether stderr is the journal; fixed at start.
    static let journal = isJournalStream(ProcessInfo.processInfo.environment)

    let label: String
    var metadata: Logger.Metadata = [:]
    var floor: Logger.Level = .trace

    var logLevel: Logger.Level {
        get { max(Logger.Level.allCases[Int(Self.level.load(ordering: .relaxed))], floor) }
        set { floor = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    static func setLevel(_ level: Logger.Level) { Self.level.store(level.index, ordering: .relaxed) }

    func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let line = Self.format(
            level: event.level, label: label, message: "\(event.message)", metadata: merged, journal: Self.journal,
            time: nowNanoseconds())
        Self.writeToStandardError(line)
    }

    /// One write(2) per line (lines from several threads never interleave), ignoring failures: a full disk or a
    /// closed journal stream must not stop the daemon (Foundation's FileHandle.write traps on errors).
    static func writeToStandardError(_ line: String) {
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(2, raw.baseAddress! + offset, raw.count - offset)
                if n > 0 {
                    offset += n
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    return
                }
            }
        }
    }

    /// One line of output (newlines inside a message are escaped so a record is never split).
    static func format(
        level: Logger.Level, label: String, message: String, metadata: Logger.Metadata, journal: Bool, time: Int64
    ) -> String {
        var text = message.replacingOccurrences(of: "\n", with: "\\n")
        if !metadata.isEmpty {
            text += " " + metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        }
        if journal { return "<\(level.syslogPriority)>\(text)\n" }
        return "\(utcText(time)) \(level.rawValue) \(label): \(text)\n"
    }

    /// `2026-11-29T10:00:00.123Z` for a time in Unix nanoseconds.
    static func utcText(_ nanoseconds: Int64) -> String {
        var seconds = time_t(nanoseconds / 1_000_000_000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let millis = Int(nanoseconds / 1_000_000 % 1000)
        let ms = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):"
            + "\(two(parts.tm_min)):\(two(parts.tm_sec)).\(ms)Z"
    }

    /// systemd sets `JOURNAL_STREAM=dev:inode` of the stream it connected; it counts only while stderr is still
    /// that stream (not when redirected, e.g. by a shell script started from the unit).
    static func isJournalStream(_ environment: [String: String]) -> Bool {
        guard let value = environment["JOURNAL_STREAM"] else { return false }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let dev = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var st = stat()
        guard fstat(2, &st) == 0 else { return false }
        return UInt64(st.st_dev) == dev && UInt64(st.st_ino) == inode
    }
}

extension Logger.Level {
    var index: UInt8 { UInt8(Logger.Level.allCases.firstIndex(of: self) ?? 2) }

    /// RFC 5424 severity (sd-daemon(3) prefixes).
    var syslogPriority: Int {
        switch self {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }
}

/// Logs a failure that repeats (a full disk fails every second) once when it starts, then at most every
/// `interval` with how many times it happened since — so the log says what is wrong without filling the disk that
/// is already full. Once it stops (``clear(_:)``), the next occurrence is logged at once again.
final class RepeatedErrorLog: Sendable {
    private struct Entry {
        var lastLogged: Int64
        var since = 0
    }
    private let entries = Mutex<[String: Entry]>([:])
    let interval: Int64

    init(interval: Int64 = 600_000_000_000) { self.interval = interval }

    func log(_ logger: Logger, _ what: String, _ error: any Error) {
        let now = nowNanoseconds()
        let line: String? = entries.withLock { entries in
            guard var entry = entries[what] else {
                entries[what] = Entry(lastLogged: now)
                return "\(what): \(error)"
            }
            entry.since += 1
            defer { entries[what] = entry }
            guard now - entry.lastLogged >= interval else { return nil }
            let count = entry.since
            entry.lastLogged = now
            entry.since = 0
            return "\(what): \(error) (still failing: \(count) more times since the last report)"
        }
        if let line { logger.error("\(line)") }
    }

    /// The failure stopped.
    func clear(_ what: String) { _ = entries.withLock { $0.removeValue(forKey: what) } }
}
