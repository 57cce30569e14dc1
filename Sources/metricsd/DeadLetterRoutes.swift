import API
import Export
import Foundation
import Hummingbird
import Ingest
import LineProtocol

/// `GET`/`DELETE /api/v1/dead-letters` and `POST /api/v1/dead-letters/replay` (docs/http-api.md). The token, if
/// set, is checked in front of them like every route. SQLite work runs on the body threads, never on the pool that
/// answers other requests.
enum DeadLetterRoutes {
    /// The most letters one request lists or replays.
    static let maxLimit = 10_000

    static func selection(_ form: Form, defaultLimit: Int) throws(ParameterError) -> DeadLetterStore.Selection {
        var s = DeadLetterStore.Selection(limit: defaultLimit)
        if let source = form["source"], !source.isEmpty {
            let sources = ["udp", "tcp", "http", "wal", "influx"]
            guard sources.contains(source) else {
                throw ParameterError(
                    "parameter 'source' must be one of \(sources.joined(separator: ", ")), got \"\(source.prefix(32))\""
                )
            }
            s.source = source
        }
        if let reason = form["reason"], !reason.isEmpty {
            guard let r = RejectReason(rawValue: reason) else {
                let all = RejectReason.allCases.map(\.rawValue).joined(separator: ", ")
                throw ParameterError("parameter 'reason' must be one of \(all), got \"\(reason.prefix(32))\"")
            }
            s.reason = r
        }
        for (name, keyPath) in [("from", \DeadLetterStore.Selection.from), ("to", \DeadLetterStore.Selection.to)] {
            guard let text = form[name], !text.isEmpty else { continue }
            guard let t = TimeText.parse(text) else {
                throw ParameterError(
                    "parameter '\(name)' must be RFC 3339 or epoch milliseconds, got \"\(text.prefix(64))\"")
            }
            s[keyPath: keyPath] = t
        }
        if let ids = form["id"], !ids.isEmpty {
            let parsed = ids.split(separator: ",").map { Int64($0) }
            guard parsed.count <= maxLimit, parsed.allSatisfy({ $0 != nil }) else {
                throw ParameterError("parameter 'id' must be a comma-separated list of at most \(maxLimit) ids")
            }
            s.ids = parsed.compactMap { $0 }
        }
        if let text = form["limit"], !text.isEmpty {
            guard let n = Int(text), n > 0, n <= maxLimit else {
                throw ParameterError("parameter 'limit' must be 1 to \(maxLimit), got \"\(text.prefix(32))\"")
            }
            s.limit = n
        }
        return s
    }

    /// Runs `work` with the store and the request's selection on a body thread.
    static func run(
        _ request: Request, _ state: HTTPState, defaultLimit: Int,
        _ work: @escaping @Sendable (DeadLetterStore, DeadLetterStore.Selection) throws -> Response
    ) async -> Response {
        guard let store = state.deadLetters else {
            return HTTPRoutes.error(.serviceUnavailable, "dead letters are not kept here")
        }
        let selection: DeadLetterStore.Selection
        do {
            selection = try Self.selection(Form(request.uri.query ?? ""), defaultLimit: defaultLimit)
        } catch {
            return HTTPRoutes.error(.badRequest, error.message)
        }
        do {
            return try await state.bodyWork.runIfActive {
                do {
                    return try work(store, selection)
                } catch {
                    return HTTPRoutes.error(.internalServerError, "dead letters: \(error)")
                }
            }
        } catch {
            return HTTPRoutes.error(.serviceUnavailable, "shutting down")
        }
    }

    static func json(_ letter: DeadLetter) -> [String: Any] {
        var entry: [String: Any] = [
            "id": letter.id, "received": TimeText.format(letter.received), "source": letter.source,
            "remote": letter.remote, "reason": letter.reason.rawValue, "kind": kindName(letter.kind),
            "line": letter.line, "error": letter.message, "text": String(decoding: letter.payload, as: UTF8.self),
            "bytes": letter.payload.count,
        ]
        if let column = letter.column { entry["column"] = column }
        if letter.kind == .line, let precision = Precision(walCode: letter.precision) {
            entry["precision"] = precision.name
        }
        return entry
    }

    static func kindName(_ kind: DeadLetterKind) -> String {
        switch kind {
        case .line: "line"
        case .event: "event"
        case .influxPoint: "influx_point"
        }
    }

    /// `GET /api/v1/dead-letters?source=&reason=&from=&to=&id=&limit=` (limit 100 by default): the oldest first.
    static func list(_ request: Request, _ state: HTTPState) async -> Response {
        let pending = state.deadLetterQueue?.count ?? 0
        return await run(request, state, defaultLimit: 100) { store, selection in
            let letters = try store.list(selection)
            let total = try store.count(
                DeadLetterStore.Selection(
                    source: selection.source, reason: selection.reason, from: selection.from, to: selection.to,
                    ids: selection.ids, limit: 0))
            return HTTPRoutes.json(
                .ok,
                [
                    "dead_letters": letters.map(json), "count": letters.count, "matching": total,
                    "pending": pending,
                ] as [String: Any])
        }
    }

    /// `DELETE /api/v1/dead-letters?…` (every matching letter unless `limit` says fewer).
    static func delete(_ request: Request, _ state: HTTPState) async -> Response {
        await run(request, state, defaultLimit: Int(Int32.max)) { store, selection in
            HTTPRoutes.json(.ok, ["deleted": try store.delete(selection)])
        }
    }

    /// `POST /api/v1/dead-letters/replay?…` (limit 1,000 by default): each selected letter is submitted again as it
    /// first came — a line through the ingest pipeline with its batch's precision and receive time, an event as an
    /// events body, a point InfluxDB refused posted to InfluxDB again. Accepted letters are deleted; the others
    /// stay (not stored twice), each reported with why it was refused this time.
    static func replay(_ request: Request, _ state: HTTPState) async -> Response {
        let forwarder = state.forwarder
        return await run(request, state, defaultLimit: 1000) { store, selection in
            let letters = try store.list(selection)
            var accepted: [Int64] = []
            var refused: [[String: Any]] = []
            var refusedCount = 0
            func refuse(_ letter: DeadLetter, _ reason: String, _ message: String) {
                refusedCount += 1
                if refused.count < 1000 {
                    refused.append(["id": letter.id, "reason": reason, "error": message])
                }
            }
            var points: [DeadLetter] = []
            for letter in letters {
                switch letter.kind {
                case .influxPoint:
                    points.append(letter)
                case .line:
                    guard !letter.payload.isEmpty else {
                        refuse(
                            letter, letter.reason.rawValue, "its bytes were not kept (a line too long): send it again")
                        continue
                    }
                    let ingester = state.pipeline.ingester(
                        .http, precision: Precision(walCode: letter.precision) ?? .nanoseconds)
                    ingester.keepsDeadLetters = false
                    let result = letter.payload.withUnsafeBytes {
                        state.pipeline.accept($0, into: ingester, acknowledged: true, receivedAt: letter.received)
                    }
                    if case .refused(let error) = result {
                        refuse(letter, "unavailable", "write-ahead log unavailable: \(error)")
                    } else if let first = ingester.outcome.firstError
                        ?? ingester.outcome.firstRefusal.map({
                            ($0.line, "", $0.message)
                        })
                    {
                        let reason = ingester.outcome.reasons.nonZero.first?.reason.rawValue ?? "syntax"
                        refuse(letter, reason, first.message)
                    } else {
                        accepted.append(letter.id)
                    }
                case .event:
                    let ingester = state.pipeline.ingester(.http)
                    ingester.keepsDeadLetters = false
                    switch state.pipeline.acceptEvents(letter.payload, into: ingester, receivedAt: letter.received) {
                    case .failure(let error): refuse(letter, "unavailable", "\(error)")
                    case .success(let outcome):
                        if outcome.rejectedCount > 0 || outcome.accepted + outcome.duplicates == 0 {
                            refuse(
                                letter, RejectReason.invalidEvent.rawValue,
                                ingester.outcome.firstError?.message ?? "no event in it")
                        } else {
                            accepted.append(letter.id)
                        }
                    }
                }
            }
            if !points.isEmpty {
                if let forwarder {
                    for (letter, result) in zip(points, forwarder.resend(points.map(\.payload))) {
                        switch result {
                        case .success: accepted.append(letter.id)
                        case .failure(let e): refuse(letter, RejectReason.rejectedByInfluxDB.rawValue, e.message)
                        }
                    }
                } else {
                    for letter in points { refuse(letter, "unavailable", "forwarding is off ([influx] url)") }
                }
            }
            let deleted = try store.delete(ids: accepted)
            return HTTPRoutes.json(
                .ok,
                [
                    "selected": letters.count, "accepted": accepted.count, "deleted": deleted,
                    "still_rejected": refusedCount, "rejected": refused,
                ] as [String: Any])
        }
    }
}
