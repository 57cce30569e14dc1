import ArgumentParser
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
        subcommands: [ServeCommand.self, ParseCommand.self, CheckConfigCommand.self, SendCommand.self],
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
