/// RFC 3339 timestamps, as JSON events and query parameters carry them.
public enum RFC3339 {
    /// Nanoseconds since the epoch for an RFC 3339 timestamp (`T`, `t` or a space between date and time;
    /// fractions to nanoseconds; `Z` or a numeric offset), `nil` for anything else — including times outside
    /// what Int64 nanoseconds can hold (before 1677-09-21 or after 2262-04-11).
    public static func nanoseconds(_ text: String) -> Int64? {
        let b = Array(text.utf8)
        func num(_ from: Int, _ n: Int) -> Int? {
            guard from + n <= b.count else { return nil }
            var v = 0
            for k in from..<(from + n) {
                guard b[k] >= 48 && b[k] <= 57 else { return nil }
                v = v * 10 + Int(b[k] - 48)
            }
            return v
        }
        guard b.count >= 20, let year = num(0, 4), b[4] == 45, let month = num(5, 2), b[7] == 45,
            let day = num(8, 2), b[10] == 84 || b[10] == 116 || b[10] == 32, let hour = num(11, 2), b[13] == 58,
            let minute = num(14, 2), b[16] == 58, let second = num(17, 2),
            (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61
        else { return nil }
        var i = 19
        var nanos: Int64 = 0
        if i < b.count && b[i] == 46 {
            i += 1
            var digits = 0
            while i < b.count && b[i] >= 48 && b[i] <= 57 {
                if digits < 9 {
                    nanos = nanos * 10 + Int64(b[i] - 48)
                    digits += 1
                }
                i += 1
            }
            guard digits > 0 else { return nil }
            for _ in digits..<9 { nanos *= 10 }
        }
        var offset = 0
        guard i < b.count else { return nil }
        if b[i] == 90 || b[i] == 122 {
            i += 1
        } else if b[i] == 43 || b[i] == 45, let oh = num(i + 1, 2), b.count > i + 3, b[i + 3] == 58,
            let om = num(i + 4, 2)
        {
            offset = (oh * 60 + om) * 60 * (b[i] == 45 ? -1 : 1)
            i += 6
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        // Days from the civil date (Howard Hinnant's algorithm).
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        let seconds = Int64(days) * 86_400 + Int64(hour * 3600 + minute * 60 + second) - Int64(offset)
        // Nanoseconds since the epoch fit in Int64 from 1677-09-21 to 2262-04-11; beyond that the time is out of
        // range (as in InfluxDB), not an overflow.
        // Before the epoch with a fraction, count from the next second down, so 1677-09-21T00:12:43.145224192Z
        // (Int64.min) does not overflow on the way.
        let (whole, fraction) = seconds < 0 && nanos > 0 ? (seconds + 1, nanos - 1_000_000_000) : (seconds, nanos)
        let (scaled, overflow) = whole.multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return nil }
        let (total, overflow2) = scaled.addingReportingOverflow(fraction)
        return overflow2 ? nil : total
    }

    /// `nanoseconds` as InfluxDB writes a time (Go's RFC3339Nano in UTC): `2026-11-28T10:00:00Z`, with a fraction of
    /// up to nine digits only when there is one, its trailing zeros left out (`…:00.5Z`). No formatter object, no
    /// allocation but the string: `/query` answers write one per row.
    public static func format(_ nanoseconds: Int64) -> String {
        var seconds = nanoseconds / 1_000_000_000
        var fraction = nanoseconds % 1_000_000_000
        if fraction < 0 {
            fraction += 1_000_000_000
            seconds -= 1
        }
        var days = seconds / 86_400
        var second = seconds % 86_400
        if second < 0 {
            second += 86_400
            days -= 1
        }
        // The civil date of a day count (Howard Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        var out = [UInt8]()
        out.reserveCapacity(30)
        func digits(_ v: Int64, _ n: Int) {
            var divisor: Int64 = 1
            for _ in 1..<n { divisor *= 10 }
            var v = v
            for _ in 0..<n {
                out.append(0x30 + UInt8(v / divisor))
                v %= divisor
                divisor /= 10
            }
        }
        if year < 0 {
            out.append(0x2D)
            digits(-year, 4)
        } else {
            digits(year, 4)
        }
        out.append(0x2D)
        digits(month, 2)
        out.append(0x2D)
        digits(day, 2)
        out.append(0x54)
        digits(second / 3600, 2)
        out.append(0x3A)
        digits(second / 60 % 60, 2)
        out.append(0x3A)
        digits(second % 60, 2)
        if fraction > 0 {
            out.append(0x2E)
            var f = fraction
            var width = 9
            while f % 10 == 0 {
                f /= 10
                width -= 1
            }
            digits(f, width)
        }
        out.append(0x5A)
        return String(decoding: out, as: UTF8.self)
    }
}
