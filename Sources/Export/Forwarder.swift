import Foundation
import LineProtocol
public import Logging
import Rollups
import Synchronization

/// Where and how rollups are forwarded (`[influx]` in the configuration).
public struct ForwarderConfiguration: Sendable, Hashable {
    /// Base URL of the InfluxDB (or anything that speaks its write API), e.g. `http://127.0.0.1:8086`.
    public var url = ""
    /// 1: `POST /write?db=&rp=` (optional `u`/`p`); 2: `POST /api/v2/write?org=&bucket=` with `Token` auth.
    public var version = 1
    public var database = "metrics"
    public var retentionPolicy = ""
    public var username = ""
    public var password = ""
    public var org = ""
    public var bucket = ""
    public var token = ""
    public var measurementSuffix = "_1m"
    /// With a name, every point gets the tag `<name>=<hostname>`, so several instances never overwrite each other.
    public var instanceTag = ""
    /// The instance tag's value: `$HOSTNAME` when set (Kubernetes sets it to the pod name; a DaemonSet can set
    /// it to the node name), otherwise the host name.
    public var hostname =
        ProcessInfo.processInfo.environment["HOSTNAME"].flatMap { $0.isEmpty ? nil : $0 }
        ?? ProcessInfo.processInfo.hostName
    public var createDatabase = false
    /// `gzip` (Telegraf's default: bodies compressed at zlib's fastest level, about a seventh of the bytes) or
    /// `identity` (sent as they are: saves zlib's share of the CPU, for loopback or a fast LAN).
    public var contentEncoding = "gzip"
    /// Points (one per series and minute) per request.
    public var batchSize = 5000
    /// How often stored minutes are sent, nanoseconds. A backlog is sent batch after batch without waiting.
    public var flushInterval: Int64 = 10_000_000_000
    /// Field suffixes, in order: `count`, `sum`, `min`, `max`, `mean`, `stddev`, `first`, `last`, `spread`, `p<N>`.
    public var aggregates = ["count", "sum", "min", "max", "mean", "stddev", "first", "last", "p50", "p90", "p99"]
    /// First retry delay and the cap of the exponential backoff, nanoseconds.
    public var retryInitial: Int64 = 1_000_000_000
    public var retryMax: Int64 = 60_000_000_000
    /// Request timeout, seconds.
    public var timeout = 30
    public var caFile = ""
    public var insecureSkipVerify = false
    /// The most the outbox may hold unsent, in bytes of stored rows (`[influx] max_backlog`), and what gives when
    /// it is full (`backlog_policy`).
    public var maxBacklog = 1 << 30
    public var backlogPolicy = BacklogPolicy.dropOldest

    public init() {}

    /// The write endpoint with its query string.
    var writeURL: String {
        let base = url.hasSuffix("/") ? String(url.dropLast()) : url
        if version == 2 {
            return "\(base)/api/v2/write?org=\(Self.escape(org))&bucket=\(Self.escape(bucket))&precision=s"
        }
        var u = "\(base)/write?db=\(Self.escape(database))&precision=s"
        if !retentionPolicy.isEmpty { u += "&rp=\(Self.escape(retentionPolicy))" }
        if !username.isEmpty { u += "&u=\(Self.escape(username))&p=\(Self.escape(password))" }
        return u
    }

    var gzip: Bool { contentEncoding != "identity" }

    var authorization: [String] { version == 2 && !token.isEmpty ? ["Authorization: Token \(token)"] : [] }

    static func escape(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? s
    }
}

/// What gives when the outbox holds `[influx] max_backlog` bytes unsent (an outage, a slow receiver). Each is
/// counted; nothing acknowledged is dropped without a count.
public enum BacklogPolicy: String, Sendable, Hashable, CaseIterable {
    /// The oldest unsent minutes are skipped (kept here, never forwarded) until the backlog fits.
    case dropOldest = "drop_oldest"
    /// New minutes are stored here but not queued for forwarding until the backlog is below 90 % of the bound.
    case dropNewest = "drop_newest"
    /// Intake stops until the backlog is below 90 % of the bound: HTTP writes are answered 429 with Retry-After,
    /// TCP connections are not read, UDP datagrams are dropped (counted).
    case block
}

/// Whether intake is stopped (`backlog_policy = "block"` with an outbox full): set by the forwarders, read by the
/// listeners once per batch (an atomic load). The InfluxDB outbox holds every write; the events outbox, events.
public final class IntakeGate: Sendable {
    private let influx = Atomic<Bool>(false)
    private let events = Atomic<Bool>(false)
    public init() {}
    /// Writes of any kind wait (the InfluxDB outbox is full).
    public var isClosed: Bool { influx.load(ordering: .relaxed) }
    /// Events wait (either outbox is full: events are rolled up and forwarded to InfluxDB too).
    public var isClosedToEvents: Bool { events.load(ordering: .relaxed) || influx.load(ordering: .relaxed) }
    func set(_ value: Bool) { influx.store(value, ordering: .relaxed) }
    /// Set by the events forwarder.
    public func setEvents(_ value: Bool) { events.store(value, ordering: .relaxed) }
}

/// What forwarding has done, for `/health` and `/metrics`.
public final class ForwarderStats: Sendable {
    public struct State: Sendable {
        /// `idle` (caught up), `sending`, `retrying` (transient errors), `failing` (the receiver refuses: 401, 403,
        /// 404…; the outbox is kept and retried slowly).
        public var status = "idle"
        public var lastSuccess: Int64?
        public var lastError: String?
        public var lastErrorAt: Int64?
        public var backlogMinutes = 0
        public var backlogPoints = 0
        /// Bytes of the stored rows not yet forwarded (what `max_backlog` bounds).
        public var backlogBytes = 0
    }

    let pointsForwarded = Atomic<Int>(0)
    let pointsRejected = Atomic<Int>(0)
    let batches = Atomic<Int>(0)
    let retries = Atomic<Int>(0)
    let droppedOldest = Atomic<Int>(0)
    let blocking = Atomic<Bool>(false)
    let state = Mutex(State())
    /// Points skipped by `drop_oldest`.
    public var droppedOldestPoints: Int { droppedOldest.load(ordering: .relaxed) }
    /// Whether intake is stopped (`backlog_policy = "block"` with the backlog full).
    public var isBlocking: Bool { blocking.load(ordering: .relaxed) }

    public init() {}

    public var current: State { state.withLock { $0 } }
    /// Points InfluxDB accepted.
    public var forwarded: Int { pointsForwarded.load(ordering: .relaxed) }
    /// Points refused for good (400) or that could not be encoded.
    public var rejected: Int { pointsRejected.load(ordering: .relaxed) }
    /// Requests answered 2xx or 400.
    public var requests: Int { batches.load(ordering: .relaxed) }
    /// Requests that will be (or were) sent again.
    public var retried: Int { retries.load(ordering: .relaxed) }
}

/// Sends stored minutes to InfluxDB from the store's outbox, on its own thread (libcurl blocks; never an event
/// loop). The outbox cursor lives in SQLite and moves only after the receiver answered 2xx (or rejected points for
/// good with a 400), so an outage of any length loses nothing, and a resend overwrites the same points.
public final class Forwarder: Sendable {
    /// Where and how it sends now; `reconfigure` changes it while running (SIGHUP).
    public var configuration: ForwarderConfiguration { settings.withLock { $0.configuration } }
    private let settings: Mutex<(configuration: ForwarderConfiguration, generation: Int)>
    public let stats = ForwarderStats()
    let store: SQLiteStore
    let logger: Logger
    private let signal = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let stopping = Atomic<Bool>(false)
    /// The last pass over the outbox (``refreshBacklog(_:status:sent:)``), and the backlog since: the forwarder's
    /// thread only, never held across SQLite work.
    private let measured = Mutex<(at: Int64, backlog: (minutes: Int, points: Int, bytes: Int))?>(nil)
    /// How often a draining forwarder passes over the whole outbox for its backlog (nanoseconds).
    static let measureInterval: Int64 = 5_000_000_000
    /// What the last pass over the outbox took (nanoseconds): passes outside a drain (a retry round, an idle round)
    /// are at least 50 times that apart, so measuring costs at most 2 % of a core whatever the backlog holds.
    private let passCost = Atomic<Int64>(0)
    /// The store's change count (``SQLiteStore/changeCount()``) and the cursor when the last pass began: a retry
    /// round with both unchanged has the last pass's backlog, exactly, however old.
    private let lastPass = Mutex<(changes: Int64, cursor: SQLiteStore.OutboxCursor)?>(nil)
    /// Passes over the outbox made so far (the tests count them).
    let backlogPasses = Atomic<Int>(0)
    static let minimumPassGap: Int64 = 200_000_000
    /// Where points InfluxDB refused for good go (with its error); nil: they are only counted.
    let deadLetters: DeadLetterQueue?
    /// Told how many points each refused batch lost (`metricsd_rejected_total{reason="rejected_by_influxdb"}`).
    let onRefused: (@Sendable (Int) -> Void)?
    /// Closed while `backlog_policy = "block"` holds intake.
    let gate: IntakeGate?
    /// The most requests spent finding the refused points of one batch (``isolateRefused(_:lines:error:)``).
    static let maxIsolationRequests = 64

    public init(
        store: SQLiteStore, configuration: ForwarderConfiguration, logger: Logger,
        deadLetters: DeadLetterQueue? = nil, onRefused: (@Sendable (Int) -> Void)? = nil, gate: IntakeGate? = nil
    ) {
        self.gate = gate
        self.deadLetters = deadLetters
        self.onRefused = onRefused
        self.store = store
        self.settings = Mutex((configuration, 0))
        self.logger = logger
    }

    /// Sends to a new target (or with new credentials, batch size, aggregates…) from the next round on. The outbox
    /// cursor stays: what the old target acknowledged is not sent again, everything after it goes to the new one.
    public func reconfigure(_ configuration: ForwarderConfiguration) {
        settings.withLock {
            $0.configuration = configuration
            $0.generation += 1
        }
        wake()
    }

    /// Starts the sending thread.
    public func start() {
        let thread = Thread { [self] in
            run()
            finished.signal()
        }
        thread.name = "metricsd-forwarder"
        thread.start()
    }

    /// Asks for a send round now (after a flush) instead of at the next interval.
    public func wake() { signal.signal() }

    /// Stops the thread (a request in flight finishes or times out first) and waits for it. With `drain` > 0 it
    /// first sends what the outbox holds, for up to that many nanoseconds, and stops early when the outbox is empty
    /// or the receiver fails (what is left stays in the outbox for the next start).
    public func stop(drain: Int64 = 0) {
        if drain > 0 {
            drainUntil.store(Self.now() + drain, ordering: .sequentiallyConsistent)
            signal.signal()
            let grace = Int(clamping: drain) + configuration.timeout * 1_000_000_000 + 1_000_000_000
            if finished.wait(timeout: .now() + .nanoseconds(grace)) == .success { return }
        }
        stopping.store(true, ordering: .sequentiallyConsistent)
        signal.signal()
        finished.wait()
    }

    private let drainUntil = Atomic<Int64>(0)

    /// A drain asked for is under way: nothing waits, the first idle or failed round ends the thread.
    private var isDraining: Bool { drainUntil.load(ordering: .sequentiallyConsistent) != 0 }

    private var isStopping: Bool {
        if stopping.load(ordering: .sequentiallyConsistent) { return true }
        let until = drainUntil.load(ordering: .sequentiallyConsistent)
        return until != 0 && Self.now() >= until
    }

    /// Sleeps up to `nanoseconds`, or until woken or stopped.
    private func pause(_ nanoseconds: Int64) {
        _ = signal.wait(timeout: .now() + .nanoseconds(Int(clamping: nanoseconds)))
    }

    /// Waits out a backoff of `nanoseconds` (ended early by ``wake()`` or a stop), measuring the backlog and applying
    /// `backlog_policy` every second meanwhile: an outage is when the outbox fills.
    private func waitOut(_ nanoseconds: Int64, _ cursor: inout SQLiteStore.OutboxCursor, status: String) {
        let end = Self.now() + nanoseconds
        while !isStopping {
            let left = end - Self.now()
            if left <= 0 { return }
            if signal.wait(timeout: .now() + .nanoseconds(Int(min(left, 1_000_000_000)))) == .success { return }
            refreshBacklog(&cursor, status: status)
        }
    }

    private func run() {
        var reportedQuarantine = 0
        var generation = -1
        var client = CurlClient(options: .init())
        var databaseReady = false
        var attempt = 0
        var batchSize = 0
        var encoder = SharedEncoder(ForwardEncoder(configuration))
        var ahead: Prefetch?
        var unsent: Prepared?
        var cursor: SQLiteStore.OutboxCursor
        do {
            cursor = try store.outboxCursor()
        } catch {
            logger.error("forwarding cannot read its cursor; not forwarding: \(error)")
            return
        }
        rounds: while !isStopping {
            let (configuration, current) = settings.withLock { ($0.configuration, $0.generation) }
            if current != generation {
                generation = current
                client = CurlClient(
                    options: .init(
                        timeout: configuration.timeout, caFile: configuration.caFile,
                        insecureSkipVerify: configuration.insecureSkipVerify))
                databaseReady = !(configuration.createDatabase && configuration.version == 1)
                attempt = 0
                batchSize = configuration.batchSize
                encoder = SharedEncoder(ForwardEncoder(configuration))
            }
            if !databaseReady {
                switch createDatabase(client) {
                case .sent: databaseReady = true
                case .retry(let after):
                    attempt += 1
                    refreshBacklog(&cursor, status: "retrying")
                    if isDraining { break rounds }
                    waitOut(backoff(attempt, retryAfter: after), &cursor, status: "retrying")
                    continue
                case .refused, .tooLarge:
                    refreshBacklog(&cursor, status: "failing")
                    if isDraining { break rounds }
                    waitOut(configuration.retryMax, &cursor, status: "failing")
                    continue
                }
            }
            let batch: Prepared
            let kept = unsent
            unsent = nil
            let ready: Prepared?
            if let kept, kept.after == cursor, kept.generation == generation, kept.limit == batchSize {
                // The batch the last round could not send, sent again as it was read (a minute stored since then
                // was queued again; it follows): a retry costs the request, not the reading and encoding again.
                ready = kept
            } else {
                ready = ahead?.take()
                ahead = nil
            }
            if let ready, ready.after == cursor, ready.generation == generation, ready.limit == batchSize {
                batch = ready
            } else {
                do throws(StoreError) {
                    batch = try prepare(after: cursor, limit: batchSize, generation: generation, encoder: encoder)
                } catch {
                    note(error: "reading the outbox: \(error)", status: "retrying")
                    pause(configuration.retryMax)
                    continue
                }
            }
            if batch.rows == 0 {
                if batch.cursor != cursor {
                    // Entries whose rows are gone (retention): step over them.
                    try? store.advanceOutbox(to: batch.cursor)
                    cursor = batch.cursor
                    continue
                }
                refreshBacklog(&cursor, status: "idle")
                if isDraining { break rounds }
                pause(configuration.flushInterval)
                continue
            }
            // A full batch: there is likely more. The next one is read and encoded while this one is sent (the
            // receiver works on the other core); it is used only if this one is acknowledged.
            if batch.rows == batchSize && ahead == nil {
                ahead = prefetch(after: batch.cursor, limit: batchSize, generation, encoder)
            }
            let quarantined = store.quarantinedRows
            if quarantined > reportedQuarantine {
                logger.error(
                    "forwarding: \(quarantined - reportedQuarantine) outbox rows do not decode: moved to the quarantine table and skipped (the rows after them are sent)"
                )
                reportedQuarantine = quarantined
            }
            let body = batch.body
            switch send(client, body: body.lines, points: body.points) {
            case .sent(let rejected):
                do {
                    try store.advanceOutbox(to: batch.cursor)
                    cursor = batch.cursor
                } catch {
                    // Sent but not recorded: the next round sends the same points again, which overwrites them.
                    note(error: "recording forwarding progress: \(error)", status: "retrying")
                }
                stats.pointsForwarded.add(body.points - rejected, ordering: .relaxed)
                stats.pointsRejected.add(rejected, ordering: .relaxed)
                stats.batches.add(1, ordering: .relaxed)
                stats.state.withLock {
                    $0.lastSuccess = Self.now()
                    $0.status = "sending"
                }
                attempt = 0
                refreshBacklog(&cursor, status: "sending", sent: (batch.rows, batch.bytes))
            case .tooLarge:
                // 413: halve the batch and send again at once (the outbox keeps its order).
                batchSize = max(1, batchSize / 2)
                logger.warning("forwarding: request too large; batch size now \(batchSize)")
            case .retry(let after):
                attempt += 1
                unsent = batch
                stats.retries.add(1, ordering: .relaxed)
                refreshBacklog(&cursor, status: "retrying")
                if isDraining { break rounds }
                waitOut(backoff(attempt, retryAfter: after), &cursor, status: "retrying")
            case .refused:
                attempt += 1
                unsent = batch
                stats.retries.add(1, ordering: .relaxed)
                refreshBacklog(&cursor, status: "failing")
                if isDraining { break rounds }
                waitOut(configuration.retryMax, &cursor, status: "failing")
            }
        }
        // A prefetch still reading the outbox finishes before the store can be closed.
        _ = ahead?.take()
    }

    enum Outcome {
        /// 2xx, or 400 with points rejected for good (`rejected` of them).
        case sent(rejected: Int)
        case tooLarge
        /// Try again after a backoff (at least `after` nanoseconds when the receiver said so).
        case retry(after: Int64?)
        /// The receiver refuses this client (401, 403, 404, …): keep the outbox, report, retry slowly.
        case refused
    }

    /// Posts one gzip-compressed batch and classifies the answer the way Telegraf's InfluxDB output does.
    func send(_ client: CurlClient, body: [UInt8], points: Int) -> Outcome {
        let response: CurlClient.Response
        do {
            response = try client.post(
                configuration.writeURL,
                headers: ["Content-Type: text/plain; charset=utf-8"]
                    + (configuration.gzip ? ["Content-Encoding: gzip"] : []) + configuration.authorization,
                body: configuration.gzip ? Gzip.compress(body, level: 1) : body)
        } catch {
            // No answer at all (refused, reset, timeout, TLS): the receiver is down or unreachable; retry.
            note(error: "sending to \(configuration.url): \(error)", status: "retrying")
            return .retry(after: nil)
        }
        switch response.status {
        case 200..<300:
            return .sent(rejected: 0)
        case 400:
            // A bad point (type conflict, unparseable): InfluxDB keeps the good points of the batch and answers
            // "partial write: … dropped=N". Resending it whole cannot help; which points it refused is found by
            // halving, and each is kept as a dead letter with InfluxDB's error.
            let text = Self.errorText(response.text)
            note(error: "400: \(text.prefix(300))", status: "sending")
            let outcome = isolateRefused(client, lines: body, error: text)
            if case .sent(let rejected) = outcome {
                logger.error(
                    "forwarding: InfluxDB refused \(rejected) of \(points) points for good (kept as dead letters): \(text.prefix(500))"
                )
            }
            return outcome
        case 413:
            return .tooLarge
        case 429, 500..<600:
            // Overloaded or failing: back off, honouring Retry-After.
            note(error: "\(response.status): \(response.text.prefix(300))", status: "retrying")
            return .retry(after: response.headers["retry-after"].flatMap(Self.retryAfter))
        default:
            // 401, 403, 404 and other client errors: this configuration is refused (wrong token, missing database
            // or bucket). Stop hammering: log loudly, surface in /health, keep the outbox, retry at the slowest pace.
            logger.error(
                "forwarding refused by \(configuration.url) (HTTP \(response.status)): \(response.text.prefix(300)); the outbox is kept and retried every \(configuration.retryMax / 1_000_000_000) s"
            )
            note(error: "\(response.status): \(response.text.prefix(300))", status: "failing")
            return .refused
        }
    }

    /// One post of `body` (line protocol, the write URL's precision): its status and text, or `nil` when no
    /// answer came.
    private func post(_ client: CurlClient, _ body: [UInt8]) -> CurlClient.Response? {
        try? client.post(
            configuration.writeURL,
            headers: ["Content-Type: text/plain; charset=utf-8"]
                + (configuration.gzip ? ["Content-Encoding: gzip"] : []) + configuration.authorization,
            body: configuration.gzip ? Gzip.compress(body, level: 1) : body)
    }

    /// After a 400 for `lines`: InfluxDB wrote the good points and names only the first bad one, so the batch is
    /// halved and each half sent again — a point written twice is overwritten with itself — until each refused
    /// point stands alone; it becomes a dead letter with InfluxDB's error for it. At most
    /// ``maxIsolationRequests`` requests: the points of a group still refused then are kept together, each with
    /// the group's error (a replay posts them again; the good ones are accepted). An error that is not a 400 on
    /// the way: the whole batch is retried later.
    func isolateRefused(_ client: CurlClient, lines body: [UInt8], error: String) -> Outcome {
        var lines: [Range<Int>] = []
        var start = 0
        for (i, b) in body.enumerated() where b == 0x0A {
            if i > start { lines.append(start..<i) }
            start = i + 1
        }
        if start < body.count { lines.append(start..<body.count) }
        var refused: [(index: Int, message: String)] = []
        var groups: [(range: Range<Int>, error: String)] = [(0..<lines.count, error)]
        var requests = 0
        while let (range, groupError) = groups.popLast() {
            if range.count == 1 || requests >= Self.maxIsolationRequests {
                for i in range { refused.append((i, groupError)) }
                continue
            }
            let middle = range.lowerBound + range.count / 2
            for half in [range.lowerBound..<middle, middle..<range.upperBound] {
                var part: [UInt8] = []
                for i in half {
                    part += body[lines[i]]
                    part.append(0x0A)
                }
                requests += 1
                guard let response = post(client, part) else { return .retry(after: nil) }
                switch response.status {
                case 200..<300: continue
                case 400: groups.append((half, Self.errorText(response.text)))
                case 429, 500..<600: return .retry(after: response.headers["retry-after"].flatMap(Self.retryAfter))
                default: return .refused
                }
            }
        }
        if let deadLetters {
            let now = Self.now()
            let host = URL(string: configuration.url)?.host ?? configuration.url
            for (index, message) in refused {
                deadLetters.add(
                    DeadLetter(
                        received: now, source: "influx", remote: host, reason: .rejectedByInfluxDB,
                        kind: .influxPoint, line: index + 1, column: nil, message: String(message.prefix(1000)),
                        precision: Precision.seconds.walCode, payload: Array(body[lines[index]]),
                        origin: UInt64(truncatingIfNeeded: now)))
            }
        }
        onRefused?(refused.count)
        return .sent(rejected: refused.count)
    }

    /// InfluxDB's `{"error":"…"}` as its text (other bodies as they are).
    static func errorText(_ body: String) -> String {
        if let data = body.data(using: .utf8),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let text = object["error"] as? String
        {
            return text
        }
        return body
    }

    /// Posts dead letters of refused points (``DeadLetterKind/influxPoint``) to the current target again: all in
    /// one request; when InfluxDB refuses some (400), one request each for at most ``maxIsolationRequests`` of them
    /// (the others are reported not tried); no answer fails them all at once (a replay never waits out a timeout
    /// per point). For each, whether it was accepted, or why not.
    public func resend(_ points: [[UInt8]]) -> [Result<Void, ResendError>] {
        guard !points.isEmpty else { return [] }
        let configuration = self.configuration
        let client = CurlClient(
            options: .init(
                timeout: configuration.timeout, caFile: configuration.caFile,
                insecureSkipVerify: configuration.insecureSkipVerify))
        func fail(_ message: String) -> Result<Void, ResendError> { .failure(ResendError(message: message)) }
        var body: [UInt8] = []
        for p in points { body += p + [0x0A] }
        guard let response = post(client, body) else {
            return points.map { _ in fail("no answer from \(configuration.url)") }
        }
        if (200..<300).contains(response.status) { return points.map { _ in .success(()) } }
        guard response.status == 400, points.count > 1 else {
            let text = "\(response.status): \(Self.errorText(response.text).prefix(500))"
            return points.map { _ in fail(text) }
        }
        return points.enumerated().map { i, point in
            guard i < Self.maxIsolationRequests else {
                return fail("not tried: more refused points than one replay sends alone")
            }
            guard let one = post(client, point + [0x0A]) else { return fail("no answer from \(configuration.url)") }
            if (200..<300).contains(one.status) { return .success(()) }
            return fail("\(one.status): \(Self.errorText(one.text).prefix(500))")
        }
    }

    public struct ResendError: Error, Sendable {
        public var message: String
    }

    private func createDatabase(_ client: CurlClient) -> Outcome {
        let base = configuration.url.hasSuffix("/") ? String(configuration.url.dropLast()) : configuration.url
        var url = "\(base)/query"
        if !configuration.username.isEmpty {
            url +=
                "?u=\(ForwarderConfiguration.escape(configuration.username))&p=\(ForwarderConfiguration.escape(configuration.password))"
        }
        let query = "q=" + ForwarderConfiguration.escape("CREATE DATABASE \"\(configuration.database)\"")
        do {
            let response = try client.post(
                url, headers: ["Content-Type: application/x-www-form-urlencoded"], body: Array(query.utf8))
            if (200..<300).contains(response.status) {
                logger.info("forwarding: database \(configuration.database) is ready on \(configuration.url)")
                return .sent(rejected: 0)
            }
            note(error: "CREATE DATABASE: \(response.status): \(response.text.prefix(300))", status: "failing")
            return response.status >= 500 || response.status == 429 ? .retry(after: nil) : .refused
        } catch {
            note(error: "CREATE DATABASE on \(configuration.url): \(error)", status: "retrying")
            return .retry(after: nil)
        }
    }

    /// Exponential backoff from `retryInitial`, capped at `retryMax`, with jitter (50–100 % of the step), and never
    /// shorter than what the receiver asked for.
    func backoff(_ attempt: Int, retryAfter: Int64?) -> Int64 {
        let step = min(
            configuration.retryMax,
            configuration.retryInitial.multipliedReportingOverflow(by: 1 << min(attempt - 1, 30)).0)
        let jittered = step / 2 + Int64.random(in: 0...max(0, step / 2))
        return max(jittered, min(retryAfter ?? 0, configuration.retryMax * 10))
    }

    private func note(error: String, status: String) {
        stats.state.withLock {
            $0.lastError = error
            $0.lastErrorAt = Self.now()
            $0.status = status
        }
        if status == "retrying" { logger.warning("forwarding: \(error)") }
    }

    /// Points `drop_newest` kept from the outbox.
    public var droppedNewestPoints: Int { store.outboxSkippedRows.load(ordering: .relaxed) }

    /// How long after a pass the next one outside a drain waits: 50 times the pass's cost, from 200 ms up to
    /// ``measureInterval`` (a pass of a huge backlog is repeated at least every 5 s, for `max_backlog`'s sake).
    static func passGap(lastPassCost: Int64) -> Int64 {
        lastPassCost >= measureInterval / 50 ? measureInterval : max(minimumPassGap, lastPassCost * 50)
    }

    /// Measures the backlog after `cursor` and keeps it within `max_backlog` by the policy (each round, outage or
    /// not: a retry round measures too, from a pass at most ``passGap(lastPassCost:)`` old).
    ///
    /// A pass over the unsent outbox costs what the backlog holds, so while a backlog drains it is made at most every
    /// ``measureInterval``: in between, the rows and bytes of each batch sent are taken off the last pass (minutes
    /// stored meanwhile join at the next). A pass after every batch made draining a large backlog quadratic.
    private func refreshBacklog(
        _ cursor: inout SQLiteStore.OutboxCursor, status: String, sent: (rows: Int, bytes: Int)? = nil
    ) {
        let now = Self.now()
        let backlogNow: (minutes: Int, points: Int, bytes: Int)?
        if let sent, let previous = measured.withLock({ $0 }), now &- previous.at < Self.measureInterval {
            // Between passes: the batch sent taken off the last one (which keeps its time).
            let left = (
                minutes: previous.backlog.minutes, points: max(0, previous.backlog.points - sent.rows),
                bytes: max(0, previous.backlog.bytes - sent.bytes)
            )
            measured.withLock { $0 = (previous.at, left) }
            backlogNow = left
        } else if sent == nil, status != "idle", let previous = measured.withLock({ $0 }),
            lastPass.withLock({ $0 }).map({ $0.changes == store.changeCount() && $0.cursor == cursor }) ?? false
                || now &- previous.at < Self.passGap(lastPassCost: passCost.load(ordering: .relaxed))
        {
            // A retry round with nothing stored, deleted or sent since the last pass (an outage between two
            // flushes: a pass of a 5-million-point backlog takes seconds), or soon after the last pass (retries
            // 100 ms apart while a receiver starts made a pass of a 50,000-point backlog, 27 ms, each time): the
            // last pass stands. An idle round passes over an empty backlog, which costs nothing, and reports it
            // exactly.
            backlogNow = previous.backlog
        } else {
            let changes = store.changeCount()
            backlogPasses.add(1, ordering: .relaxed)
            backlogNow = try? store.outboxBacklog(after: cursor)
            lastPass.withLock { $0 = backlogNow == nil ? nil : (changes, cursor) }
            let after = Self.now()
            passCost.store(after &- now, ordering: .relaxed)
            if let backlogNow { measured.withLock { $0 = (after, backlogNow) } }
        }
        guard var backlog = backlogNow else { return }
        let configuration = self.configuration
        let limit = configuration.maxBacklog
        let over = backlog.bytes > limit
        // Below 90 % intake resumes (without the margin it would flap at the bound).
        let relieved = backlog.bytes <= limit / 10 * 9
        switch configuration.backlogPolicy {
        case .dropOldest:
            store.outboxPaused.store(false, ordering: .relaxed)
            stats.blocking.store(false, ordering: .relaxed)
            gate?.set(false)
            if over, let dropped = try? store.dropOldestOutbox(after: cursor, atLeast: backlog.bytes - limit) {
                cursor = dropped.cursor
                stats.droppedOldest.add(dropped.points, ordering: .relaxed)
                logger.warning(
                    "forwarding: the outbox passed [influx] max_backlog (\(limit) bytes): the oldest \(dropped.points) points (\(dropped.bytes) bytes) will not be forwarded (drop_oldest)"
                )
                backlog = (try? store.outboxBacklog(after: cursor)) ?? backlog
                measured.withLock { $0 = (now, backlog) }
            }
        case .dropNewest:
            stats.blocking.store(false, ordering: .relaxed)
            gate?.set(false)
            let paused = store.outboxPaused.load(ordering: .relaxed)
            if over && !paused {
                logger.warning(
                    "forwarding: the outbox passed [influx] max_backlog (\(limit) bytes): new minutes are kept here, not forwarded (drop_newest)"
                )
            }
            store.outboxPaused.store(over || (paused && !relieved), ordering: .relaxed)
        case .block:
            store.outboxPaused.store(false, ordering: .relaxed)
            let blocking = stats.blocking.load(ordering: .relaxed)
            if over && !blocking {
                logger.warning(
                    "forwarding: the outbox passed [influx] max_backlog (\(limit) bytes): writes are refused until it drains (block)"
                )
            }
            stats.blocking.store(over || (blocking && !relieved), ordering: .relaxed)
            gate?.set(over || (blocking && !relieved))
        }
        stats.state.withLock {
            $0.backlogMinutes = backlog.minutes
            $0.backlogPoints = backlog.points
            $0.backlogBytes = backlog.bytes
            $0.status = backlog.points == 0 ? "idle" : status
        }
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1e9) }

    /// `dropped=N` in InfluxDB's partial-write message.
    static func dropped(in text: String) -> Int? {
        guard let range = text.range(of: "dropped=") else { return nil }
        return Int(text[range.upperBound...].prefix { $0.isNumber })
    }

    /// Retry-After: delay seconds, or an HTTP date.
    static func retryAfter(_ value: String) -> Int64? {
        if let seconds = Double(value.trimmingCharacters(in: .whitespaces)) { return Int64(seconds * 1e9) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: value) else { return nil }
        return max(0, Int64(date.timeIntervalSinceNow * 1e9))
    }

    // MARK: - Batches

    /// A batch read from the outbox and encoded: `rows` read after `after` (at most `limit`), `cursor` marks them sent.
    struct Prepared: Sendable {
        var after: SQLiteStore.OutboxCursor
        var limit: Int
        var generation: Int
        var rows: Int
        /// The stored rows' bytes.
        var bytes: Int
        var cursor: SQLiteStore.OutboxCursor
        var body: (lines: [UInt8], points: Int)
    }

    func prepare(
        after cursor: SQLiteStore.OutboxCursor, limit: Int, generation: Int, encoder: SharedEncoder
    ) throws(StoreError) -> Prepared {
        let batch = try store.outboxBatch(after: cursor, limit: limit)
        let body = encoder.state.withLock { encode(batch.rows, with: &$0) }
        return Prepared(
            after: cursor, limit: limit, generation: generation, rows: batch.rows.count,
            bytes: batch.rows.reduce(0) { $0 + $1.bytes }, cursor: batch.cursor, body: body)
    }

    /// The next batch, made on another thread while the current one is sent.
    final class Prefetch: Sendable {
        private let result = Mutex<Prepared?>(nil)
        private let done = DispatchSemaphore(value: 0)

        init(_ work: @escaping @Sendable () -> Prepared?) {
            Thread { [self] in
                let prepared = work()
                result.withLock { $0 = prepared }
                done.signal()
            }.start()
        }

        /// Waits for the batch (`nil` when reading it failed: the caller reads it again itself).
        func take() -> Prepared? {
            done.wait()
            done.signal()
            return result.withLock { $0 }
        }
    }

    /// The encoder and its caches, used by the sending thread and the prefetching one in turn (the sender waits
    /// for the prefetch before it encodes again, so the lock is never contended).
    final class SharedEncoder: Sendable {
        let state: Mutex<ForwardEncoder>
        init(_ encoder: ForwardEncoder) { state = Mutex(encoder) }
    }

    private func prefetch(
        after cursor: SQLiteStore.OutboxCursor, limit: Int, _ generation: Int, _ encoder: SharedEncoder
    ) -> Prefetch {
        Prefetch { [self] in try? prepare(after: cursor, limit: limit, generation: generation, encoder: encoder) }
    }

    // MARK: - Points

    /// The line protocol for `rows`: one point per series and minute (see docs/forwarding.md).
    func encode(_ rows: [SQLiteStore.OutboxRow], with encoder: inout ForwardEncoder) -> (lines: [UInt8], points: Int) {
        var out: [UInt8] = []
        let points = encoder.append(rows, to: &out) { row, error in
            logger.error("forwarding: cannot encode a point of \(row.series): \(error.message)")
            stats.pointsRejected.add(1, ordering: .relaxed)
        }
        return (out, points)
    }

    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return a % b < 0 ? q - 1 : q
    }
}
