import Dispatch
import Synchronization

/// Why a query stopped before its answer.
public struct QueryStopped: Error, CustomStringConvertible {
    public enum Reason: Sendable {
        /// Past `[query] timeout` (its text, as configured).
        case timeout(String)
        case clientGone
        /// Over a `[query]` limit while it ran (rows being built, series read): the message names it.
        case limit(String)
    }
    public var reason: Reason

    public init(reason: Reason) { self.reason = reason }

    public var description: String {
        switch reason {
        case .timeout(let t): "query-timeout limit exceeded: the query ran longer than \(t) ([query] timeout)"
        case .clientGone: "the client closed the connection: the query was stopped"
        case .limit(let message): message
        }
    }
}

/// A query over one of its `[query]` limits (series, buckets, statements): 400 with the message.
public struct QueryLimitExceeded: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// What one running query may still spend: a deadline (`[query] timeout`, counted from admission) and a client
/// that is still there (`alive`). Work whose cost the request controls checks it as it goes (``check()``, every
/// few thousand steps) and stops with ``QueryStopped``.
public final class QueryBudget: Sendable {
    private let deadline: UInt64
    private let alive: (@Sendable () -> Bool)?
    private let timeoutText: String
    private let steps = Atomic<Int>(0)
    /// Rows (or cells) the answer holds so far, and the most it may (`[query] max_row_limit`).
    private let rows = Atomic<Int>(0)
    public let rowLimit: Int
    /// Points kept exactly while windows merge (what exact quantiles, modes and raw rows cost), and the most.
    private let points = Atomic<Int>(0)
    public let pointLimit: Int
    /// Set once a limit stopped the query (the reason it gives).
    private let exceeded = Atomic<Bool>(false)
    private let exceededMessage = Mutex<String>("")

    /// - Parameters:
    ///   - timeout: nanoseconds from now; `timeoutText` is how the configuration wrote it.
    ///   - alive: whether the client is still there (asked with the clock).
    public init(
        timeout: Int64, timeoutText: String, alive: (@Sendable () -> Bool)?, rowLimit: Int,
        pointLimit: Int = 4_000_000
    ) {
        deadline = DispatchTime.now().uptimeNanoseconds &+ UInt64(max(0, timeout))
        self.alive = alive
        self.timeoutText = timeoutText
        self.rowLimit = rowLimit
        self.pointLimit = pointLimit
    }

    /// A budget that never runs out (tests).
    public static var unlimited: QueryBudget {
        QueryBudget(timeout: Int64.max / 2, timeoutText: "ever", alive: nil, rowLimit: .max / 2)
    }

    /// Counts `n` more rows held by the answer being built (it stops once over ``rowLimit``).
    @inline(__always)
    public func addRows(_ n: Int) { rows.wrappingAdd(n, ordering: .relaxed) }

    public var rowsHeld: Int { rows.load(ordering: .relaxed) }

    /// Takes `n` more exact points if the query may still hold them.
    public func takePoints(_ n: Int) -> Bool {
        if points.load(ordering: .relaxed) + n > pointLimit { return false }
        points.wrappingAdd(n, ordering: .relaxed)
        return true
    }

    /// Stops the query: it went over a limit (`message` names it).
    public func exceed(_ message: String) {
        exceededMessage.withLock { $0 = message }
        exceeded.store(true, ordering: .releasing)
    }

    /// Why the query must stop now, or `nil`.
    public var stopReason: QueryStopped? {
        if exceeded.load(ordering: .acquiring) { return QueryStopped(reason: .limit(exceededMessage.withLock { $0 })) }
        if rows.load(ordering: .relaxed) > rowLimit {
            return QueryStopped(
                reason: .limit(
                    "max-row-limit exceeded: the answer would hold more than \(rowLimit) rows ([query] max_row_limit): narrow the time range, widen GROUP BY time() or group by fewer tags"
                ))
        }
        if DispatchTime.now().uptimeNanoseconds > deadline { return QueryStopped(reason: .timeout(timeoutText)) }
        if let alive, !alive() { return QueryStopped(reason: .clientGone) }
        return nil
    }

    /// Throws once the deadline passed or the client left; cheap enough to call per row (it looks at the clock
    /// every 1,024 calls).
    @inline(__always)
    public func check() throws(QueryStopped) {
        if steps.wrappingAdd(1, ordering: .relaxed).oldValue & 1023 == 0, let stop = stopReason { throw stop }
    }

    /// ``check()`` as a predicate, for the store and the event index (they stop when it says so).
    public var shouldStop: @Sendable () -> Bool {
        { [self] in steps.wrappingAdd(1, ordering: .relaxed).oldValue & 1023 == 0 && stopReason != nil }
    }
}
