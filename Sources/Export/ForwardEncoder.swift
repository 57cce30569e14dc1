import LineProtocol
import Rollups

/// Writes outbox rows as line protocol, straight from the rollups into one buffer: each series' escaped
/// `measurement_1m,tags…` and each field's escaped `name_<aggregate>=` keys are made and checked once and kept
/// between batches (the forwarder's thread owns the encoder), so a point costs its values' digits and little else.
/// The output is what ``LineEncoder`` writes for the same point (the tests compare both).
struct ForwardEncoder {
    let aggregates: [(suffix: String, aggregate: Aggregate)]
    private let aggregateList: [Aggregate]
    let measurementSuffix: String
    let instanceTag: String
    let hostname: String
    /// Escaped series prefixes by series row id; `nil` for a series that cannot be written (logged once).
    private var prefixes: [Int64: [UInt8]?] = [:]
    private var keys: [String: FieldKeys?] = [:]
    private var values: [Double?] = []
    /// The cache bounds: past them the caches start over (a series-flood costs encoding, never memory).
    static let maxPrefixes = 200_000
    static let maxKeys = 100_000

    init(_ configuration: ForwarderConfiguration) {
        aggregates = configuration.aggregates.compactMap { name in Aggregate(name).map { (name, $0) } }
        aggregateList = aggregates.map(\.aggregate)
        measurementSuffix = configuration.measurementSuffix
        instanceTag = configuration.instanceTag
        hostname = configuration.hostname
    }

    /// The escaped keys of one source field: `name_<suffix>=` for each aggregate, then `name_count=`,
    /// `name_last=`, `name_distinct=`, each with its offset into `bytes`; `leadsWithBlank` when the name starts
    /// with tab or NUL (such a field cannot come first: InfluxDB skips whitespace after the tag set).
    struct FieldKeys {
        var bytes: [UInt8] = []
        var ranges: [Range<Int>] = []
        var leadsWithBlank = false
    }

    /// Why a row was not written: the caller logs it and counts the row as rejected.
    struct Failure: Error {
        var message: String
    }

    /// Appends the point of `row` (and a newline) to `out`; `false` when the row has nothing to write (no field
    /// with values). Throws when the row cannot be written as line protocol; `out` is then as it was.
    mutating func append(_ row: SQLiteStore.OutboxRow, to out: inout [UInt8]) throws(Failure) -> Bool {
        let mark = out.count
        let prefix: [UInt8]
        if let known = prefixes[row.rowID] {
            guard let known else { throw Failure(message: "the series cannot be written as line protocol") }
            prefix = known
        } else {
            let made = makePrefix(row.series)
            if prefixes.count >= Self.maxPrefixes { prefixes.removeAll(keepingCapacity: true) }
            prefixes[row.rowID] = .some(try? made.get())
            prefix = try made.get()
        }
        guard row.start >= TimeRange.minNanoseconds && row.start <= TimeRange.maxNanoseconds else {
            throw Failure(message: "timestamp \(row.start) is outside InfluxDB's range")
        }
        out.append(contentsOf: prefix)
        out.append(0x20)
        var written = 0
        // Fields whose names start with tab or NUL go last (a second pass, only when there are such fields); when
        // only such fields are left, nothing can come first. The rollups are read in place, never copied.
        try row.fields.withUnsafeBufferPointer { fields throws(Failure) in
            var deferred: [Int] = []
            for i in fields.indices where fields[i].rollup.count > 0 {
                let fieldKeys: FieldKeys
                do throws(Failure) {
                    fieldKeys = try self.fieldKeys(fields[i].name)
                } catch {
                    out.removeSubrange(mark...)
                    throw error
                }
                if fieldKeys.leadsWithBlank {
                    deferred.append(i)
                    continue
                }
                written += appendFields(fields[i].rollup, fieldKeys, written: written, to: &out)
            }
            guard !deferred.isEmpty else { return }
            if written == 0 {
                out.removeSubrange(mark...)
                throw Failure(message: "no field key can come first: every key starts with tab or NUL")
            }
            for i in deferred {
                written += appendFields(
                    fields[i].rollup, try self.fieldKeys(fields[i].name), written: written, to: &out)
            }
        }
        if written == 0 {
            out.removeSubrange(mark...)
            return false
        }
        out.append(0x20)
        LineEncoder.appendDecimal(Forwarder.floorDiv(row.start, 1_000_000_000), to: &out)
        out.append(0x0A)
        return true
    }

    /// Writes the fields of one rollup; the number written.
    private mutating func appendFields(
        _ rollup: borrowing FieldRollup, _ keys: borrowing FieldKeys, written: Int, to out: inout [UInt8]
    ) -> Int {
        var n = 0
        func key(_ index: Int, _ out: inout [UInt8]) {
            if written + n > 0 { out.append(0x2C) }
            keys.bytes.withUnsafeBufferPointer {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: $0[keys.ranges[index]]))
            }
            n += 1
        }
        let count = aggregates.count
        switch rollup.kind {
        case .numeric:
            // Every aggregate at once: the kept points are sorted once for all the quantiles.
            rollup.values(of: aggregateList, into: &values)
            for k in 0..<count {
                if case .count = aggregates[k].aggregate {
                    key(count, &out)
                    LineEncoder.appendDecimal(rollup.count, to: &out)
                    out.append(0x69)
                } else if let v = values[k], v.isFinite {
                    key(k, &out)
                    Self.appendFloat(v, to: &out)
                }
            }
        case .boolean:
            key(count, &out)
            LineEncoder.appendDecimal(rollup.count, to: &out)
            out.append(0x69)
            key(count + 1, &out)
            out.append(contentsOf: (rollup.lastBool ? "true" : "false").utf8)
        case .string:
            key(count, &out)
            LineEncoder.appendDecimal(rollup.count, to: &out)
            out.append(0x69)
            if !rollup.lastBytes.contains(0x0A) {
                key(count + 1, &out)
                out.append(0x22)
                for b in rollup.lastBytes {
                    if b == 0x22 || b == 0x5C { out.append(0x5C) }
                    out.append(b)
                }
                out.append(0x22)
            }
        case .distinct:
            key(count, &out)
            LineEncoder.appendDecimal(rollup.count, to: &out)
            out.append(0x69)
            key(count + 2, &out)
            LineEncoder.appendDecimal(Int64(rollup.distinct.estimate.rounded()), to: &out)
            out.append(0x69)
        }
        return n
    }

    /// A finite float in a form that reads back to the same bits: whole numbers below 2^53 as their digits (no
    /// `String`), others in Swift's shortest round-trip form. Line protocol reads a number without `i` as a float.
    static func appendFloat(_ v: Double, to out: inout [UInt8]) {
        if v == v.rounded(.towardZero) && v.magnitude < 9_007_199_254_740_992 && !(v == 0 && v.sign == .minus) {
            LineEncoder.appendDecimal(Int64(v), to: &out)
        } else {
            out.append(contentsOf: v.description.utf8)
        }
    }

    private func makePrefix(_ series: SeriesInfo) -> Result<[UInt8], Failure> {
        var tags = series.tags.map { (key: $0.key, value: $0.value) }
        if !instanceTag.isEmpty {
            tags.removeAll { $0.key == instanceTag }
            tags.append((instanceTag, hostname))
            tags.sort { $0.key < $1.key }
        }
        // LineEncoder checks every name and writes the escapes; the prefix is its output up to the fields.
        let probe = Point(
            measurement: series.measurement + measurementSuffix, tags: tags, fields: [("f", .boolean(true))],
            timestamp: nil)
        var bytes: [UInt8] = []
        do {
            try LineEncoder.append(probe, to: &bytes)
        } catch {
            return .failure(Failure(message: error.message))
        }
        bytes.removeLast(" f=true\n".utf8.count)
        return .success(bytes)
    }

    private mutating func fieldKeys(_ name: String) throws(Failure) -> FieldKeys {
        if let known = keys[name] {
            guard let known else { throw Failure(message: "the field name \"\(name)\" cannot be written") }
            return known
        }
        var made: FieldKeys? = FieldKeys()
        let names = aggregates.map { "\(name)_\($0.suffix)" } + ["\(name)_count", "\(name)_last", "\(name)_distinct"]
        for key in names {
            // Written by LineEncoder (which checks and escapes it) as the second field of a throwaway point.
            var bytes: [UInt8] = []
            guard
                (try? LineEncoder.append(
                    Point(
                        measurement: "m", tags: [], fields: [("a", .boolean(true)), (key, .boolean(true))],
                        timestamp: nil), to: &bytes))
                    != nil
            else {
                made = nil
                break
            }
            // The bytes are `m a=true,` KEY `=` `true\n`: keep the escaped key and its `=`.
            let escaped = bytes["m a=true,".utf8.count..<(bytes.count - "true\n".utf8.count)]
            made!.ranges.append(made!.bytes.count..<(made!.bytes.count + escaped.count))
            made!.bytes.append(contentsOf: escaped)
        }
        if let first = name.utf8.first, first == 0x09 || first == 0x00 { made?.leadsWithBlank = true }
        if keys.count >= Self.maxKeys { keys.removeAll(keepingCapacity: true) }
        keys[name] = .some(made)
        guard let made else { throw Failure(message: "the field name \"\(name)\" cannot be written") }
        return made
    }
}
