import API
import Dispatch
import InfluxQL
import Ingest
import NIOCore
import NIOPosix
import Synchronization

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
        var alive: (@Sendable () -> Bool)?
        if let channel { alive = { channel.isActive } }
        let budget = QueryBudget(
            timeout: timeout.nanoseconds, timeoutText: "\(timeout)", alive: alive, rowLimit: rowLimit)
        do {
            return try await pool.runIfActive { try body(budget) }
        } catch let stopped as QueryStopped {
            if case .limit = stopped.reason { stats.queriesLimited.add(1) } else { stats.queriesStopped.add(1) }
            throw stopped
        }
    }

    func shutdown() async { try? await pool.shutdownGracefully() }
}
