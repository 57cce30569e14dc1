import LineProtocol
import Rollups

/// Writes outbox rows as line protocol, straight from the rollups into one buffer: each series' escaped
/// `measurement_1m,tags…` and each field's escaped `name_<aggregate>=` keys are made and checked once and kept
/// between batches (the forwarder's thread owns the encoder), so a point costs its values' digits and little else.
/// The output is what ``LineEncoder`` writes for the same point (the tests compare both). `package`: StorageBench
/// times it on the rows the forwarder reads.
package struct ForwardEncoder {
    let aggregates: [(suffix: String, aggregate: Aggregate)]
    private let aggregateList: [Aggregate]
    let measurementSuffix: String
    let instanceTag: String
    let hostname: String
    /// Escaped series prefixes by series row id; `nil` for a series that cannot be written (logged once).
    private var prefixes: [Int64: [UInt8]?] = [:]
    /// Each field name's keys: its index in `keyTable`, -1 for a name that cannot be written.
    private var keyIndex: [String: Int32] = [:]
    private var keyTable: [FieldKeys] = []
    /// The names of the last row's fields and their `keyIndex`, by position: a series' rows, and a measurement's,
    /// come with the same fields in the same order, so a name is compared where it was, not hashed.
    private var lastFields: [(name: String, key: Int32)] = []
    /// The cache bounds: past them the caches start over (a series-flood costs encoding, never memory).
    static let maxPrefixes = 200_000
    static let maxKeys = 100_000

    package init(_ configuration: ForwarderConfiguration) {
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
    package struct Failure: Error {
        var message: String
    }

    /// Appends the points of `rows` to `out`, each as ``append(_:to:)`` does; a row that cannot be written goes to
    /// `rejected` and the rest are written. The number of points written. Room is reserved at the bytes a row
    /// took in the previous batch, so a body of a thousand bytes a point is not copied as it grows.
    package mutating func append(
        _ rows: [SQLiteStore.OutboxRow], to out: inout [UInt8],
        rejected: (SQLiteStore.OutboxRow, Failure) -> Void
    ) -> Int {
        let before = out.count
        out.reserveCapacity(before + rows.count * rowBytes)
        var points = 0
        for row in rows {
            do throws(Failure) {
                if try append(row, to: &out) { points += 1 }
            } catch {
                rejected(row, error)
            }
        }
        if !rows.isEmpty { rowBytes = Swift.max(64, (out.count - before) / rows.count + 64) }
        return points
    }
    private var rowBytes = 768

    /// Appends the point of `row` (and a newline) to `out`; `false` when the row has nothing to write (no field
    /// with values). Throws when the row cannot be written as line protocol; `out` is then as it was.
    package mutating func append(_ row: SQLiteStore.OutboxRow, to out: inout [UInt8]) throws(Failure) -> Bool {
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
        // The row is written into the encoder's scratch memory and appended to `out` in one copy at the end, so
        // a failure leaves `out` as it was.
        var w = RowWriter(scratch)
        w.reserve(prefix.count + 1)
        prefix.withUnsafeBufferPointer { w.bytes($0) }
        w.byte(0x20)
        var written = 0
        // Fields whose names start with tab or NUL go last (a second pass, only when there are such fields); when
        // only such fields are left, nothing can come first. The rollups are read in place, never copied.
        try row.fields.withUnsafeBufferPointer { fields throws(Failure) in
            var deferred: [Int] = []
            for i in fields.indices where fields[i].rollup.count > 0 {
                let k = try self.keys(fields[i].name, at: i)
                // Read in place: the keys are not copied (nor retained) per field.
                let deferring = keyTable.withUnsafeBufferPointer { table in
                    if table[k].leadsWithBlank { return true }
                    written += writeFields(fields[i].rollup, table[k], written: written, to: &w)
                    return false
                }
                if deferring { deferred.append(i) }
            }
            guard !deferred.isEmpty else { return }
            if written == 0 { throw Failure(message: "no field key can come first: every key starts with tab or NUL") }
            for i in deferred {
                let k = try self.keys(fields[i].name, at: i)
                keyTable.withUnsafeBufferPointer { table in
                    written += writeFields(fields[i].rollup, table[k], written: written, to: &w)
                }
            }
        }
        if written == 0 { return false }
        w.reserve(22)
        w.byte(0x20)
        w.decimal(Forwarder.floorDiv(row.start, 1_000_000_000))
        w.byte(0x0A)
        out.append(contentsOf: UnsafeBufferPointer(start: w.base, count: w.count))
        return true
    }

    /// Writes the fields of one rollup; the number written.
    private func writeFields(
        _ rollup: borrowing FieldRollup, _ keys: borrowing FieldKeys, written: Int, to w: inout RowWriter
    ) -> Int {
        let count = aggregates.count
        // Room for every key of the field, its comma and its longest value (`-1.2345678901234567e-308` and the
        // like: 24 bytes; a whole number with its `i`: 21), and a string value with every byte escaped.
        w.reserve(keys.bytes.count + (count + 3) * 26 + (rollup.kind == .string ? 2 * rollup.lastBytes.count + 2 : 0))
        var n = 0
        keys.bytes.withUnsafeBufferPointer { keyBytes in
            func key(_ index: Int, _ w: inout RowWriter) {
                if written + n > 0 { w.byte(0x2C) }
                w.bytes(UnsafeBufferPointer(rebasing: keyBytes[keys.ranges[index]]))
                n += 1
            }
            switch rollup.kind {
            case .numeric:
                // Every aggregate at once: the kept points are sorted once for all the quantiles.
                rollup.values(of: aggregateList, into: &scratch.values)
                let values = scratch.values
                for k in 0..<count {
                    if case .count = aggregates[k].aggregate {
                        key(count, &w)
                        w.decimal(rollup.count)
                        w.byte(0x69)
                    } else if let v = values[k], v.isFinite {
                        key(k, &w)
                        w.float(v)
                    }
                }
            case .boolean:
                key(count, &w)
                w.decimal(rollup.count)
                w.byte(0x69)
                key(count + 1, &w)
                rollup.lastBool ? w.ascii("true") : w.ascii("false")
            case .string:
                key(count, &w)
                w.decimal(rollup.count)
                w.byte(0x69)
                if !rollup.lastBytes.contains(0x0A) {
                    key(count + 1, &w)
                    w.byte(0x22)
                    for b in rollup.lastBytes {
                        if b == 0x22 || b == 0x5C { w.byte(0x5C) }
                        w.byte(b)
                    }
                    w.byte(0x22)
                }
            case .distinct:
                key(count, &w)
                w.decimal(rollup.count)
                w.byte(0x69)
                key(count + 2, &w)
                w.decimal(Int64(rollup.distinct.estimate.rounded()))
                w.byte(0x69)
            }
        }
        return n
    }

    /// ``RowWriter/float(_:)`` appended to an array (the tests read it).
    static func appendFloat(_ v: Double, to out: inout [UInt8]) {
        let scratch = Scratch()
        var w = RowWriter(scratch)
        w.reserve(32)
        w.float(v)
        out.append(contentsOf: UnsafeBufferPointer(start: w.base, count: w.count))
    }

    /// The encoder's row memory (grown by ``RowWriter/reserve(_:)``, kept between rows). Unchecked `Sendable`: it
    /// is only touched by the encoder that owns it, which one thread uses at a time (the forwarder's `Mutex`).
    final class Scratch: @unchecked Sendable {
        var base: UnsafeMutablePointer<UInt8>
        var capacity: Int
        /// A numeric field's aggregates, in the order of ``ForwardEncoder/aggregates`` (kept between fields).
        var values: [Double?] = []
        init(capacity: Int = 4096) {
            self.capacity = capacity
            base = .allocate(capacity: capacity)
        }
        deinit { base.deallocate() }
    }
    private let scratch = Scratch()

    /// Writes one row through a pointer into ``Scratch``: room is reserved once per part (prefix, field,
    /// timestamp), so a byte costs a store, not an array's capacity and uniqueness checks.
    struct RowWriter {
        let scratch: Scratch
        private(set) var base: UnsafeMutablePointer<UInt8>
        private var capacity: Int
        private(set) var count = 0

        init(_ scratch: Scratch) {
            self.scratch = scratch
            base = scratch.base
            capacity = scratch.capacity
        }

        mutating func reserve(_ n: Int) {
            guard count + n > capacity else { return }
            let bigger = Swift.max(capacity * 2, count + n)
            let fresh = UnsafeMutablePointer<UInt8>.allocate(capacity: bigger)
            fresh.update(from: base, count: count)
            base.deallocate()
            base = fresh
            capacity = bigger
            scratch.base = fresh
            scratch.capacity = bigger
        }

        @inline(__always)
        mutating func byte(_ b: UInt8) {
            base[count] = b
            count += 1
        }

        @inline(__always)
        mutating func bytes(_ b: UnsafeBufferPointer<UInt8>) {
            guard let from = b.baseAddress else { return }
            (base + count).update(from: from, count: b.count)
            count += b.count
        }

        mutating func ascii(_ s: StaticString) {
            bytes(UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
        }

        /// A signed decimal integer.
        mutating func decimal(_ value: Int64) {
            if value < 0 { byte(0x2D) }
            digits(value.magnitude, fractionDigits: 0)
        }

        /// `digits` in decimal with a point `fractionDigits` from the right (none for 0; `0.` and zeros first when
        /// `digits` has no more digits than that). Written from the right, after counting them.
        @inline(__always)
        mutating func digits(_ digits: UInt64, fractionDigits: Int) {
            var n = 1
            var rest = digits / 10
            while rest > 0 {
                n += 1
                rest /= 10
            }
            let length = fractionDigits == 0 ? n : Swift.max(n, fractionDigits + 1) + 1
            var at = count + length
            rest = digits
            for k in 0..<(length - (fractionDigits == 0 ? 0 : 1)) {
                if fractionDigits > 0 && k == fractionDigits {
                    at -= 1
                    base[at] = 0x2E
                }
                at -= 1
                base[at] = UInt8(truncatingIfNeeded: rest % 10) &+ 0x30
                rest /= 10
            }
            count += length
        }

        /// A finite float in a form that reads back to the same bits: whole numbers below 2^53 as their digits,
        /// short decimals (`91.0029`: what most gauges send, and the min, max, first, last and quantiles of such
        /// values) as their digits with a point, both without `String`; other values in Swift's shortest
        /// round-trip form. Line protocol reads a number without `i` as a float. Where Swift writes no exponent
        /// (`1e-4` ≤ |v| < 2^53) the digits are Swift's (the tests compare both). Needs 24 bytes of room.
        mutating func float(_ v: Double) {
            let magnitude = v.magnitude
            // Whole below 2^53: the truncating conversion (one instruction, no libm call) is exact.
            if magnitude < 9_007_199_254_740_992, Double(Int64(v)) == v, !(v == 0 && v.sign == .minus) {
                decimal(Int64(v))
                return
            }
            if magnitude >= 1e-4, let (digits, fraction) = ForwardEncoder.shortDecimal(magnitude) {
                if v < 0 { byte(0x2D) }
                self.digits(digits, fractionDigits: fraction)
                return
            }
            // Swift's shortest round-trip digits, written by `Double.write(to:)` straight into the row (no String).
            var sink = ASCIISink(at: base + count)
            v.write(to: &sink)
            count += sink.written
        }
    }

    /// Where `Double.write(to:)` puts its digits: the stream's ASCII entry point takes them as bytes, with no
    /// String made (the caller has reserved the 24 bytes the longest form needs).
    struct ASCIISink: TextOutputStream {
        let at: UnsafeMutablePointer<UInt8>
        var written = 0

        mutating func write(_ string: String) {
            for b in string.utf8 {
                at[written] = b
                written += 1
            }
        }

        mutating func _writeASCII(_ buffer: UnsafeBufferPointer<UInt8>) {
            guard let from = buffer.baseAddress else { return }
            (at + written).update(from: from, count: buffer.count)
            written += buffer.count
        }
    }

    /// `magnitude` as `digits / 10^fraction` with the fewest fraction digits (one to ten) and `digits` < 2^53:
    /// then the decimal reads back as `magnitude` (a quotient of two exactly represented numbers is correctly
    /// rounded, which is what reading a decimal is). `nil` when no such form exists: the caller writes Swift's
    /// digits, which are the same where this finds some. Each candidate costs a multiply and a rounding; only one
    /// within two ulps of a whole number is checked by division. Ten digits: a mean or a standard deviation (17
    /// digits) used to try fifteen candidates before Swift wrote it anyway.
    @inline(__always)
    static func shortDecimal(_ magnitude: Double) -> (digits: UInt64, fraction: Int)? {
        var scale = 1.0
        for fraction in 1...10 {
            scale *= 10
            let scaled = magnitude * scale
            guard scaled < 9_007_199_254_740_992 else { return nil }
            // Rounded to the nearest whole number by adding and taking away 2^52 (below 2^52 the sum has no
            // fraction bits; at or above it `scaled` is whole): no libm call.
            let whole =
                scaled < 4_503_599_627_370_496 ? (scaled + 4_503_599_627_370_496) - 4_503_599_627_370_496 : scaled
            if (scaled - whole).magnitude <= scaled * 4.5e-16 && whole / scale == magnitude {
                return (UInt64(whole), fraction)
            }
        }
        return nil
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

    /// The index in `keyTable` of the keys of field `name`, the row's field number `position`.
    @inline(__always)
    private mutating func keys(_ name: String, at position: Int) throws(Failure) -> Int {
        if position < lastFields.count, lastFields[position].name == name { return Int(lastFields[position].key) }
        let k = try fieldKeys(name)
        if position < lastFields.count {
            lastFields[position] = (name, Int32(k))
        } else if position == lastFields.count {
            lastFields.append((name, Int32(k)))
        }
        return k
    }

    private mutating func fieldKeys(_ name: String) throws(Failure) -> Int {
        if let known = keyIndex[name] {
            guard known >= 0 else { throw Failure(message: "the field name \"\(name)\" cannot be written") }
            return Int(known)
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
        if keyIndex.count >= Self.maxKeys {
            keyIndex.removeAll(keepingCapacity: true)
            keyTable.removeAll(keepingCapacity: true)
            lastFields.removeAll(keepingCapacity: true)
        }
        guard let made else {
            keyIndex[name] = -1
            throw Failure(message: "the field name \"\(name)\" cannot be written")
        }
        keyIndex[name] = Int32(keyTable.count)
        keyTable.append(made)
        return keyTable.count - 1
    }
}
