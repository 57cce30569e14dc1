import Export
import Foundation
import LineProtocol
import Prometheus
import Rollups
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Nanoseconds since the epoch (wall clock).
func nowNanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// A counter that is both readable (for `/health` and the `metricsd` self-measurement) and exported to Prometheus.
final class StatCounter: Sendable {
    private let value = Atomic<Int64>(0)
    private let exported: Prometheus.Counter

    init(_ registry: PrometheusCollectorRegistry, _ name: String, _ labels: [(String, String)] = [], help: String) {
        exported = registry.makeCounter(
            descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help),
            labels: labels
        )
    }

    func add(_ n: Int) {
        guard n != 0 else { return }
        value.wrappingAdd(Int64(n), ordering: .relaxed)
        exported.increment(by: Int64(n))
    }

    var current: Int64 { value.load(ordering: .relaxed) }
}

/// Per-listener counters.
final class ListenerStats: Sendable {
    let name: String
    let lines: StatCounter
    let invalid: StatCounter
    let points: StatCounter
    let bytes: StatCounter

    init(_ registry: PrometheusCollectorRegistry, listener: String) {
        name = listener
        let l = [("listener", listener)]
        lines = StatCounter(
            registry, "metricsd_lines_received_total", l, help: "Lines received (not blank, not comments)")
        invalid = StatCounter(registry, "metricsd_lines_invalid_total", l, help: "Lines rejected by the parser")
        points = StatCounter(registry, "metricsd_points_total", l, help: "Field values applied to rollups")
        bytes = StatCounter(registry, "metricsd_bytes_received_total", l, help: "Payload bytes received")
    }
}

/// Every figure the daemon reports about itself.
final class Stats: Sendable {
    let registry: PrometheusCollectorRegistry
    let udp: ListenerStats
    let tcp: ListenerStats
    let http: ListenerStats
    /// The daemon's own self-metrics, written into the rollups every interval.
    let internalWrites: ListenerStats
    let rejectedSeries: StatCounter
    let typeConflicts: StatCounter
    let outOfRange: StatCounter
    let latePoints: StatCounter
    let closedBuckets: StatCounter
    let closedCells: StatCounter
    let udpDrops: StatCounter
    let overlongLines: StatCounter
    let connectionsRejected: StatCounter
    let httpErrors: StatCounter
    let walErrors: StatCounter
    let storeErrors: StatCounter
    let pendingDropped: StatCounter
    let duplicateBatches: StatCounter
    let walReplayed: StatCounter
    let eventsAccepted: StatCounter
    let eventsDuplicate: StatCounter
    let eventsInvalid: StatCounter
    let eventsUnindexed: StatCounter
    let rejectedFields: StatCounter
    let invalidNames: StatCounter
    let seriesDropped: StatCounter
    let unauthorized: StatCounter
    let httpConnectionsThrottled: StatCounter
    let requestTimeouts: StatCounter
    let bodiesRefused: StatCounter
    let queriesRefused: StatCounter
    let queriesStopped: StatCounter
    let queriesLimited: StatCounter
    let forward: ForwardMetrics
    let activeSeries: Gauge
    let openBuckets: Gauge
    let openCells: Gauge
    let sinkSeconds: Gauge
    let tcpConnections: Gauge
    let tcpConnectionCount = Atomic<Int>(0)
    let httpConnectionCount = Atomic<Int>(0)
    /// Why the write-ahead log refuses appends (writes are then answered 503), `nil` while it takes them.
    let walFailure = Mutex<String?>(nil)
    private let walFailing = Atomic<Bool>(false)
    let lastSinkNanoseconds = Atomic<Int64>(0)
    /// When the ticker last went round (the watchdog is fed only while it does).
    let lastTickNanoseconds = Atomic<Int64>(nowNanoseconds())
    let started = nowNanoseconds()

    init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        udp = ListenerStats(registry, listener: "udp")
        tcp = ListenerStats(registry, listener: "tcp")
        http = ListenerStats(registry, listener: "http")
        internalWrites = ListenerStats(registry, listener: "internal")
        rejectedSeries = StatCounter(
            registry,
            "metricsd_series_rejected_total",
            help: "Points rejected because a new series would exceed rollup.max_series"
        )
        typeConflicts = StatCounter(
            registry,
            "metricsd_field_type_conflicts_total",
            help: "Values whose type differs from the field's first-seen type"
        )
        outOfRange = StatCounter(
            registry,
            "metricsd_points_out_of_range_total",
            help: "Points rejected for a timestamp too far in the future or older than retention"
        )
        latePoints = StatCounter(
            registry,
            "metricsd_points_late_total",
            help: "Points for already closed buckets, merged into stored rollups"
        )
        closedBuckets = StatCounter(
            registry, "metricsd_buckets_closed_total", help: "Buckets closed and handed to the sink")
        closedCells = StatCounter(
            registry, "metricsd_cells_closed_total", help: "Series-field cells handed to the sink")
        udpDrops = StatCounter(
            registry, "metricsd_udp_drops_total", help: "Datagrams dropped by the kernel (receive buffer full)")
        overlongLines = StatCounter(
            registry, "metricsd_lines_overlong_total", help: "Lines longer than limits.max_line_length")
        connectionsRejected = StatCounter(
            registry,
            "metricsd_tcp_connections_rejected_total",
            help: "TCP connections closed because limits.max_connections was reached"
        )
        httpErrors = StatCounter(
            registry, "metricsd_http_write_errors_total", help: "HTTP writes answered with an error")
        walErrors = StatCounter(
            registry,
            "metricsd_wal_errors_total",
            help: "Batches refused because the write-ahead log could not be written"
        )
        storeErrors = StatCounter(
            registry,
            "metricsd_store_errors_total",
            help: "Failed attempts to store closed buckets (kept in memory and retried)"
        )
        pendingDropped = StatCounter(
            registry,
            "metricsd_store_pending_dropped_total",
            help: "Cells dropped from memory while storage failed for too long (still in the WAL)"
        )
        duplicateBatches = StatCounter(
            registry,
            "metricsd_batches_deduplicated_total",
            help: "Retried HTTP batches acknowledged without being applied again"
        )
        walReplayed = StatCounter(
            registry,
            "metricsd_wal_replayed_records_total",
            help: "WAL records replayed at start-up after an unclean stop"
        )
        eventsAccepted = StatCounter(
            registry, "metricsd_events_accepted_total", help: "JSON events accepted (stored and rolled up)")
        eventsDuplicate = StatCounter(
            registry,
            "metricsd_events_duplicate_total",
            help: "Events ignored because their id was accepted within [events] dedup_window"
        )
        eventsInvalid = StatCounter(
            registry, "metricsd_events_invalid_total", help: "Events rejected (invalid JSON, fields or timestamp)")
        eventsUnindexed = StatCounter(
            registry, "metricsd_events_unindexed_total",
            help: "Events dropped from the in-memory analytics index past [events] max_indexed (still stored)")
        rejectedFields = StatCounter(
            registry, "metricsd_fields_rejected_total",
            help: "Values rejected because their series already has rollup.max_fields_per_series fields")
        invalidNames = StatCounter(
            registry, "metricsd_names_invalid_total",
            help: "Values rejected because a measurement, tag or field name is not valid UTF-8")
        seriesDropped = StatCounter(
            registry, "metricsd_series_dropped_idle_total",
            help: "Series forgotten by the in-memory rollups after rollup.series_idle without points")
        unauthorized = StatCounter(
            registry, "metricsd_http_unauthorized_total", help: "HTTP requests refused without the [auth] token")
        httpConnectionsThrottled = StatCounter(
            registry, "metricsd_http_connections_throttled_total",
            help: "Times the HTTP server reached http.max_connections and stopped accepting until one closed")
        requestTimeouts = StatCounter(
            registry, "metricsd_http_request_timeouts_total",
            help: "HTTP connections closed past http.read_header_timeout or http.read_timeout")
        bodiesRefused = StatCounter(
            registry, "metricsd_http_bodies_refused_total",
            help: "Requests answered 503 after waiting for one of http.max_concurrent_bodies")
        queriesRefused = StatCounter(
            registry, "metricsd_queries_refused_total",
            help: "Queries answered 503 at query.max_concurrent_queries")
        queriesStopped = StatCounter(
            registry, "metricsd_queries_stopped_total",
            help: "Queries stopped past query.timeout or because their client left")
        queriesLimited = StatCounter(
            registry, "metricsd_queries_limited_total",
            help: "Queries refused or cut at a [query] limit (series, buckets, rows, statements, nesting)")
        forward = ForwardMetrics(registry)
        activeSeries = registry.makeGauge(
            descriptor: MetricNameDescriptor(
                metricName: "metricsd_series_active", unitName: "", helpText: "Series known to the rollups"))
        openBuckets = registry.makeGauge(
            descriptor: MetricNameDescriptor(
                metricName: "metricsd_buckets_open", unitName: "", helpText: "Buckets still open for points"))
        openCells = registry.makeGauge(
            descriptor: MetricNameDescriptor(
                metricName: "metricsd_cells_open", unitName: "", helpText: "Series-field cells in open buckets"))
        sinkSeconds = registry.makeGauge(
            descriptor: MetricNameDescriptor(
                metricName: "metricsd_sink_seconds", unitName: "", helpText: "Duration of the last hand-off to the sink"
            ))
        tcpConnections = registry.makeGauge(
            descriptor: MetricNameDescriptor(
                metricName: "metricsd_tcp_connections", unitName: "", helpText: "Open TCP connections"))
    }

    /// A batch was logged: the log takes writes (again).
    @inline(__always)
    func walSucceeded() {
        guard walFailing.load(ordering: .relaxed) else { return }
        walFailing.store(false, ordering: .relaxed)
        walFailure.withLock { $0 = nil }
    }

    /// A batch could not be logged (it is refused): `/health` fails until one is logged again.
    func walFailed(_ error: any Error) {
        walErrors.add(1)
        walFailing.store(true, ordering: .relaxed)
        walFailure.withLock { $0 = "\(error)" }
    }

    func listener(_ name: String) -> ListenerStats {
        switch name {
        case "udp": udp
        case "tcp": tcp
        case "http": http
        default: internalWrites
        }
    }
}

/// The outcome of ingesting a batch of lines (one datagram, one TCP chunk, one HTTP body).
struct BatchOutcome {
    var lines = 0
    var invalid = 0
    var overlong = 0
    /// Decoded lines that had no timestamp (their points got the server's time).
    var untimestamped = 0
    var result = IngestResult()
    /// The first rejected line: number (1-based within the batch), its text (truncated) and why.
    var firstError: (line: Int, text: String, message: String)?
}

/// Parses lines and feeds the rollups. One per listener handler or request: it owns a decoder and a scratch
/// buffer for late cells, so it is not shared between threads; the engine and sink it feeds are.
final class LineIngester {
    let engine: RollupEngine
    let sink: any RollupSink
    let stats: ListenerStats
    let global: Stats
    let decoder: LineDecoder
    var lateCells = LateCells()
    var outcome = BatchOutcome()
    private(set) var batchNow: Int64 = 0
    private(set) var batchPosition: UInt64 = 0
    private var defaultTime: Int64?
    /// JSON events (lines starting with `{`) go here; `nil`: they are rejected.
    let events: EventPipeline?
    var eventCounts = EventCounts()
    /// A decoder and buffer of its own for the rollup line of an event (reused).
    let eventDecoder = LineDecoder(precision: .nanoseconds)
    var eventLine: [UInt8] = []
    /// During WAL replay: per bucket start, the WAL position the stored bucket already covers.
    var replayWatermarks: [Int64: UInt64]?

    init(
        engine: RollupEngine, sink: any RollupSink, stats: Stats, listener: String, precision: Precision = .nanoseconds,
        events: EventPipeline? = nil
    ) {
        self.engine = engine
        self.sink = sink
        self.global = stats
        self.stats = stats.listener(listener)
        self.events = events
        decoder = LineDecoder(precision: precision)
    }

    /// Starts a batch: the server time for lines without a timestamp is taken once per batch.
    ///
    /// - Parameters:
    ///   - walPosition: where the batch was logged (0 without a WAL).
    ///   - receivedAt: the time the batch was received, as logged with it (lines without a timestamp and events get
    ///     it, live and on replay alike).
    func begin(walPosition: UInt64 = 0, receivedAt: Int64? = nil) {
        outcome = BatchOutcome()
        eventCounts = EventCounts()
        batchNow = nowNanoseconds()
        batchPosition = walPosition
        defaultTime = receivedAt
    }

    /// The server time this batch uses for lines without a timestamp.
    var batchTime: Int64 { defaultTime ?? batchNow }

    func handle(_ framed: FramedLine) {
        switch framed {
        case .overlong(let n):
            outcome.lines += 1
            outcome.overlong += 1
            outcome.invalid += 1
            if outcome.firstError == nil {
                outcome.firstError = (outcome.lines, "<\(n) bytes>", "line longer than limits.max_line_length")
            }
        case .line(let line):
            handle(line)
        }
    }

    func handle(_ line: UnsafeBufferPointer<UInt8>) {
        if line.first == 0x7B {  // "{": a JSON event
            handleEventLine(line)
            return
        }
        do {
            guard try decoder.decode(line) else {
                outcome.lines += 1  // blank and comment lines count for line numbers, not as points
                return
            }
            outcome.lines += 1
            if decoder.timestamp == nil { outcome.untimestamped += 1 }
            outcome.result += engine.ingest(
                decoder,
                now: batchNow,
                defaultTime: defaultTime,
                walPosition: batchPosition,
                lateCells: &lateCells
            )
        } catch {
            outcome.lines += 1
            outcome.invalid += 1
            if outcome.firstError == nil {
                let text = String(decoding: line.prefix(200), as: UTF8.self)
                outcome.firstError = (outcome.lines, text, error.message)
            }
        }
    }

    /// Ends a batch: hands late cells to the sink and records the counters.
    func end(bytes: Int) {
        if !lateCells.isEmpty {
            sink.submit(lateCells.buckets(walPosition: batchPosition))  // stored by the next flush, read until then
            lateCells.removeAll()
        }
        global.eventsAccepted.add(eventCounts.accepted)
        global.eventsDuplicate.add(eventCounts.duplicates)
        global.eventsInvalid.add(eventCounts.invalid)
        stats.lines.add(outcome.lines)
        stats.invalid.add(outcome.invalid)
        stats.points.add(outcome.result.applied + outcome.result.late)
        stats.bytes.add(bytes)
        global.rejectedSeries.add(outcome.result.rejectedSeries)
        global.typeConflicts.add(outcome.result.typeConflicts)
        global.outOfRange.add(outcome.result.outOfRange)
        global.rejectedFields.add(outcome.result.rejectedFields)
        global.invalidNames.add(outcome.result.invalidNames)
        global.latePoints.add(outcome.result.late)
        global.overlongLines.add(outcome.overlong)
    }
}

/// Forwarding figures for `/metrics`: totals are exported as counters advanced to the forwarder's own counts at each
/// scrape, the backlog and last success as gauges.
final class ForwardMetrics: Sendable {
    private let exported: [String: Prometheus.Counter]
    private let seen = Mutex<[String: Int]>([:])
    private let backlogMinutes: Gauge
    private let backlogPoints: Gauge
    private let lastSuccess: Gauge
    private let failing: Gauge

    init(_ registry: PrometheusCollectorRegistry) {
        func counter(_ name: String, _ help: String) -> Prometheus.Counter {
            registry.makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help))
        }
        func gauge(_ name: String, _ help: String) -> Gauge {
            registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help))
        }
        exported = [
            "forwarded": counter("metricsd_forward_points_total", "Points InfluxDB accepted"),
            "rejected": counter("metricsd_forward_points_rejected_total", "Points InfluxDB refused for good (400)"),
            "requests": counter("metricsd_forward_requests_total", "Write requests answered 2xx or 400"),
            "retries": counter("metricsd_forward_retries_total", "Write requests to be sent again (errors, 5xx, 429)"),
        ]
        backlogMinutes = gauge("metricsd_forward_backlog_minutes", "Stored minutes not yet forwarded")
        backlogPoints = gauge("metricsd_forward_backlog_points", "Points (series-minutes) not yet forwarded")
        lastSuccess = gauge("metricsd_forward_last_success_seconds", "Unix time of the last accepted request")
        failing = gauge("metricsd_forward_failing", "1 while the receiver refuses requests (401, 403, 404, ...)")
    }

    func update(_ stats: ForwarderStats) {
        let totals = [
            "forwarded": stats.forwarded, "rejected": stats.rejected, "requests": stats.requests,
            "retries": stats.retried,
        ]
        seen.withLock { seen in
            for (name, total) in totals {
                let delta = total - seen[name, default: 0]
                if delta > 0 { exported[name]?.increment(by: Int64(delta)) }
                seen[name] = total
            }
        }
        let state = stats.current
        backlogMinutes.set(Double(state.backlogMinutes))
        backlogPoints.set(Double(state.backlogPoints))
        lastSuccess.set(Double(state.lastSuccess ?? 0) / 1e9)
        failing.set(state.status == "failing" ? 1.0 : 0.0)
    }
}
