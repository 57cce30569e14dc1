public import Export
import LineProtocol
import Rollups

/// One refused line (or event) of a batch, as `?results=lines` reports it.
public struct Rejection: Sendable, Equatable {
    /// 1-based line number in the batch (for an event body: the event's 1-based index).
    public var line: Int
    /// 1-based byte column of the fault, when known.
    public var column: Int?
    public var reason: RejectReason
    /// What was expected there, and what was found (the parser's words; for a refused field, its type).
    public var expected: String?
    public var found: String?
    /// The whole explanation (`column 12: expected …, found …`; `field type conflict: …`).
    public var message: String
    /// The line's first 256 bytes, as text.
    public var text: String
    /// Whether the rest of the line was applied (a line with one refused field keeps its other fields).
    public var partial: Bool = false

    public init(
        line: Int, column: Int?, reason: RejectReason, expected: String?, found: String?, message: String,
        text: String, partial: Bool = false
    ) {
        self.line = line
        self.column = column
        self.reason = reason
        self.expected = expected
        self.found = found
        self.message = message
        self.text = text
        self.partial = partial
    }

    /// The bytes a report shows of a refused line.
    public static let shownBytes = 256

    static func shown(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
        String(decoding: bytes.prefix(shownBytes), as: UTF8.self)
    }
}

extension RejectReason {
    /// The reason of a parser error: a timestamp outside what InfluxDB can hold is out of range, the rest syntax.
    init(_ error: LineError) {
        self = error.kind == .timestampOutOfRange ? .outOfRange : .syntax
    }

    /// The reason of a refusal by the rollups.
    init(_ refusal: Refusal) {
        switch refusal {
        case .outOfRange: self = .outOfRange
        case .seriesLimit: self = .cardinality
        case .fieldLimit: self = .fieldLimit
        case .invalidName: self = .invalidName
        case .typeConflict: self = .typeConflict
        }
    }
}

extension LineIngester {
    /// Records a refusal: counted per reason, listed up to ``reportLimit``, kept as a dead letter when this
    /// ingester keeps them.
    ///
    /// - Parameter refused: refused by the rollups (kept as ``BatchOutcome/firstRefusal``), not by the parser
    ///   (``BatchOutcome/firstError``).
    func reject(
        _ rejection: @autoclosure () -> Rejection, reason: RejectReason, refused: Bool = false,
        letter: (() -> DeadLetter)?
    ) {
        outcome.reasons[reason] += 1
        let first = refused ? outcome.firstRefusal == nil : outcome.firstError == nil
        if first || outcome.rejections.count < reportLimit {
            let r = rejection()
            if first {
                if refused {
                    outcome.firstRefusal = (r.line, r.message)
                } else {
                    outcome.firstError = (r.line, r.text, r.message)
                }
            }
            if outcome.rejections.count < reportLimit { outcome.rejections.append(r) }
        }
        if let queue = deadLetterQueue, let letter { queue.add(letter()) }
    }

    /// A dead letter of this batch.
    func letter(
        line: Int, column: Int?, reason: RejectReason, kind: DeadLetterKind = .line, message: String,
        payload: [UInt8], precision: UInt8? = nil
    ) -> DeadLetter {
        DeadLetter(
            received: batchTime, source: source == .internal ? "wal" : source.rawValue,
            remote: remote.map { String(describing: $0) } ?? "", reason: reason, kind: kind, line: line,
            column: column, message: message, precision: precision ?? decoder.precision.walCode, payload: payload,
            origin: batchPosition)
    }

    /// A line the parser refused.
    func rejectSyntax(_ line: UnsafeBufferPointer<UInt8>, _ error: LineError) {
        let number = outcome.lines
        let reason = RejectReason(error)
        reject(
            Rejection(
                line: number, column: error.column, reason: reason, expected: error.expected,
                found: error.found.map(LineError.describe) ?? "the end of the line", message: error.message,
                text: Rejection.shown(line)),
            reason: reason,
            letter: {
                self.letter(
                    line: number, column: error.column, reason: reason, message: error.message, payload: Array(line))
            })
    }

    /// A line longer than `[limits] max_line_length` (its bytes were not kept).
    func rejectOverlong(_ bytes: Int) {
        let number = outcome.lines
        let message = "line of \(bytes) bytes is longer than limits.max_line_length (\(pipeline.maxLineLength))"
        reject(
            Rejection(
                line: number, column: pipeline.maxLineLength + 1, reason: .tooLong,
                expected: "at most \(pipeline.maxLineLength) bytes", found: "\(bytes) bytes", message: message,
                text: "<\(bytes) bytes>"),
            reason: .tooLong,
            letter: { self.letter(line: number, column: nil, reason: .tooLong, message: message, payload: []) })
    }

    /// A decoded line the rollups refused all or some of (`result` is its own result): asks the engine why, then
    /// reports each refused field (a line is one rejection, with the first refusal's reason).
    func rejectRefused(_ line: UnsafeBufferPointer<UInt8>, _ result: IngestResult) {
        let point = PointView(decoder)
        var refusals = engine.refusals(point, now: batchNow, defaultTime: defaultTime)
        if refusals.isEmpty {
            // Created meanwhile by another thread: say what the counts say.
            let fallback: Refusal =
                result.outOfRange > 0
                ? .outOfRange(time: decoder.timestamp ?? batchTime)
                : result.rejectedSeries > 0
                    ? .seriesLimit(engine.configuration.maxSeries)
                    : result.typeConflicts > 0
                        ? .typeConflict(field: 0, existing: .float, given: .float)
                        : .fieldLimit(field: 0, limit: engine.configuration.maxFieldsPerSeries)
            refusals = [fallback]
        }
        let number = outcome.lines
        let first = refusals[0]
        let reason = RejectReason(first)
        let partial = refusals.allSatisfy { $0.field != nil } && refusals.count < decoder.fields.count
        let messages = refusals.map { describe($0) }
        let message = messages.joined(separator: "; ")
        let (expected, found) = expectedFound(first)
        reject(
            Rejection(
                line: number, column: nil, reason: reason, expected: expected, found: found, message: message,
                text: Rejection.shown(line), partial: partial),
            reason: reason, refused: true,
            letter: {
                // What replays must be what was refused: a partly applied line keeps only its refused fields, and
                // its time (a line without one got the batch's).
                guard partial else {
                    return self.letter(
                        line: number, column: nil, reason: reason, message: message, payload: Array(line))
                }
                var refused = self.decoder.makePoint()
                let indices = Set(refusals.compactMap(\.field))
                refused.fields = refused.fields.enumerated().filter { indices.contains($0.offset) }.map(\.element)
                let time = self.decoder.timestamp ?? self.batchTime
                refused.timestamp = time
                var bytes: [UInt8] = []
                do {
                    try LineEncoder.append(refused, to: &bytes)
                    if bytes.last == 0x0A { bytes.removeLast() }
                } catch {
                    bytes = Array(line)
                }
                return self.letter(
                    line: number, column: nil, reason: reason, message: message, payload: bytes,
                    precision: Precision.nanoseconds.walCode)
            })
    }

    private func fieldName(_ i: Int) -> String {
        i < decoder.fields.count ? String(decoding: decoder.fields[i].key, as: UTF8.self) : "?"
    }

    private var measurementName: String { String(decoding: decoder.measurement, as: UTF8.self) }

    func describe(_ refusal: Refusal) -> String {
        switch refusal {
        case .outOfRange(let time):
            "timestamp \(time) is outside the accepted range (at most rollup.max_future ahead, no older than storage.retention_1m)"
        case .seriesLimit(let limit):
            "new series of measurement \"\(measurementName)\" over rollup.max_series (\(limit))"
        case .fieldLimit(let i, let limit):
            "new field \"\(fieldName(i))\" over rollup.max_fields_per_series (\(limit))"
        case .invalidName(let i):
            i.map { "field name \"\(fieldName($0))\" is not valid UTF-8" }
                ?? "the measurement or a tag is not valid UTF-8"
        case .typeConflict(let i, let existing, let given):
            // InfluxDB's words.
            "field type conflict: input field \"\(fieldName(i))\" on measurement \"\(measurementName)\" is type \(given.rawValue), already exists as type \(existing.rawValue)"
        }
    }

    private func expectedFound(_ refusal: Refusal) -> (String?, String?) {
        switch refusal {
        case .outOfRange(let time): ("a timestamp within the accepted range", String(time))
        case .seriesLimit(let limit): ("an existing series (\(limit) series is the limit)", "a new series")
        case .fieldLimit(_, let limit): ("an existing field (\(limit) fields per series is the limit)", "a new field")
        case .invalidName: ("a name in UTF-8", "invalid UTF-8")
        case .typeConflict(_, let existing, let given): ("a \(existing.rawValue) value", "a \(given.rawValue) value")
        }
    }

    /// An event refused (decoding or admission), at `index` (1-based) with its JSON.
    func rejectEvent(
        index: Int, message: String, json: UnsafeBufferPointer<UInt8>, reason: RejectReason = .invalidEvent
    ) {
        reject(
            Rejection(
                line: index, column: nil, reason: reason, expected: "a valid event", found: nil,
                message: message, text: Rejection.shown(json)),
            reason: reason,
            letter: {
                self.letter(
                    line: index, column: nil, reason: reason, kind: .event, message: message,
                    payload: Array(json), precision: eventsBodyWALCode)
            })
    }
}
