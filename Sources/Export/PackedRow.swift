import CSQLite
import Rollups

/// The `data` of one rollup row: every field of one series in one bucket.
///
/// Layout: format version (``FieldRollup/formatVersion``), number of fields (varint), then per field (in the
/// order first seen): field id (varint, from the `fields` table), rollup length (varint), the rollup
/// (``FieldRollup/write(to:base:)``, times relative to the bucket start for the first field and to the previous
/// field's ``FieldRollup/timeAnchor`` after that). The length lets a reader skip fields it does not want.
enum PackedRow {
    /// Starts a row of `fields` fields; append each with ``append(_:_:base:into:)``, `base` starting at the
    /// bucket start.
    static func begin(fields: Int, into w: inout ByteWriter) {
        w.reset()
        header(fields: fields, into: &w)
    }

    /// The row header alone, appended after what `w` holds (rows encoded back to back).
    static func header(fields: Int, into w: inout ByteWriter) {
        w.u8(FieldRollup.formatVersion)
        w.varint(UInt64(fields))
    }

    static func append(_ field: Int64, _ rollup: FieldRollup, base: inout Int64, into w: inout ByteWriter) {
        w.varint(UInt64(bitPattern: field))
        let mark = w.beginLength()
        rollup.write(to: &w, base: base)
        w.endLength(mark)
        base = rollup.timeAnchor
    }

    static func encode(_ fields: [(field: Int64, rollup: FieldRollup)], start: Int64, into w: inout ByteWriter) {
        begin(fields: fields.count, into: &w)
        var base = start
        for field in fields { append(field.field, field.rollup, base: &base, into: &w) }
    }

    /// How many fields a row says it has, at most what its bytes can hold (a field takes at least 4: id, length,
    /// flags, count), so a damaged header cannot make the reader reserve more than the row's size warrants; `nil`
    /// when the header is malformed. Room to reserve before decoding.
    static func fieldCount(_ bytes: [UInt8]) -> Int? {
        var r = ByteReader(bytes)
        guard r.u8() != nil, let n = r.varint(), n <= UInt64(bytes.count) else { return nil }
        return Swift.min(Int(n), bytes.count / 4)
    }

    /// The fields of a row (only field `only`, when given); `nil` when the bytes are malformed or of a newer format.
    static func decode(_ bytes: [UInt8], start: Int64, only: Int64? = nil) -> [(field: Int64, rollup: FieldRollup)]? {
        var out: [(field: Int64, rollup: FieldRollup)] = []
        let ok = visit(
            bytes, start: start, sketches: true, wanted: { only == nil || $0 == only }, each: { out.append(($0, $1)) })
        return ok ? out : nil
    }

    /// Calls `body` with each field of a row that `wanted` accepts, in order; `false` when the bytes are malformed
    /// or of a newer format (`body` may have been called for the fields before the fault). Unwanted fields are
    /// stepped over by their length after reading only their time anchor (the next field's times are relative to
    /// it); with `sketches` false quantile sketches are skipped too. Nothing is allocated for what is skipped.
    static func visit(
        _ bytes: [UInt8], start: Int64, sketches: Bool, wanted: (Int64) -> Bool, stopAfter: Int = .max,
        each body: (Int64, consuming FieldRollup) -> Void
    ) -> Bool {
        walk(
            bytes, start: start, wanted: { wanted($0) ? $0 : nil }, stopAfter: stopAfter,
            read: { field, r, base, end, version in
                guard let rollup = FieldRollup(reading: &r, base: base, sketches: sketches, version: version),
                    r.offset == end
                else {
                    return nil
                }
                let anchor = rollup.timeAnchor
                body(field, rollup)
                return anchor
            })
    }

    /// ``visit(_:start:sketches:wanted:stopAfter:each:)`` for summaries (``FieldSummary``): `wanted` gives a
    /// wanted field's index (the caller's numbering) or `nil`; `body` gets the index and the summary.
    static func visitSummaries(
        _ bytes: [UInt8], start: Int64, wanted: (Int64) -> Int?, stopAfter: Int = .max,
        each body: (Int, FieldSummary) -> Void
    ) -> Bool {
        walk(bytes, start: start, wanted: wanted, stopAfter: stopAfter) { index, r, base, end, version in
            // A summary stops where what it needs ends (before a numeric cell's points, a string's bytes).
            guard let summary = FieldSummary(reading: &r, base: base, version: version), r.offset <= end else {
                return nil
            }
            body(index, summary)
            return summary.timeAnchor
        }
    }

    /// The fields of a row in order: `read` gets each field `wanted` accepts (what `wanted` gave for it, the reader
    /// at its rollup, the base its times are relative to, and the offset where it ends) and returns the field's
    /// time anchor, or `nil` when it is malformed; other fields are stepped over after their anchor. `false` when
    /// the bytes are malformed or of a newer format; once `stopAfter` fields were read the rest is not looked at.
    private static func walk<W>(
        _ bytes: [UInt8], start: Int64, wanted: (Int64) -> W?, stopAfter: Int,
        read: (W, inout ByteReader, Int64, Int, UInt8) -> Int64?
    ) -> Bool {
        var found = 0
        var r = ByteReader(bytes)
        guard let version = r.u8(), version >= FieldRollup.oldestReadableVersion,
            version <= FieldRollup.formatVersion, let n = r.varint(), n <= UInt64(bytes.count)
        else { return false }
        var base = start
        for _ in 0..<n {
            guard let word = r.varint(), let length = r.varint(), length <= UInt64(bytes.count - r.offset) else {
                return false
            }
            let end = r.offset + Int(length)
            if let w = wanted(Int64(bitPattern: word)) {
                guard let anchor = read(w, &r, base, end, version) else { return false }
                base = anchor
                r.seek(to: end)
                found += 1
                // Every wanted field seen: the rest of the row is not read (nor checked).
                if found == stopAfter { return true }
            } else {
                guard let anchor = FieldRollup.timeAnchor(reading: &r, base: base, version: version), r.offset <= end
                else {
                    return false
                }
                base = anchor
                r.seek(to: end)
            }
        }
        return r.atEnd
    }
}
