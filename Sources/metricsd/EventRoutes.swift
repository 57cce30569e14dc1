import API
import ClickHouse
import Export
import Foundation
import HTTPTypes
import Hummingbird
import InfluxQL
import Ingest
import LineProtocol
import NIOCore
import Query

/// `POST /api/v1/events` and the analytics endpoints (`/api/v1/funnel`, `/api/v1/retention`,
/// `/api/v1/experiment`). Semantics in docs/events.md.
enum EventRoutes {
    // MARK: - Ingest

    static func ingest(_ request: Request, _ context: MetricsdRequestContext, _ state: HTTPState) async -> Response {
        guard let events = state.events else { return HTTPRoutes.error(.serviceUnavailable, "events are disabled") }
        if let refused = HTTPRoutes.backlogFull(state, events: true) { return refused }
        let remote = context.channel.remoteAddress.map(RemoteAddress.init)
        return await HTTPRoutes.withBody(request, state) { body in
            guard let bytes = body.bytes else { return HTTPRoutes.error(.badRequest, "no body") }
            return ingest(bytes, events, state, remote: remote)
        }
    }

    /// Logs the body, then decodes and applies its events one at a time (``IngestPipeline/acceptEvents(_:into:)``);
    /// with `durability = "fsync"` only once the body is on disk, so a body answered 503 was never applied.
    static func ingest(
        _ body: [UInt8], _ events: EventPipeline, _ state: HTTPState, remote: RemoteAddress? = nil
    ) -> Response {
        let outcome: IngestPipeline.EventsOutcome
        let ingester = state.pipeline.ingester(.http)
        ingester.reportLimit = state.configuration.limits.maxReportedErrors
        ingester.remote = remote
        switch state.pipeline.acceptEvents(body, into: ingester) {
        case .success(let o): outcome = o
        case .failure(let error):
            state.stats.httpErrors.add(1)
            return HTTPRoutes.error(.serviceUnavailable, "write-ahead log unavailable, nothing applied: \(error)")
        }
        let (decoded, accepted, duplicates, rejectedCount) =
            (outcome.decoded, outcome.accepted, outcome.duplicates, outcome.rejectedCount)
        let rejected = outcome.rejected
        if decoded == 0 {
            state.stats.httpErrors.add(1)
            return HTTPRoutes.error(.badRequest, "no events in the body")
        }
        var answer: [String: Any] = ["accepted": accepted, "duplicates": duplicates]
        if rejectedCount == 0 { return HTTPRoutes.json(.ok, answer) }
        state.stats.httpErrors.add(1)
        let more = rejectedCount > 1 ? " (and \(rejectedCount - 1) more)" : ""
        if let first = rejected.first { answer["error"] = "event \(first.line - 1): \(first.message)\(more)" }
        // The entries /write?results=lines lists, with `index` (0-based, as before) beside `line` (1-based).
        answer["rejected"] = rejected.map { r -> [String: Any] in
            var entry = HTTPRoutes.rejectionJSON(r)
            entry["index"] = r.line - 1
            return entry
        }
        answer["rejected_count"] = rejectedCount
        answer["truncated"] = rejected.count < rejectedCount
        return HTTPRoutes.json(.badRequest, answer)
    }

    // MARK: - Analytics

    /// Parameters of the analytics routes: all say whose events they cover.
    protocol Scoped: Sendable {
        var scope: Scope { get }
    }

    /// Runs an analytics query on a query thread: `scope=local` against the in-memory index (an event acknowledged
    /// a moment ago is already in it), stopping past `[query] timeout` or when the client leaves; `scope=fleet` in
    /// ClickHouse over every instance's events (503 with the reason when ClickHouse cannot answer).
    static func analytics<P: Scoped>(
        _ request: Request, _ context: MetricsdRequestContext, _ state: HTTPState,
        parse: (Form, Int64) throws(ParameterError) -> P,
        local: @escaping @Sendable (P, borrowing EventIndex, @escaping () -> Bool) throws -> [String: Any],
        fleet: @escaping @Sendable (P, FleetAnalytics) throws -> [String: Any]
    ) async -> Response {
        guard let events = state.events else { return HTTPRoutes.error(.serviceUnavailable, "events are disabled") }
        let parameters: P
        do {
            parameters = try parse(Form(request.uri.query ?? ""), nowNanoseconds())
        } catch {
            return HTTPRoutes.error(.badRequest, error.message)
        }
        if parameters.scope == .fleet {
            guard let analytics = state.fleet, analytics.configuration.enabled else {
                return HTTPRoutes.error(
                    .serviceUnavailable, "scope=fleet needs ClickHouse: set [events.clickhouse] url")
            }
            return await HTTPRoutes.runQuery(context, state) { _ throws in
                do {
                    var answer = try fleet(parameters, analytics)
                    answer["scope"] = "fleet"
                    return HTTPRoutes.json(.ok, answer)
                } catch let e as ClickHouseError {
                    state.stats.httpErrors.add(1)
                    return HTTPRoutes.error(
                        .serviceUnavailable, "ClickHouse (\(analytics.configuration.url)) could not answer: \(e)")
                } catch let e as BadParameter {
                    return HTTPRoutes.error(.badRequest, e.message)
                }
            }
        }
        return await HTTPRoutes.runQuery(context, state) { budget throws in
            let stop = budget.shouldStop
            do {
                let answer = try events.withIndex { index in
                    var answer = try local(parameters, index, stop)
                    if index.dropped > 0 {
                        // The oldest events left the index ([events] max_indexed): say from when answers count.
                        answer["indexed_from"] = index.oldestTime.map { $0 as Any } ?? NSNull()
                        answer["events_unindexed"] = index.dropped
                    }
                    return answer
                }
                return HTTPRoutes.json(.ok, answer)
            } catch is EventQueryStopped {
                throw budget.stopReason ?? QueryStopped(reason: .clientGone)
            } catch let e as BadParameter {
                return HTTPRoutes.error(.badRequest, e.message)
            }
        }
    }

    struct BadParameter: Error {
        var message: String
        init(_ message: String) { self.message = message }
    }

    static func funnel(_ request: Request, _ context: MetricsdRequestContext, _ state: HTTPState) async -> Response {
        await analytics(
            request, context, state, parse: FunnelParameters.init,
            local: { p, index, stop in
                let answer = try index.funnel(
                    steps: p.steps, from: p.range.from, to: p.range.to, window: p.window, breakdown: p.breakdown,
                    where: p.filter, stepFilters: p.stepFilters, stop: stop)
                return funnelAnswer(p, answer)
            },
            fleet: { p, fleet in
                let answer = try fleet.funnel(
                    steps: p.steps, from: p.range.from, to: p.range.to, window: p.window, breakdown: p.breakdown,
                    where: p.filter, stepFilters: p.stepFilters)
                return funnelAnswer(p, answer)
            })
    }

    static func funnelAnswer(
        _ p: FunnelParameters, _ answer: (steps: [FunnelStep], breakdown: [String: [FunnelStep]]?)
    ) -> [String: Any] {
        func encode(_ steps: [FunnelStep]) -> [[String: Any]] {
            steps.map {
                [
                    "event": $0.event, "users": $0.users, "conversion_from_first": $0.conversionFromFirst,
                    "conversion_from_previous": $0.conversionFromPrevious, "dropoff": $0.dropoff,
                    "median_ms_from_first": $0.medianMsFromFirst.map { $0 as Any } ?? NSNull(),
                ]
            }
        }
        var out: [String: Any] = [
            "steps": encode(answer.steps), "from": p.range.from, "to": p.range.to, "window_ms": p.window,
        ]
        if let groups = answer.breakdown { out["breakdown"] = groups.mapValues { ["steps": encode($0)] } }
        return out
    }

    static func retention(_ request: Request, _ context: MetricsdRequestContext, _ state: HTTPState) async -> Response {
        await analytics(
            request, context, state, parse: RetentionParameters.init,
            local: { p, index, stop in
                retentionAnswer(
                    p,
                    try index.retention(
                        cohortEvent: p.cohortEvent, returnEvent: p.returnEvent, period: p.period, periods: p.periods,
                        from: p.range.from, to: p.range.to, where: p.filter, breakdown: p.breakdown, stop: stop))
            },
            fleet: { p, fleet in
                retentionAnswer(
                    p,
                    try fleet.retention(
                        cohortEvent: p.cohortEvent, returnEvent: p.returnEvent, period: p.period, periods: p.periods,
                        from: p.range.from, to: p.range.to, where: p.filter, breakdown: p.breakdown))
            })
    }

    static func retentionAnswer(
        _ p: RetentionParameters, _ answer: (cohorts: [Cohort], breakdown: [String: [Cohort]]?)
    ) -> [String: Any] {
        func encode(_ cohorts: [Cohort]) -> [[String: Any]] {
            cohorts.map {
                ["start": $0.start, "size": $0.size, "retained": $0.retained, "rates": $0.rates] as [String: Any]
            }
        }
        var out: [String: Any] = ["period": p.period.rawValue, "cohorts": encode(answer.cohorts)]
        if let groups = answer.breakdown { out["breakdown"] = groups.mapValues { ["cohorts": encode($0)] } }
        return out
    }

    static func experiment(_ request: Request, _ context: MetricsdRequestContext, _ state: HTTPState) async -> Response
    {
        await analytics(
            request, context, state, parse: ExperimentParameters.init,
            local: { p, index, stop in
                try experimentAnswer(
                    p,
                    try index.experiment(
                        exposureEvent: p.exposureEvent, variantProperty: p.variantProperty, goalEvent: p.goalEvent,
                        from: p.range.from, to: p.range.to, window: p.window, control: p.control, where: p.filter,
                        stop: stop))
            },
            fleet: { p, fleet in
                try experimentAnswer(
                    p,
                    try fleet.experiment(
                        exposureEvent: p.exposureEvent, variantProperty: p.variantProperty, goalEvent: p.goalEvent,
                        from: p.range.from, to: p.range.to, window: p.window, control: p.control, where: p.filter))
            })
    }

    static func experimentAnswer(_ p: ExperimentParameters, _ result: ExperimentResult) throws -> [String: Any] {
        if let control = p.control, !result.variants.contains(where: { $0.variant == control }) {
            throw BadParameter("parameter 'control': no exposures of variant \"\(control)\" in the range")
        }
        return [
            "control": result.control.map { $0 as Any } ?? NSNull(),
            "excluded_users": result.excludedUsers,
            "variants": result.variants.map {
                [
                    "variant": $0.variant, "exposed": $0.exposed, "converted": $0.converted, "rate": $0.rate,
                    "ci95": [$0.ci95.0, $0.ci95.1], "uplift": $0.uplift.map { $0 as Any } ?? NSNull(),
                    "p_value": $0.pValue.map { $0 as Any } ?? NSNull(),
                ] as [String: Any]
            },
        ]
    }
}

extension FunnelParameters: EventRoutes.Scoped {}
extension RetentionParameters: EventRoutes.Scoped {}
extension ExperimentParameters: EventRoutes.Scoped {}
