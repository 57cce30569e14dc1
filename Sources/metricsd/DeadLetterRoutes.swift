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

    /// `POST /api/v1/dead-letters/replay?…` (limit 1,000 by default): the selected letters are submitted again as
    /// they first came — lines through the ingest pipeline with their batch's precision, receive time, source and
    /// sender (the letters of one batch as one batch again), events as an events body, points InfluxDB refused
    /// posted to InfluxDB again. Replayed lines and events leave the table; those refused again come back as new
    /// letters (only what was refused this time: a line partly applied now keeps just its refused fields, so no
    /// replay counts a value twice). Refused points stay as they are.
    static func replay(_ request: Request, _ state: HTTPState) async -> Response {
        let forwarder = state.forwarder
        return await run(request, state, defaultLimit: 1000) { store, selection in
            let letters = try store.list(selection)
            // What is refused again, collected here and stored before the originals go.
            let again = DeadLetterQueue(maxCount: letters.count + 1, maxBytes: Int.max)
            var done: [Int64] = []  // replayed (accepted, or refused again as a new letter)
            var refused: [[String: Any]] = []
            var refusedCount = 0
            func refuse(_ id: Int64, _ reason: String, _ message: String) {
                refusedCount += 1
                if refused.count < 1000 { refused.append(["id": id, "reason": reason, "error": message]) }
            }
            func ingester(for letter: DeadLetter, precision: Precision = .nanoseconds) -> LineIngester {
                let source = IngestSource(rawValue: letter.source) ?? (letter.source == "wal" ? .internal : .http)
                let i = state.pipeline.ingester(source, precision: precision)
                i.deadLetterQueue = again
                i.remote = letter.remote.isEmpty ? nil : letter.remote
                return i
            }
            var points: [DeadLetter] = []
            var index = 0
            while index < letters.count {
                let letter = letters[index]
                switch letter.kind {
                case .influxPoint:
                    points.append(letter)
                    index += 1
                case .event:
                    index += 1
                    let events = ingester(for: letter)
                    events.reportLimit = 1
                    switch state.pipeline.acceptEvents(letter.payload, into: events, receivedAt: letter.received) {
                    case .failure(let error): refuse(letter.id, "unavailable", "\(error)")
                    case .success(let outcome):
                        done.append(letter.id)
                        if let r = outcome.rejected.first { refuse(letter.id, r.reason.rawValue, r.message) }
                    }
                case .line:
                    // The letters of one batch (same receive time, precision and source), one line each, as one
                    // batch; line i of it is letter i.
                    var group = [letter]
                    index += 1
                    while index < letters.count, letters[index].kind == .line,
                        letters[index].received == letter.received, letters[index].precision == letter.precision,
                        letters[index].source == letter.source
                    {
                        group.append(letters[index])
                        index += 1
                    }
                    let kept = group.filter { !$0.payload.isEmpty }
                    for l in group where l.payload.isEmpty {
                        refuse(l.id, l.reason.rawValue, "its bytes were not kept (a line too long): send it again")
                    }
                    guard !kept.isEmpty else { continue }
                    var body: [UInt8] = []
                    for l in kept { body += l.payload + [0x0A] }
                    let lines = ingester(for: letter, precision: Precision(walCode: letter.precision) ?? .nanoseconds)
                    lines.reportLimit = kept.count
                    let result = body.withUnsafeBytes {
                        state.pipeline.accept($0, into: lines, acknowledged: true, receivedAt: letter.received)
                    }
                    if case .refused(let error) = result {
                        for l in kept { refuse(l.id, "unavailable", "write-ahead log unavailable: \(error)") }
                        continue
                    }
                    done += kept.map(\.id)
                    for r in lines.outcome.rejections where r.line >= 1 && r.line <= kept.count {
                        refuse(kept[r.line - 1].id, r.reason.rawValue, r.message)
                    }
                }
            }
            if !points.isEmpty {
                if let forwarder {
                    for (letter, result) in zip(points, forwarder.resend(points.map(\.payload))) {
                        switch result {
                        case .success: done.append(letter.id)
                        case .failure(let e): refuse(letter.id, RejectReason.rejectedByInfluxDB.rawValue, e.message)
                        }
                    }
                } else {
                    for letter in points { refuse(letter.id, "unavailable", "forwarding is off ([influx] url)") }
                }
            }
            let renewed = again.takeAll()
            try store.insert(renewed)
            let deleted = try store.delete(ids: done)
            return HTTPRoutes.json(
                .ok,
                [
                    "selected": letters.count, "accepted": letters.count - refusedCount, "deleted": deleted,
                    "still_rejected": refusedCount, "rejected": refused, "renewed": renewed.count,
                ] as [String: Any])
        }
    }
}
