import Export
import Foundation
import HTTPTypes
import Hummingbird
import LineProtocol
import Logging
import NIOCore
import Prometheus
import Rollups
import Synchronization

/// Everything the HTTP routes need.
struct HTTPState: Sendable {
    let configuration: Configuration
    let engine: RollupEngine
    let store: StoreGuard
    let wal: WriteAheadLog?
    let dedup: DedupWindow
    let stats: Stats
    let listeners: [String: String]
    let logger: Logger
    var forwarder: Forwarder? = nil
    var events: EventPipeline? = nil
    /// What a reload may change (the auth token).
    var settings: RuntimeSettings
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
    static func router(_ state: HTTPState) -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: InfluxHeadersMiddleware())
        router.post("/write") { request, _ in try await write(request, state, v2: false) }
        router.post("/api/v2/write") { request, _ in try await write(request, state, v2: true) }
        router.get("/ping") { _, _ in Response(status: .noContent) }
        router.head("/ping") { _, _ in Response(status: .noContent) }
        router.get("/health") { _, _ in health(state) }
        router.get("/metrics") { _, _ in metrics(state) }
        router.get("/api/v1/query") { request, _ in query(request, state) }
        router.get("/api/v1/series") { request, _ in series(request, state) }
        router.post("/api/v1/flush") { request, _ in flush(request, state) }
        EventRoutes.register(router, state)
        router.get("/query") { request, _ in await InfluxQL.handle(request, state) }
        router.post("/query") { request, _ in await InfluxQL.handle(request, state) }
        return router
    }

    // MARK: - Responses

    static func json(_ status: HTTPResponse.Status, _ object: Any) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
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

    // MARK: - Auth

    /// With `[auth] token` set, a request needs `Authorization: Token <t>` or `Bearer <t>`, HTTP Basic with the
    /// token as password, or v1's `u`/`p` query parameters with `p` = token.
    static func authorized(_ request: Request, _ state: HTTPState) -> Bool {
        let token = state.settings.authToken
        if token.isEmpty { return true }
        if let header = request.headers[.authorization] {
            if header == "Token \(token)" || header == "Bearer \(token)" { return true }
            if header.hasPrefix("Basic "), let data = Data(base64Encoded: String(header.dropFirst(6))),
                let text = String(data: data, encoding: .utf8), let colon = text.firstIndex(of: ":"),
                text[text.index(after: colon)...] == token
            {
                return true
            }
        }
        if let p = request.uri.queryParameters["p"], p == token { return true }
        return false
    }

    // MARK: - Write

    static func write(_ request: Request, _ state: HTTPState, v2: Bool) async throws -> Response {
        guard authorized(request, state) else {
            state.stats.httpErrors.add(1)
            return error(.unauthorized, "authorization failed")
        }
        let precisionText = request.uri.queryParameters["precision"].map(String.init) ?? ""
        guard let precision = Precision(precisionText) else {
            state.stats.httpErrors.add(1)
            return error(.badRequest, "invalid precision \"\(precisionText)\": use ns, us, ms, s, m or h")
        }
        if v2 && request.uri.queryParameters["bucket"] == nil {
            state.stats.httpErrors.add(1)
            return error(.badRequest, "bucket is required")
        }
        var body: ByteBuffer
        var inflated: [UInt8]?
        switch await readBody(request, state) {
        case .raw(let buffer): body = buffer
        case .inflated(let bytes):
            body = ByteBuffer()
            inflated = bytes
        case .response(let response): return response
        }

        let ingester = LineIngester(
            engine: state.engine,
            sink: state.store,
            stats: state.stats,
            listener: "http",
            precision: precision
        )
        var framer = LineFramer(maxLineLength: state.configuration.limits.maxLineLength.bytes)
        // Log the batch before it touches the rollups; with durability = "fsync" answer only once it is on disk.
        var logged: UInt64?
        var walFailure: (any Error)?
        var duplicate = false
        func apply(_ raw: UnsafeRawBufferPointer) {
            let key = DedupWindow.hash(raw, precision: precision.walCode)
            if state.dedup.seen(key, now: nowNanoseconds()) && DedupWindow.allLinesTimestamped(raw) {
                duplicate = true  // a retry of a batch already applied: acknowledge, do not apply again
                return
            }
            let received = nowNanoseconds()
            if let wal = state.wal {
                do {
                    logged = try wal.append(raw, receivedAt: received, precision: precision.walCode)
                } catch {
                    walFailure = error
                    return
                }
            }
            ingester.begin(walPosition: logged ?? 0, receivedAt: received)
            framer.feed(raw) { ingester.handle($0) }
            framer.finish { ingester.handle($0) }
            ingester.end(bytes: raw.count)
            let outcome = ingester.outcome
            if outcome.lines > 0, outcome.untimestamped == 0, outcome.firstError == nil, outcome.result.rejected == 0 {
                state.dedup.record(key, now: nowNanoseconds())
            }
        }
        if let inflated {
            inflated.withUnsafeBytes { apply($0) }
        } else {
            body.withUnsafeReadableBytes { apply($0) }
        }
        body.clear()
        if let walFailure {
            state.stats.walErrors.add(1)
            state.stats.httpErrors.add(1)
            return error(.serviceUnavailable, "write-ahead log unavailable, nothing applied: \(walFailure)")
        }
        if let logged, let wal = state.wal, wal.durability == .fsync { wal.sync(upTo: logged) }
        if duplicate {
            state.stats.duplicateBatches.add(1)
            return Response(status: .noContent)
        }

        let outcome = ingester.outcome
        if let first = outcome.firstError {
            state.stats.httpErrors.add(1)
            // InfluxDB's shape, so clients that parse "partial write" and "dropped=N" keep working.
            return error(
                .badRequest,
                "partial write: unable to parse '\(first.text)' (line \(first.line)): \(first.message) dropped=\(outcome.invalid)"
            )
        }
        if outcome.result.rejected > 0 {
            state.stats.httpErrors.add(1)
            var reasons: [String] = []
            if outcome.result.rejectedSeries > 0 {
                reasons.append("\(outcome.result.rejectedSeries) values over rollup.max_series")
            }
            if outcome.result.typeConflicts > 0 {
                reasons.append("\(outcome.result.typeConflicts) values conflict with their field's type")
            }
            if outcome.result.outOfRange > 0 {
                reasons.append("\(outcome.result.outOfRange) values with a timestamp outside the accepted range")
            }
            return error(
                .badRequest,
                "partial write: \(reasons.joined(separator: ", ")) dropped=\(outcome.result.rejected)"
            )
        }
        return Response(status: .noContent)
    }

    enum Body {
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

    /// A request body up to `limits.max_body_size`, decompressed when `Content-Encoding: gzip`; or the error
    /// response to send.
    static func readBody(_ request: Request, _ state: HTTPState) async -> Body {
        let limit = state.configuration.limits.maxBodySize.bytes
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            state.stats.httpErrors.add(1)
            return .response(error(.contentTooLarge, "request body exceeds limits.max_body_size (\(limit) bytes)"))
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
                            .contentTooLarge, "decompressed body exceeds limits.max_body_size (\(limit) bytes)"))
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
        let open = state.engine.openStatistics()
        out["buckets_open"] = open.buckets
        out["cells_open"] = open.cells
        return out
    }

    static func health(_ state: HTTPState) -> Response {
        let uptime = Double(nowNanoseconds() - state.stats.started) / 1e9
        var reason = state.store.degradedReason
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
            ]
            if let t = f.lastSuccess { forwarding["last_success"] = TimeText.format(t) }
            if let e = f.lastError { forwarding["last_error"] = e }
            if let t = f.lastErrorAt { forwarding["last_error_at"] = TimeText.format(t) }
            body["forwarding"] = forwarding
            if f.status == "failing" && reason == nil {
                reason = "forwarding to \(forwarder.configuration.url) is refused: \(f.lastError ?? "")"
            }
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
        if let forwarder = state.forwarder { state.stats.forward.update(forwarder.stats) }
        var buffer = ByteBuffer()
        buffer.writeBytes(state.stats.registry.emitToBuffer())
        return Response(
            status: .ok,
            headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: ResponseBody(byteBuffer: buffer)
        )
    }

    // MARK: - Query API

    struct ReadFailure: Error {
        var status: HTTPResponse.Status
        var message: String
    }

    /// Every rollup cell of `measurement` (one field, or all) with a bucket start in `[from, to)`: open buckets in
    /// memory, then SQLite — minutes within `retention_1m`, whole hours from the 1h tier before that (which needs
    /// a `step` that is a multiple of 1h).
    static func rollupCells(
        _ state: HTTPState, measurement: String, field: String?, from: Int64, to: Int64, step: Int64,
        series accept: ((SeriesInfo) -> Bool)? = nil
    ) throws(ReadFailure) -> [(start: Int64, cell: ClosedCell)] {
        try rollupCells(
            state, SQLiteStore.CellRead(measurement: measurement, fields: field.map { [$0] }, from: from, to: to),
            step: step, series: accept)
    }

    /// Cells of a read from the open buckets and the stored tiers.
    static func rollupCells(
        _ state: HTTPState, _ read: SQLiteStore.CellRead, step: Int64, series accept: ((SeriesInfo) -> Bool)? = nil
    ) throws(ReadFailure) -> [(start: Int64, cell: ClosedCell)] {
        var cells: [(start: Int64, cell: ClosedCell)] = []
        try visitRollups(state, read, step: step, series: accept) { start, series, field, rollup in
            cells.append((start, ClosedCell(series: series, field: field, rollup: rollup)))
        }
        return cells
    }

    /// Every cell of a read, from the open buckets and the stored tiers: the 1-minute tier within
    /// `retention_1m`, the hourly one before it (which needs a `step` that is a multiple of 1 h). Open cells of
    /// series `accept` rejects are left out; stored ones are never decoded.
    static func visitRollups(
        _ state: HTTPState, _ read: SQLiteStore.CellRead, step: Int64, series accept: ((SeriesInfo) -> Bool)? = nil,
        _ body: (Int64, SeriesInfo, String, consuming FieldRollup) -> Void
    ) throws(ReadFailure) {
        for (start, cell) in state.engine.openCells(
            measurement: read.measurement, fields: read.fields, from: read.from, to: read.to, series: accept,
            condition: read.condition)
        {
            body(start, cell.series, cell.field, cell.rollup)
        }
        for (tierRead, hourly) in try storedReads(state, read, step: step) {
            do {
                _ = try state.store.visit(tierRead, hourly: hourly, series: accept, body)
            } catch {
                throw ReadFailure(status: .internalServerError, message: "reading stored rollups failed: \(error)")
            }
        }
    }

    /// ``visitRollups(_:_:step:series:_:)`` for reads that need no quantile and no distinct count: `body` gets
    /// each cell's ``FieldSummary`` and its field's index in `read.fields` (which must be given).
    static func visitSummaries(
        _ state: HTTPState, _ read: SQLiteStore.CellRead, step: Int64, series accept: ((SeriesInfo) -> Bool)? = nil,
        _ body: (Int64, SeriesInfo, Int, FieldSummary) -> Void
    ) throws(ReadFailure) {
        let fields = read.fields ?? []
        for (start, cell) in state.engine.openCells(
            measurement: read.measurement, fields: read.fields, from: read.from, to: read.to, series: accept,
            condition: read.condition)
        {
            if let index = fields.firstIndex(of: cell.field) {
                body(start, cell.series, index, FieldSummary(cell.rollup))
            }
        }
        for (tierRead, hourly) in try storedReads(state, read, step: step) {
            do {
                _ = try state.store.visitSummaries(tierRead, hourly: hourly, series: accept, body)
            } catch {
                throw ReadFailure(status: .internalServerError, message: "reading stored rollups failed: \(error)")
            }
        }
    }

    /// The stored tiers a read covers: the hourly one before the first whole hour still kept per minute
    /// (`retention_1m`), which needs `step` to be whole hours, and the 1-minute tier from there.
    static func storedReads(_ state: HTTPState, _ read: SQLiteStore.CellRead, step: Int64) throws(ReadFailure)
        -> [(read: SQLiteStore.CellRead, hourly: Bool)]
    {
        let hour: Int64 = 3_600_000_000_000
        let cutoff = nowNanoseconds() - state.configuration.storage.retention1m.nanoseconds
        let boundary = (cutoff / hour + 1) * hour
        var reads: [(read: SQLiteStore.CellRead, hourly: Bool)] = []
        if read.from < boundary {
            guard step % hour == 0 else {
                throw ReadFailure(
                    status: .badRequest,
                    message: "the range reaches back beyond storage.retention_1m: use a step that is a multiple of 1h"
                )
            }
            var hourly = read
            hourly.to = min(boundary, read.to)
            reads.append((hourly, true))
        }
        if read.to > boundary || read.from >= boundary {
            var minutes = read
            minutes.from = max(read.from, boundary)
            reads.append((minutes, false))
        }
        return reads
    }

    static func parameter(_ request: Request, _ name: String) -> String? {
        request.uri.queryParameters[Substring(name)].map { String($0).removingPercentEncoding ?? String($0) }
    }

    static func query(_ request: Request, _ state: HTTPState) -> Response {
        let interval = state.configuration.rollup.interval.nanoseconds
        guard let measurement = parameter(request, "measurement"), !measurement.isEmpty else {
            return error(.badRequest, "parameter 'measurement' is required")
        }
        guard let field = parameter(request, "field"), !field.isEmpty else {
            return error(.badRequest, "parameter 'field' is required")
        }
        let aggText = parameter(request, "agg") ?? "mean"
        guard let aggregate = Aggregate(aggText) else {
            return error(
                .badRequest,
                "parameter 'agg' must be count, sum, min, max, mean, first, last, stddev, spread or p<N>, got \"\(aggText)\""
            )
        }
        let now = nowNanoseconds()
        var to = now
        if let text = parameter(request, "to") {
            guard let t = TimeText.parse(text) else {
                return error(.badRequest, "parameter 'to' must be RFC 3339 or epoch milliseconds, got \"\(text)\"")
            }
            to = t
        }
        var from = to - 3_600_000_000_000
        if let text = parameter(request, "from") {
            guard let t = TimeText.parse(text) else {
                return error(.badRequest, "parameter 'from' must be RFC 3339 or epoch milliseconds, got \"\(text)\"")
            }
            from = t
        }
        guard from < to else { return error(.badRequest, "parameter 'from' must be before 'to'") }
        var step = interval
        if let text = parameter(request, "step") {
            guard let d = ConfigDuration(parsing: text), d.nanoseconds > 0 else {
                return error(.badRequest, "parameter 'step' must be a duration like 1m or 1h, got \"\(text)\"")
            }
            step = d.nanoseconds
        }
        guard step % interval == 0 else {
            return error(
                .badRequest,
                "parameter 'step' must be a multiple of the bucket width (\(ConfigDuration(nanoseconds: interval)))"
            )
        }
        guard (to - from) / step <= 100_000 else {
            return error(.badRequest, "too many steps: widen 'step' or narrow 'from'/'to' (at most 100000)")
        }
        var filters: [TagPair] = []
        if let text = parameter(request, "where"), !text.isEmpty {
            for part in text.split(separator: ",") {
                guard let colon = part.firstIndex(of: ":") else {
                    return error(.badRequest, "parameter 'where' must be tag:value[,tag:value], got \"\(text)\"")
                }
                filters.append(TagPair(String(part[..<colon]), String(part[part.index(after: colon)...])))
            }
        }
        let groupBy = parameter(request, "group_by").map { $0.split(separator: ",").map(String.init) } ?? []
        // Align the range to buckets so every bucket is whole.
        let alignedFrom = state.engine.bucketStartOf(from)
        let q = RangeQuery(
            measurement: measurement,
            field: field,
            aggregate: aggregate,
            from: alignedFrom,
            to: to,
            step: step,
            filters: filters,
            groupBy: groupBy
        )
        let cells: [(start: Int64, cell: ClosedCell)]
        do {
            cells = try rollupCells(
                state, measurement: measurement, field: field, from: alignedFrom, to: to, step: step)
        } catch {
            return Self.error(error.status, error.message)
        }
        let result = q.evaluate(cells)
        let series: [[String: Any]] = result.groups.map { group in
            [
                "tags": Dictionary(uniqueKeysWithValues: group.tags.map { ($0.key, $0.value) }),
                "points": group.points.map { [$0.start / 1_000_000, $0.value] as [Any] },
            ]
        }
        return json(
            .ok,
            [
                "measurement": measurement, "field": field, "agg": aggregate.description, "step_ms": step / 1_000_000,
                "series": series,
            ] as [String: Any]
        )
    }

    static func series(_ request: Request, _ state: HTTPState) -> Response {
        let measurement = parameter(request, "measurement")
        let limit = parameter(request, "limit").flatMap(Int.init) ?? 10_000
        var out: [[String: Any]] = []
        for (info, fields) in state.engine.allSeries() where measurement == nil || info.measurement == measurement {
            out.append([
                "measurement": info.measurement,
                "tags": Dictionary(uniqueKeysWithValues: info.tags.map { ($0.key, $0.value) }),
                "fields": Dictionary(fields.map { ($0.name, $0.kind.name) }, uniquingKeysWith: { a, _ in a }),
            ])
        }
        out.sort { ($0["measurement"] as! String, "\($0["tags"]!)") < ($1["measurement"] as! String, "\($1["tags"]!)") }
        let total = out.count
        return json(.ok, ["series": Array(out.prefix(limit)), "total": total] as [String: Any])
    }

    static func flush(_ request: Request, _ state: HTTPState) -> Response {
        guard authorized(request, state) else { return error(.unauthorized, "authorization failed") }
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

extension RollupEngine {
    func bucketStartOf(_ t: Int64) -> Int64 {
        let i = configuration.interval
        let q = t / i
        return (t % i < 0 ? q - 1 : q) * i
    }
}

/// Times in query parameters: RFC 3339 (`2026-11-28T10:00:00Z`, fractions and offsets allowed) or epoch
/// milliseconds.
enum TimeText {
    /// RFC 3339 in UTC with milliseconds.
    static func format(_ nanoseconds: Int64) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: Date(timeIntervalSince1970: Double(nanoseconds) / 1e9))
    }

    static func parse(_ text: String) -> Int64? {
        if let ms = Int64(text) { return ms * 1_000_000 }
        return rfc3339(text)
    }

    /// Nanoseconds since the epoch for an RFC 3339 timestamp.
    static func rfc3339(_ text: String) -> Int64? { RFC3339.nanoseconds(text) }
}
