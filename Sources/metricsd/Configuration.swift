import API
import Foundation
import Synchronization
import TOMLKit

/// metricsd's configuration: every key is optional; the defaults here are the embedded defaults (and what
/// `metricsd.example.toml` documents — a test checks the two agree).
struct Configuration: Hashable, Sendable {
    struct Listen: Hashable, Sendable {
        var udp = "127.0.0.1:8089"
        var tcp = "127.0.0.1:8094"
        var http = "127.0.0.1:8186"
        /// UDP sockets on the same port (SO_REUSEPORT), each read by its own event loop; 0: one per core.
        var udpSockets = 0
    }
    struct Rollup: Hashable, Sendable {
        var interval = ConfigDuration.seconds(60)
        var lateness = ConfigDuration.seconds(120)
        var maxSeries = 1_000_000
        var maxFieldsPerSeries = 1024
        var maxSeriesPerMeasurement = 0
        var maxOverflowSeries = 1000
        var seriesIdle = ConfigDuration.seconds(3600)
    }
    struct Storage: Hashable, Sendable {
        var durability = "batch"
        var retention1m = ConfigDuration.seconds(7 * 86_400)
        var retention1h = ConfigDuration.seconds(400 * 86_400)
        var dedupWindow = ConfigDuration.seconds(600)
    }
    struct Events: Hashable, Sendable {
        var dedupWindow = ConfigDuration.seconds(86_400)
        var retention = ConfigDuration.seconds(90 * 86_400)
        var maxIndexed = 10_000_000
        var clickhouse = ClickHouse()
    }
    /// `[events.clickhouse]`: every instance's events in one ClickHouse table, for fleet-wide answers.
    struct ClickHouse: Hashable, Sendable {
        var url = ""
        var database = "metricsd"
        var table = "events"
        var createTable = true
        var username = "default"
        var password = ""
        var batchSize = 10_000
        var flushInterval = ConfigDuration.seconds(1)
        var timeout = ConfigDuration.seconds(30)
        var maxBacklog = ConfigSize(bytes: 1 << 30)
        var backlogPolicy = "drop_oldest"
    }
    /// `[query]`: what one query may cost (InfluxDB's names where it has the limit).
    struct Query: Hashable, Sendable {
        var maxSelectSeries = 100_000
        var maxSelectBuckets = 100_000
        var maxRowLimit = 1_000_000
        var maxStatements = 100
        var maxConcurrentQueries = 16
        var timeout = ConfigDuration.seconds(60)
        var maxNestingDepth = 100
        var maxQuerySize = ConfigSize(bytes: 1 << 20)
    }
    /// `[http]`: what one connection or request may cost.
    struct HTTP: Hashable, Sendable {
        var maxBodySize = ConfigSize(bytes: 32 << 20)
        var maxConnections = 1024
        var readHeaderTimeout = ConfigDuration.seconds(10)
        var readTimeout = ConfigDuration.seconds(60)
        var idleTimeout = ConfigDuration.seconds(120)
        var maxConcurrentBodies = 8
    }
    struct Influx: Hashable, Sendable {
        var url = ""
        var version = 1
        var database = "metrics"
        var org = ""
        var bucket = ""
        var token = ""
        var measurementSuffix = "_1m"
        var instanceTag = ""
        var createDatabase = false
        var batchSize = 5000
        var contentEncoding = "gzip"
        var flushInterval = ConfigDuration.seconds(10)
        var aggregates = ["count", "sum", "min", "max", "mean", "stddev", "first", "last", "p50", "p90", "p99"]
        var retentionPolicy = ""
        var username = ""
        var password = ""
        var timeout = ConfigDuration.seconds(30)
        var retryInitial = ConfigDuration.seconds(1)
        var retryMax = ConfigDuration.seconds(60)
        var caFile = ""
        var insecureSkipVerify = false
        var maxBacklog = ConfigSize(bytes: 1 << 30)
        var backlogPolicy = "drop_oldest"
    }
    struct Auth: Hashable, Sendable {
        var token = ""
    }
    struct Limits: Hashable, Sendable {
        var maxLineLength = ConfigSize(bytes: 1 << 20)
        var maxConnections = 1024
        var udpReceiveBuffer = ConfigSize(bytes: 8 << 20)
        /// Rejected lines a `?results=lines` write (and every events body) lists.
        var maxReportedErrors = 1000
    }
    struct DeadLetters: Hashable, Sendable {
        var maxRows = 100_000
        var retention = ConfigDuration(nanoseconds: 7 * 86_400 * 1_000_000_000)
        /// Refused lines held in memory until the next store (each second); past it the oldest go, counted.
        var maxPending = 10_000
    }
    struct Log: Hashable, Sendable {
        var level = "info"
    }

    var dataDir = "./var"
    var listen = Listen()
    var rollup = Rollup()
    var storage = Storage()
    var events = Events()
    var query = Query()
    var http = HTTP()
    var influx = Influx()
    var auth = Auth()
    var limits = Limits()
    var deadLetters = DeadLetters()
    var log = Log()
}

/// A configuration problem, naming the key.
struct ConfigError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension Configuration {
    /// Parses TOML text over the defaults. Unknown keys and wrong types are errors that name the key.
    init(toml text: String) throws(ConfigError) {
        self.init()
        if let (line, column, reason) = Self.unparseable(text) {
            throw ConfigError("invalid TOML at line \(line), column \(column): \(reason)")
        }
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigError(
                "invalid TOML at line \(error.source.begin.line), column \(error.source.begin.column): \(error.description)"
            )
        } catch {
            throw ConfigError("invalid TOML: \(error)")
        }
        var reader = TableReader(table: table, path: "")
        dataDir = try reader.string("data_dir", dataDir)
        if var t = try reader.table("listen") {
            listen.udp = try t.string("udp", listen.udp)
            listen.tcp = try t.string("tcp", listen.tcp)
            listen.http = try t.string("http", listen.http)
            listen.udpSockets = try t.int("udp_sockets", listen.udpSockets)
            try t.finish()
        }
        if var t = try reader.table("rollup") {
            rollup.interval = try t.duration("interval", rollup.interval)
            rollup.lateness = try t.duration("lateness", rollup.lateness)
            rollup.maxSeries = try t.int("max_series", rollup.maxSeries)
            rollup.maxFieldsPerSeries = try t.int("max_fields_per_series", rollup.maxFieldsPerSeries)
            rollup.maxSeriesPerMeasurement = try t.int(
                "max_series_per_measurement", rollup.maxSeriesPerMeasurement)
            rollup.maxOverflowSeries = try t.int("max_overflow_series", rollup.maxOverflowSeries)
            rollup.seriesIdle = try t.duration("series_idle", rollup.seriesIdle)
            try t.finish()
        }
        if var t = try reader.table("storage") {
            storage.durability = try t.string("durability", storage.durability)
            storage.retention1m = try t.duration("retention_1m", storage.retention1m)
            storage.retention1h = try t.duration("retention_1h", storage.retention1h)
            storage.dedupWindow = try t.duration("dedup_window", storage.dedupWindow)
            try t.finish()
        }
        if var t = try reader.table("events") {
            events.dedupWindow = try t.duration("dedup_window", events.dedupWindow)
            events.retention = try t.duration("retention", events.retention)
            events.maxIndexed = try t.int("max_indexed", events.maxIndexed)
            if var c = try t.table("clickhouse") {
                let ch = events.clickhouse
                events.clickhouse.url = try c.string("url", ch.url)
                events.clickhouse.database = try c.string("database", ch.database)
                events.clickhouse.table = try c.string("table", ch.table)
                events.clickhouse.createTable = try c.bool("create_table", ch.createTable)
                events.clickhouse.username = try c.string("username", ch.username)
                events.clickhouse.password = try c.string("password", ch.password)
                events.clickhouse.batchSize = try c.int("batch_size", ch.batchSize)
                events.clickhouse.flushInterval = try c.duration("flush_interval", ch.flushInterval)
                events.clickhouse.timeout = try c.duration("timeout", ch.timeout)
                events.clickhouse.maxBacklog = try c.size("max_backlog", ch.maxBacklog)
                events.clickhouse.backlogPolicy = try c.string("backlog_policy", ch.backlogPolicy)
                try c.finish()
            }
            try t.finish()
        }
        if var t = try reader.table("query") {
            query.maxSelectSeries = try t.int("max_select_series", query.maxSelectSeries)
            query.maxSelectBuckets = try t.int("max_select_buckets", query.maxSelectBuckets)
            query.maxRowLimit = try t.int("max_row_limit", query.maxRowLimit)
            query.maxStatements = try t.int("max_statements", query.maxStatements)
            query.maxConcurrentQueries = try t.int("max_concurrent_queries", query.maxConcurrentQueries)
            query.timeout = try t.duration("timeout", query.timeout)
            query.maxNestingDepth = try t.int("max_nesting_depth", query.maxNestingDepth)
            query.maxQuerySize = try t.size("max_query_size", query.maxQuerySize)
            try t.finish()
        }
        var httpSetsBodySize = false
        if var t = try reader.table("http") {
            httpSetsBodySize = t.has("max_body_size")
            http.maxBodySize = try t.size("max_body_size", http.maxBodySize)
            http.maxConnections = try t.int("max_connections", http.maxConnections)
            http.readHeaderTimeout = try t.duration("read_header_timeout", http.readHeaderTimeout)
            http.readTimeout = try t.duration("read_timeout", http.readTimeout)
            http.idleTimeout = try t.duration("idle_timeout", http.idleTimeout)
            http.maxConcurrentBodies = try t.int("max_concurrent_bodies", http.maxConcurrentBodies)
            try t.finish()
        }
        if var t = try reader.table("influx") {
            influx.url = try t.string("url", influx.url)
            influx.version = try t.int("version", influx.version)
            influx.database = try t.string("database", influx.database)
            influx.org = try t.string("org", influx.org)
            influx.bucket = try t.string("bucket", influx.bucket)
            influx.token = try t.string("token", influx.token)
            influx.measurementSuffix = try t.string("measurement_suffix", influx.measurementSuffix)
            influx.instanceTag = try t.string("instance_tag", influx.instanceTag)
            influx.createDatabase = try t.bool("create_database", influx.createDatabase)
            influx.batchSize = try t.int("batch_size", influx.batchSize)
            influx.contentEncoding = try t.string("content_encoding", influx.contentEncoding)
            influx.flushInterval = try t.duration("flush_interval", influx.flushInterval)
            influx.aggregates = try t.strings("aggregates", influx.aggregates)
            influx.retentionPolicy = try t.string("retention_policy", influx.retentionPolicy)
            influx.username = try t.string("username", influx.username)
            influx.password = try t.string("password", influx.password)
            influx.timeout = try t.duration("timeout", influx.timeout)
            influx.retryInitial = try t.duration("retry_initial", influx.retryInitial)
            influx.retryMax = try t.duration("retry_max", influx.retryMax)
            influx.caFile = try t.string("ca_file", influx.caFile)
            influx.insecureSkipVerify = try t.bool("insecure_skip_verify", influx.insecureSkipVerify)
            influx.maxBacklog = try t.size("max_backlog", influx.maxBacklog)
            influx.backlogPolicy = try t.string("backlog_policy", influx.backlogPolicy)
            try t.finish()
        }
        if var t = try reader.table("auth") {
            auth.token = try t.string("token", auth.token)
            try t.finish()
        }
        if var t = try reader.table("limits") {
            // Where max_body_size was before [http] existed; still read (the [http] key wins when both are set).
            let legacyBodySize = try t.size("max_body_size", http.maxBodySize)
            if !httpSetsBodySize { http.maxBodySize = legacyBodySize }
            limits.maxLineLength = try t.size("max_line_length", limits.maxLineLength)
            limits.maxConnections = try t.int("max_connections", limits.maxConnections)
            limits.udpReceiveBuffer = try t.size("udp_receive_buffer", limits.udpReceiveBuffer)
            limits.maxReportedErrors = try t.int("max_reported_errors", limits.maxReportedErrors)
            try t.finish()
        }
        if var t = try reader.table("dead_letters") {
            deadLetters.maxRows = try t.int("max_rows", deadLetters.maxRows)
            deadLetters.retention = try t.duration("retention", deadLetters.retention)
            deadLetters.maxPending = try t.int("max_pending", deadLetters.maxPending)
            try t.finish()
        }
        if var t = try reader.table("log") {
            log.level = try t.string("level", log.level)
            try t.finish()
        }
        try reader.finish()
        try validate()
    }

    /// Rejects bad values and bad combinations before anything starts.
    func validate() throws(ConfigError) {
        for (key, address) in [("listen.udp", listen.udp), ("listen.tcp", listen.tcp), ("listen.http", listen.http)]
        where !address.isEmpty {
            guard HostPort(address) != nil else {
                throw ConfigError("'\(key)' must be \"host:port\" (or \"\" to disable), got \"\(address)\"")
            }
        }
        guard rollup.interval.nanoseconds >= 1_000_000_000 else {
            throw ConfigError("'rollup.interval' must be at least 1s, got \(rollup.interval)")
        }
        guard rollup.lateness.nanoseconds >= 0 else { throw ConfigError("'rollup.lateness' must not be negative") }
        guard (0...64).contains(listen.udpSockets) else {
            throw ConfigError("'listen.udp_sockets' must be 0 (one per core) to 64, got \(listen.udpSockets)")
        }
        guard rollup.maxSeries > 0 else { throw ConfigError("'rollup.max_series' must be positive") }
        guard ["fsync", "batch", "none"].contains(storage.durability) else {
            throw ConfigError(
                "'storage.durability' must be \"fsync\", \"batch\" or \"none\", got \"\(storage.durability)\"")
        }
        guard storage.retention1m.nanoseconds >= rollup.interval.nanoseconds else {
            throw ConfigError("'storage.retention_1m' must be at least 'rollup.interval'")
        }
        guard [1, 2].contains(influx.version) else {
            throw ConfigError("'influx.version' must be 1 or 2, got \(influx.version)")
        }
        if influx.version == 2 && !influx.url.isEmpty && (influx.org.isEmpty || influx.bucket.isEmpty) {
            throw ConfigError("'influx.version' = 2 needs 'influx.org' and 'influx.bucket'")
        }
        guard influx.batchSize > 0 else { throw ConfigError("'influx.batch_size' must be positive") }
        guard ["gzip", "identity"].contains(influx.contentEncoding) else {
            throw ConfigError(
                "'influx.content_encoding' must be \"gzip\" or \"identity\", got \"\(influx.contentEncoding)\"")
        }
        let known = ["count", "sum", "min", "max", "mean", "stddev", "first", "last"]
        for a in influx.aggregates where !known.contains(a) && !(a.hasPrefix("p") && Double(a.dropFirst()) != nil) {
            throw ConfigError(
                "'influx.aggregates' has unknown aggregate \"\(a)\" (known: \(known.joined(separator: ", ")), p<N>)")
        }
        guard http.maxBodySize.bytes >= 1024 else {
            throw ConfigError("'http.max_body_size' must be at least 1KiB")
        }
        guard rollup.maxFieldsPerSeries > 0 else {
            throw ConfigError("'rollup.max_fields_per_series' must be positive")
        }
        guard rollup.maxSeriesPerMeasurement >= 0, rollup.maxOverflowSeries >= 0 else {
            throw ConfigError(
                "'rollup.max_series_per_measurement' and 'rollup.max_overflow_series' must not be negative")
        }
        guard rollup.seriesIdle.nanoseconds >= 2 * (rollup.interval.nanoseconds + rollup.lateness.nanoseconds) else {
            throw ConfigError("'rollup.series_idle' must be at least twice 'rollup.interval' + 'rollup.lateness'")
        }
        guard events.maxIndexed > 0 else { throw ConfigError("'events.max_indexed' must be positive") }
        let ch = events.clickhouse
        if !ch.url.isEmpty {
            guard let scheme = ch.url.split(separator: ":").first, ["http", "https"].contains(scheme.lowercased()),
                ch.url.contains("://")
            else {
                throw ConfigError("'events.clickhouse.url' must be an http:// or https:// URL, got \"\(ch.url)\"")
            }
        }
        guard !ch.database.isEmpty, !ch.table.isEmpty else {
            throw ConfigError("'events.clickhouse.database' and 'events.clickhouse.table' must not be empty")
        }
        guard (1...1_000_000).contains(ch.batchSize) else {
            throw ConfigError("'events.clickhouse.batch_size' must be 1 to 1000000, got \(ch.batchSize)")
        }
        guard ch.flushInterval.nanoseconds >= 10_000_000 else {
            throw ConfigError("'events.clickhouse.flush_interval' must be at least 10ms")
        }
        guard ch.timeout.nanoseconds >= 1_000_000_000 else {
            throw ConfigError("'events.clickhouse.timeout' must be at least 1s")
        }
        for (key, value) in [
            ("query.max_select_series", query.maxSelectSeries), ("query.max_select_buckets", query.maxSelectBuckets),
            ("query.max_row_limit", query.maxRowLimit), ("query.max_statements", query.maxStatements),
            ("query.max_concurrent_queries", query.maxConcurrentQueries),
            ("query.max_nesting_depth", query.maxNestingDepth), ("http.max_connections", http.maxConnections),
            ("http.max_concurrent_bodies", http.maxConcurrentBodies),
            ("query.max_query_size", query.maxQuerySize.bytes),
        ] where value <= 0 {
            throw ConfigError("'\(key)' must be positive")
        }
        for (key, value) in [
            ("query.timeout", query.timeout), ("http.read_header_timeout", http.readHeaderTimeout),
            ("http.read_timeout", http.readTimeout), ("http.idle_timeout", http.idleTimeout),
        ] where value.nanoseconds < 1_000_000 {
            throw ConfigError("'\(key)' must be at least 1ms")
        }
        guard limits.maxLineLength.bytes >= 64 else {
            throw ConfigError("'limits.max_line_length' must be at least 64B")
        }
        for (key, policy) in [
            ("influx.backlog_policy", influx.backlogPolicy),
            ("events.clickhouse.backlog_policy", events.clickhouse.backlogPolicy),
        ] where !["drop_oldest", "drop_newest", "block"].contains(policy) {
            throw ConfigError("'\(key)' must be drop_oldest, drop_newest or block")
        }
        guard events.clickhouse.maxBacklog.bytes > 0 else {
            throw ConfigError("'events.clickhouse.max_backlog' must be positive")
        }
        guard influx.maxBacklog.bytes > 0 else { throw ConfigError("'influx.max_backlog' must be positive") }
        guard limits.maxConnections > 0 else { throw ConfigError("'limits.max_connections' must be positive") }
        guard limits.maxReportedErrors >= 0 else {
            throw ConfigError("'limits.max_reported_errors' must not be negative")
        }
        guard deadLetters.maxRows >= 0 else { throw ConfigError("'dead_letters.max_rows' must not be negative") }
        guard deadLetters.maxPending > 0 else { throw ConfigError("'dead_letters.max_pending' must be positive") }
        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(log.level) else {
            throw ConfigError("'log.level' must be one of trace, debug, info, notice, warning, error, critical")
        }
    }

    /// The effective settings as TOML (what `check-config` prints).
    var tomlText: String {
        /// A TOML basic string: quote and backslash escaped, and every control character but tab (TOML allows
        /// none of them raw; found by the config fuzzer: a value holding one printed as TOML that did not parse).
        func q(_ s: String) -> String {
            var out = "\""
            for scalar in s.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\t": out.unicodeScalars.append(scalar)
                case "\u{0}"..."\u{1F}", "\u{7F}":
                    let hex = String(scalar.value, radix: 16, uppercase: true)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                default: out.unicodeScalars.append(scalar)
                }
            }
            return out + "\""
        }
        return """
            data_dir = \(q(dataDir))

            [listen]
            udp = \(q(listen.udp))
            tcp = \(q(listen.tcp))
            http = \(q(listen.http))
            udp_sockets = \(listen.udpSockets)

            [rollup]
            interval = \(q(rollup.interval.description))
            lateness = \(q(rollup.lateness.description))
            max_series = \(rollup.maxSeries)
            max_fields_per_series = \(rollup.maxFieldsPerSeries)
            max_series_per_measurement = \(rollup.maxSeriesPerMeasurement)
            max_overflow_series = \(rollup.maxOverflowSeries)
            series_idle = \(q(rollup.seriesIdle.description))

            [storage]
            durability = \(q(storage.durability))
            retention_1m = \(q(storage.retention1m.description))
            retention_1h = \(q(storage.retention1h.description))
            dedup_window = \(q(storage.dedupWindow.description))

            [events]
            dedup_window = \(q(events.dedupWindow.description))
            retention = \(q(events.retention.description))
            max_indexed = \(events.maxIndexed)

            [events.clickhouse]
            url = \(q(events.clickhouse.url))
            database = \(q(events.clickhouse.database))
            table = \(q(events.clickhouse.table))
            create_table = \(events.clickhouse.createTable)
            username = \(q(events.clickhouse.username))
            password = \(q(events.clickhouse.password.isEmpty ? "" : "<redacted>"))
            batch_size = \(events.clickhouse.batchSize)
            flush_interval = \(q(events.clickhouse.flushInterval.description))
            timeout = \(q(events.clickhouse.timeout.description))
            max_backlog = \(q(events.clickhouse.maxBacklog.description))
            backlog_policy = \(q(events.clickhouse.backlogPolicy))

            [query]
            max_select_series = \(query.maxSelectSeries)
            max_select_buckets = \(query.maxSelectBuckets)
            max_row_limit = \(query.maxRowLimit)
            max_statements = \(query.maxStatements)
            max_concurrent_queries = \(query.maxConcurrentQueries)
            timeout = \(q(query.timeout.description))
            max_nesting_depth = \(query.maxNestingDepth)
            max_query_size = \(q(query.maxQuerySize.description))

            [http]
            max_body_size = \(q(http.maxBodySize.description))
            max_connections = \(http.maxConnections)
            read_header_timeout = \(q(http.readHeaderTimeout.description))
            read_timeout = \(q(http.readTimeout.description))
            idle_timeout = \(q(http.idleTimeout.description))
            max_concurrent_bodies = \(http.maxConcurrentBodies)

            [influx]
            url = \(q(influx.url))
            version = \(influx.version)
            database = \(q(influx.database))
            org = \(q(influx.org))
            bucket = \(q(influx.bucket))
            token = \(q(influx.token.isEmpty ? "" : "<redacted>"))
            measurement_suffix = \(q(influx.measurementSuffix))
            instance_tag = \(q(influx.instanceTag))
            create_database = \(influx.createDatabase)
            batch_size = \(influx.batchSize)
            content_encoding = \(q(influx.contentEncoding))
            flush_interval = \(q(influx.flushInterval.description))
            aggregates = [\(influx.aggregates.map(q).joined(separator: ", "))]
            retention_policy = \(q(influx.retentionPolicy))
            username = \(q(influx.username))
            password = \(q(influx.password.isEmpty ? "" : "<redacted>"))
            timeout = \(q(influx.timeout.description))
            retry_initial = \(q(influx.retryInitial.description))
            retry_max = \(q(influx.retryMax.description))
            ca_file = \(q(influx.caFile))
            insecure_skip_verify = \(influx.insecureSkipVerify)
            max_backlog = \(q(influx.maxBacklog.description))
            backlog_policy = \(q(influx.backlogPolicy))

            [auth]
            token = \(q(auth.token.isEmpty ? "" : "<redacted>"))

            [limits]
            max_line_length = \(q(limits.maxLineLength.description))
            max_connections = \(limits.maxConnections)
            udp_receive_buffer = \(q(limits.udpReceiveBuffer.description))
            max_reported_errors = \(limits.maxReportedErrors)

            [dead_letters]
            max_rows = \(deadLetters.maxRows)
            retention = \(q(deadLetters.retention.description))
            max_pending = \(deadLetters.maxPending)

            [log]
            level = \(q(log.level))

            """
    }
}

/// `host:port`, `[v6]:port`.
struct HostPort: Hashable, Sendable, CustomStringConvertible {
    var host: String
    var port: Int

    init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    init?(_ text: String) {
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":"), let p = Int(rest.dropFirst()) else { return nil }
            port = p
        } else {
            guard let colon = text.lastIndex(of: ":"), let p = Int(text[text.index(after: colon)...]) else {
                return nil
            }
            host = String(text[..<colon])
            port = p
        }
        guard (0...65535).contains(port), !host.isEmpty else { return nil }
    }

    var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Reads keys out of a TOML table, remembering which were used so unknown keys can be reported.
private struct TableReader {
    let table: TOMLTable
    let path: String
    var used: Set<String> = []

    init(table: TOMLTable, path: String) {
        self.table = table
        self.path = path
    }

    func name(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func has(_ key: String) -> Bool { table[key] != nil }

    mutating func value(_ key: String) -> (any TOMLValueConvertible)? {
        used.insert(key)
        return table[key]
    }

    func typeName(_ v: any TOMLValueConvertible) -> String {
        switch v.type {
        case .table: "a table"
        case .array: "an array"
        case .string: "a string"
        case .int: "an integer"
        case .double: "a float"
        case .bool: "a boolean"
        default: "a date/time"
        }
    }

    mutating func string(_ key: String, _ fallback: String) throws(ConfigError) -> String {
        guard let v = value(key) else { return fallback }
        guard let s = v.string else { throw ConfigError("'\(name(key))' must be a string, got \(typeName(v))") }
        return s
    }

    mutating func int(_ key: String, _ fallback: Int) throws(ConfigError) -> Int {
        guard let v = value(key) else { return fallback }
        guard let i = v.int else { throw ConfigError("'\(name(key))' must be an integer, got \(typeName(v))") }
        return i
    }

    mutating func bool(_ key: String, _ fallback: Bool) throws(ConfigError) -> Bool {
        guard let v = value(key) else { return fallback }
        guard let b = v.bool else { throw ConfigError("'\(name(key))' must be true or false, got \(typeName(v))") }
        return b
    }

    mutating func duration(_ key: String, _ fallback: ConfigDuration) throws(ConfigError) -> ConfigDuration {
        guard let v = value(key) else { return fallback }
        guard let s = v.string else {
            throw ConfigError("'\(name(key))' must be a duration string like \"1m\", got \(typeName(v))")
        }
        guard let d = ConfigDuration(parsing: s) else {
            throw ConfigError(
                "'\(name(key))' is not a duration: \"\(s)\" (use e.g. \"500ms\", \"10s\", \"1m\", \"7d\")")
        }
        return d
    }

    mutating func size(_ key: String, _ fallback: ConfigSize) throws(ConfigError) -> ConfigSize {
        guard let v = value(key) else { return fallback }
        if let i = v.int { return ConfigSize(bytes: i) }
        guard let s = v.string, let size = ConfigSize(parsing: s) else {
            throw ConfigError("'\(name(key))' must be a size like \"64KiB\" or \"32MiB\", got \(typeName(v))")
        }
        return size
    }

    mutating func strings(_ key: String, _ fallback: [String]) throws(ConfigError) -> [String] {
        guard let v = value(key) else { return fallback }
        guard let array = v.array else {
            throw ConfigError("'\(name(key))' must be an array of strings, got \(typeName(v))")
        }
        var out: [String] = []
        for element in array {
            guard let s = element.string else {
                throw ConfigError("'\(name(key))' must contain only strings, found \(typeName(element))")
            }
            out.append(s)
        }
        return out
    }

    mutating func table(_ key: String) throws(ConfigError) -> TableReader? {
        guard let v = value(key) else { return nil }
        guard let t = v.table else {
            throw ConfigError("'\(name(key))' must be a table ([\(name(key))]), got \(typeName(v))")
        }
        return TableReader(table: t, path: name(key))
    }

    func finish() throws(ConfigError) {
        for key in table.keys.sorted() where !used.contains(key) {
            throw ConfigError("unknown key '\(name(key))'")
        }
    }
}

extension Configuration {
    /// toml++ (inside TOMLKit) asserts, and so aborts the whole process, on text it should refuse with an error
    /// (found by the config fuzzer): a table header whose name starts with a non-ASCII character (`[é]`) or with
    /// anything but a letter, digit, `_`, `-` or a quote (`[.a]`, `[[,b]]`), or a `}` where an array expects a value
    /// (`x = [}`), or a date followed by a space and one digit (`x = 1979-05-27 7`: it looks for a time there and
    /// asserts when it finds a single digit before the value ends). Such files are rejected here first,
    /// with the position — a bad file given to `check-config`, `serve` or a SIGHUP reload must never crash the
    /// daemon.
    static func unparseable(_ text: String) -> (line: Int, column: Int, reason: String)? {
        enum State { case normal, comment, basic, literal, multiBasic, multiLiteral }
        let bytes = Array(text.utf8)
        var state = State.normal
        var line = 1
        var column = 0
        var i = 0
        /// Only spaces so far on this line (outside strings); and the arrays and inline tables still open.
        var lineStart = true
        var open: [UInt8] = []
        func triple(_ quote: UInt8) -> Bool { i + 2 < bytes.count && bytes[i + 1] == quote && bytes[i + 2] == quote }
        func startsKey(_ c: UInt8) -> Bool {
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "\""),
                UInt8(ascii: "'"), UInt8(ascii: "]"), 0x80...0xFF:
                true  // (a non-ASCII character is reported as such where it is)
            default: false
            }
        }
        while i < bytes.count {
            let b = bytes[i]
            if b & 0xC0 != 0x80 { column += 1 }  // characters, not bytes
            if b == UInt8(ascii: "\n") {
                line += 1
                column = 0
                lineStart = true
                if state == .comment || state == .basic || state == .literal { state = .normal }
                i += 1
                continue
            }
            switch state {
            case .normal:
                if b >= 0x80 { return (line, column, "a non-ASCII character outside a string or comment") }
                if b == UInt8(ascii: " ") && dateThenOneDigit(bytes, space: i) {
                    return (line, column + 1, "a date followed by a space and a single digit (a time is hh:mm:ss)")
                }
                if b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") || b == UInt8(ascii: "\r") { break }
                if b == UInt8(ascii: "[") && lineStart && open.isEmpty {
                    // A table header: its name must start as a key does.
                    var j = i + 1
                    if j < bytes.count, bytes[j] == UInt8(ascii: "[") { j += 1 }
                    while j < bytes.count, bytes[j] == UInt8(ascii: " ") || bytes[j] == UInt8(ascii: "\t") { j += 1 }
                    if j < bytes.count, !startsKey(bytes[j]) {
                        return (
                            line, column + (j - i), "a table name must start with a letter, digit, '_', '-' or a quote"
                        )
                    }
                } else if b == UInt8(ascii: "[") || b == UInt8(ascii: "{") {
                    open.append(b)
                } else if b == UInt8(ascii: "}") && open.last == UInt8(ascii: "[") {
                    return (line, column, "'}' inside an array, where a value or ']' belongs")
                } else if (b == UInt8(ascii: "]") || b == UInt8(ascii: "}")) && !open.isEmpty {
                    open.removeLast()
                }
                lineStart = false
                if b == UInt8(ascii: "#") {
                    state = .comment
                } else if b == UInt8(ascii: "\"") || b == UInt8(ascii: "'") {
                    let basic = b == UInt8(ascii: "\"")
                    if triple(b) {
                        state = basic ? .multiBasic : .multiLiteral
                        i += 2
                    } else {
                        state = basic ? .basic : .literal
                    }
                }
            case .comment:
                break
            case .basic, .multiBasic:
                if b == UInt8(ascii: "\\") {
                    if i + 1 < bytes.count, bytes[i + 1] != UInt8(ascii: "\n") { i += 1 }  // an escaped character
                } else if b == UInt8(ascii: "\"") {
                    if state == .basic {
                        state = .normal
                    } else if triple(b) {
                        state = .normal
                        i += 2
                    }
                }
            case .literal:
                if b == UInt8(ascii: "'") { state = .normal }
            case .multiLiteral:
                if b == UInt8(ascii: "'"), triple(b) {
                    state = .normal
                    i += 2
                }
            }
            i += 1
        }
        return nil
    }

    /// Whether the space at `space` follows a value shaped as a date (10 characters, `_` not counted, with `-`
    /// fifth and eighth, starting with a digit) and precedes one digit and then the value's end: what makes toml++
    /// assert. Never valid TOML (after a date and a space only a time may follow).
    static func dateThenOneDigit(_ bytes: [UInt8], space: Int) -> Bool {
        func ends(_ c: UInt8) -> Bool {
            c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") || c == UInt8(ascii: "\n") || c == UInt8(ascii: "\r")
                || c == UInt8(ascii: ",") || c == UInt8(ascii: "]") || c == UInt8(ascii: "}") || c == UInt8(ascii: "#")
        }
        guard space + 2 < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[space + 1]),
            ends(bytes[space + 2])
        else { return false }
        // The value before the space: back to whitespace or a bracket. toml++ reads an `=` inside a value as part
        // of it (`x = 2inm----l= 2 2` asserts too), so both the whole run and what follows its last `=` are tried.
        var start = space
        while start > 0, !ends(bytes[start - 1]), bytes[start - 1] != UInt8(ascii: "["),
            bytes[start - 1] != UInt8(ascii: "{"), space - start <= 64
        {
            start -= 1
        }
        func dateShaped(_ run: ArraySlice<UInt8>) -> Bool {
            let chars = run.filter { $0 != UInt8(ascii: "_") }
            return chars.count == 10 && (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(chars[0])
                && chars[4] == UInt8(ascii: "-") && chars[7] == UInt8(ascii: "-")
        }
        let run = bytes[start..<space]
        if dateShaped(run) { return true }
        if let equals = run.lastIndex(of: UInt8(ascii: "=")) { return dateShaped(bytes[(equals + 1)..<space]) }
        return false
    }

    /// The position of the first non-ASCII character outside strings and comments.
    static func nonASCIIOutsideStrings(_ text: String) -> (line: Int, column: Int)? {
        guard let found = unparseable(text), found.reason.hasPrefix("a non-ASCII") else { return nil }
        return (found.line, found.column)
    }
}
