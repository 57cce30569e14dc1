import Foundation
import LineProtocol

/// A `tz('…')` zone: IANA names read from the system's zoneinfo (Foundation's `TimeZone`), used to align windows
/// (InfluxDB's `Window`: a window starts at local midnight for a day, and DST moves its start) and to write
/// RFC 3339 times at the zone's offset.
public struct TimeZoneRule: Sendable {
    public let name: String
    let zone: TimeZone

    public init?(_ name: String) {
        guard let zone = TimeZone(identifier: name) else { return nil }
        self.name = name
        self.zone = zone
    }

    /// The zone's offset from UTC at `t`, nanoseconds.
    public func offset(at t: Int64) -> Int64 {
        let seconds = zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(t) / 1e9))
        return Int64(seconds) * 1_000_000_000
    }

    /// `t` as RFC 3339 at the zone's offset (`2026-11-20T01:00:00+01:00`; `Z` at offset 0, as Go writes it).
    public func format(_ t: Int64) -> String {
        let o = offset(at: t)
        guard o != 0 else { return RFC3339.format(t) }
        var text = RFC3339.format(t &+ o)
        if text.hasSuffix("Z") { text.removeLast() }
        let minutes = abs(o) / 60_000_000_000
        let hh = minutes / 60
        let mm = minutes % 60
        text += (o < 0 ? "-" : "+") + (hh < 10 ? "0" : "") + String(hh) + ":" + (mm < 10 ? "0" : "") + String(mm)
        return text
    }
}
