import Export
import Foundation
import HTTPTypes
import Hummingbird
import LineProtocol
import NIOCore
import Query

/// `POST /api/v1/events` and the analytics endpoints (`/api/v1/funnel`, `/api/v1/retention`,
/// `/api/v1/experiment`). Semantics in docs/events.md.
enum EventRoutes {
    static func register(_ router: Router<BasicRequestContext>, _ state: HTTPState) {
        router.post("/api/v1/events") { request, _ in await ingest(request, state) }
        router.get("/api/v1/funnel") { request, _ in analytics(request, state, funnel) }
        router.get("/api/v1/retention") { request, _ in analytics(request, state, retention) }
        router.get("/api/v1/experiment") { request, _ in analytics(request, state, experiment) }
    }

    // MARK: - Ingest

    static func ingest(_ request: Request, _ state: HTTPState) async -> Response {
        guard HTTPRoutes.authorized(request, state) else {
            state.stats.httpErrors.add(1)
            return HTTPRoutes.error(.unauthorized, "authorization failed")
        }
        guard let events = state.events else { return HTTPRoutes.error(.serviceUnavailable, "events are disabled") }
        let read = await HTTPRoutes.readBody(request, state)
        if case .response(let response) = read { return response }
        let body = read.bytes ?? []
        let results = body.withUnsafeBufferPointer { EventDecoder.decodeBody($0, limits: events.limits) }
        let ingester = LineIngester(
            engine: state.engine, sink: state.store, stats: state.stats, listener: "http", events: events)
        var rejected: [(index: Int, message: String)] = []
        for (index, result) in results.enumerated() {
            if case .failure(let e) = result { rejected.append((index, e.message)) }
        }
        state.stats.eventsInvalid.add(rejected.count)  // rejections after decoding are counted by the ingester
        var logged: UInt64?
        var duplicates = 0
        var accepted = 0
        if rejected.count < results.count {
            // Log the body before any of it is applied; replay decodes it again the same way.
            let received = nowNanoseconds()
            if let wal = state.wal {
                do {
                    logged = try body.withUnsafeBytes {
                        try wal.append($0, receivedAt: received, precision: eventsBodyWALCode)
                    }
                } catch {
                    state.stats.walErrors.add(1)
                    state.stats.httpErrors.add(1)
                    return HTTPRoutes.error(
                        .serviceUnavailable, "write-ahead log unavailable, nothing applied: \(error)")
                }
            }
            ingester.begin(walPosition: logged ?? 0, receivedAt: received)
            for (index, result) in results.enumerated() {
                guard case .success(let event) = result else { continue }
                switch ingester.handleEvent(event, index: index) {
                case .accepted: accepted += 1
                case .duplicate: duplicates += 1
                case .rejected(let why): rejected.append((index, why))
                }
            }
            ingester.end(bytes: body.count)  // counts the bytes too
            if let logged, let wal = state.wal, wal.durability == .fsync { wal.sync(upTo: logged) }
        } else {
            state.stats.http.bytes.add(body.count)
        }
        if results.isEmpty {
            state.stats.httpErrors.add(1)
            return HTTPRoutes.error(.badRequest, "no events in the body")
        }
        var answer: [String: Any] = ["accepted": accepted, "duplicates": duplicates]
        guard rejected.isEmpty else {
            state.stats.httpErrors.add(1)
            rejected.sort { $0.index < $1.index }
            let first = rejected[0]
            let more = rejected.count > 1 ? " (and \(rejected.count - 1) more)" : ""
            answer["error"] = "event \(first.index): \(first.message)\(more)"
            answer["rejected"] = rejected.prefix(100).map { ["index": $0.index, "error": $0.message] as [String: Any] }
            return HTTPRoutes.json(.badRequest, answer)
        }
        return HTTPRoutes.json(.ok, answer)
    }

    // MARK: - Analytics

    struct BadParameter: Error {
        var message: String
        init(_ message: String) { self.message = message }
    }

    /// Runs an analytics query on the in-memory index (an event acknowledged a moment ago is already in it).
    static func analytics(
        _ request: Request, _ state: HTTPState,
        _ body: (Request, HTTPState, EventPipeline) throws -> [String: Any]
    ) -> Response {
        guard HTTPRoutes.authorized(request, state) else {
            return HTTPRoutes.error(.unauthorized, "authorization failed")
        }
        guard let events = state.events else { return HTTPRoutes.error(.serviceUnavailable, "events are disabled") }
        do {
            return HTTPRoutes.json(.ok, try body(request, state, events))
        } catch let e as BadParameter {
            return HTTPRoutes.error(.badRequest, e.message)
        } catch {
            return HTTPRoutes.error(.internalServerError, "\(error)")
        }
    }

    static func required(_ request: Request, _ name: String) throws -> String {
        guard let v = HTTPRoutes.parameter(request, name), !v.isEmpty else {
            throw BadParameter("parameter '\(name)' is required")
        }
        return v
    }

    /// `from`/`to` in milliseconds (RFC 3339 or epoch ms); default: the last 7 days.
    static func range(_ request: Request) throws -> (from: Int64, to: Int64) {
        func time(_ name: String) throws -> Int64? {
            guard let text = HTTPRoutes.parameter(request, name) else { return nil }
            guard let ns = TimeText.parse(text) else {
                throw BadParameter("parameter '\(name)' must be RFC 3339 or epoch milliseconds, got \"\(text)\"")
            }
            return ns / 1_000_000
        }
        let to = try time("to") ?? nowNanoseconds() / 1_000_000
        let from = try time("from") ?? to - 7 * 86_400_000
        guard from < to else { throw BadParameter("parameter 'from' must be before 'to'") }
        return (from, to)
    }

    static func duration(_ request: Request, _ name: String, default value: String) throws -> Int64 {
        let text = HTTPRoutes.parameter(request, name) ?? value
        guard let d = ConfigDuration(parsing: text), d.nanoseconds >= 0 else {
            throw BadParameter("parameter '\(name)' must be a duration such as 30m, 1h or 7d, got \"\(text)\"")
        }
        return d.nanoseconds / 1_000_000
    }

    static func funnel(_ request: Request, _ state: HTTPState, _ events: EventPipeline) throws -> [String: Any] {
        let steps = try required(request, "steps").split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        guard steps.count >= 2, steps.count <= 20, !steps.contains(where: \.isEmpty) else {
            throw BadParameter("parameter 'steps' must name 2 to 20 events, comma-separated")
        }
        let (from, to) = try range(request)
        let window = try duration(request, "window", default: "1h")
        let breakdownText = HTTPRoutes.parameter(request, "breakdown")
        let breakdown = breakdownText?.isEmpty == false ? breakdownText : nil
        let answer = events.index.withLock {
            $0.compact()
            return $0.funnel(steps: steps, from: from, to: to, window: window, breakdown: breakdown)
        }
        func encode(_ steps: [FunnelStep]) -> [[String: Any]] {
            steps.map {
                [
                    "event": $0.event, "users": $0.users, "conversion_from_first": $0.conversionFromFirst,
                    "conversion_from_previous": $0.conversionFromPrevious, "dropoff": $0.dropoff,
                    "median_ms_from_first": $0.medianMsFromFirst.map { $0 as Any } ?? NSNull(),
                ]
            }
        }
        var out: [String: Any] = ["steps": encode(answer.steps), "from": from, "to": to, "window_ms": window]
        if let groups = answer.breakdown { out["breakdown"] = groups.mapValues { ["steps": encode($0)] } }
        return out
    }

    static func retention(_ request: Request, _ state: HTTPState, _ events: EventPipeline) throws -> [String: Any] {
        let cohortEvent = try required(request, "cohort_event")
        let returnText = try required(request, "return_event")
        let returnEvent: String? = returnText == "any" ? nil : returnText
        let periodText = HTTPRoutes.parameter(request, "period") ?? "day"
        guard let period = RetentionPeriod(rawValue: periodText) else {
            throw BadParameter("parameter 'period' must be day or week, got \"\(periodText)\"")
        }
        let periodsText = HTTPRoutes.parameter(request, "periods") ?? "8"
        guard let periods = Int(periodsText), (1...366).contains(periods) else {
            throw BadParameter("parameter 'periods' must be 1 to 366, got \"\(periodsText)\"")
        }
        let (from, to) = try range(request)
        let cohorts = events.index.withLock {
            $0.compact()
            return $0.retention(
                cohortEvent: cohortEvent, returnEvent: returnEvent, period: period, periods: periods, from: from,
                to: to)
        }
        return [
            "period": period.rawValue,
            "cohorts": cohorts.map {
                ["start": $0.start, "size": $0.size, "retained": $0.retained, "rates": $0.rates] as [String: Any]
            },
        ]
    }

    static func experiment(_ request: Request, _ state: HTTPState, _ events: EventPipeline) throws -> [String: Any] {
        let exposure = try required(request, "exposure_event")
        let variantProperty = try required(request, "variant_property")
        let goal = try required(request, "goal_event")
        let (from, to) = try range(request)
        let window = try duration(request, "window", default: "7d")
        let control = HTTPRoutes.parameter(request, "control")
        let result = events.index.withLock {
            $0.compact()
            return $0.experiment(
                exposureEvent: exposure, variantProperty: variantProperty, goalEvent: goal, from: from, to: to,
                window: window, control: control)
        }
        if let control, !result.variants.contains(where: { $0.variant == control }) {
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
