import API
import InfluxQL
import Query
import Testing

/// Every route's parameters: what a client writes is taken or refused with a message naming the parameter, and
/// nothing a client writes traps (the fuzzer FuzzHTTPParameters drives the same code with random bytes).
@Suite struct ParameterTests {
    let now: Int64 = 1_795_860_000_000_000_000

    /// Segments: every operator, per-step filters inside braces, the same event name with two filters refused,
    /// bad numbers and regexes refused naming the parameter.
    @Test func segmentsAreParsed() throws {
        let f = try FunnelParameters(
            Form("steps=view,purchase{revenue>=10,country:DE},view&where=plan!=free,ref=~^goo,x!~a,n<3,m<=4,k>5,c=y"),
            now: now)
        #expect(f.steps == ["view", "purchase", "view"])
        #expect(f.stepFilters[1].conditions.map(\.description) == ["revenue>=10", "country=DE"])
        #expect(f.stepFilters[0].isEmpty && f.stepFilters[2].isEmpty)
        #expect(
            f.filter.conditions.map(\.description) == ["plan!=free", "ref=~^goo", "x!~a", "n<3", "m<=4", "k>5", "c=y"])
        #expect(f.filter.conditions[1].matches("google") && !f.filter.conditions[1].matches("ago"))
        #expect(f.filter.conditions[2].matches(nil) && !f.filter.conditions[2].matches("cat"))
        #expect(f.stepFilters[1].conditions[0].matches("10.0") && !f.stepFilters[1].conditions[0].matches("9"))
        #expect(!f.stepFilters[1].conditions[0].matches("ten") && !f.stepFilters[1].conditions[0].matches(nil))
        #expect(PropertyCondition(key: "n", op: .equal, value: "10").matches("10.0"))
        #expect(!PropertyCondition(key: "n", op: .equal, value: "10").matches(nil))
        #expect(PropertyCondition(key: "n", op: .notEqual, value: "10").matches(nil))
        #expect(PropertyCondition.jsonNumber("01") == nil && PropertyCondition.jsonNumber("1.") == nil)
        #expect(PropertyCondition.jsonNumber("-0.5e+3") == -500)
        func refused(_ query: String) -> String {
            do {
                _ = try FunnelParameters(Form(query), now: now)
                return ""
            } catch { return error.message }
        }
        #expect(refused("steps=view{a:1},view").contains("same filter"))
        #expect(refused("steps=view,buy&where=revenue>=ten").contains("'where'"))
        #expect(refused("steps=view,buy&where=country=~(").contains("bad regex"))
        #expect(refused("steps=view,buy&where=nooperator").contains("'where'"))
        #expect(refused("steps=view{a:1,buy").contains("braces"))
        #expect(refused("steps=view,buy&scope=everywhere").contains("'scope'"))
        let r = try RetentionParameters(
            Form("cohort_event=signup&return_event=any&breakdown=country&where=plan:pro&scope=fleet"), now: now)
        #expect(r.breakdown == "country" && r.scope == .fleet && r.filter.conditions.count == 1)
    }

    @Test func timesOutsideInt64NanosecondsAreRefused() {
        #expect(TimeText.parse("1795860000000") == 1_795_860_000_000_000_000)
        #expect(TimeText.parse("10000000000000") == nil, "year 2286 in milliseconds overflows nanoseconds")
        #expect(TimeText.parse("-10000000000000") == nil)
        #expect(TimeText.parse("9223372036854775807") == nil)
        #expect(TimeText.parse("2300-01-01T00:00:00Z") == nil)
    }

    @Test func seriesLimitMustBeInRange() throws {
        #expect(try SeriesParameters(Form("limit=5"), maxLimit: 100).limit == 5)
        #expect(try SeriesParameters(Form(""), maxLimit: 100).limit == 100)
        for bad in ["limit=-1", "limit=101", "limit=x", "limit=99999999999999999999"] {
            #expect(throws: ParameterError.self) { try SeriesParameters(Form(bad), maxLimit: 100) }
        }
    }

    @Test func rangesWhoseLengthOverflowsAreRefused() throws {
        let ok = try RangeParameters(
            Form("measurement=m&field=f&from=1795850000000&to=1795860000000&step=1m"), now: now,
            interval: 60_000_000_000, maxSteps: 100_000)
        #expect(ok.step == 60_000_000_000 && ok.from < ok.to)
        for bad in [
            "measurement=m&field=f&from=-9223372036854&to=9223372036854&step=1m",
            "measurement=m&field=f&step=9223372036854775807ns", "measurement=m&field=f&from=10000000000000",
            "measurement=m&field=f&step=0s", "measurement=m&field=f&step=90s",
            "measurement=m&field=f&from=1795860000000&to=1795850000000", "field=f",
        ] {
            #expect(throws: ParameterError.self, "\(bad)") {
                try RangeParameters(Form(bad), now: now, interval: 60_000_000_000, maxSteps: 100_000)
            }
        }
    }

    @Test func analyticsParameters() throws {
        let funnel = try FunnelParameters(Form("steps=a,+b&window=2h&breakdown=country"), now: now)
        #expect(funnel.steps == ["a", "b"] && funnel.window == 7_200_000 && funnel.breakdown == "country")
        #expect(throws: ParameterError.self) { try FunnelParameters(Form("steps=a"), now: now) }
        #expect(throws: ParameterError.self) { try FunnelParameters(Form("steps=a,b&window=-1h"), now: now) }
        #expect(throws: ParameterError.self) {
            try FunnelParameters(Form("steps=a,b&window=9999999999999999d"), now: now)
        }
        let retention = try RetentionParameters(Form("cohort_event=s&return_event=any&period=week"), now: now)
        #expect(retention.returnEvent == nil && retention.period == .week && retention.periods == 8)
        #expect(throws: ParameterError.self) {
            try RetentionParameters(Form("cohort_event=s&return_event=any&periods=0"), now: now)
        }
        #expect(throws: ParameterError.self) {
            try ExperimentParameters(Form("exposure_event=e&goal_event=g"), now: now)
        }
    }

    @Test func influxQLRequestsAreBounded() throws {
        let p = try InfluxQLParameters(
            Form("q=SHOW+DATABASES%3BSHOW+MEASUREMENTS&epoch=ms&db=x"), maxStatements: 2, maxDepth: 100,
            maxSize: 1 << 20)
        #expect(p.statements.count == 2 && p.epochScale == 1_000_000 && p.database == "x")
        #expect(throws: ParameterError.self) {
            try InfluxQLParameters(
                Form("q=SHOW+DATABASES%3BSHOW+DATABASES%3BSHOW+DATABASES"), maxStatements: 2,
                maxDepth: 100, maxSize: 1 << 20)
        }
        #expect(throws: ParameterError.self) {
            try InfluxQLParameters(Form("q=SHOW+DATABASES"), maxStatements: 2, maxDepth: 100, maxSize: 5)
        }
        #expect(throws: ParameterError.self) {
            try InfluxQLParameters(Form("q=SHOW+DATABASES&epoch=years"), maxStatements: 2, maxDepth: 100, maxSize: 99)
        }
        #expect(throws: ParameterError.self) {
            try InfluxQLParameters(Form(""), maxStatements: 2, maxDepth: 1, maxSize: 9)
        }
    }

    @Test func sizesThatOverflowAreRefused() {
        #expect(ConfigSize(parsing: "99999999999999999GiB") == nil)
        #expect(ConfigSize(parsing: "8GiB")?.bytes == 8 << 30)
    }
}
