public import Export
public import Prometheus
public import Synchronization

/// A counter that is both readable (for `/health` and the `metricsd` self-measurement) and exported to Prometheus.
public final class StatCounter: Sendable {
    private let value = Atomic<Int64>(0)
    private let exported: Prometheus.Counter

    public init(
        _ registry: PrometheusCollectorRegistry, _ name: String, _ labels: [(String, String)] = [], help: String
    ) {
        exported = registry.makeCounter(
            descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help),
            labels: labels
        )
    }

    public func add(_ n: Int) {
        guard n != 0 else { return }
        value.wrappingAdd(Int64(n), ordering: .relaxed)
        exported.increment(by: Int64(n))
    }

    public var current: Int64 { value.load(ordering: .relaxed) }
}

/// Per-listener counters.
public final class ListenerStats: Sendable {
    public let name: String
    public let lines: StatCounter
    public let invalid: StatCounter
    public let points: StatCounter
    public let bytes: StatCounter
    /// JSON events accepted from this listener.
    public let events: StatCounter

    public init(_ registry: PrometheusCollectorRegistry, listener: String) {
        name = listener
        let l = [("listener", listener)]
        lines = StatCounter(
            registry, "metricsd_lines_received_total", l, help: "Lines received (not blank, not comments)")
        invalid = StatCounter(registry, "metricsd_lines_invalid_total", l, help: "Lines rejected by the parser")
        points = StatCounter(registry, "metricsd_points_total", l, help: "Field values applied to rollups")
        bytes = StatCounter(registry, "metricsd_bytes_received_total", l, help: "Payload bytes received")
        events = StatCounter(
            registry, "metricsd_events_received_total", l, help: "JSON events accepted, by the listener they came in on"
        )
    }
}

/// Every figure the daemon reports about itself.
public final class Stats: Sendable {
    public let registry: PrometheusCollectorRegistry
    public let udp: ListenerStats
    public let tcp: ListenerStats
    public let http: ListenerStats
    /// The daemon's own self-metrics, written into the rollups every interval.
    public let internalWrites: ListenerStats
    public let rejectedSeries: StatCounter
    public let typeConflicts: StatCounter
    public let outOfRange: StatCounter
    public let latePoints: StatCounter
    public let closedBuckets: StatCounter
    public let closedCells: StatCounter
    public let udpDrops: StatCounter
    public let overlongLines: StatCounter
    public let connectionsRejected: StatCounter
    public let httpErrors: StatCounter
    public let walErrors: StatCounter
    public let storeErrors: StatCounter
    public let pendingDropped: StatCounter
    public let duplicateBatches: StatCounter
    public let walReplayed: StatCounter
    public let eventsAccepted: StatCounter
    public let eventsDuplicate: StatCounter
    public let eventsInvalid: StatCounter
    public let eventsUnindexed: StatCounter
    public let rejectedFields: StatCounter
    public let invalidNames: StatCounter
    public let seriesDropped: StatCounter
    public let unauthorized: StatCounter
    public let httpConnectionsThrottled: StatCounter
    public let requestTimeouts: StatCounter
    public let bodiesRefused: StatCounter
    public let queriesRefused: StatCounter
    public let queriesStopped: StatCounter
    public let queriesLimited: StatCounter
    /// Refused lines, events and forwarded points per ``RejectReason`` (`metricsd_rejected_total{reason=…}`), in
    /// the reasons' order.
    public let rejected: [StatCounter]
    /// Values of new series past the limits folded into their measurement's overflow series.
    public let seriesOverflowed: StatCounter
    /// WAL records that failed their checksum at start-up: skipped (the segment kept as `<name>.corrupt`).
    public let walRecordsQuarantined: StatCounter
    /// `backlog_policy = "block"` holding intake: HTTP writes answered 429, UDP datagrams dropped.
    public let backlogRefusedWrites: StatCounter
    public let backlogDroppedDatagrams: StatCounter
    /// Dead letters stored, evicted from the pending queue before they could be, and deleted for
    /// `[dead_letters] max_rows` or `retention`.
    public let deadLettersStored: StatCounter
    public let deadLettersDropped: StatCounter
    public let deadLettersEvicted: StatCounter
    public let forward: ForwardMetrics
    public let clickhouse: ClickHouseMetrics
    public let activeSeries: Gauge
    public let openBuckets: Gauge
    public let openCells: Gauge
    public let sinkSeconds: Gauge
    public let tcpConnections: Gauge
    public let tcpConnectionCount = Atomic<Int>(0)
    public let httpConnectionCount = Atomic<Int>(0)
    /// Why the write-ahead log refuses appends (writes are then answered 503), `nil` while it takes them.
    public let walFailure = Mutex<String?>(nil)
    private let walFailing = Atomic<Bool>(false)
    public let lastSinkNanoseconds = Atomic<Int64>(0)
    /// When the ticker last went round (the watchdog is fed only while it does).
    public let lastTickNanoseconds = Atomic<Int64>(nowNanoseconds())
    public let started = nowNanoseconds()

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
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
        rejected = RejectReason.allCases.map {
            StatCounter(
                registry, "metricsd_rejected_total", [("reason", $0.rawValue)],
                help: "Lines, events and forwarded points refused, by reason (each kept as a dead letter)")
        }
        walRecordsQuarantined = StatCounter(
            registry, "metricsd_wal_records_quarantined_total",
            help: "WAL records that failed their checksum at start-up: skipped, the segment kept as <name>.corrupt")
        seriesOverflowed = StatCounter(
            registry, "metricsd_series_overflow_total",
            help:
                "Values of new series past rollup.max_series or max_series_per_measurement, folded into the measurement's _overflow=true series"
        )
        backlogRefusedWrites = StatCounter(
            registry, "metricsd_backlog_blocked_total", [("what", "http_write")],
            help:
                "Writes refused (HTTP 429) or UDP datagrams dropped while [influx] backlog_policy = \"block\" held intake"
        )
        backlogDroppedDatagrams = StatCounter(
            registry, "metricsd_backlog_blocked_total", [("what", "udp_datagram")],
            help:
                "Writes refused (HTTP 429) or UDP datagrams dropped while [influx] backlog_policy = \"block\" held intake"
        )
        deadLettersStored = StatCounter(
            registry, "metricsd_dead_letters_stored_total",
            help: "Refused lines, events and points stored as dead letters")
        deadLettersDropped = StatCounter(
            registry, "metricsd_dead_letters_dropped_total",
            help: "Dead letters lost before they were stored (the pending queue was full: the oldest went)")
        deadLettersEvicted = StatCounter(
            registry, "metricsd_dead_letters_evicted_total",
            help: "Stored dead letters deleted past [dead_letters] max_rows or retention (oldest first)")
        forward = ForwardMetrics(registry)
        clickhouse = ClickHouseMetrics(registry)
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
                metricName: "metricsd_sink_seconds", unitName: "",
                helpText: "Duration of the last hand-off of closed buckets to the store (closing and storing them)"
            ))
        tcpConnections = registry.makeGauge(
            descriptor: MetricNameDescriptor(
                metricName: "metricsd_tcp_connections", unitName: "", helpText: "Open TCP connections"))
    }

    /// A batch was logged: the log takes writes (again).
    @inline(__always)
    public func walSucceeded() {
        guard walFailing.load(ordering: .relaxed) else { return }
        walFailing.store(false, ordering: .relaxed)
        walFailure.withLock { $0 = nil }
    }

    /// A batch could not be logged (it is refused): `/health` fails until one is logged again.
    public func walFailed(_ error: any Error) {
        walErrors.add(1)
        walFailing.store(true, ordering: .relaxed)
        walFailure.withLock { $0 = "\(error)" }
    }

    public func listener(_ name: String) -> ListenerStats {
        switch name {
        case "udp": udp
        case "tcp": tcp
        case "http": http
        default: internalWrites
        }
    }
}

/// Forwarding figures for `/metrics`: totals are exported as counters advanced to the forwarder's own counts at each
/// scrape, the backlog and last success as gauges.
public final class ForwardMetrics: Sendable {
    private let exported: [String: Prometheus.Counter]
    private let seen = Mutex<[String: Int]>([:])
    private let backlogMinutes: Gauge
    private let backlogPoints: Gauge
    private let lastSuccess: Gauge
    private let failing: Gauge

    public init(_ registry: PrometheusCollectorRegistry) {
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
            "dropped_oldest": registry.makeCounter(
                descriptor: MetricNameDescriptor(
                    metricName: "metricsd_forward_backlog_dropped_total", unitName: "",
                    helpText: "Points not forwarded because the outbox passed [influx] max_backlog, by backlog_policy"),
                labels: [("policy", "drop_oldest")]),
            "dropped_newest": registry.makeCounter(
                descriptor: MetricNameDescriptor(
                    metricName: "metricsd_forward_backlog_dropped_total", unitName: "",
                    helpText: "Points not forwarded because the outbox passed [influx] max_backlog, by backlog_policy"),
                labels: [("policy", "drop_newest")]),
        ]
        backlogMinutes = gauge("metricsd_forward_backlog_minutes", "Stored minutes not yet forwarded")
        backlogPoints = gauge("metricsd_forward_backlog_points", "Points (series-minutes) not yet forwarded")
        lastSuccess = gauge("metricsd_forward_last_success_seconds", "Unix time of the last accepted request")
        failing = gauge("metricsd_forward_failing", "1 while the receiver refuses requests (401, 403, 404, ...)")
    }

    public func update(_ stats: ForwarderStats, droppedNewest: Int = 0) {
        let totals = [
            "forwarded": stats.forwarded, "rejected": stats.rejected, "requests": stats.requests,
            "retries": stats.retried, "dropped_oldest": stats.droppedOldestPoints, "dropped_newest": droppedNewest,
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

/// Events forwarding to ClickHouse for `/metrics`: the forwarder's totals as counters (advanced at each scrape),
/// the backlog, the last success and "failing" as gauges.
public final class ClickHouseMetrics: Sendable {
    private let exported: [String: Prometheus.Counter]
    private let seen = Mutex<[String: Int]>([:])
    private let backlog: Gauge
    private let lastSuccess: Gauge
    private let failing: Gauge

    public init(_ registry: PrometheusCollectorRegistry) {
        func counter(_ name: String, _ help: String) -> Prometheus.Counter {
            registry.makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help))
        }
        func gauge(_ name: String, _ help: String) -> Gauge {
            registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help))
        }
        exported = [
            "sent": counter("metricsd_clickhouse_events_sent_total", "Events ClickHouse acknowledged"),
            "rejected": counter(
                "metricsd_clickhouse_events_rejected_total", "Events ClickHouse refused for their data, skipped"),
            "requests": counter("metricsd_clickhouse_requests_total", "INSERTs answered 200"),
            "retries": counter("metricsd_clickhouse_retries_total", "INSERTs that failed and are sent again"),
        ]
        backlog = gauge("metricsd_clickhouse_backlog_events", "Stored events not yet acknowledged by ClickHouse")
        lastSuccess = gauge("metricsd_clickhouse_last_success_seconds", "Unix time of the last acknowledged INSERT")
        failing = gauge("metricsd_clickhouse_failing", "1 while ClickHouse refuses this configuration")
    }

    public func update(
        sent: Int, rejected: Int, requests: Int, retries: Int, backlog events: Int, lastSuccess time: Int64?,
        failing refused: Bool
    ) {
        let totals = ["sent": sent, "rejected": rejected, "requests": requests, "retries": retries]
        seen.withLock { seen in
            for (name, total) in totals {
                let delta = total - seen[name, default: 0]
                if delta > 0 { exported[name]?.increment(by: Int64(delta)) }
                seen[name] = total
            }
        }
        backlog.set(Double(events))
        lastSuccess.set(Double(time ?? 0) / 1e9)
        failing.set(refused ? 1.0 : 0.0)
    }
}
