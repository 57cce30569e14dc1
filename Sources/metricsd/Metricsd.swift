import ArgumentParser

@main
struct Metricsd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metricsd",
        abstract: "A time-series metrics daemon that speaks the InfluxDB line protocol.",
        discussion: """
            Quick check of the parser:
              echo 'cpu,host=a usage=1.5 1700000000000000000' | metricsd parse
            """,
        subcommands: [ParseCommand.self]
    )
}
