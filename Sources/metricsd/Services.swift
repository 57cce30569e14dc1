import ClickHouse
import Export
import Foundation
import Ingest
import LineProtocol
import Logging
import Rollups
import ServiceLifecycle
import Synchronization

/// A job done every `every` on a thread of its own until a graceful shutdown (or cancellation), then `onStop` once.
/// SQLite stores and maintenance block for as long as they take: on their own threads they never hold one of the
/// cooperative pool's threads (two on this machine), which answer every HTTP request.
struct PeriodicService: Service {
    let name: String
    let every: Duration
    let round: @Sendable (Int) -> Void
    var onStop: (@Sendable () -> Void)? = nil

    /// Set once to stop; a sleep ends at once when it is set (no polling: an idle daemon's threads stay asleep).
    final class StopFlag: Sendable {
        private let value = Atomic<Bool>(false)
        private let wakeUp = DispatchSemaphore(value: 0)
        var isSet: Bool { value.load(ordering: .acquiring) }
        func set() {
            value.store(true, ordering: .releasing)
            wakeUp.signal()
        }

        func sleep(_ d: Duration) {
            guard !isSet else { return }
            let (seconds, attoseconds) = d.components
            let nanoseconds = seconds.multipliedReportingOverflow(by: 1_000_000_000)
            let total = nanoseconds.overflow ? Int64.max : nanoseconds.partialValue &+ attoseconds / 1_000_000_000
            if wakeUp.wait(timeout: .now() + .nanoseconds(Int(clamping: total))) == .success {
                wakeUp.signal()  // stays set for every later sleep
            }
        }
    }

    func run() async throws {
        let flag = StopFlag()
        let (name, every, round, onStop) = (self.name, self.every, self.round, self.onStop)
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                    let thread = Thread {
                        var n = 0
                        while !flag.isSet {
                            n += 1
                            round(n)
                            flag.sleep(every)
                        }
                        onStop?()
                        done.resume()
                    }
                    thread.name = "metricsd-\(name)"
                    thread.start()
                }
            } onGracefulShutdown: {
                flag.set()
            }
        } onCancel: {
            flag.set()
        }
    }
}

/// The daemon's background work, as named services (each its own loop and thread):
///
/// - **flush** (every second): stores pending events, closes finished buckets and stores them with the late cells
///   queued since (``StoreGuard``), releases WAL segments below what is stored; feeds the systemd watchdog; on
///   shutdown stores every open bucket, including the current partial minute.
/// - **maintenance** (every second): retention and downsampling (an hour at most per round), SQLite checkpoint,
///   idle series, dedup entries saved, expired events and ids (every minute).
/// - **self-metrics** (every second): the kernel's UDP drop counter; the `metricsd` measurement once per bucket
///   interval.
/// - **wal-sync** (every 100 ms, with `durability = "batch"`): fsync of the write-ahead log.
struct BackgroundServices: Sendable {
    let engine: RollupEngine
    let pipeline: IngestPipeline
    let store: StoreGuard
    let wal: WriteAheadLog
    let dedup: DedupWindow
    let events: EventPipeline
    /// Forwards stored events to ClickHouse: retention keeps what it has not sent.
    var clickhouse: EventForwarder? = nil
    let stats: Stats
    let retention1m: Int64
    let retention1h: Int64
    let logger: Logger
    let udpPort: Int?
    /// `[rollup] series_idle`.
    var seriesIdle: Int64 = 3_600_000_000_000
    /// Where refused lines wait (the queue) and are kept (the store), within `[dead_letters]`.
    var deadLetters: (store: DeadLetterStore, queue: DeadLetterQueue, limits: Configuration.DeadLetters)? = nil
    /// One line per kind of failure, then one every 10 minutes while it goes on (a full disk fails every
    /// second; the log must not fill what is left of it).
    let errors = RepeatedErrorLog()

    /// In list order: the service group stops them in reverse, so the flush service stores the open buckets after
    /// the others stopped.
    var services: [any Service] {
        var list: [any Service] = [
            PeriodicService(name: "flush", every: .seconds(1), round: { _ in flushRound() }, onStop: { flushAll() }),
            PeriodicService(name: "maintenance", every: .seconds(1), round: { maintenanceRound($0) }),
            SelfMetricsService(background: self).service,
        ]
        if wal.durability == .batch {
            list.append(
                PeriodicService(
                    name: "wal-sync", every: .milliseconds(100), round: { _ in sync("syncing the write-ahead log") }))
        }
        return list
    }

    // MARK: - Flush

    func flushRound() {
        stats.lastTickNanoseconds.store(nowNanoseconds(), ordering: .relaxed)
        let now = nowNanoseconds()
        storeEvents()
        storeDeadLetters()
        events.settleIndex()
        let closing = nowNanoseconds()
        hand(engine.closeFinished(now: now), since: closing)
        store.freeStored()
    }

    /// Shutdown: listeners have stopped (they come later in the service list); store everything, including the
    /// current partial minute.
    func flushAll() {
        storeEvents()
        storeDeadLetters()
        let all = engine.closeAll()
        // Always, even with nothing open: the log's replay position moves to its end, so a clean restart replays
        // nothing (a record whose lines were all refused — kept as dead letters — must not be applied by a restart
        // with other limits, and then again by a replay of its letters).
        hand(all, always: true)
        saveDedup(now: nowNanoseconds())
        wal.close()
        logger.info("stored \(all.count) open buckets on shutdown")
    }

    /// Fsyncs the log; a failure is logged (rate-limited) and `/health` fails while appends fail too.
    func sync(_ what: String) {
        do {
            try wal.syncAll()
        } catch {
            errors.log(logger, what + " failed", error)
        }
    }

    /// Stores pending events (every second).
    func storeEvents() {
        do {
            if events.pendingCount > 0 {
                sync("syncing the write-ahead log")  // the store must never get ahead of the log
                try events.flush()
            }
            errors.clear("storing events failed (kept in memory, retrying)")
        } catch {
            errors.log(logger, "storing events failed (kept in memory, retrying)", error)
        }
    }

    /// Stores the refused lines, events and points queued since the last round (every second), then keeps the
    /// table within `[dead_letters]` (every minute, or at once past `max_rows`).
    func storeDeadLetters(trim: Bool = false) {
        guard let (store, queue, limits) = deadLetters else { return }
        let letters = queue.takeAll()
        do {
            if !letters.isEmpty {
                stats.deadLettersStored.add(try store.insert(letters))
            }
            errors.clear("storing dead letters failed (kept in memory, retrying)")
        } catch {
            queue.putBack(letters)
            errors.log(logger, "storing dead letters failed (kept in memory, retrying)", error)
        }
        stats.deadLettersDropped.add(queue.takeDropped())
        guard trim || !letters.isEmpty else { return }
        do {
            let over = trim ? true : try store.count() > limits.maxRows
            if over {
                let (expired, evicted) = try store.trim(
                    before: nowNanoseconds() - limits.retention.nanoseconds, maxRows: limits.maxRows)
                stats.deadLettersEvicted.add(expired + evicted)
            }
        } catch {
            errors.log(logger, "trimming dead letters failed", error)
        }
    }

    /// Stores `buckets` (closed since `start`: `metricsd_sink_seconds` is the whole hand-off, closing included).
    func hand(_ buckets: [ClosedBucket], since start: Int64 = nowNanoseconds(), always: Bool = false) {
        guard always || !buckets.isEmpty || store.isDegraded || store.hasQueued else { return }
        // Replay must start at the oldest record still only in memory; segments wholly below it can go.
        let open = [engine.minOpenWALPosition(), events.minPendingPosition].compactMap { $0 }
        let replayFrom = open.min() ?? wal.end
        do {
            sync("syncing the write-ahead log")  // the store must never get ahead of the log
            let wasDegraded = store.isDegraded
            try store.store(buckets, replayFrom: replayFrom)
            errors.clear("storing closed buckets failed (kept in memory, retrying)")
            if wasDegraded {
                logger.notice("storage recovered; pending buckets stored")
            } else {
                // Late cells queued while this store ran are not in it: their records stay.
                wal.release(below: min(replayFrom, store.oldestQueuedPosition ?? replayFrom))
            }
        } catch {
            errors.log(logger, "storing closed buckets failed (kept in memory, retrying)", error)
        }
        // The duration of handing over closed buckets (not of storing late cells alone).
        guard !buckets.isEmpty else { return }
        let elapsed = nowNanoseconds() - start
        stats.sinkSeconds.set(Double(elapsed) / 1e9)
        stats.lastSinkNanoseconds.store(elapsed, ordering: .relaxed)
        stats.closedBuckets.add(buckets.count)
        stats.closedCells.add(buckets.reduce(0) { $0 + $1.cells.count })
    }

    // MARK: - Maintenance

    func maintenanceRound(_ round: Int) {
        let now = nowNanoseconds()
        // Idle series go every minute, or every quarter of series_idle when it is shorter (tests).
        let dropEvery = max(1, min(60, Int(seriesIdle / 4_000_000_000)))
        if round % dropEvery == 0 {
            stats.seriesDropped.add(engine.dropIdleSeries(before: now - seriesIdle))
        }
        saveDedup(now: now)
        if round % 60 == 0 { storeDeadLetters(trim: true) }
        if round % 60 == 0 {
            do {
                try events.maintain(now: now, keepAfter: clickhouse?.keepAfter)
            } catch {
                errors.log(logger, "expiring events failed", error)
            }
        }
        do {
            // One hour of downsampling at most per round, so maintenance never holds the store for long.
            if !store.isDegraded {
                try store.store.maintain(
                    now: now,
                    settle: engine.configuration.interval + engine.configuration.lateness,
                    retention1m: retention1m,
                    retention1h: retention1h
                )
                // Flushes only append to SQLite's log; fold it into the database file here, off their path.
                try store.store.checkpoint()
            }
        } catch {
            errors.log(logger, "retention/downsampling failed", error)
        }
    }

    func saveDedup(now: Int64) {
        let entries = dedup.takeUnsaved(now: now)
        guard !entries.isEmpty else { return }
        do {
            try store.store.saveDedup(entries.map { ($0.0.high, $0.0.low, $0.1) }, now: now)
        } catch {
            errors.log(logger, "saving dedup entries failed", error)
        }
    }
}

/// The kernel's UDP drop counter every second, and the daemon's own figures into its rollups (measurement
/// `metricsd`) once per bucket interval.
struct SelfMetricsService: Sendable {
    let background: BackgroundServices

    struct State {
        var lastSelf = nowNanoseconds()
        var baselineDrops: Int64?
    }

    var service: PeriodicService {
        let state = StateBox()
        return PeriodicService(name: "self-metrics", every: .seconds(1)) { _ in round(state) }
    }

    final class StateBox: Sendable {
        let value = Mutex(State())
    }

    private func round(_ box: StateBox) {
        let stats = background.stats
        let now = nowNanoseconds()
        box.value.withLock { state in
            if let port = background.udpPort, let drops = Listeners.kernelUDPDrops(port: port) {
                if let base = state.baselineDrops {
                    let delta = drops - base - stats.udpDrops.current
                    if delta > 0 { stats.udpDrops.add(Int(delta)) }
                } else {
                    state.baselineDrops = drops  // drops of an earlier socket on the same port are not ours
                }
            }
            if now - state.lastSelf >= background.engine.configuration.interval {
                state.lastSelf = now
                write(now: now)
            }
        }
    }

    /// The daemon's own figures, straight into its rollups (no line protocol).
    private func write(now: Int64) {
        let (engine, stats) = (background.engine, background.stats)
        let open = engine.openStatistics()
        var fields: [(key: String, value: Value)] = []
        for l in [stats.udp, stats.tcp, stats.http] {
            fields.append(("\(l.name)_lines", .integer(l.lines.current)))
            fields.append(("\(l.name)_invalid", .integer(l.invalid.current)))
            fields.append(("\(l.name)_points", .integer(l.points.current)))
            fields.append(("\(l.name)_bytes", .integer(l.bytes.current)))
        }
        fields += [
            ("series_active", .integer(Int64(engine.activeSeries))),
            ("series_rejected", .integer(stats.rejectedSeries.current)),
            ("series_overflowed", .integer(stats.seriesOverflowed.current)),
            ("type_conflicts", .integer(stats.typeConflicts.current)),
            ("points_out_of_range", .integer(stats.outOfRange.current)),
            ("points_late", .integer(stats.latePoints.current)),
            ("udp_drops", .integer(stats.udpDrops.current)),
            ("buckets_open", .integer(Int64(open.buckets))),
            ("cells_open", .integer(Int64(open.cells))),
            ("buckets_closed", .integer(stats.closedBuckets.current)),
            ("sink_seconds", .float(Double(stats.lastSinkNanoseconds.load(ordering: .relaxed)) / 1e9)),
            ("tcp_connections", .integer(Int64(stats.tcpConnectionCount.load(ordering: .relaxed)))),
            ("events_accepted", .integer(stats.eventsAccepted.current)),
            ("events_duplicate", .integer(stats.eventsDuplicate.current)),
            ("events_invalid", .integer(stats.eventsInvalid.current)),
        ]
        background.pipeline.acceptOwn(measurement: "metricsd", fields: fields, time: now)
        writeCardinality(now: now)
    }

    /// Series of the 20 largest measurements (`metricsd_cardinality`, tag `measurement`) and the 10 tag keys whose
    /// distinct values grew most in the last hour (`metricsd_tags`, tags `measurement` and `tag`): what the
    /// dashboard's cardinality panels draw.
    private func writeCardinality(now: Int64) {
        let report = background.engine.cardinality.report(now: now, limit: 20, top: 10)
        let pipeline = background.pipeline
        for m in report.measurements {
            pipeline.acceptOwn(
                measurement: "metricsd_cardinality", tags: [("measurement", m.measurement)],
                fields: [
                    ("series", .integer(Int64(m.series))), ("overflow_points", .integer(Int64(m.overflowPoints))),
                ],
                time: now)
        }
        for (measurement, tag) in report.growing {
            pipeline.acceptOwn(
                measurement: "metricsd_tags", tags: [("measurement", measurement), ("tag", tag.key)],
                fields: [
                    ("distinct_values", .integer(Int64(tag.distinctValues))),
                    ("growth_1h", .integer(Int64(tag.growth))),
                ], time: now)
        }
    }
}
