import ArgumentParser
import Export
import Foundation
import Synchronization

@main
struct Metricsd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metricsd",
        abstract: "A time-series metrics daemon that speaks the InfluxDB line protocol.",
        discussion: """
            With no subcommand, runs the daemon (serve) with the embedded defaults: UDP 127.0.0.1:8089,
            TCP 127.0.0.1:8094, HTTP 127.0.0.1:8186, data under ./var.
              echo 'cpu,host=a usage=1' | nc -u -w0 127.0.0.1 8089
            """,
        subcommands: [
            ServeCommand.self, ParseCommand.self, CheckConfigCommand.self, SendCommand.self, BackupCommand.self,
        ],
        defaultSubcommand: ServeCommand.self
    )
}

/// `metricsd check-config FILE`: validates a configuration and prints the effective settings.
struct CheckConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a configuration file and print the effective settings as TOML."
    )

    @Argument(help: "The TOML file to check.")
    var file: String

    func run() throws {
        let text = try readText(file)
        do {
            let configuration = try Configuration(toml: text)
            print("# \(file): OK. Effective settings (defaults filled in):")
            print(configuration.tomlText, terminator: "")
        } catch {
            throw ValidationError("\(file): \(error)")
        }
    }
}

/// `metricsd backup FILE`: a consistent copy of the SQLite database, taken while the daemon runs.
struct BackupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Copy the SQLite database to FILE with SQLite's online backup API (safe while metricsd runs).",
        discussion: """
            The copy holds every stored minute, the forwarding outbox and the events; points still only in the
            write-ahead log (the current minutes) are not in it. Restore: stop metricsd, put FILE in place of
            <data_dir>/metricsd.db, start metricsd (see docs/operations.md).
            """
    )

    @Argument(help: "Where to write the copy (must not exist).")
    var file: String
    @Option(help: "TOML configuration file naming data_dir.")
    var config: String?
    @Option(help: "Directory holding metricsd.db (overrides data_dir).")
    var dataDir: String?

    func run() throws {
        var dir = Configuration().dataDir
        if let config {
            do {
                dir = try Configuration(toml: try readText(config)).dataDir
            } catch {
                throw ValidationError("\(config): \(error)")
            }
        }
        if let dataDir { dir = dataDir }
        let source = dir + "/metricsd.db"
        do {
            let result = try SQLiteStore.backup(from: source, to: file)
            guard result.integrity == "ok" else {
                throw ValidationError("the copy in \(file) fails its integrity check: \(result.integrity)")
            }
            print("backed up \(source) to \(file): \(result.pages) pages, \(result.bytes) bytes, integrity ok")
        } catch let error as StoreError {
            throw ValidationError("backup of \(source) failed: \(error)")
        }
    }
}
