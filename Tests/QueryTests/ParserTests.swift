import Testing

@testable import Query

@Suite struct ParserTests {
    /// What Grafana's InfluxDB data source sends for a time-series panel.
    @Test func grafanasPanelQuery() throws {
        let q = """
            SELECT mean("usage_user") AS "user", max("usage_user") FROM "telegraf"."autogen"."cpu" \
            WHERE ("host" =~ /^(a|b)$/ AND "cpu" = 'cpu-total') AND time >= 1700000000000ms and time <= 1700003600000ms \
            GROUP BY time(1m, 30s), "host" fill(null) ORDER BY time DESC LIMIT 100 SLIMIT 5
            """
        let statements = try Parser.parse(q)
        guard case .select(let s) = try #require(statements.first) else {
            Issue.record("not a select")
            return
        }
        #expect(s.measurement == "cpu")
        #expect(s.fields.count == 2)
        #expect(s.fields[0] == SelectField(expr: .call("mean", [.field("usage_user")]), alias: "user"))
        #expect(s.fields[1].alias == nil)
        #expect(s.interval == 60_000_000_000 && s.offset == 30_000_000_000)
        #expect(s.groupByTags == ["host"])
        #expect(s.fill == .null && s.descending && s.limit == 100 && s.slimit == 5)
        // AND is left-associative: ((tags AND time >= …) AND time <= …).
        let tags = Expr.binary(
            "AND", .binary("=~", .field("host"), .regex("^(a|b)$")), .binary("=", .field("cpu"), .string("cpu-total")))
        #expect(
            s.condition
                == .binary(
                    "AND", .binary("AND", tags, .binary(">=", .field("time"), .duration(1_700_000_000_000_000_000))),
                    .binary("<=", .field("time"), .duration(1_700_003_600_000_000_000))))
    }

    @Test func relativeTimesArithmeticAndPercentiles() throws {
        let s = try Parser.parse(
            "select percentile(latency, 99.9) / 1000 as p, sum(a) + sum(b) from http where time > now() - 6h group by time(5m), * fill(-1)"
        )
        guard case .select(let q) = s[0] else { return }
        #expect(
            q.fields[0].expr == .binary("/", .call("percentile", [.field("latency"), .number(99.9)]), .integer(1000)))
        #expect(q.fields[0].alias == "p")
        #expect(q.fields[1].expr == .binary("+", .call("sum", [.field("a")]), .call("sum", [.field("b")])))
        #expect(q.condition == .binary(">", .field("time"), .binary("-", .now, .duration(21_600_000_000_000))))
        #expect(q.groupByAllTags && q.fill == .value(-1))
    }

    @Test func showStatementsGrafanaUses() throws {
        let s = try Parser.parse(
            """
            SHOW DATABASES; SHOW RETENTION POLICIES ON "metrics"; SHOW MEASUREMENTS WITH MEASUREMENT =~ /cp.*/ LIMIT 100;
            SHOW TAG KEYS FROM "cpu"; SHOW TAG VALUES FROM "cpu" WITH KEY = "host" WHERE "dc" = 'eu';
            SHOW TAG VALUES WITH KEY IN ("host", "cpu"); SHOW FIELD KEYS FROM cpu; SHOW SERIES FROM cpu
            """)
        #expect(s.count == 8)
        #expect(s[0] == .showDatabases && s[1] == .showRetentionPolicies)
        #expect(s[2] == .showMeasurements(regex: "cp.*", paging: Paging(limit: 100)))
        #expect(s[3] == .showTagKeys(from: "cpu"))
        #expect(
            s[4]
                == .showTagValues(
                    from: "cpu", keys: ["host"], keyRegex: nil, condition: .binary("=", .field("dc"), .string("eu"))))
        #expect(s[5] == .showTagValues(from: nil, keys: ["host", "cpu"], keyRegex: nil, condition: nil))
        #expect(s[6] == .showFieldKeys(from: "cpu") && s[7] == .showSeries(from: "cpu", condition: nil))
    }

    @Test func escapesInIdentifiersStringsAndRegexes() throws {
        let s = try Parser.parse(#"SELECT last("we\"ird") FROM "a b" WHERE t = 'it\'s' AND p =~ /a\/b/"#)
        guard case .select(let q) = s[0] else { return }
        #expect(q.fields[0].expr == .call("last", [.field("we\"ird")]))
        #expect(q.measurement == "a b")
        #expect(
            q.condition
                == .binary("AND", .binary("=", .field("t"), .string("it's")), .binary("=~", .field("p"), .regex("a/b")))
        )
    }

    /// An expression's text (what keys the series a condition selected) reads back as the same expression, and
    /// different expressions have different texts — quotes, backslashes and slashes inside names included.
    @Test func expressionTextReadsBackAsTheSameExpression() throws {
        let conditions = [
            #"host = 'a'"#, #""host" = 'a'"#, #"host = 'a' AND region = 'b'"#,
            #"(host = 'a' AND region = 'b') OR c != 'x'"#,
            #"host = 'a' AND (region = 'b' OR c != 'x')"#, #""we\"ird" = 'it\'s'"#, #"p =~ /a\/b/"#, #"p !~ /^(a|b)$/"#,
            #"host = 'a\\b'"#, #"p =~ /a\\d/"#, #"time >= now() - 6h AND time <= 1700000000000ms"#,
            #"x = 'a' OR x = 'b'"#,
            #""a" = 'b'"#, #"a = '"b'"#,
        ]
        var texts: [String: Expr] = [:]
        for text in conditions {
            guard case .select(let q) = try Parser.parse("SELECT mean(v) FROM m WHERE " + text)[0],
                let condition = q.condition
            else {
                Issue.record("\(text) did not parse as a condition")
                continue
            }
            let description = condition.description
            let reparsed = try? Parser.parse("SELECT mean(v) FROM m WHERE " + description)
            #expect(reparsed != nil, "\(text) → \(description) does not parse")
            guard case .select(let again) = reparsed?[0] else {
                Issue.record("\(description) did not parse")
                continue
            }
            #expect(again.condition == condition, "\(text) → \(description)")
            if let other = texts[description] {
                #expect(other == condition, "\(text): another expression has the text \(description)")
            }
            texts[description] = condition
        }
        #expect(Expr.field("a\"").description != Expr.field("a").description)
        #expect(Expr.string("a' OR x = 'b").description != Expr.binary("OR", .string("a"), .string("b")).description)
    }

    /// Errors say what was found and what was expected; nothing unsupported is silently accepted.
    @Test func unsupportedAndMalformedQueriesAreClearErrors() {
        let cases: [(String, String)] = [
            ("DROP MEASUREMENT cpu", "expected SELECT, SHOW"),
            ("SHOW USERS", "expected DATABASES"),
            ("SELECT mean(x) FROM", "expected measurement"),
            ("SELECT mean(x) FROM m GROUP BY time(0s)", "positive duration"),
            ("SELECT mean(x) FROM m WHERE a = 'unterminated", "unterminated quoted string"),
            ("SELECT x FROM m fill(sideways)", "fill must be"),
            ("SELECT x FROM m tz('Europe/Paris')", "tz() is not supported"),
            ("", "found EOF"),
            ("SELECT x FROM m extra", "expected ; or end of query"),
        ]
        for (query, message) in cases {
            #expect(throws: QueryError.self, "\(query)") { try Parser.parse(query) }
            do {
                _ = try Parser.parse(query)
            } catch {
                #expect(error.message.contains(message), "\(query): \(error.message)")
            }
        }
    }

    /// Property: the parser terminates and never crashes on arbitrary input (random token soup and bytes).
    @Test func arbitraryInputNeverCrashes() {
        var rng = SystemRandomNumberGenerator()
        let pieces = [
            "SELECT", "mean(", "\"f\"", ")", "FROM", "m", "WHERE", "time", ">", "now()", "-", "5m", "AND", "OR", "(",
            ",", "GROUP BY", "time(1m)", "fill(", "'s'", "/re/", "=~", "!~", ";", "SHOW", "TAG", "VALUES", "WITH",
            "KEY", "=", "IN", "*", "1e3", "-2", "LIMIT", "10", "\\", "\"", "'",
        ]
        for _ in 0..<3000 {
            let text = (0..<Int.random(in: 0...14, using: &rng)).map { _ in pieces.randomElement(using: &rng)! }
                .joined(separator: Bool.random(using: &rng) ? " " : "")
            _ = try? Parser.parse(text)
        }
        for _ in 0..<2000 {
            let bytes = (0..<Int.random(in: 0...40, using: &rng)).map { _ in UInt8.random(in: 0...127, using: &rng) }
            _ = try? Parser.parse(String(decoding: bytes, as: UTF8.self))
        }
    }
}
