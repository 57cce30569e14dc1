import API
import ClickHouse
import Export
import Foundation
import HTTPTypes
import Hummingbird
import InfluxQL
import Ingest
import LineProtocol
import Logging
import NIOCore
import NIOPosix
import Prometheus
import Rollups
import Synchronization
import UI

/// Everything the HTTP routes need.
struct HTTPState: Sendable {
    let configuration: Configuration
    let engine: RollupEngine
    let store: StoreGuard
    /// The one way into the rollups (WAL, dedup, events, counters).
    let pipeline: IngestPipeline
    let stats: Stats
    let listeners: [String: String]
    let logger: Logger
    var forwarder: Forwarder? = nil
    var events: EventPipeline? = nil
    /// Events forwarding to ClickHouse (its figures in /health and /metrics) and the fleet-wide analytics.
    var clickhouse: EventForwarder? = nil
    var fleet: FleetAnalytics? = nil
    /// What a reload may change (the auth token).
    var settings: RuntimeSettings
    /// Where queries run (``QueryRunner``): off the event loops, bounded.
    let queries: QueryRunner
    /// `[http] max_concurrent_bodies`.
    let bodies: AsyncPermits
    /// Threads that parse and apply request bodies (``HTTPRoutes/withBody(_:_:_:)``).
    let bodyWork: NIOThreadPool
    /// Refused lines, events and points (`/api/v1/dead-letters`), and those not stored yet.
    var deadLetters: DeadLetterStore? = nil
    var deadLetterQueue: DeadLetterQueue? = nil
}

/// The version InfluxDB clients see in `X-Influxdb-Version`: metricsd speaks the 1.8 HTTP API.
let influxCompatibleVersion = "1.8.10"
let metricsdVersion = "0.2.0"

extension HTTPField.Name {
    static let influxVersion = Self("X-Influxdb-Version")!
    static let influxBuild = Self("X-Influxdb-Build")!
}

/// Adds InfluxDB's identification headers to every response, as influxd does (clients use them to detect it).
struct InfluxHeadersMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        var response = try await next(request, context)
        response.headers[.influxVersion] = influxCompatibleVersion
        response.headers[.influxBuild] = "OSS"
        return response
    }
}

enum HTTPRoutes {
    typealias Handler = @Sendable (Request, MetricsdRequestContext) async throws -> Response

    struct Route: Sendable {
        let method: HTTPRequest.Method
        let path: String
        /// The handler, given what the routes share.
        let handler: @Sendable (HTTPState) -> Handler
        var methodName: String { method.rawValue }
    }

    /// Every route the daemon answers. The token is checked in front of all of them (``AuthMiddleware``), so none
    /// checks it itself; a path asked with another method answers 405.
    static let table: [Route] = [
        Route(method: .post, path: "/write") { s in { r, c in await write(r, c, s, v2: false) } },
        Route(method: .post, path: "/api/v2/write") { s in { r, c in await write(r, c, s, v2: true) } },
        Route(method: .get, path: "/ping") { _ in { _, _ in Response(status: .noContent) } },
        Route(method: .head, path: "/ping") { _ in { _, _ in Response(status: .noContent) } },
        Route(method: .get, path: "/health") { s in { _, _ in health(s) } },
        Route(method: .get, path: "/metrics") { s in { _, _ in metrics(s) } },
        Route(method: .get, path: "/api/v1/query") { s in { r, c in await query(r, c, s) } },
        Route(method: .get, path: "/api/v1/series") { s in { r, c in await series(r, c, s) } },
        Route(method: .post, path: "/api/v1/flush") { s in { _, _ in flush(s) } },
        Route(method: .post, path: "/api/v1/events") { s in { r, c in await EventRoutes.ingest(r, c, s) } },
        Route(method: .get, path: "/api/v1/funnel") { s in { r, c in await EventRoutes.funnel(r, c, s) } },
        Route(method: .get, path: "/api/v1/retention") { s in { r, c in await EventRoutes.retention(r, c, s) } },
        Route(method: .get, path: "/api/v1/experiment") { s in { r, c in await EventRoutes.experiment(r, c, s) } },
        Route(method: .get, path: "/api/v1/cardinality") { s in { r, _ in await cardinality(r, s) } },
        Route(method: .get, path: "/api/v1/dead-letters") { s in { r, _ in await DeadLetterRoutes.list(r, s) } },
        Route(method: .delete, path: "/api/v1/dead-letters") { s in { r, _ in await DeadLetterRoutes.delete(r, s) } },
        Route(method: .post, path: "/api/v1/dead-letters/replay") { s in
            { r, _ in await DeadLetterRoutes.replay(r, s) }
        },
        Route(method: .get, path: "/ui") { _ in { _, _ in page("") } },
        Route(method: .get, path: "/ui/app.js") { _ in { _, _ in page("app.js") } },
        Route(method: .get, path: "/ui/app.css") { _ in { _, _ in page("app.css") } },
        Route(method: .get, path: "/query") { s in { r, c in await InfluxQLRoute.handle(r, c, s) } },
        Route(method: .post, path: "/query") { s in { r, c in await InfluxQLRoute.handle(r, c, s) } },
    ]

    /// The paths of ``table`` and their methods.
    static let methods: [String: [HTTPRequest.Method]] = Dictionary(grouping: table, by: \.path).mapValues {
        $0.map(\.method)
    }

    static func router(_ state: HTTPState) -> Router<MetricsdRequestContext> {
        let router = Router(context: MetricsdRequestContext.self)
        router.add(middleware: InfluxHeadersMiddleware())
        // Before any route is added: every route (and every unknown path) is behind it.
        router.add(
            middleware: AuthMiddleware(
                settings: state.settings, stats: state.stats, formLimit: state.configuration.http.maxBodySize.bytes))
        router.add(middleware: MethodNotAllowedMiddleware(methods: methods))
        for route in table {
            router.on(RouterPath(route.path), method: route.method, use: route.handler(state))
        }
        return router
    }

    // MARK: - Responses

    /// A file of the pages (``UIAssets``), from the binary.
    static func page(_ path: String) -> Response {
        guard let asset = UIAssets.asset(path) else { return error(.notFound, "no such page") }
        return Response(
            status: .ok,
            headers: [
                .contentType: asset.contentType, .cacheControl: "no-cache", .init("X-Content-Type-Options")!: "nosniff",
            ],
            body: ResponseBody(byteBuffer: ByteBuffer(string: asset.body)))
    }

    static func json(_ status: HTTPResponse.Status, _ object: Any) -> Response {
        var text = JSONText()
        text.value(object)
        let data = text.bytes
        var buffer = ByteBuffer(bytes: data)
        buffer.writeString("\n")
        return Response(
            status: status,
            headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: buffer)
        )
    }

    /// InfluxDB's error shape: `{"error":"..."}`.
    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        json(status, ["error": message])
    }

    // MARK: - Write

    static func write(_ request: Request, _ context: MetricsdRequestContext, _ state: HTTPState, v2: Bool) async
        -> Response
    {
        let form = Form(request.uri.query ?? "")
        let precisionText = form["precision"] ?? ""
        guard let precision = Precision(precisionText) else {
            state.stats.httpErrors.add(1)
            return error(.badRequest, "invalid precision \"\(precisionText.prefix(16))\": use ns, us, ms, s, m or h")
        }
        if v2 && form["bucket"] == nil {
            state.stats.httpErrors.add(1)
            return error(.badRequest, "bucket is required")
        }
        if let refused = backlogFull(state) { return refused }
        // Per-line results on request; InfluxDB's answer otherwise (clients parse it).
        let perLine = form["results"] == "lines" || request.headers[Self.resultsHeader]?.lowercased() == "lines"
        let remote = context.channel.remoteAddress.map(RemoteAddress.init)
        return await withBody(request, state) { body in
            ingestLines(body, precision: precision, state, perLine: perLine, remote: remote)
        }
    }

    /// 429 with Retry-After while `[influx] backlog_policy = "block"` holds intake (the outbox is full): the write is
    /// not taken, so nothing acknowledged is ever dropped; counted.
    static func backlogFull(_ state: HTTPState, events: Bool = false) -> Response? {
        let gate = state.pipeline.gate
        guard gate.isClosed || (events && gate.isClosedToEvents) else { return nil }
        state.stats.backlogRefusedWrites.add(1)
        state.stats.httpErrors.add(1)
        let which =
            gate.isClosed ? "[influx] max_backlog" : "[events.clickhouse] max_backlog"
        var response = error(
            .tooManyRequests,
            "the forwarding outbox is full (\(which), backlog_policy = \"block\"): retry later")
        response.headers[.retryAfter] = "5"
        return response
    }

    /// `X-Metricsd-Results: lines`: the header form of `?results=lines`.
    static let resultsHeader = HTTPField.Name("X-Metricsd-Results")!

    /// Logs the batch, then applies it to the rollups (``IngestPipeline``): with `durability = "fsync"` only once
    /// it is on disk, so a batch answered 503 was never applied.
    static func ingestLines(
        _ body: Body, precision: Precision, _ state: HTTPState, perLine: Bool = false, remote: RemoteAddress? = nil
    ) -> Response {
        let ingester = state.pipeline.ingester(.http, precision: precision)
        ingester.reportLimit = perLine ? state.configuration.limits.maxReportedErrors : 0
        ingester.remote = remote
        let accepted: IngestPipeline.Accepted
        switch body {
        case .raw(let buffer):
            accepted = buffer.withUnsafeReadableBytes {
                state.pipeline.accept($0, into: ingester, acknowledged: true, deduplicate: true)
            }
        case .inflated(let bytes):
            accepted = bytes.withUnsafeBytes {
                state.pipeline.accept($0, into: ingester, acknowledged: true, deduplicate: true)
            }
        case .response(let response): return response
        }
        switch accepted {
        case .applied: break
        case .duplicate: return Response(status: .noContent)  // a retry of a batch already applied
        case .refused(let walFailure):
            state.stats.httpErrors.add(1)
            return error(.serviceUnavailable, "write-ahead log unavailable, nothing applied: \(walFailure)")
        }

        let outcome = ingester.outcome
        let message: String
        if let first = outcome.firstError {
            // InfluxDB's shape, so clients that parse "partial write" and "dropped=N" keep working.
            message =
                "partial write: unable to parse '\(first.text)' (line \(first.line)): \(first.message) dropped=\(outcome.invalid)"
        } else if let first = outcome.firstRefusal {
            // InfluxDB's words for the first refused value ("field type conflict: …"), then how many more.
            let refusedLines = outcome.rejectedLines
            let more = refusedLines > 1 ? " (and \(refusedLines - 1) more lines)" : ""
            message = "partial write: \(first.message) (line \(first.line))\(more) dropped=\(outcome.result.rejected)"
        } else {
            return Response(status: .noContent)
        }
        state.stats.httpErrors.add(1)
        guard perLine else { return error(.badRequest, message) }
        return json(.badRequest, lineResults(outcome, message: message))
    }

    /// The body of a `?results=lines` 400: InfluxDB's `error`, then every rejected line (up to
    /// `[limits] max_reported_errors`) and the counts per reason.
    static func lineResults(_ outcome: BatchOutcome, message: String) -> [String: Any] {
        var reasons: [String: Int] = [:]
        for (reason, n) in outcome.reasons.nonZero { reasons[reason.rawValue] = n }
        return [
            "error": message,
            "lines": outcome.lines,
            "rejected_lines": outcome.rejectedLines,
            "reasons": reasons,
            "rejected": outcome.rejections.map(rejectionJSON),
            "truncated": outcome.rejections.count < outcome.rejectedLines,
        ]
    }

    /// One rejected line (or event) as every answer lists it.
    static func rejectionJSON(_ r: Rejection) -> [String: Any] {
        var entry: [String: Any] = [
            "line": r.line, "reason": r.reason.rawValue, "error": r.message, "text": r.text,
        ]
        if let column = r.column { entry["column"] = column }
        if let expected = r.expected { entry["expected"] = expected }
        if let found = r.found { entry["found"] = found }
        if r.partial { entry["partial"] = true }
        return entry
    }

    /// Runs `work` with the request's body, read once one of `[http] max_concurrent_bodies` is free (503 naming the
    /// limit after waiting for one), on a thread of the body pool — the cost of a body (parsing, decompressing,
    /// decoding events) is paid off the cooperative pool that answers every other request.
    static func withBody(
        _ request: Request, _ state: HTTPState, _ work: @escaping @Sendable (Body) -> Response
    ) async -> Response {
        guard await state.bodies.acquire() else {
            state.stats.bodiesRefused.add(1)
            state.stats.httpErrors.add(1)
            var response = error(
                .serviceUnavailable,
                "too many request bodies at once (\(state.bodies.limit), [http] max_concurrent_bodies): retry shortly")
            response.headers[.retryAfter] = "1"
            return response
        }
        defer { state.bodies.release() }
        let body = await readBody(request, state)
        if case .response(let response) = body { return response }
        do {
            return try await state.bodyWork.runIfActive { work(body) }
        } catch {
            return Self.error(.serviceUnavailable, "shutting down")
        }
    }

    enum Body: Sendable {
        /// As received (no content encoding): read in place, never copied.
        case raw(ByteBuffer)
        /// Decompressed.
        case inflated([UInt8])
        /// The error to answer.
        case response(Response)

        /// The bytes (`.raw` copied); `nil` for `.response`.
        var bytes: [UInt8]? {
            switch self {
            case .raw(let buffer): Array(buffer.readableBytesView)
            case .inflated(let bytes): bytes
            case .response: nil
            }
        }
    }

    /// A request body up to `http.max_body_size`, decompressed when `Content-Encoding: gzip`; or the error
    /// response to send.
    static func readBody(_ request: Request, _ state: HTTPState) async -> Body {
        let limit = state.configuration.http.maxBodySize.bytes
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            state.stats.httpErrors.add(1)
            return .response(error(.contentTooLarge, "request body exceeds http.max_body_size (\(limit) bytes)"))
        } catch let failure {
            state.stats.httpErrors.add(1)
            return .response(error(.badRequest, "reading the request body failed: \(failure)"))
        }
        let encoding = request.headers[.contentEncoding]?.lowercased() ?? "identity"
        switch encoding {
        case "identity", "":
            return .raw(buffer)
        case "gzip", "x-gzip", "deflate":
            do throws(GzipError) {
                return .inflated(
                    try buffer.withUnsafeReadableBytes { raw throws(GzipError) in
                        try Gzip.decompress(raw, limit: limit)
                    })
            } catch {
                state.stats.httpErrors.add(1)
                switch error {
                case .tooLarge:
                    return .response(
                        HTTPRoutes.error(
                            .contentTooLarge, "decompressed body exceeds http.max_body_size (\(limit) bytes)"))
                case .corrupt(let why):
                    return .response(HTTPRoutes.error(.badRequest, "invalid gzip body: \(why)"))
                }
            }
        default:
            state.stats.httpErrors.add(1)
            return .response(
                error(.unsupportedMediaType, "unsupported Content-Encoding \"\(encoding)\" (use gzip or identity)"))
        }
    }

    // MARK: - Health and metrics

    static func counters(_ state: HTTPState) -> [String: Any] {
        let s = state.stats
        var out: [String: Any] = [:]
        for l in [s.udp, s.tcp, s.http] {
            out["\(l.name)_lines"] = l.lines.current
            out["\(l.name)_invalid"] = l.invalid.current
            out["\(l.name)_points"] = l.points.current
            out["\(l.name)_bytes"] = l.bytes.current
            out["\(l.name)_events"] = l.events.current
        }
        out["series_active"] = state.engine.activeSeries
        out["series_rejected"] = s.rejectedSeries.current
        out["type_conflicts"] = s.typeConflicts.current
        out["points_out_of_range"] = s.outOfRange.current
        out["points_late"] = s.latePoints.current
        out["buckets_closed"] = s.closedBuckets.current
        out["udp_drops"] = s.udpDrops.current
        out["tcp_connections"] = s.tcpConnectionCount.load(ordering: .relaxed)
        out["tcp_connections_rejected"] = s.connectionsRejected.current
        out["lines_overlong"] = s.overlongLines.current
        out["http_write_errors"] = s.httpErrors.current
        out["store_errors"] = s.storeErrors.current
        out["store_pending_cells"] = state.store.pendingCells
        out["wal_errors"] = s.walErrors.current
        out["batches_deduplicated"] = s.duplicateBatches.current
        out["events_accepted"] = s.eventsAccepted.current
        out["events_duplicate"] = s.eventsDuplicate.current
        out["events_invalid"] = s.eventsInvalid.current
        out["events_pending"] = state.events?.pendingCount ?? 0
        out["events_unindexed"] = s.eventsUnindexed.current
        out["fields_rejected"] = s.rejectedFields.current
        out["names_invalid"] = s.invalidNames.current
        for reason in RejectReason.allCases { out["rejected_\(reason.rawValue)"] = s.rejected[reason.ordinal].current }
        out["series_overflowed"] = s.seriesOverflowed.current
        out["wal_records_quarantined"] = s.walRecordsQuarantined.current
        out["outbox_rows_quarantined"] = state.store.store.quarantinedRows
        out["dead_letters_stored"] = s.deadLettersStored.current
        out["dead_letters_dropped"] = s.deadLettersDropped.current
        out["dead_letters_evicted"] = s.deadLettersEvicted.current
        out["series_dropped_idle"] = s.seriesDropped.current
        out["http_unauthorized"] = s.unauthorized.current
        out["http_connections"] = s.httpConnectionCount.load(ordering: .relaxed)
        out["http_connections_throttled"] = s.httpConnectionsThrottled.current
        out["http_request_timeouts"] = s.requestTimeouts.current
        out["http_bodies_refused"] = s.bodiesRefused.current
        out["queries_running"] = state.queries.active
        out["queries_refused"] = s.queriesRefused.current
        out["queries_stopped"] = s.queriesStopped.current
        out["queries_limited"] = s.queriesLimited.current
        out["store_corrupt_rows"] = state.store.store.corruptRows
        let open = state.engine.openStatistics()
        out["buckets_open"] = open.buckets
        out["cells_open"] = open.cells
        return out
    }

    /// `GET /health`: `pass`; `degraded` (200) while something needs attention but writes are accepted — storing
    /// fails and minutes wait in memory, stored rows cannot be decoded, forwarding is refused; `fail` (503, as
    /// InfluxDB's /health) while writes are refused (the write-ahead log cannot be written) or the store is
    /// unreadable. `message` says why.
    static func health(_ state: HTTPState) -> Response {
        let uptime = Double(nowNanoseconds() - state.stats.started) / 1e9
        var failure: String?
        if let wal = state.stats.walFailure.withLock({ $0 }) {
            failure = "writes are refused: the write-ahead log cannot be written (\(wal))"
        } else if let unreadable = state.store.unreadableReason {
            failure = "the rollup store is unreadable (\(unreadable)): restore it from a backup (docs/operations.md)"
        }
        var reason = state.store.degradedReason
        if reason == nil, state.store.store.corruptRows > 0 {
            reason = "\(state.store.store.corruptRows) stored rows could not be decoded (skipped by queries)"
        }
        var body: [String: Any] = [
            "name": "metricsd", "version": metricsdVersion, "uptime_seconds": (uptime * 1000).rounded() / 1000,
            "listeners": state.listeners, "counters": counters(state),
        ]
        if let forwarder = state.forwarder {
            let f = forwarder.stats.current
            var forwarding: [String: Any] = [
                "url": forwarder.configuration.url, "status": f.status,
                "backlog_minutes": f.backlogMinutes, "backlog_points": f.backlogPoints,
                "points_forwarded": forwarder.stats.forwarded, "points_rejected": forwarder.stats.rejected,
                "requests": forwarder.stats.requests, "retries": forwarder.stats.retried,
                "backlog_bytes": f.backlogBytes, "max_backlog": forwarder.configuration.maxBacklog,
                "backlog_policy": forwarder.configuration.backlogPolicy.rawValue,
                "dropped_oldest_points": forwarder.stats.droppedOldestPoints,
                "dropped_newest_points": forwarder.droppedNewestPoints, "blocking": forwarder.stats.isBlocking,
                "writes_refused": state.stats.backlogRefusedWrites.current,
                "udp_datagrams_dropped": state.stats.backlogDroppedDatagrams.current,
            ]
            if let t = f.lastSuccess { forwarding["last_success"] = TimeText.format(t) }
            if let e = f.lastError { forwarding["last_error"] = e }
            if let t = f.lastErrorAt { forwarding["last_error_at"] = TimeText.format(t) }
            body["forwarding"] = forwarding
            if f.status == "failing" && reason == nil {
                reason = "forwarding to \(forwarder.configuration.url) is refused: \(f.lastError ?? "")"
            }
        }
        if let clickhouse = state.clickhouse, clickhouse.configuration.enabled {
            let c = clickhouse.stats.current
            var forwarding: [String: Any] = [
                "url": c.url, "status": c.status, "backlog_events": c.backlog, "events_sent": clickhouse.stats.sent,
                "events_rejected": clickhouse.stats.rejected, "requests": clickhouse.stats.requests,
                "retries": clickhouse.stats.retries, "backlog_bytes": c.backlogBytes,
                "max_backlog": clickhouse.configuration.maxBacklog,
                "backlog_policy": clickhouse.configuration.backlogPolicy.rawValue,
                "dropped_oldest_events": clickhouse.stats.droppedOldest,
                "dropped_newest_events": clickhouse.stats.droppedNewest, "blocking": clickhouse.stats.isBlocking,
            ]
            if let t = c.lastSuccess { forwarding["last_success"] = TimeText.format(t) }
            if let e = c.lastError { forwarding["last_error"] = e }
            if let t = c.lastErrorAt { forwarding["last_error_at"] = TimeText.format(t) }
            body["events_forwarding"] = forwarding
            if c.status == "failing" && reason == nil {
                reason = "forwarding events to \(c.url) is refused: \(c.lastError ?? "")"
            }
        }
        if let failure {
            body["status"] = "fail"
            body["message"] = failure
            return json(.serviceUnavailable, body)
        }
        body["status"] = reason == nil ? "pass" : "degraded"
        body["message"] = reason ?? "ready for writes and queries"
        return json(.ok, body)
    }

    static func metrics(_ state: HTTPState) -> Response {
        let open = state.engine.openStatistics()
        state.stats.activeSeries.set(Double(state.engine.activeSeries))
        state.stats.openBuckets.set(Double(open.buckets))
        state.stats.openCells.set(Double(open.cells))
        if let forwarder = state.forwarder {
            state.stats.forward.update(forwarder.stats, droppedNewest: forwarder.droppedNewestPoints)
        }
        if let clickhouse = state.clickhouse, clickhouse.configuration.enabled {
            let s = clickhouse.stats
            let c = s.current
            state.stats.clickhouse.update(
                sent: s.sent, rejected: s.rejected, requests: s.requests, retries: s.retries, backlog: c.backlog,
                lastSuccess: c.lastSuccess, failing: c.status == "failing")
        }
        var buffer = ByteBuffer()
        buffer.writeBytes(state.stats.registry.emitToBuffer())
        return Response(
            status: .ok,
            headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: ResponseBody(byteBuffer: buffer)
        )
    }

    // MARK: - Query API

    /// Runs `work` on a query thread (``QueryRunner``) and answers with what it returns; the limits that stop a
    /// query answer 503 (concurrency, timeout) or 400 (the others), naming the limit.
    static func runQuery(
        _ context: MetricsdRequestContext, _ state: HTTPState,
        _ work: @escaping @Sendable (QueryBudget) throws -> Response
    ) async -> Response {
        do {
            return try await state.queries.run(context.channel, work)
        } catch let busy as QueryRunner.Busy {
            var response = error(.serviceUnavailable, busy.description)
            response.headers[.retryAfter] = "1"
            return response
        } catch let stopped as QueryStopped {
            if case .limit = stopped.reason { return error(.badRequest, stopped.description) }
            return error(.serviceUnavailable, stopped.description)
        } catch let limit as QueryLimitExceeded {
            state.stats.queriesLimited.add(1)
            return error(.badRequest, limit.message)
        } catch let failure as InfluxQL.ReadFailure {
            return error(.internalServerError, failure.message)
        } catch {
            return Self.error(.internalServerError, "\(error)")
        }
    }

    static func query(_ request: Request, _ context: MetricsdRequestContext, _ state: HTTPState) async -> Response {
        let parameters: RangeParameters
        do {
            parameters = try RangeParameters(
                Form(request.uri.query ?? ""), now: nowNanoseconds(),
                interval: state.configuration.rollup.interval.nanoseconds,
                maxSteps: state.configuration.query.maxSelectBuckets)
        } catch {
            return Self.error(.badRequest, error.message)
        }
        return await runQuery(context, state) { budget throws in try rangeQuery(parameters, state, budget) }
    }

    /// `GET /api/v1/query`: one field's aggregate per step, per group — a SELECT on the InfluxQL engine
    /// (`SELECT agg("field") FROM m WHERE time >= from AND time < to AND tags GROUP BY time(step), tags fill(none)`),
    /// so both answer with one set of semantics.
    static func rangeQuery(_ p: RangeParameters, _ state: HTTPState, _ budget: QueryBudget) throws -> Response {
        var select = SelectStatement()
        let field = Expr.field(p.field)
        let call: Expr =
            switch p.aggregate {
            case .distinct: .call("count", [.call("distinct", [field])])
            case .quantile(let q): .call("percentile", [field, .number(q * 100)])
            default: .call(p.aggregate.description, [field])
            }
        select.fields = [SelectField(expr: call, alias: nil)]
        select.measurement = p.measurement
        var condition = Expr.binary(
            "AND", .binary(">=", .field("time"), .integer(p.from)), .binary("<", .field("time"), .integer(p.to)))
        for f in p.filters { condition = .binary("AND", condition, .binary("=", .tag(f.key), .string(f.value))) }
        select.condition = condition
        select.interval = p.step
        select.groupByTags = p.groupBy
        select.fill = .none
        let results = try InfluxQLRoute.engine(state).run([.select(select)], budget: budget, now: nowNanoseconds())
        if let message = results.first?.error { return Self.error(.badRequest, message) }
        let found = results.first?.series ?? []
        let maxSeries = state.configuration.query.maxSelectSeries
        guard found.count <= maxSeries else {
            throw QueryLimitExceeded(
                "max-select-series limit exceeded: (\(found.count)/\(maxSeries)) ([query] max_select_series)")
        }
        let series: [[String: Any]] = found.map { s in
            var points: [[Any]] = []
            for (k, t) in (s.times ?? []).enumerated() {
                points.append([t / 1_000_000, s.values[k].double as Any])
            }
            return [
                "tags": Dictionary((s.tags ?? []).map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a }),
                "points": points,
            ]
        }
        return json(
            .ok,
            [
                "measurement": p.measurement, "field": p.field, "agg": p.aggregate.description,
                "step_ms": p.step / 1_000_000, "series": series,
            ] as [String: Any]
        )
    }

    /// `GET /api/v1/series?measurement=&limit=`: series in memory, sorted by measurement then tags, at most
    /// `limit` (default 10,000, at most `[query] max_row_limit`) with the total. Only the series answered are
    /// turned into JSON; sorting compares the tags themselves, no text is built per comparison.
    static func series(_ request: Request, _ context: MetricsdRequestContext, _ state: HTTPState) async -> Response {
        let parameters: SeriesParameters
        do {
            parameters = try SeriesParameters(
                Form(request.uri.query ?? ""), maxLimit: state.configuration.query.maxRowLimit)
        } catch {
            return Self.error(.badRequest, error.message)
        }
        return await runQuery(context, state) { budget throws in
            var all = state.engine.allSeries()
            if let measurement = parameters.measurement { all.removeAll { $0.series.measurement != measurement } }
            let total = all.count
            try budget.check()
            func precedes(_ a: SeriesInfo, _ b: SeriesInfo) -> Bool {
                if a.measurement != b.measurement { return a.measurement < b.measurement }
                return a.tags.lexicographicallyPrecedes(b.tags) { ($0.key, $0.value) < ($1.key, $1.value) }
            }
            all.sort { precedes($0.series, $1.series) }
            try budget.check()
            let out: [[String: Any]] = all.prefix(parameters.limit).map { entry in
                [
                    "measurement": entry.series.measurement,
                    "tags": Dictionary(entry.series.tags.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a }),
                    "fields": Dictionary(
                        entry.fields.map { ($0.name, $0.kind.name) }, uniquingKeysWith: { a, _ in a }),
                ]
            }
            return json(.ok, ["series": out, "total": total] as [String: Any])
        }
    }

    /// `GET /api/v1/cardinality?measurement=&limit=&top=`: series per measurement (most first, `limit` of them,
    /// 100 by default), distinct values per tag key (a sketch: ±1.6 %), and the `top` (10) tag keys whose distinct
    /// values grew most in the last hour — the tag that explodes, named.
    static func cardinality(_ request: Request, _ state: HTTPState) async -> Response {
        let form = Form(request.uri.query ?? "")
        func count(_ name: String, _ fallback: Int) -> Int? {
            guard let text = form[name], !text.isEmpty else { return fallback }
            guard let n = Int(text), n > 0, n <= 100_000 else { return nil }
            return n
        }
        guard let limit = count("limit", 100), let top = count("top", 10) else {
            return error(.badRequest, "parameters 'limit' and 'top' must be 1 to 100000")
        }
        let only = form["measurement"].flatMap { $0.isEmpty ? nil : $0 }
        let engine = state.engine
        let overflowed = state.stats.seriesOverflowed.current
        do {
            return try await state.bodyWork.runIfActive {
                let now = nowNanoseconds()
                let report = engine.cardinality.report(now: now, limit: only == nil ? limit : .max, top: top)
                func tag(_ t: CardinalityTracker.TagReport) -> [String: Any] {
                    [
                        "key": t.key, "distinct_values": Int(t.distinctValues), "growth_1h": Int(t.growth),
                        "since": TimeText.format(t.since),
                    ]
                }
                let measurements = report.measurements.filter { only == nil || $0.measurement == only }
                let config = engine.configuration
                return json(
                    .ok,
                    [
                        "active_series": engine.activeSeries, "max_series": config.maxSeries,
                        "max_series_per_measurement": config.maxSeriesPerMeasurement,
                        "values_overflowed": overflowed,
                        "sketch_relative_error": DistinctSketch.standardError,
                        "measurements": measurements.map { m -> [String: Any] in
                            [
                                "measurement": m.measurement, "series": m.series, "overflow_points": m.overflowPoints,
                                "tags": m.tags.map(tag),
                            ]
                        },
                        "growing": report.growing.filter { only == nil || $0.measurement == only }.map {
                            var entry = tag($0.tag)
                            entry["measurement"] = $0.measurement
                            return entry
                        },
                    ] as [String: Any])
            }
        } catch {
            return Self.error(.serviceUnavailable, "shutting down")
        }
    }

    static func flush(_ state: HTTPState) -> Response {
        let buckets = state.engine.closeEnded(now: nowNanoseconds())
        do {
            try state.store.store(buckets)
        } catch {
            return Self.error(.internalServerError, "storing failed: \(error)")
        }
        let cells = buckets.reduce(0) { $0 + $1.cells.count }
        state.stats.closedBuckets.add(buckets.count)
        state.stats.closedCells.add(cells)
        return json(.ok, ["closed_buckets": buckets.count, "cells": cells])
    }
}
