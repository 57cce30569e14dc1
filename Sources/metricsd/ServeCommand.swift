import API
import ArgumentParser
import ClickHouse
import Export
import Foundation
import Hummingbird
import Ingest
import LineProtocol
import Logging
import NIOCore
import NIOPosix
import Prometheus
import Rollups
import ServiceLifecycle
import Synchronization
import UnixSignals

#if canImport(Glibc)
    import Glibc
#endif

/// `metricsd serve`: the daemon.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the daemon (the default): UDP, TCP and HTTP listeners feeding per-minute rollups."
    )

    @Option(help: "TOML configuration file (every key optional; without it, the embedded defaults).")
    var config: String?
    @Option(help: "Directory for data (overrides data_dir).")
    var dataDir: String?
    @Option(help: "UDP listen address host:port, or \"\" to disable (overrides listen.udp).")
    var udp: String?
    @Option(help: "TCP listen address host:port, or \"\" to disable (overrides listen.tcp).")
    var tcp: String?
    @Option(help: "HTTP listen address host:port, or \"\" to disable (overrides listen.http).")
    var http: String?
    @Option(help: "InfluxDB URL to forward rollups to (overrides influx.url).")
    var influxUrl: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical (overrides log.level).")
    var logLevel: String?

    func loadConfiguration() throws -> Configuration {
        var configuration = Configuration()
        if let config {
            let text = try readText(config)
            do {
                configuration = try Configuration(toml: text)
            } catch {
                throw StartupError("\(config): \(error)", status: StartupError.configuration)
            }
        }
        if let dataDir { configuration.dataDir = dataDir }
        if let udp { configuration.listen.udp = udp }
        if let tcp { configuration.listen.tcp = tcp }
        if let http { configuration.listen.http = http }
        if let influxUrl { configuration.influx.url = influxUrl }
        if let logLevel { configuration.log.level = logLevel }
        do {
            try configuration.validate()
        } catch {
            throw StartupError("\(error)", status: StartupError.configuration)
        }
        return configuration
    }

    func run() async throws {
        do {
            let configuration = try loadConfiguration()
            LoggingSystem.bootstrap { DaemonLogHandler(label: $0) }
            DaemonLogHandler.setLevel(Logger.Level(rawValue: configuration.log.level) ?? .info)
            let command = self
            try await Server(
                configuration: configuration, logger: Logger(label: "metricsd"),
                reload: { try command.loadConfiguration() }
            ).run()
        } catch let error as StartupError {
            // Said plainly, without the command's usage (nothing was wrong with how it was called).
            DaemonLogHandler.writeToStandardError("metricsd: \(error.message)\n")
            throw ExitCode(error.status)
        }
    }
}

/// Why the daemon cannot start: reported as `metricsd: <message>` and the exit status — 78 (EX_CONFIG) for a
/// configuration that does not parse or validate (the unit does not restart on it: `RestartPreventExitStatus`),
/// 1 otherwise.
struct StartupError: Error, CustomStringConvertible {
    static let configuration: Int32 = 78
    var message: String
    var status: Int32
    init(_ message: String, status: Int32 = 1) {
        self.message = message
        self.status = status
    }
    var description: String { message }
}

/// Builds the services from a configuration and runs them until SIGTERM or SIGINT.
struct Server {
    let configuration: Configuration
    let logger: Logger
    /// Builds the configuration anew for a SIGHUP reload.
    let reload: @Sendable () throws -> Configuration

    func run() async throws {
        try makeDataDirectory(configuration.dataDir)
        // Connection limits must stay below the descriptor limit, or accepting fails there instead.
        let files = raiseOpenFileLimit()
        let reserve = min(256, files / 4)  // the database, the log, the listeners, curl, /proc reads
        var httpConnections = configuration.http.maxConnections
        var tcpConnections = configuration.limits.maxConnections
        if files < Int.max, httpConnections + tcpConnections + reserve > files {
            let room = max(2, files - reserve)
            httpConnections = max(1, min(httpConnections, room / 2))
            tcpConnections = max(1, min(tcpConnections, room - httpConnections))
            logger.warning(
                "the open-file limit is \(files): connections capped at http \(httpConnections), tcp \(tcpConnections) (raise LimitNOFILE or lower [http]/[limits] max_connections)"
            )
        }
        var rollupConfig = RollupConfiguration()
        rollupConfig.interval = configuration.rollup.interval.nanoseconds
        rollupConfig.lateness = configuration.rollup.lateness.nanoseconds
        rollupConfig.maxSeries = configuration.rollup.maxSeries
        rollupConfig.maxFieldsPerSeries = configuration.rollup.maxFieldsPerSeries
        rollupConfig.maxSeriesPerMeasurement = configuration.rollup.maxSeriesPerMeasurement
        rollupConfig.maxOverflowSeries = configuration.rollup.maxOverflowSeries
        rollupConfig.maxAge = configuration.storage.retention1m.nanoseconds
        let engine = RollupEngine(configuration: rollupConfig)
        let store: SQLiteStore
        do {
            store = try SQLiteStore(
                path: configuration.dataDir + "/metricsd.db", recordsOutbox: !configuration.influx.url.isEmpty)
            try store.noteBucketWidth(rollupConfig.interval)
        } catch {
            throw StartupError("cannot open the rollup store: \(error)")
        }
        let stats = Stats()
        let guarded = StoreGuard(
            store: store, dataDir: configuration.dataDir, onStoreError: { stats.storeErrors.add(1) },
            onDropped: { stats.pendingDropped.add($0) })
        let wal = WriteAheadLog(
            directory: configuration.dataDir + "/wal",
            durability: WriteAheadLog.Durability(rawValue: configuration.storage.durability) ?? .batch
        )
        let dedup = DedupWindow(window: configuration.storage.dedupWindow.nanoseconds)
        dedup.load((try? store.loadDedup()) ?? [], now: nowNanoseconds())
        let events: EventPipeline
        do {
            let eventStore = try EventStore(path: store.path)
            let ids = EventIDs(
                window: configuration.events.dedupWindow.nanoseconds, limit: configuration.events.maxIndexed)
            ids.load(try eventStore.recentIDs(since: nowNanoseconds() - ids.window))
            events = EventPipeline(
                store: eventStore, ids: ids, retention: configuration.events.retention.nanoseconds,
                maxFuture: rollupConfig.maxFuture, maxIndexed: configuration.events.maxIndexed,
                unindexed: stats.eventsUnindexed)
        } catch {
            throw StartupError("cannot open the event store: \(error)")
        }
        let deadLetterQueue = DeadLetterQueue(maxCount: configuration.deadLetters.maxPending)
        let deadLetters: DeadLetterStore
        do {
            deadLetters = try DeadLetterStore(path: store.path)
        } catch {
            throw StartupError("cannot open the dead letters: \(error)")
        }
        let pipeline = IngestPipeline(
            engine: engine, sink: guarded, stats: stats, wal: wal, dedup: dedup, events: events,
            maxLineLength: configuration.limits.maxLineLength.bytes, deadLetters: deadLetterQueue)
        events.pauseIndexing()
        try replay(wal: wal, store: store, pipeline: pipeline)
        do {
            let loaded = try events.loadIndex()
            if loaded > 0 { logger.info("events: \(loaded) stored events indexed") }
        } catch {
            throw StartupError("cannot read the stored events: \(error)")
        }
        // Always made (idle while [events.clickhouse] url is empty), so a reload can turn it on.
        let clickhouse: EventForwarder
        do {
            clickhouse = try EventForwarder(
                store: events.store, configuration: configuration.events.clickhouse.clickhouseConfiguration,
                logger: logger, gate: pipeline.gate)
        } catch {
            throw StartupError("cannot read the events forwarding cursor: \(error)")
        }
        let fleet = FleetAnalytics(
            configuration: configuration.events.clickhouse.clickhouseConfiguration,
            timeout: Int(configuration.query.timeout.nanoseconds / 1_000_000_000),
            maxRows: configuration.query.maxRowLimit)
        let group = MultiThreadedEventLoopGroup.singleton
        let forwarder =
            configuration.influx.url.isEmpty
            ? nil
            : Forwarder(
                store: store, configuration: configuration.influx.forwarderConfiguration, logger: logger,
                deadLetters: deadLetterQueue,
                onRefused: { stats.rejected[RejectReason.rejectedByInfluxDB.ordinal].add($0) }, gate: pipeline.gate)

        // Services in dependency order: storage/ticker first, listeners last, so a graceful shutdown stops
        // intake first and flushes last.
        var services: [any Service] = []
        var listeners: [String: String] = [:]
        let settings = RuntimeSettings(configuration)
        let httpListening = ReadyLatch()
        var udpPort: Int?

        if let address = HostPort(configuration.listen.udp) {
            let channels = try await Listeners.bindUDP(
                address,
                sockets: configuration.listen.udpSockets == 0
                    ? System.coreCount : configuration.listen.udpSockets,
                receiveBuffer: configuration.limits.udpReceiveBuffer.bytes,
                context: pipeline,
                group: group
            )
            let bound = channels[0].localAddress?.port ?? address.port
            udpPort = bound
            listeners["udp"] = "\(address.host):\(bound)"
            for (i, channel) in channels.enumerated() {
                services.append(ChannelService(name: i == 0 ? "udp" : "udp-\(i)", channel: channel, logger: logger))
            }
        }
        if let address = HostPort(configuration.listen.tcp) {
            let channel = try await Listeners.bindTCP(
                address,
                maxConnections: tcpConnections,
                context: pipeline,
                group: group
            )
            listeners["tcp"] = "\(address.host):\(channel.localAddress?.port ?? address.port)"
            services.append(ChannelService(name: "tcp", channel: channel, logger: logger))
        }
        let cores = System.coreCount
        let queries = QueryRunner(
            limit: configuration.query.maxConcurrentQueries, timeout: configuration.query.timeout,
            rowLimit: configuration.query.maxRowLimit, threads: cores, stats: stats)
        let bodyWork = NIOThreadPool(numberOfThreads: max(2, cores))
        bodyWork.start()
        if let address = HostPort(configuration.listen.http) {
            listeners["http"] = address.description
            let state = HTTPState(
                configuration: configuration,
                engine: engine,
                store: guarded,
                pipeline: pipeline,
                stats: stats,
                listeners: listeners,
                logger: logger,
                forwarder: forwarder,
                events: events,
                clickhouse: clickhouse,
                fleet: fleet,
                settings: settings,
                queries: queries,
                bodies: AsyncPermits(
                    configuration.http.maxConcurrentBodies,
                    wait: .nanoseconds(configuration.http.readHeaderTimeout.nanoseconds)),
                bodyWork: bodyWork,
                deadLetters: deadLetters,
                deadLetterQueue: deadLetterQueue
            )
            var httpLogger = logger
            httpLogger.logLevel = max(logger.logLevel, .warning)  // no line per request
            let http = configuration.http
            let app = Application(
                router: HTTPRoutes.router(state),
                server: GuardedHTTP1Channel.builder(
                    idle: .nanoseconds(http.idleTimeout.nanoseconds),
                    header: .nanoseconds(http.readHeaderTimeout.nanoseconds),
                    read: .nanoseconds(http.readTimeout.nanoseconds), stats: stats),
                configuration: .init(
                    address: .hostname(address.host, port: address.port), serverName: "metricsd",
                    availableConnectionsDelegate: HTTPConnectionLimit(limit: httpConnections, stats: stats)),
                onServerRunning: { _ in httpListening.open() },
                logger: httpLogger
            )
            // Connections that never finish a request (slow or stuck clients) must not hold the shutdown.
            services.append(BoundedShutdown(inner: app, grace: .seconds(5)))
        } else {
            httpListening.open()
        }
        // First in the list (after the forwarder), so they stop after the listeners, in reverse: the daemon's
        // figures, then maintenance, then the flush service, which stores every open bucket last.
        var background = BackgroundServices(
            engine: engine, pipeline: pipeline, store: guarded, wal: wal, dedup: dedup, events: events, stats: stats,
            retention1m: configuration.storage.retention1m.nanoseconds,
            retention1h: configuration.storage.retention1h.nanoseconds, logger: logger, udpPort: udpPort,
            seriesIdle: configuration.rollup.seriesIdle.nanoseconds)
        background.clickhouse = clickhouse
        background.deadLetters = (deadLetters, deadLetterQueue, configuration.deadLetters)
        services.insert(contentsOf: background.services, at: 0)
        // Before the flush service in the list, so it stops after it: the events stored last are sent too.
        services.insert(EventForwarderService(forwarder: clickhouse), at: 0)
        if let forwarder {
            // First in the list, so it stops last: after the flush service stored every open minute it sends what the
            // outbox holds (bounded), so a replica scaled away leaves nothing unsent when InfluxDB is up.
            services.insert(ForwarderService(forwarder: forwarder), at: 0)
        }
        let notifier = SystemdNotifier()
        services.append(
            ReloadService(
                load: reload, initial: configuration, settings: settings, forwarder: forwarder,
                clickhouse: clickhouse, fleet: fleet, notifier: notifier, logger: logger))
        // Last: told of a shutdown first, so STOPPING=1 goes out before the listeners close.
        let summary = Server.statusLine(listeners: listeners, engine: engine, stats: stats)
        services.append(
            NotifyService(notifier: notifier, stats: stats, status: summary, listening: httpListening))
        let udpText = listeners["udp"] ?? "off"
        logger.info(
            "metricsd \(metricsdVersion) listening: udp \(udpText), tcp \(listeners["tcp"] ?? "off"), http \(listeners["http"] ?? "off"); data under \(configuration.dataDir)"
        )
        if let udp = listeners["udp"], let hp = HostPort(udp) {
            logger.info("send a metric: echo 'cpu,host=a usage=1' | nc -u -w0 \(hp.host) \(hp.port)")
        }

        let serviceGroup = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0) },
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: Logger(label: "metricsd.lifecycle", factory: { _ in SwiftLogNoOpLogHandler() })
            )
        )
        var failure: (any Error)?
        do {
            try await serviceGroup.run()
        } catch {
            failure = error
        }
        await queries.shutdown()
        try? await bodyWork.shutdownGracefully()
        if let failure { throw failure }
        logger.info("clean shutdown")
    }

    /// The one-line STATUS= shown by `systemctl status`: listeners, series, points so far.
    static func statusLine(listeners: [String: String], engine: RollupEngine, stats: Stats) -> @Sendable () -> String {
        let bound = ["udp", "tcp", "http"].compactMap { name in listeners[name].map { "\(name) \($0)" } }
            .joined(separator: ", ")
        return {
            let points = [stats.udp, stats.tcp, stats.http].reduce(Int64(0)) { $0 + $1.points.current }
            return
                "listening on \(bound.isEmpty ? "nothing" : bound); \(engine.activeSeries) series, \(points) points"
        }
    }

    /// Opens the write-ahead log and replays what the store does not hold yet: records from the recorded replay
    /// position, skipping every line whose bucket was already stored with that record in it (its watermark), so
    /// nothing is counted twice. A torn or corrupt tail is truncated and reported.
    func replay(wal: WriteAheadLog, store: SQLiteStore, pipeline: IngestPipeline) throws {
        let (from, watermarks) = try store.walState()
        let recovery: WALRecovery
        do {
            recovery = try wal.open(replayFrom: from)
        } catch {
            throw StartupError("cannot open the write-ahead log: \(error)")
        }
        for problem in recovery.problems { logger.warning("wal: \(problem)") }
        pipeline.stats.walRecordsQuarantined.add(recovery.skippedRecords)
        guard !recovery.records.isEmpty else { return }
        let (applied, skipped) = pipeline.replay(recovery.records, watermarks: watermarks)
        do {
            try pipeline.events?.flush()
        } catch {
            logger.error("storing replayed events failed (kept in memory, retrying): \(error)")
        }
        logger.notice(
            "wal: replayed \(recovery.records.count) records (\(applied) lines or events applied, \(skipped) already stored)"
        )
    }

    func makeDataDirectory(_ path: String) throws {
        var current = ""
        for part in path.split(separator: "/", omittingEmptySubsequences: false) {
            current += (current.isEmpty && path.hasPrefix("/") ? "/" : (current.isEmpty ? "" : "/")) + part
            if part.isEmpty || part == "." { continue }
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw StartupError("cannot create data_dir \(path): \(String(cString: strerror(errno)))")
            }
        }
    }
}

/// Runs a service; once a graceful shutdown begins, gives it `grace` to finish, then cancels it. Hummingbird's
/// graceful shutdown waits for every open connection to finish its request, which a slow client (slowloris) never
/// does: without this bound, SIGTERM would hang until systemd's SIGKILL, and the open minutes would not be stored.
struct BoundedShutdown: Service {
    let inner: any Service
    let grace: Duration

    func run() async throws {
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await inner.run()
                return true
            }
            group.addTask {
                try await gracefulShutdown()
                try await Task.sleep(for: grace)
                return false
            }
            // Whichever ends first: the service (done), or the grace period (cancel the service).
            let finished = try await group.next()
            group.cancelAll()
            if finished == false { _ = try? await group.next() }
        }
    }
}

/// Runs the forwarder's thread for the daemon's lifetime.
struct ForwarderService: Service {
    let forwarder: Forwarder

    func run() async throws {
        forwarder.start()
        try? await gracefulShutdown()
        // The ticker has stopped and stored everything (it comes later in the list, so it stopped first).
        forwarder.wake()
        await Task.detached { forwarder.stop(drain: ForwarderService.drain) }.value
    }

    /// The longest a shutdown waits for the outbox to be sent (systemd's TimeoutStopSec is 60 s).
    static let drain: Int64 = 20_000_000_000
}

/// Runs the events forwarder's thread for the daemon's lifetime; at shutdown it sends what is stored (bounded).
struct EventForwarderService: Service {
    let forwarder: EventForwarder

    func run() async throws {
        forwarder.start()
        try? await gracefulShutdown()
        forwarder.wake()
        await Task.detached { forwarder.stop(drain: ForwarderService.drain) }.value
    }
}

extension Configuration.ClickHouse {
    var clickhouseConfiguration: ClickHouseConfiguration {
        var c = ClickHouseConfiguration()
        c.url = url
        c.database = database
        c.table = table
        c.createTable = createTable
        c.username = username
        c.password = password
        c.batchSize = batchSize
        c.flushInterval = flushInterval.nanoseconds
        c.timeout = max(1, Int(timeout.nanoseconds / 1_000_000_000))
        c.maxBacklog = maxBacklog.bytes
        c.backlogPolicy = BacklogPolicy(rawValue: backlogPolicy) ?? .dropOldest
        return c
    }
}

extension Configuration.Influx {
    var forwarderConfiguration: ForwarderConfiguration {
        var f = ForwarderConfiguration()
        f.url = url
        f.version = version
        f.database = database
        f.retentionPolicy = retentionPolicy
        f.username = username
        f.password = password
        f.org = org
        f.bucket = bucket
        f.token = token
        f.measurementSuffix = measurementSuffix
        f.instanceTag = instanceTag
        f.createDatabase = createDatabase
        f.batchSize = batchSize
        f.contentEncoding = contentEncoding
        f.flushInterval = flushInterval.nanoseconds
        f.aggregates = aggregates
        f.retryInitial = retryInitial.nanoseconds
        f.retryMax = retryMax.nanoseconds
        f.timeout = max(1, Int(timeout.nanoseconds / 1_000_000_000))
        f.caFile = caFile
        f.insecureSkipVerify = insecureSkipVerify
        f.maxBacklog = maxBacklog.bytes
        f.backlogPolicy = BacklogPolicy(rawValue: backlogPolicy) ?? .dropOldest
        return f
    }
}
