/// Durations and sizes as configuration files and HTTP parameters write them.

/// A duration written as `"250ms"`, `"10s"`, `"1m"`, `"2h"`, `"7d"` (or a combination like `"1h30m"`).
public struct ConfigDuration: Hashable, Sendable, CustomStringConvertible {
    public var nanoseconds: Int64

    public static func seconds(_ s: Int64) -> ConfigDuration { ConfigDuration(nanoseconds: s * 1_000_000_000) }

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    public init?(parsing text: String) {
        let units: [(String, Int64)] = [
            ("ns", 1), ("us", 1_000), ("µs", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000),
            ("m", 60_000_000_000), ("h", 3_600_000_000_000), ("d", 86_400_000_000_000), ("w", 604_800_000_000_000),
        ]
        var rest = Substring(text.trimming(" "))
        guard !rest.isEmpty else { return nil }
        var total: Int64 = 0
        while !rest.isEmpty {
            let digits = rest.prefix(while: { $0.isNumber })
            guard let n = Int64(digits) else { return nil }
            rest = rest.dropFirst(digits.count)
            let unit = rest.prefix(while: { !$0.isNumber })
            // Longest unit name first so "ms" is not read as "m".
            guard let (_, scale) = units.filter({ $0.0 == unit }).first else { return nil }
            rest = rest.dropFirst(unit.count)
            let (m, o1) = n.multipliedReportingOverflow(by: scale)
            let (s, o2) = total.addingReportingOverflow(m)
            guard !o1, !o2 else { return nil }
            total = s
        }
        nanoseconds = total
    }

    public var description: String {
        let units: [(String, Int64)] = [
            ("d", 86_400_000_000_000), ("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000),
            ("ms", 1_000_000), ("us", 1_000), ("ns", 1),
        ]
        if nanoseconds == 0 { return "0s" }
        for (name, scale) in units where nanoseconds % scale == 0 { return "\(nanoseconds / scale)\(name)" }
        return "\(nanoseconds)ns"
    }
}

/// A size written as `"64KiB"`, `"32MiB"`, `"1GiB"`, `"500KB"` or a plain number of bytes.
public struct ConfigSize: Hashable, Sendable, CustomStringConvertible {
    public var bytes: Int

    public init(bytes: Int) { self.bytes = bytes }

    public init?(parsing text: String) {
        let units: [(String, Int)] = [
            ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("KB", 1_000), ("MB", 1_000_000),
            ("GB", 1_000_000_000), ("B", 1), ("", 1),
        ]
        let t = text.trimming(" ")
        let digits = t.prefix(while: { $0.isNumber })
        guard let n = Int(digits), let (_, scale) = units.first(where: { $0.0 == t.dropFirst(digits.count) }) else {
            return nil
        }
        let (total, overflow) = n.multipliedReportingOverflow(by: scale)
        guard !overflow else { return nil }
        bytes = total
    }

    public var description: String {
        for (name, scale) in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        where bytes % scale == 0 && bytes > 0 {
            return "\(bytes / scale)\(name)"
        }
        return "\(bytes)B"
    }
}

extension String {
    /// The text without `character` at either end.
    public func trimming(_ character: Character) -> String {
        var s = Substring(self)
        while s.first == character { s = s.dropFirst() }
        while s.last == character { s = s.dropLast() }
        return String(s)
    }
}
