import LineProtocol

/// Product analytics over events: funnels, retention cohorts and A/B results. Pure functions over event rows (the
/// store reads the rows; these decide what they mean); the exact semantics are in docs/events.md. Times are
/// milliseconds since the epoch.

/// One event as the analytics read it.
public struct EventRow: Sendable, Hashable {
    public var user: String
    public var event: String
    public var time: Int64
    /// A property of the event (breakdown or variant), as text; `nil` when absent.
    public var property: String?

    public init(user: String, event: String, time: Int64, property: String? = nil) {
        self.user = user
        self.event = event
        self.time = time
        self.property = property
    }
}

// MARK: - Funnel

public struct FunnelStep: Sendable, Equatable {
    public var event: String
    public var users: Int
    public var conversionFromFirst: Double
    public var conversionFromPrevious: Double
    public var dropoff: Int
    /// Median of (t_k − t_1) over the users who reached this step; `nil` for step 1 and when nobody reached it.
    public var medianMsFromFirst: Double?
}

public enum Funnel {
    /// Per step: users, conversions, drop-off and median time from step 1.
    ///
    /// A user enters with any step-1 event at t1 in `[from, to)`; from that start they reach step k if there are
    /// distinct events of steps 2…k at t1 ≤ t2 ≤ … ≤ tk ≤ t1 + window. Each user counts once, at the deepest step
    /// reached over all their starts; their times are those of the earliest start reaching that depth, taking at
    /// each step the earliest qualifying event (which gives every step its smallest possible time).
    ///
    /// `rows` may hold any events; only those named in `steps` matter. (The daemon asks its ``EventIndex``
    /// directly; this form is for tests and tools.)
    public static func compute(steps: [String], rows: [EventRow], from: Int64, to: Int64, window: Int64)
        -> [FunnelStep]
    {
        EventIndex(rows).funnel(steps: steps, from: from, to: to, window: window).steps
    }

    /// The same funnel per value of the step-1 event's property (`rows[].property`; absent → `"(none)"`): for
    /// a value v only starts whose step-1 event has v count.
    public static func breakdown(steps: [String], rows: [EventRow], from: Int64, to: Int64, window: Int64)
        -> [String: [FunnelStep]]
    {
        EventIndex(rows).funnel(steps: steps, from: from, to: to, window: window, breakdown: EventRow.propertyKey)
            .breakdown ?? [:]
    }

    public static let none = "(none)"

    /// The steps of an answer from the users who reached each step and the median milliseconds from step 1 (`nil`
    /// for step 1 and when nobody reached it): what a funnel computed elsewhere (ClickHouse) is turned into.
    public static func steps(_ names: [String], users: [Int], medians: [Double?]) -> [FunnelStep] {
        names.indices.map { k in
            let previous = k == 0 ? users[0] : users[k - 1]
            return FunnelStep(
                event: names[k], users: users[k],
                conversionFromFirst: users[0] == 0 ? 0 : Double(users[k]) / Double(users[0]),
                conversionFromPrevious: previous == 0 ? 0 : Double(users[k]) / Double(previous),
                dropoff: previous - users[k], medianMsFromFirst: k == 0 ? nil : medians[k])
        }
    }
}

extension EventIndex {
    /// An index of `rows`, each row's `property` under the key ``EventRow/propertyKey``.
    public init(_ rows: [EventRow]) {
        self.init()
        for r in rows {
            append(
                time: r.time, name: r.event, user: r.user,
                properties: r.property.map { [EventProperty(EventRow.propertyKey, $0)] } ?? [])
        }
        compact()
    }
}

extension EventRow {
    /// The property key under which ``EventIndex/init(_:)`` files `property`.
    public static let propertyKey = "property"
}

// MARK: - Retention

public enum RetentionPeriod: String, Sendable {
    case day, week

    /// The UTC start of the period holding `t` (ISO weeks start on Monday).
    public func start(of t: Int64) -> Int64 {
        let dayMs: Int64 = 86_400_000
        let days = t >= 0 ? t / dayMs : -((-t + dayMs - 1) / dayMs)
        switch self {
        case .day: return days * dayMs
        case .week:
            // 1970-01-05 (day 4) was a Monday.
            let offset = ((days - 4) % 7 + 7) % 7
            return (days - offset) * dayMs
        }
    }

    public var milliseconds: Int64 { self == .day ? 86_400_000 : 7 * 86_400_000 }
}

public struct Cohort: Sendable, Equatable {
    public var start: Int64
    public var size: Int
    public var retained: [Int]
    public var rates: [Double]

    public init(start: Int64, size: Int, retained: [Int], rates: [Double]) {
        self.start = start
        self.size = size
        self.retained = retained
        self.rates = rates
    }
}

public enum Retention {
    /// A user's cohort is the period of their first `cohortEvent` (over all of `rows`), which must lie in
    /// `[from, to)`; period k counts the cohort's users with a `returnEvent` (any event when `returnEvent` is nil)
    /// in `[cohortStart + k·period, cohortStart + (k+1)·period)`.
    public static func compute(
        cohortEvent: String, returnEvent: String?, period: RetentionPeriod, periods: Int, rows: [EventRow],
        from: Int64, to: Int64
    ) -> [Cohort] {
        EventIndex(rows).retention(
            cohortEvent: cohortEvent, returnEvent: returnEvent, period: period, periods: periods, from: from, to: to)
    }
}

// MARK: - Experiment

public struct VariantResult: Sendable, Equatable {
    public var variant: String
    public var exposed: Int
    public var converted: Int
    public var rate: Double
    public var ci95: (Double, Double)
    /// Relative to the control's rate; `nil` when the control's rate is 0.
    public var uplift: Double?
    /// Two-sided two-proportion z-test against the control; `nil` for the control and when undefined.
    public var pValue: Double?

    public static func == (a: VariantResult, b: VariantResult) -> Bool {
        a.variant == b.variant && a.exposed == b.exposed && a.converted == b.converted && a.rate == b.rate
            && a.ci95 == b.ci95 && a.uplift == b.uplift && a.pValue == b.pValue
    }
}

public struct ExperimentResult: Sendable, Equatable {
    public var control: String?
    public var variants: [VariantResult]
    public var excludedUsers: Int
}

public enum Experiment {
    /// Per variant, from each user's first exposure in `[from, to)` (`rows` with `event == exposureEvent` carry
    /// the variant in `property`; exposures without it are ignored): exposed users, users with a `goalEvent` in
    /// `[t_exposure, t_exposure + window]`, the rate with its 95 % Wilson interval, uplift against the control and
    /// the two-proportion z-test p-value. Users exposed to more than one variant in the range are excluded and
    /// counted. The control is `control` if given, else the first variant by name.
    public static func compute(
        exposureEvent: String, goalEvent: String, rows: [EventRow], from: Int64, to: Int64, window: Int64,
        control: String?
    ) -> ExperimentResult {
        EventIndex(rows).experiment(
            exposureEvent: exposureEvent, variantProperty: EventRow.propertyKey, goalEvent: goalEvent, from: from,
            to: to, window: window, control: control)
    }

    /// Rates, intervals, uplift and p-values from per-variant counts.
    public static func results(_ counts: [String: (exposed: Int, converted: Int)], excluded: Int, control: String?)
        -> ExperimentResult
    {
        let names = counts.keys.sorted()
        let controlName = control ?? names.first
        let c = controlName.flatMap { name in counts[name].map { (name, $0.exposed, $0.converted) } }
        let variants = names.map { name -> VariantResult in
            let (n, x) = counts[name]!
            let rate = Double(x) / Double(n)
            var uplift: Double?
            var p: Double?
            if let (cn, nc, xc) = c {
                let rc = Double(xc) / Double(nc)
                if name == cn {
                    uplift = 0
                } else {
                    uplift = rc == 0 ? nil : (rate - rc) / rc
                    p = twoProportionP(x, n, xc, nc)
                }
            }
            return VariantResult(
                variant: name, exposed: n, converted: x, rate: rate, ci95: wilson(x, n), uplift: uplift, pValue: p)
        }
        return ExperimentResult(control: c?.0 ?? control, variants: variants, excludedUsers: excluded)
    }

    static let z95 = 1.959_963_984_540_054

    /// Wilson score interval at 95 %.
    public static func wilson(_ x: Int, _ n: Int) -> (Double, Double) {
        guard n > 0 else { return (0, 0) }
        let nd = Double(n)
        let p = Double(x) / nd
        let z2 = z95 * z95
        let denominator = 1 + z2 / nd
        let center = (p + z2 / (2 * nd)) / denominator
        let half = z95 * (p * (1 - p) / nd + z2 / (4 * nd * nd)).squareRoot() / denominator
        // At 0 and n successes the bound is exactly 0 or 1 (rounding would leave it a hair inside).
        return (x == 0 ? 0 : max(0, center - half), x == n ? 1 : min(1, center + half))
    }

    /// Two-sided p-value of the pooled two-proportion z-test; `nil` when the pooled variance is 0.
    public static func twoProportionP(_ x1: Int, _ n1: Int, _ x2: Int, _ n2: Int) -> Double? {
        guard n1 > 0, n2 > 0 else { return nil }
        let p1 = Double(x1) / Double(n1)
        let p2 = Double(x2) / Double(n2)
        let pooled = Double(x1 + x2) / Double(n1 + n2)
        let se = (pooled * (1 - pooled) * (1 / Double(n1) + 1 / Double(n2))).squareRoot()
        guard se > 0 else { return nil }
        let z = abs(p1 - p2) / se
        return erfc(z / 2.0.squareRoot())
    }
}

#if canImport(Glibc)
    import func Glibc.erfc
#elseif canImport(Darwin)
    import func Darwin.erfc
#endif
