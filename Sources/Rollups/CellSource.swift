/// What a query reads from one place that holds rollups (the open buckets in memory, one stored tier).
public struct CellRead: Sendable {
    public var measurement: String
    /// The fields to read (`nil`: every field). ``CellSource`` reads name them: cells come with the index of their
    /// field here.
    public var fields: [String]?
    /// Bucket starts in `[from, to)`.
    public var from: Int64
    public var to: Int64
    /// Whether quantile sketches are decoded; a query that computes no quantile leaves them empty.
    public var sketches: Bool
    /// Whether rows may be looked up by key (tests turn it off to compare with a scan).
    public var keyed = true
    /// The text of the series condition the read is made with, when it has one: reads with the same text take the
    /// same series, so which they are is remembered (until a series is added to the measurement).
    public var condition: String?
    /// Asked as rows are read: when it answers true the read stops with an error (a query past its timeout, or
    /// whose client left).
    public var shouldStop: (@Sendable () -> Bool)?

    public init(measurement: String, fields: [String]?, from: Int64, to: Int64, sketches: Bool = true) {
        self.measurement = measurement
        self.fields = fields
        self.from = from
        self.to = to
        self.sketches = sketches
    }
}

/// A place queries read rollup cells from: the open buckets (``RollupEngine``), a stored tier (`Export`'s
/// `SQLiteStore`), cells waiting to be stored. The query engine reads each tier through these two calls and nothing
/// else, so it works on any of them, or on all together.
public protocol CellSource: Sendable {
    /// Every cell of `read.measurement` with a bucket start in `[read.from, read.to)`, of the fields `read.fields`
    /// names (which it must), of the series `accept` takes (every series when `nil`; `accept` is called outside
    /// any lock ingestion needs). `body` gets the bucket start, the series, the field's index in `read.fields` and
    /// the cell.
    func visitCells(
        _ read: CellRead, series accept: ((SeriesInfo) -> Bool)?,
        _ body: (Int64, SeriesInfo, Int, consuming FieldRollup) -> Void
    ) throws

    /// ``visitCells(_:series:_:)`` for queries that need no points, quantiles or distinct counts: each cell's
    /// ``FieldSummary``.
    func visitSummaries(
        _ read: CellRead, series accept: ((SeriesInfo) -> Bool)?, _ body: (Int64, SeriesInfo, Int, FieldSummary) -> Void
    ) throws
}

/// The type of a field as InfluxDB names it (`SHOW FIELD KEYS`).
public enum FieldType: String, Sendable, Hashable, Comparable {
    case float, integer, string, boolean

    /// The type of the values of a cell.
    public init(_ rollup: FieldRollup) { self.init(kind: rollup.kind, integer: rollup.isInteger) }

    public init(kind: FieldKind, integer: Bool) {
        switch kind {
        case .numeric: self = integer ? .integer : .float
        case .boolean: self = .boolean
        // Events' distinct users are user ids: strings.
        case .string, .distinct: self = .string
        }
    }

    /// The order InfluxDB prefers when a field has several types (float wins over integer, …).
    public static func < (a: FieldType, b: FieldType) -> Bool { a.rank < b.rank }

    private var rank: Int {
        switch self {
        case .float: 0
        case .integer: 1
        case .string: 2
        case .boolean: 3
        }
    }
}

/// What series and fields a place knows (`SHOW` statements, `SELECT *`, a regex measurement).
public protocol SeriesCatalog: Sendable {
    /// Every series it knows.
    func catalogSeries() throws -> [SeriesInfo]
    /// The fields of each measurement with their types.
    func catalogFields() throws -> [String: [String: FieldType]]
    /// The fields of one measurement with their types (what a SELECT needs: cheap, no walk of every series).
    func catalogFields(of measurement: String) throws -> [String: FieldType]
    /// The tag keys of one measurement's series.
    func catalogTagKeys(of measurement: String) throws -> Set<String>
}
