import API
import Export
import Hummingbird
import InfluxQL
import Ingest
import NIOCore
import Rollups

/// `GET|POST /query`: form decoding, then the InfluxQL engine (``Engine``, module `InfluxQL`) over the open
/// buckets and the stored tiers, and its answer written by ``ResultWriter`` — InfluxDB 1.x's JSON, so Grafana's
/// stock InfluxDB data source and the `influx` CLI work against metricsd (docs/influxql.md).
enum InfluxQLRoute {
    static func handle(_ request: Request, _ context: MetricsdRequestContext, _ state: HTTPState) async -> Response {
        let limits = state.configuration.query
        // Form encoding, in the URL and (POST) in the body, whose values win (Go's `Request.FormValue`).
        var form = Form(request.uri.query ?? "")
        if request.method == .post {
            var request = request
            // Percent-encoding can triple a query's bytes.
            let limit = limits.maxQuerySize.bytes * 3 + 4096
            do {
                let body = try await request.collectBody(upTo: limit)
                var bodyForm = Form(String(buffer: body))
                bodyForm.add(form)
                form = bodyForm
            } catch {
                return HTTPRoutes.error(
                    .contentTooLarge, "the query form is longer than \(limit) bytes ([query] max_query_size)")
            }
        }
        let parameters: InfluxQLParameters
        do {
            parameters = try InfluxQLParameters(
                form, maxStatements: limits.maxStatements, maxDepth: limits.maxNestingDepth,
                maxSize: limits.maxQuerySize.bytes)
        } catch {
            if error.message.contains("[query]") { state.stats.queriesLimited.add(1) }
            return HTTPRoutes.error(.badRequest, error.message)
        }
        return await HTTPRoutes.runQuery(context, state) { budget throws in
            let results = try engine(state, database: parameters.database).run(
                parameters.statements, budget: budget, now: nowNanoseconds())
            var zones: [Int: TimeZoneRule] = [:]
            for (k, s) in parameters.statements.enumerated() {
                if case .select(let select) = s, let name = select.timeZone { zones[k] = TimeZoneRule(name) }
            }
            let bytes = ResultWriter.write(results, format: TimeFormat(epochScale: parameters.epochScale), zones: zones)
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
        }
    }

    /// The engine over this daemon's rollups: open buckets, stored minutes (with those still pending a store),
    /// stored hours; the catalogs of both.
    static func engine(_ state: HTTPState, database: String? = nil) -> Engine {
        let c = state.configuration
        return Engine(
            QueryData(
                open: state.engine, minutes: state.store.minutes, hours: state.store.store.source(.hours),
                catalogs: [state.engine, state.store.store], bucketWidth: c.rollup.interval.nanoseconds,
                retention1m: c.storage.retention1m.nanoseconds, retention1h: c.storage.retention1h.nanoseconds,
                maxFuture: state.engine.configuration.maxFuture,
                databases: [c.influx.database, database ?? "metricsd", "metricsd"],
                maxSelectBuckets: c.query.maxSelectBuckets, maxSelectSeries: c.query.maxSelectSeries,
                maxRowLimit: c.query.maxRowLimit))
    }
}
