import Testing

@testable import InfluxQL

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
        #expect(s[3] == .showTagKeys(from: [.name("cpu")]))
        #expect(
            s[4]
                == .showTagValues(
                    from: [.name("cpu")], keys: ["host"], keyRegex: nil,
                    condition: .binary("=", .field("dc"), .string("eu"))))
        #expect(s[5] == .showTagValues(from: nil, keys: ["host", "cpu"], keyRegex: nil, condition: nil))
        #expect(
            s[6] == .showFieldKeys(from: [.name("cpu")]) && s[7] == .showSeries(from: [.name("cpu")], condition: nil))
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
            ("SELECT mean(x) FROM", "expected identifier"),
            ("SELECT mean(x) FROM m GROUP BY time(0s)", "positive duration"),
            ("SELECT mean(x) FROM m WHERE a = 'unterminated", "unterminated quoted string"),
            ("SELECT x FROM m fill(sideways)", "expected number argument in fill()"),
            ("SELECT x FROM m tz(Europe)", "expected string"),
            ("SELECT \"x\"::color FROM m", "expected tag, field"),
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

/// Hostile queries (issue: step 9): nesting is bounded, chains stay shallow, regexes are RE2.
@Suite struct ParserLimitTests {
    static func depth(_ e: Expr) -> Int {
        switch e {
        case .binary(_, let a, let b): 1 + max(depth(a), depth(b))
        case .call(_, let args): 1 + (args.map(depth).max() ?? 0)
        default: 0
        }
    }

    @Test func nestingDeeperThanTheLimitIsAnError() throws {
        let ok =
            "SELECT v FROM m WHERE " + String(repeating: "(", count: 40) + "a = 'b'" + String(repeating: ")", count: 40)
        #expect(try Parser.parse(ok).count == 1)
        for text in [
            "SELECT v FROM m WHERE " + String(repeating: "(", count: 20_000) + "a = 'b'"
                + String(repeating: ")", count: 20_000),
            "SELECT " + Array(repeating: "1", count: 500).joined(separator: " + ") + " FROM m",
            "SELECT " + String(repeating: "f(", count: 200) + "v" + String(repeating: ")", count: 200) + " FROM m",
        ] {
            #expect {
                try Parser.parse(text)
            } throws: { ($0 as? QueryError)?.message.contains("max_nesting_depth") == true }
        }
    }

    @Test func longChainsOfAndAndOrStayShallow() throws {
        let text = "SELECT v FROM m WHERE " + (0..<10_000).map { "a = '\($0)'" }.joined(separator: " OR ")
        guard case .select(let s) = try Parser.parse(text)[0], let condition = s.condition else {
            Issue.record("not a select")
            return
        }
        #expect(Self.depth(condition) < 40, "depth \(Self.depth(condition))")
        // Every term is there, in order.
        var values: [String] = []
        func collect(_ e: Expr) {
            if case .binary("OR", let a, let b) = e {
                collect(a)
                collect(b)
            } else if case .binary("=", _, .string(let v)) = e {
                values.append(v)
            }
        }
        collect(condition)
        #expect(values == (0..<10_000).map { "\($0)" })
    }

    @Test func integerLiteralsStayExact() throws {
        guard case .select(let s) = try Parser.parse("SELECT v FROM m WHERE time > 1700000000000000001")[0] else {
            return
        }
        #expect(s.condition == .binary(">", .field("time"), .integer(1_700_000_000_000_000_001)))
    }

    @Test func showStatementsKeepLimitAndOffset() throws {
        let s = try Parser.parse("SHOW TAG KEYS FROM cpu LIMIT 3 OFFSET 2; SHOW SERIES OFFSET 1")
        #expect(s[0] == .showTagKeys(from: [.name("cpu")], paging: Paging(limit: 3, offset: 2)))
        #expect(s[1] == .showSeries(from: nil, condition: nil, paging: Paging(offset: 1)))
        #expect(Paging(limit: 2, offset: 1).apply([1, 2, 3, 4]) == [2, 3])
        #expect(Paging(offset: 9).apply([1, 2]) == [])
    }
}

@Suite struct RE2RegexTests {
    /// Go's syntax and matching (unanchored, `$` only at the end), and no backtracking: `(a+)+$` against a long
    /// run of `a` ended by another character answers at once.
    @Test func matchesAsGoDoesInLinearTime() throws {
        let cases: [(String, String, Bool)] = [
            ("^(a|b)$", "a", true), ("^(a|b)$", "ab", false), ("cpu", "xcpu0", true), ("(?i)CPU", "cpu", true),
            ("^h\\d+$", "h42", true), ("^h\\d+$", "h42\n", false), ("[[:alpha:]]+", "abc", true),
            ("\\pL", "é", true), ("a.c", "a\nc", false), ("(a+)+$", String(repeating: "a", count: 5_000) + "!", false),
            ("^$", "", true),
        ]
        for (pattern, text, expected) in cases {
            #expect(try RE2Regex(pattern).matches(text) == expected, "/\(pattern)/ on \(text.prefix(20))")
        }
        for invalid in ["(a)\\1", "(?=x)", "[", "a{2,1}"] {
            #expect(throws: QueryError.self, "\(invalid)") { try RE2Regex(invalid) }
        }
    }
}
