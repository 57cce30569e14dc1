import ArgumentParser
import ClickHouse
import Export
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

/// What a running daemon may change without a restart. Everything else in the configuration is read once.
final class RuntimeSettings: Sendable {
    private let token: Mutex<String>

    init(_ configuration: Configuration) {
        token = Mutex(configuration.auth.token)
    }

    /// `[auth] token`: empty means HTTP needs no credentials.
    var authToken: String { token.withLock { $0 } }

    func setAuthToken(_ value: String) { token.withLock { $0 = value } }
}

/// Re-reads the configuration on SIGHUP (`systemctl reload metricsd`) and applies what can change live: the log
/// level, the `[influx]` forwarding target and its credentials, and the `[auth]` token. A file that does not
/// parse or validate changes nothing (the error is logged). Keys that need a restart are named in a warning.
struct ReloadService: Service {
    /// The configuration as `serve` would build it now: the file again, with the same command-line overrides.
    let load: @Sendable () throws -> Configuration
    let initial: Configuration
    let settings: RuntimeSettings
    let forwarder: Forwarder?
    var clickhouse: EventForwarder? = nil
    var fleet: FleetAnalytics? = nil
    let notifier: SystemdNotifier
    let logger: Logger

    func run() async throws {
        var current = initial
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        for await _ in hangups.cancelOnGracefulShutdown() {
            notifier.notify("RELOADING=1")
            do {
                let next = try load()
                apply(next, over: current)
                current = next
            } catch {
                logger.error("reload: configuration not changed: \(error)")
            }
            notifier.notify("READY=1")
        }
    }

    /// Applies `next`; returns the names of what changed (for the log and tests).
    @discardableResult
    func apply(_ next: Configuration, over old: Configuration) -> [String] {
        var changed: [String] = []
        if next.log.level != old.log.level, let level = Logger.Level(rawValue: next.log.level) {
            DaemonLogHandler.setLevel(level)
            changed.append("log.level=\(next.log.level)")
        }
        if next.auth.token != old.auth.token {
            settings.setAuthToken(next.auth.token)
            changed.append(next.auth.token.isEmpty ? "auth.token (now off)" : "auth.token")
        }
        if next.influx != old.influx {
            if let forwarder, !next.influx.url.isEmpty {
                forwarder.reconfigure(next.influx.forwarderConfiguration)
                changed.append("influx (now \(next.influx.url))")
            } else {
                logger.warning(
                    "reload: turning forwarding on or off needs a restart (influx.url was \"\(old.influx.url)\", is \"\(next.influx.url)\")"
                )
            }
        }
        if next.events.clickhouse != old.events.clickhouse {
            let c = next.events.clickhouse.clickhouseConfiguration
            clickhouse?.reconfigure(c)
            fleet?.reconfigure(c)
            changed.append(c.enabled ? "events.clickhouse (now \(c.url))" : "events.clickhouse (now off)")
        }
        var restart: [String] = []
        if next.dataDir != old.dataDir { restart.append("data_dir") }
        if next.listen != old.listen { restart.append("listen") }
        if next.rollup != old.rollup { restart.append("rollup") }
        if next.storage != old.storage { restart.append("storage") }
        if next.limits != old.limits { restart.append("limits") }
        var nextEvents = next.events
        nextEvents.clickhouse = old.events.clickhouse
        if nextEvents != old.events { restart.append("events") }
        if next.query != old.query { restart.append("query") }
        if next.http != old.http { restart.append("http") }
        if !restart.isEmpty {
            logger.warning("reload: changes to \(restart.joined(separator: ", ")) take effect after a restart")
        }
        logger.notice("reload: \(changed.isEmpty ? "nothing to change" : "applied " + changed.joined(separator: ", "))")
        return changed
    }
}
