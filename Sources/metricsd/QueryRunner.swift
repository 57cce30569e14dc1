import API
import Dispatch
import NIOCore
import NIOPosix
import Synchronization

/// Why a query stopped before its answer.
struct QueryStopped: Error, CustomStringConvertible {
    enum Reason {
        case timeout(ConfigDuration)
        case clientGone
        /// Over a `[query]` limit while it ran (rows being built, series read): the message names it.
        case limit(String)
    }
    var reason: Reason

    var description: String {
        switch reason {
        case .timeout(let t): "query-timeout limit exceeded: the query ran longer than \(t) ([query] timeout)"
        case .clientGone: "the client closed the connection: the query was stopped"
        case .limit(let message): message
        }
    }
}

/// A query over one of its `[query]` limits (series, buckets, statements): 400 with the message.
struct QueryLimitExceeded: Error, CustomStringConvertible {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// What one running query may still spend: a deadline (`[query] timeout`, counted from admission) and a client
/// that is still there. Work whose cost the request controls checks it as it goes (``check()``, every few thousand
/// steps) and stops with ``QueryStopped``.
final class QueryBudget: Sendable {
    private let deadline: UInt64
    private let channel: (any Channel)?
    private let timeout: ConfigDuration
    private let steps = Atomic<Int>(0)
    /// Rows (or cells) the answer holds so far, and the most it may (`[query] max_row_limit`).
    private let rows = Atomic<Int>(0)
    let rowLimit: Int
    /// Set once a limit stopped the query (the reason it gives).
    private let exceeded = Atomic<Bool>(false)
    private let exceededMessage = Mutex<String>("")

    init(timeout: ConfigDuration, channel: (any Channel)?, rowLimit: Int) {
        deadline = DispatchTime.now().uptimeNanoseconds &+ UInt64(max(0, timeout.nanoseconds))
        self.channel = channel
        self.timeout = timeout
        self.rowLimit = rowLimit
    }

    /// A budget that never runs out (tests).
    static let unlimited = QueryBudget(
        timeout: ConfigDuration(nanoseconds: Int64.max / 2), channel: nil, rowLimit: .max / 2)

    /// Counts `n` more rows held by the answer being built (it stops once over ``rowLimit``).
    @inline(__always)
    func addRows(_ n: Int) { rows.wrappingAdd(n, ordering: .relaxed) }

    var rowsHeld: Int { rows.load(ordering: .relaxed) }

    /// Stops the query: it went over a limit (`message` names it).
    func exceed(_ message: String) {
        exceededMessage.withLock { $0 = message }
        exceeded.store(true, ordering: .releasing)
    }

    /// Why the query must stop now, or `nil`.
    var stopReason: QueryStopped? {
        if exceeded.load(ordering: .acquiring) { return QueryStopped(reason: .limit(exceededMessage.withLock { $0 })) }
        if rows.load(ordering: .relaxed) > rowLimit {
            return QueryStopped(
                reason: .limit(
                    "max-row-limit exceeded: the answer would hold more than \(rowLimit) rows ([query] max_row_limit): narrow the time range, widen GROUP BY time() or group by fewer tags"
                ))
        }
        if DispatchTime.now().uptimeNanoseconds > deadline { return QueryStopped(reason: .timeout(timeout)) }
        if let channel, !channel.isActive { return QueryStopped(reason: .clientGone) }
        return nil
    }

    /// Throws once the deadline passed or the client left; cheap enough to call per row (it looks at the clock
    /// every 1,024 calls).
    @inline(__always)
    func check() throws(QueryStopped) {
        if steps.wrappingAdd(1, ordering: .relaxed).oldValue & 1023 == 0, let stop = stopReason { throw stop }
    }

    /// ``check()`` as a predicate, for the store and the event index (they stop when it says so).
    var shouldStop: @Sendable () -> Bool {
        { [self] in steps.wrappingAdd(1, ordering: .relaxed).oldValue & 1023 == 0 && stopReason != nil }
    }
}

/// Runs the work a query asks for — InfluxQL, the JSON range and series API, funnels, retention, experiments — on
/// threads of its own, so it never occupies an event loop or Swift's cooperative pool (which serve `/ping`,
/// writes and every other request): at most `[query] max_concurrent_queries` at once (beyond, 503 naming the
/// limit), each bounded by `[query] timeout` and stopped when its client leaves.
final class QueryRunner: Sendable {
    let pool: NIOThreadPool
    let limit: Int
    let timeout: ConfigDuration
    private let running = Atomic<Int>(0)
    let stats: Stats

    /// - Parameter threads: query threads; more admitted queries wait for one (their budget running).
    init(limit: Int, timeout: ConfigDuration, rowLimit: Int, threads: Int, stats: Stats) {
        pool = NIOThreadPool(numberOfThreads: max(1, threads))
        pool.start()
        self.limit = limit
        self.timeout = timeout
        self.rowLimit = rowLimit
        self.stats = stats
    }

    let rowLimit: Int

    struct Busy: Error, CustomStringConvertible {
        var limit: Int
        var description: String {
            "max-concurrent-queries limit exceeded(\(limit), \(limit)): try again shortly ([query] max_concurrent_queries)"
        }
    }

    /// Queries admitted and not finished.
    var active: Int { running.load(ordering: .relaxed) }

    /// Runs `body` on a query thread with a fresh budget; throws ``Busy`` at the limit.
    func run<T: Sendable>(_ channel: (any Channel)?, _ body: @escaping @Sendable (QueryBudget) throws -> T)
        async throws -> T
    {
        guard running.wrappingAdd(1, ordering: .relaxed).newValue <= limit else {
            running.wrappingSubtract(1, ordering: .relaxed)
            stats.queriesRefused.add(1)
            throw Busy(limit: limit)
        }
        defer { running.wrappingSubtract(1, ordering: .relaxed) }
        let budget = QueryBudget(timeout: timeout, channel: channel, rowLimit: rowLimit)
        do {
            return try await pool.runIfActive { try body(budget) }
        } catch let stopped as QueryStopped {
            if case .limit = stopped.reason { stats.queriesLimited.add(1) } else { stats.queriesStopped.add(1) }
            throw stopped
        }
    }

    func shutdown() async { try? await pool.shutdownGracefully() }
}
