import API
import Foundation
import Testing

@testable import metricsd

@Suite struct ConfigurationTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The example documents every key with its default: uncommenting every "# key = value" line must give exactly
    /// the built-in defaults, and every key of the defaults must appear in the example.
    @Test func exampleConfigMatchesTheDefaults() throws {
        let text = try String(contentsOf: Self.root.appendingPathComponent("metricsd.example.toml"), encoding: .utf8)
        #expect(try Configuration(toml: text) == Configuration())
        let uncommented = text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            let trimmed = line.drop(while: { $0 == " " })
            if trimmed.hasPrefix("# ") && !trimmed.hasPrefix("##") { return String(trimmed.dropFirst(2)) }
            return String(line)
        }.joined(separator: "\n")
        let parsed = try Configuration(toml: uncommented)
        #expect(parsed == Configuration())
        // Every key printed by check-config is documented in the example.
        for line in Configuration().tomlText.split(separator: "\n") where line.contains(" = ") {
            let key = line.split(separator: " ").first!
            #expect(
                uncommented.contains("\n\(key) = ") || uncommented.hasPrefix("\(key) = "), "undocumented key \(key)")
        }
    }

    @Test func overridesAndEffectiveSettings() throws {
        let c = try Configuration(
            toml: """
                data_dir = "/tmp/x"
                [rollup]
                interval = "10s"
                max_series = 5
                [limits]
                max_body_size = "1MiB"
                """
        )
        #expect(c.dataDir == "/tmp/x")
        #expect(c.rollup.interval.nanoseconds == 10_000_000_000)
        #expect(c.rollup.maxSeries == 5)
        #expect(c.http.maxBodySize.bytes == 1 << 20)
        #expect(c.tomlText.contains("interval = \"10s\""))
        // The printed settings parse back to the same configuration.
        #expect(try Configuration(toml: c.tomlText) == c)
    }

    @Test(arguments: [
        ("[rollup]\nintervall = \"1m\"", "unknown key 'rollup.intervall'"),
        ("bogus = 1", "unknown key 'bogus'"),
        ("[rollup]\nmax_series = \"many\"", "'rollup.max_series' must be an integer, got a string"),
        ("[listen]\nudp = 8089", "'listen.udp' must be a string, got an integer"),
        ("[rollup]\ninterval = \"soon\"", "'rollup.interval' is not a duration"),
        ("[storage]\ndurability = \"sometimes\"", "'storage.durability' must be"),
        ("[listen]\nhttp = \"nowhere\"", "'listen.http' must be \"host:port\""),
        ("[influx]\naggregates = [\"avg\"]", "unknown aggregate \"avg\""),
        ("rollup = 3", "'rollup' must be a table"),
        ("[rollup\n", "invalid TOML at line 1"),
    ])
    func errorsNameTheKey(toml: String, message: String) {
        do {
            _ = try Configuration(toml: toml)
            Issue.record("expected an error for \(toml)")
        } catch {
            #expect(error.description.contains(message), "\(error.description)")
        }
    }

    /// Found by FuzzConfig: toml++ aborted the process on a table header starting with a non-ASCII character, so a
    /// bad file crashed `check-config`, and a SIGHUP reload with it would have taken the daemon down.
    @Test(arguments: ["[\u{FFFD}]\n", "[[é]]\n", "[ é ]\n", "é = 1\n", "[influx]\nurl = \"x\" é\n"])
    func nonASCIIOutsideStringsIsAnErrorNotACrash(text: String) {
        #expect(throws: ConfigError.self) { try Configuration(toml: text) }
    }

    /// Found by FuzzConfig too: a table header starting with another character toml++ does not expect (`[.`,
    /// `[[,`) tripped its assertion the same way.
    @Test(arguments: ["[.a]\n", "[[,og]rollup]\n", "[ =x]\n", "[[ .]]\n", "x = [}\n", "x = [1, }]\n"])
    func oddTableHeadersAreAnErrorNotACrash(text: String) {
        #expect(throws: ConfigError.self) { try Configuration(toml: text) }
    }

    /// Found by FuzzConfig (in `make test`'s brief fuzzing): a date, a space and one digit (`1979-05-27 7`) made
    /// toml++ look for a time and assert, aborting the process — at start, `check-config` or a SIGHUP reload.
    @Test(arguments: [
        "x = 1979-05-27 7\n", "[influx]\nugn = 2inm----l= 2 2\n", "x = [1979-05-27 7]\n", "x=1979-05-27 7\n",
        "x = 19_79-05-27 7,\n", "x = {a = 1979-05-27 7}\n",
    ])
    func aDateBeforeALoneDigitIsAnErrorNotACrash(text: String) {
        #expect(throws: ConfigError.self) { try Configuration(toml: text) }
    }

    @Test func datesAndTimesStillPassTheCheck() {
        for text in ["x = 1979-05-27 07:32:00\n", "x = 1979-05-27\n", "x = 1979-05-27 # 7\n", "x = 12 7 \n"] {
            #expect(Configuration.unparseable(text) == nil, "\(text)")
        }
    }

    /// Found by FuzzConfig: a value holding a control character (from a `\u0001` escape) printed raw, so
    /// `check-config`'s output was not TOML.
    @Test func controlCharactersInValuesPrintAsEscapes() throws {
        let c = try Configuration(toml: "[influx]\nurl = \"http://x/\\u0001\\u001F\\u007F\\ta\"\n")
        #expect(c.influx.url == "http://x/\u{1}\u{1F}\u{7F}\ta")
        #expect(try Configuration(toml: c.tomlText) == c)
        #expect(c.tomlText.contains(#"url = "http://x/\u0001\u001F\u007F"#))
    }

    @Test func arraysAndQuotedHeadersAreStillFine() throws {
        let c = try Configuration(
            toml:
                "[ \"influx\" ]\naggregates = [\n  \"count\",\n  \"sum\" # }\n]\n['log']\nlevel = \"debug\"\n")
        #expect(c.influx.aggregates == ["count", "sum"] && c.log.level == "debug")
    }

    @Test func nonASCIIInsideStringsAndCommentsIsFine() throws {
        let text = [
            "# métriques, ☃", "[influx] # é", #"database = "métriques""#, "instance_tag = 'agrégat'",
            #"password = """p\"é""""#,
        ].joined(separator: "\n")
        let c = try Configuration(toml: text)
        #expect(c.influx.database == "métriques")
        #expect(c.influx.instanceTag == "agrégat")
        #expect(c.influx.password == "p\"é")
        let position = Configuration.nonASCIIOutsideStrings("a = \"é\"\n[é]")
        #expect(position?.line == 2 && position?.column == 2)
    }

    @Test func aCrashingFileIsRejectedByCheckConfig() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("bad-\(UUID().uuidString).toml")
        defer { try? FileManager.default.removeItem(at: file) }
        try Data([0x5B, 0xEF, 0xBF, 0xBD, 0x5D, 0x0A]).write(to: file)
        let (status, _, errors) = try runMetricsd(["check-config", file.path], input: [])
        #expect(status == 64, "\(errors)")
        #expect(errors.contains("line 1, column 2: a non-ASCII character outside a string or comment"))
    }

    @Test func durationsAndSizes() {
        #expect(ConfigDuration(parsing: "1h30m")?.nanoseconds == 5_400_000_000_000)
        #expect(ConfigDuration(parsing: "250ms")?.nanoseconds == 250_000_000)
        #expect(ConfigDuration(parsing: "7d")?.description == "7d")
        #expect(ConfigDuration(parsing: "x") == nil)
        #expect(ConfigSize(parsing: "64KiB")?.bytes == 65_536)
        #expect(ConfigSize(parsing: "1000")?.bytes == 1_000)
        #expect(ConfigSize(parsing: "3 apples") == nil)
    }

    @Test func rfc3339() {
        #expect(TimeText.parse("2026-11-28T10:00:00Z") == 1_795_860_000_000_000_000)
        #expect(TimeText.parse("2026-11-28T11:00:00.5+01:00") == 1_795_860_000_500_000_000)
        #expect(TimeText.parse("1795860000000") == 1_795_860_000_000_000_000)
        #expect(TimeText.parse("yesterday") == nil)
    }
}
