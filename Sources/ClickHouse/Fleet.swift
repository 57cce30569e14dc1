import Export
public import Query
import Synchronization

/// Funnels, retention and experiments over every instance's events, computed in ClickHouse (``ClickHouseSQL``)
/// and answered in the types of ``Query`` — the same answers ``EventIndex`` gives over the same events.
///
/// Each call blocks its thread for the query (a libcurl handle from a small pool, kept alive between queries);
/// ClickHouse stops it past `timeout` seconds (`max_execution_time`), and an answer of more than `maxRows` rows
/// (`max_result_rows`) is refused there, not here.
public final class FleetAnalytics: Sendable {
    private let state: Mutex<(configuration: ClickHouseConfiguration, idle: [Handle])>
    public let timeout: Int
    public let maxRows: Int

    private final class Handle: @unchecked Sendable {
        let http: ClickHouseHTTP
        init(_ http: ClickHouseHTTP) { self.http = http }
    }

    public init(configuration: ClickHouseConfiguration, timeout: Int, maxRows: Int) {
        state = Mutex((configuration, []))
        self.timeout = max(1, timeout)
        self.maxRows = maxRows
    }

    public var configuration: ClickHouseConfiguration { state.withLock { $0.configuration } }

    /// A new target (SIGHUP): the next query uses it.
    public func reconfigure(_ configuration: ClickHouseConfiguration) {
        state.withLock {
            $0.configuration = configuration
            $0.idle = []
        }
    }

    /// The rows of `sql`, tab-separated.
    func rows(_ sql: String) throws(ClickHouseError) -> [[String]] {
        let (configuration, reused) = state.withLock { s in (s.configuration, s.idle.popLast()) }
        guard configuration.enabled else {
            throw ClickHouseError(
                kind: .refused, code: nil, status: nil, message: "no ClickHouse configured ([events.clickhouse] url)")
        }
        let handle = reused ?? Handle(ClickHouseHTTP(configuration, timeout: timeout + 5))
        let body = try handle.http.query(
            sql,
            settings: [
                ("max_execution_time", String(timeout)), ("max_result_rows", String(maxRows)),
                ("result_overflow_mode", "throw"),
            ])
        state.withLock { s in
            if s.configuration == handle.http.configuration && s.idle.count < 8 { s.idle.append(handle) }
        }
        return TabSeparated.rows(body)
    }

    static func malformed(_ what: String) -> ClickHouseError {
        ClickHouseError(kind: .query, code: nil, status: nil, message: "unexpected answer from ClickHouse: \(what)")
    }

    public func funnel(
        steps: [String], from: Int64, to: Int64, window: Int64, breakdown: String?,
        where filter: EventFilter = .all, stepFilters: [EventFilter] = []
    ) throws(ClickHouseError) -> (steps: [FunnelStep], breakdown: [String: [FunnelStep]]?) {
        let sql = ClickHouseSQL.funnel(
            table: configuration.qualifiedTable, steps: steps, from: from, to: to, window: window,
            breakdown: breakdown, where: filter, stepFilters: stepFilters)
        var overall = Funnel.steps(
            steps, users: Array(repeating: 0, count: steps.count), medians: Array(repeating: nil, count: steps.count))
        var groups: [String: [FunnelStep]] = [:]
        for row in try rows(sql) {
            // kind, value, u1, (u_k, m_k) for k = 2…
            guard row.count == 2 + 1 + 2 * (steps.count - 1) else { throw Self.malformed("\(row.count) columns") }
            var users = [Int]()
            var medians: [Double?] = [nil]
            guard let u1 = Int(row[2]) else { throw Self.malformed(row[2]) }
            users.append(u1)
            for k in 1..<steps.count {
                guard let u = Int(row[1 + 2 * k]) else { throw Self.malformed(row[1 + 2 * k]) }
                users.append(u)
                let m = Double(row[2 + 2 * k])
                medians.append(m.flatMap { $0.isNaN ? nil : $0 })
            }
            let answer = Funnel.steps(steps, users: users, medians: medians)
            if row[0] == "0" { overall = answer } else { groups[row[1]] = answer }
        }
        return (overall, breakdown == nil ? nil : groups)
    }

    public func retention(
        cohortEvent: String, returnEvent: String?, period: RetentionPeriod, periods: Int, from: Int64, to: Int64,
        where filter: EventFilter = .all, breakdown: String? = nil
    ) throws(ClickHouseError) -> (cohorts: [Cohort], breakdown: [String: [Cohort]]?) {
        let sql = ClickHouseSQL.retention(
            table: configuration.qualifiedTable, cohortEvent: cohortEvent, returnEvent: returnEvent, period: period,
            periods: periods, from: from, to: to, where: filter, breakdown: breakdown)
        var overall: [Cohort] = []
        var groups: [String: [Cohort]] = [:]
        for row in try rows(sql) {
            guard row.count == 5, let start = Int64(row[2]), let size = Int(row[3]),
                let retained = TabSeparated.integers(row[4]), retained.count == periods
            else { throw Self.malformed(row.joined(separator: "\t")) }
            let cohort = Cohort(
                start: start, size: size, retained: retained, rates: retained.map { Double($0) / Double(size) })
            if row[0] == "0" { overall.append(cohort) } else { groups[row[1], default: []].append(cohort) }
        }
        return (overall, breakdown == nil ? nil : groups)
    }

    public func experiment(
        exposureEvent: String, variantProperty: String, goalEvent: String, from: Int64, to: Int64, window: Int64,
        control: String?, where filter: EventFilter = .all
    ) throws(ClickHouseError) -> ExperimentResult {
        let sql = ClickHouseSQL.experiment(
            table: configuration.qualifiedTable, exposureEvent: exposureEvent, variantProperty: variantProperty,
            goalEvent: goalEvent, from: from, to: to, window: window, where: filter)
        var counts: [String: (exposed: Int, converted: Int)] = [:]
        var excluded = 0
        for row in try rows(sql) {
            guard row.count == 4, let exposed = Int(row[2]), let converted = Int(row[3]) else {
                throw Self.malformed(row.joined(separator: "\t"))
            }
            if row[0] == "1" { excluded += exposed } else { counts[row[1]] = (exposed, converted) }
        }
        return Experiment.results(counts, excluded: excluded, control: control)
    }
}
