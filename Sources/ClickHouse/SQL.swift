public import Query

/// The SQL metricsd sends to ClickHouse, as text: the table, the insert, and the three analytics. No I/O.
///
/// Everything here runs unchanged on Debian's ClickHouse 18.16 and on current releases, and gives exactly the
/// answers of ``EventIndex`` (docs/events.md): millisecond times, equal times counting, one event never serving
/// two steps, the deepest step over all starts. That rules out `windowFunnel` (18.16 takes whole seconds, and
/// processes events of the same second in read order: its answer changes from run to run) and `JSONExtract`
/// (missing in 18.16: `visitParam*` instead); and 18.16 drops a subquery column that the outer query uses only
/// inside a lambda, so every lambda here reads columns of its own query level, or columns the same level also
/// selects. See ../shared/notes/clickhouse.md for the measurements behind these choices.
public enum ClickHouseSQL {
    /// A string literal: quote and backslash escaped, control characters as escapes.
    public static func literal(_ s: String) -> String {
        var out = "'"
        for scalar in s.unicodeScalars {
            switch scalar {
            case "'": out += "\\'"
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\0": out += "\\0"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "'"
    }

    /// A database or table name, back-quoted.
    public static func identifier(_ s: String) -> String {
        var out = "`"
        for c in s {
            if c == "`" || c == "\\" { out.append("\\") }
            out.append(c)
        }
        return out + "`"
    }

    /// `db`.`table`.
    public static func table(_ database: String, _ table: String) -> String {
        identifier(database) + "." + identifier(table)
    }

    public static func createDatabase(_ database: String) -> String {
        "CREATE DATABASE IF NOT EXISTS \(identifier(database))"
    }

    /// The events table. The sorting key ends with `id`, so it is also the dedup key of `ReplacingMergeTree`:
    /// copies of one event (a batch resent after a crash, the same client id sent to two instances) collapse at
    /// merges; until then every query here ignores them (levels, `has`, `argMin`, unique arrays).
    public static func createTable(_ database: String, _ name: String) -> String {
        """
        CREATE TABLE IF NOT EXISTS \(table(database, name))
        (
            id String,
            event String,
            user_id String,
            ts DateTime,
            ts_ms UInt64,
            properties String
        )
        ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMM(ts)
        ORDER BY (toDate(ts), event, cityHash64(user_id), id)
        """
    }

    public static func insert(_ database: String, _ name: String) -> String {
        "INSERT INTO \(table(database, name)) (id, event, user_id, ts, ts_ms, properties) FORMAT JSONEachRow"
    }

    /// A property's value as ``EventIndex`` keeps it: a string's text, a number's or a boolean's JSON text; `''`
    /// when absent (test with ``has(_:)``). Properties are metricsd's compact JSON (no spaces, flat), so
    /// `"key":` cannot occur but as that key.
    static func property(_ key: String) -> String {
        let k = literal(jsonKey(key))
        return
            "if(startsWith(visitParamExtractRaw(properties, \(k)), '\"'), visitParamExtractString(properties, \(k)), visitParamExtractRaw(properties, \(k)))"
    }

    /// A breakdown value: the property's text, `(none)` when absent.
    static func groupText(_ key: String) -> String {
        "if(\(has(key)), \(property(key)), \(literal(Funnel.none)))"
    }

    static func has(_ key: String) -> String { "visitParamHas(properties, \(literal(jsonKey(key))))" }

    /// The key as it appears between the quotes of metricsd's JSON.
    static func jsonKey(_ key: String) -> String {
        var out = ""
        for scalar in key.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{0}"..."\u{1F}":
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// Milliseconds in the table's range (`ts_ms` is unsigned).
    static func ms(_ t: Int64) -> String { String(max(0, t)) }

    /// The same bound in whole seconds, for `ts` (the partition and primary key prune on it).
    static func seconds(_ t: Int64, up: Bool) -> String {
        let s = t >= 0 ? t / 1000 : -((-t + 999) / 1000)
        let rounded = up && t % 1000 != 0 ? s + 1 : s
        return "toDateTime(\(min(max(0, rounded), Int64(UInt32.max))))"
    }

    /// `ts` and `ts_ms` within `[from, through]` (both inclusive).
    static func timeRange(_ from: Int64, through: Int64) -> String {
        "ts >= \(seconds(from, up: false)) AND ts <= \(seconds(through, up: true)) AND ts_ms >= \(ms(from)) AND ts_ms <= \(ms(through))"
    }

    // MARK: - Segments

    static let numberPattern = literal("^-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?$")

    /// ``PropertyCondition``'s rules over `properties`, as SQL.
    static func condition(_ c: PropertyCondition) -> String {
        let t = property(c.key)
        let present = has(c.key)
        let numeric = "match(\(t), \(numberPattern))"
        func equal() -> String {
            if c.number != nil {
                return
                    "(\(present) AND if(\(numeric), toFloat64OrZero(\(t)) = \(c.value), \(t) = \(literal(c.value))))"
            }
            return "(\(present) AND \(t) = \(literal(c.value)))"
        }
        func compare(_ op: String) -> String {
            guard c.number != nil else { return "0" }
            return "(\(present) AND \(numeric) AND toFloat64OrZero(\(t)) \(op) \(c.value))"
        }
        switch c.op {
        case .equal: return equal()
        case .notEqual: return "NOT \(equal())"
        case .less: return compare("<")
        case .lessOrEqual: return compare("<=")
        case .greater: return compare(">")
        case .greaterOrEqual: return compare(">=")
        case .match: return "(\(present) AND match(\(t), \(literal(c.value))))"
        case .notMatch: return "NOT (\(present) AND match(\(t), \(literal(c.value))))"
        }
    }

    /// All conditions, or `nil` for an empty filter.
    public static func filter(_ f: EventFilter) -> String? {
        f.isEmpty ? nil : f.conditions.map(condition).joined(separator: " AND ")
    }

    // MARK: - Funnel

    /// The funnel of ``EventIndex/funnel(steps:from:to:window:breakdown:)``. Rows, tab-separated: `kind` (0 overall,
    /// 1 a breakdown value), the value, then per step k the users who reached it and, from step 2, the median
    /// milliseconds from step 1 (`nan` when nobody did).
    ///
    /// How, in one aggregation per user: one sorted array of times per distinct step event, and the array of
    /// starts (step-1 events in `[from, to)`). Step k is an array over the starts, computed from step k−1's: the
    /// earliest event of step k at or after the previous step's time and within the window — skipping, when that
    /// event name also served an earlier step at that same millisecond, as many as were used (events of one name
    /// and time are interchangeable, so which of them a step takes does not matter, only how many are taken). Then
    /// the deepest path, the earliest start among equals (per breakdown value too); then counts and exact medians
    /// (the mean of the two middle values). No row per start: arrays over starts, zipped step by step.
    public static func funnel(
        table: String, steps: [String], from: Int64, to: Int64, window: Int64, breakdown: String?,
        where whereFilter: EventFilter = .all, stepFilters: [EventFilter] = []
    ) -> String {
        let filter = Self.filter(whereFilter)
        // Steps of one event name have one filter (the API checks it): per name, its conditions.
        func stepFilter(_ name: String) -> String {
            guard let k = steps.firstIndex(of: name), k < stepFilters.count, let f = Self.filter(stepFilters[k])
            else { return "" }
            return " AND \(f)"
        }
        let k = steps.count
        var names: [String] = []
        for s in steps where !names.contains(s) { names.append(s) }
        let nameOf = steps.map { names.firstIndex(of: $0)! }
        let repeated = Set(nameOf.filter { n in nameOf.filter { $0 == n }.count > 1 })
        let last = to &+ window
        let grouped = breakdown != nil
        var columns: [String] = []
        // Each name's times. For a repeated step event they are distinct events (by id), so that a copy of one
        // event (before ClickHouse merged it away) never serves two steps.
        for (j, name) in names.enumerated() {
            let cond = "event = \(literal(name))\(stepFilter(name))"
            if repeated.contains(j) {
                // (18.16 loses track of `id` when the aggregate sits inside a lambda's call: sort the tuples first.)
                columns.append("arraySort(groupUniqArrayIf((toInt64(ts_ms), id), \(cond))) AS u\(j)")
                columns.append("arrayMap(x -> tupleElement(x, 1), u\(j)) AS a\(j)")
            } else {
                columns.append("arraySort(groupArrayIf(toInt64(ts_ms), \(cond))) AS a\(j)")
            }
        }
        let startCond = "event = \(literal(steps[0])) AND ts_ms < \(ms(to))\(stepFilter(steps[0]))"
        if grouped {
            columns.append("arraySort(groupArrayIf((toInt64(ts_ms), g), \(startCond))) AS sg")
            columns.append("arrayMap(x -> tupleElement(x, 1), sg) AS t1")
            columns.append("arrayMap(x -> tupleElement(x, 2), sg) AS gs")
        } else {
            columns.append("groupArrayIf(toInt64(ts_ms), \(startCond)) AS t1")
        }
        for step in 1..<k {
            let j = nameOf[step]
            let a = "a\(j)"
            let previous = "t\(step)"
            // Earlier steps of the same event at the previous step's millisecond: events already taken.
            let taken = (0..<step).filter { nameOf[$0] == j }.map { $0 + 1 }
            columns.append("arrayMap(p -> arrayFirstIndex(x -> x >= p, \(a)), \(previous)) AS f\(step + 1)")
            let skip = taken.map { " + (q\($0) = p)" }.joined()
            let params = (["s", "p", "f"] + taken.map { "q\($0)" }).joined(separator: ", ")
            let arrays = (["t1", previous, "f\(step + 1)"] + taken.map { "t\($0)" }).joined(separator: ", ")
            let index = "if(f = 0, 0, f\(skip))"
            columns.append(
                "arrayMap((\(params)) -> if(p < 0 OR \(index) = 0 OR \(index) > length(\(a)), -1, if(\(a)[\(index)] <= s + \(window), \(a)[\(index)], -1)), \(arrays)) AS t\(step + 1)"
            )
        }
        let later = (2...max(2, k)).prefix(k - 1).map { "t\($0)" }
        if later.isEmpty {
            columns.append("arrayMap(x -> 1, t1) AS ds")
        } else {
            let params = later.map { "x\($0.dropFirst())" }.joined(separator: ", ")
            let depth = "1" + later.map { " + (x\($0.dropFirst()) >= 0)" }.joined()
            columns.append("arrayMap((\(params)) -> \(depth), \(later.joined(separator: ", "))) AS ds")
        }
        // Deepest first, then the earliest start: the smallest key (2^47 ms: past the year 6000).
        columns.append("arrayMap((d, s) -> (\(k) - toInt64(d)) * 140737488355328 + s, ds, t1) AS keys")
        columns.append("indexOf(keys, arrayReduce('min', keys)) AS bi")
        // 18.16 prunes a scan column that reaches the result only through lambdas (`id` and `g`, via the arrays the
        // steps' lambdas read), so `kinds`, which every level above reads, names those arrays outside any lambda.
        var anchors = names.indices.map { "length(a\($0))" } + repeated.sorted().map { "length(u\($0))" }
        if grouped { anchors.append("length(sg)") }
        let zero = "if(\(anchors.joined(separator: " + ")) >= 0, 0, 1)"
        if grouped {
            let max = "toInt64(9223372036854775807)"
            let masked = "arrayMap((y, h) -> if(h = v, y, \(max)), keys, gs)"
            columns.append("arrayDistinct(gs) AS uv")
            columns.append(
                "arrayConcat([bi], arrayMap(v -> indexOf(\(masked), arrayReduce('min', \(masked))), uv)) AS bis")
            columns.append("arrayConcat([\(zero)], arrayMap(v -> 1, uv)) AS kinds")
            columns.append("arrayConcat([''], uv) AS vals")
        } else {
            columns.append("[bi] AS bis")
            columns.append("[\(zero)] AS kinds")
            columns.append("[''] AS vals")
        }
        columns.append("arrayMap(i -> ds[i], bis) AS dd")
        for name in later { columns.append("arrayMap(i -> \(name)[i] - t1[i], bis) AS p\(name.dropFirst())") }
        let group = breakdown.map(groupText) ?? "''"
        let scan = """
            SELECT user_id, event, ts_ms, id, properties, \(group) AS g FROM \(table)
            WHERE event IN (\(names.map(literal).joined(separator: ", "))) AND \(timeRange(from, through: last))\(filter.map { " AND (\($0))" } ?? "")
            """
        let perUser = """
            SELECT user_id, \(columns.joined(separator: ",\n    "))
            FROM (\(scan))
            GROUP BY user_id
            HAVING notEmpty(t1)
            """
        let pColumns = later.map { "p\($0.dropFirst())" }
        let joined = (["kinds", "vals", "dd"] + pColumns).joined(separator: ", ")
        let rows = """
            SELECT kind, value, d\(pColumns.map { ", " + $0 }.joined())
            FROM (SELECT \(joined) FROM (\(perUser)))
            ARRAY JOIN kinds AS kind, vals AS value, dd AS d\(pColumns.map { ", \($0)" }.joined())
            """
        var tally = ["kind", "value", "count() AS u1"]
        for step in 2...max(2, k) where step <= k {
            tally.append("countIf(d >= \(step)) AS u\(step)")
            let s = "(arraySort(groupArrayIf(p\(step), d >= \(step))) AS s\(step))"
            tally.append(
                "if(length(\(s)) = 0, nan, (s\(step)[intDiv(length(s\(step)) + 1, 2)] + s\(step)[intDiv(length(s\(step)), 2) + 1]) / 2) AS m\(step)"
            )
        }
        return "SELECT \(tally.joined(separator: ", ")) FROM (\(rows)) GROUP BY kind, value FORMAT TabSeparated"
    }

    // MARK: - Retention

    /// Rows: `kind` (0 overall, 1 a breakdown value), the value, cohort start (ms), size, the `periods` retained
    /// counts. The breakdown value is that of the user's first cohort event (the smallest at a tie), as locally.
    public static func retention(
        table: String, cohortEvent: String, returnEvent: String?, period: RetentionPeriod, periods: Int,
        from: Int64, to: Int64, where whereFilter: EventFilter = .all, breakdown: String? = nil
    ) -> String {
        let filter = Self.filter(whereFilter)
        let length = period.milliseconds
        let lo = period.start(of: from)
        let hi = period.start(of: to - 1) &+ Int64(periods) &* length
        let cohort = "event = \(literal(cohortEvent))"
        let returns = returnEvent.map { "event = \(literal($0))" } ?? "1"
        let start: String
        switch period {
        case .day: start = "intDiv(first, 86400000) * 86400000"
        case .week: start = "(intDiv(first, 86400000) - ((intDiv(first, 86400000) - 4) % 7 + 7) % 7) * 86400000"
        }
        let f = filter.map { " AND (\($0))" } ?? ""
        let perUser = """
            SELECT user_id, minIf(toInt64(ts_ms), \(cohort) AND ts_ms < \(ms(to))) AS first, \(start) AS start,
                \(breakdown.map { "argMinIf(\(groupText($0)), (toInt64(ts_ms), \(groupText($0))), \(cohort) AND ts_ms < \(ms(to)))" } ?? "''") AS g,
                groupArrayIf(toInt64(ts_ms), \(returns) AND ts_ms >= \(ms(lo))) AS r,
                arrayMap(t -> intDiv(t - start, \(length)), arrayFilter(t -> t >= start, r)) AS ks,
                arrayMap(k -> toUInt64(has(ks, k)), range(\(periods))) AS ret
            FROM \(table)
            WHERE ((\(cohort) AND ts_ms < \(ms(to))) OR (\(returns) AND \(timeRange(lo, through: hi - 1))))\(f)
            GROUP BY user_id
            HAVING countIf(\(cohort) AND ts_ms < \(ms(to))) > 0 AND first >= \(from) AND first < \(to)
            """
        let kinds = breakdown == nil ? "[(0, '')]" : "[(0, ''), (1, g)]"
        return """
            SELECT tupleElement(kg, 1) AS kind, tupleElement(kg, 2) AS value, start, count() AS size,
                sumForEach(ret) AS retained
            FROM (SELECT start, ret, arrayJoin(\(kinds)) AS kg FROM (\(perUser)))
            GROUP BY kind, value, start ORDER BY kind, value, start FORMAT TabSeparated
            """
    }

    // MARK: - Experiment

    /// Rows: `kind` (0 a variant, 1 the excluded users), variant, exposed, converted.
    public static func experiment(
        table: String, exposureEvent: String, variantProperty: String, goalEvent: String, from: Int64, to: Int64,
        window: Int64, where whereFilter: EventFilter = .all
    ) -> String {
        let filter = Self.filter(whereFilter)
        let exposure =
            "event = \(literal(exposureEvent)) AND ts_ms >= \(ms(from)) AND ts_ms < \(ms(to)) AND \(has(variantProperty))"
        let goal = "event = \(literal(goalEvent)) AND ts_ms >= \(ms(from)) AND ts_ms <= \(ms(to &+ window))"
        let f = filter.map { " AND (\($0))" } ?? ""
        let perUser = """
            SELECT user_id, minIf(t, x) AS t_exp, argMinIf(v, t, x) AS variant, uniqExactIf(v, x) AS variants,
                arrayExists(y -> y >= t_exp AND y <= t_exp + \(window), groupArrayIf(t, gl)) AS converted
            FROM (
                SELECT user_id, toInt64(ts_ms) AS t, \(property(variantProperty)) AS v, \(exposure) AS x, \(goal) AS gl
                FROM \(table)
                WHERE ((\(exposure)) OR (\(goal)))\(f)
            )
            GROUP BY user_id
            HAVING countIf(x) > 0
            """
        return """
            SELECT variants > 1 AS kind, if(variants > 1, '', variant) AS name, count() AS exposed,
                countIf(converted) AS converted
            FROM (\(perUser))
            GROUP BY kind, name FORMAT TabSeparated
            """
    }
}
