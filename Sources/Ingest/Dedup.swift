import Export
import Rollups
import Synchronization

/// Retried batches are not applied twice: an HTTP body whose every line carries an explicit timestamp is
/// identified by a 128-bit hash of its bytes (after decompression) and its precision. The same body again within
/// `[storage] dedup_window` is acknowledged (204) and not applied. Bodies with a line lacking a timestamp are never
/// deduplicated: their points get the server's time, so a retry is a different write.
///
/// The set survives restarts: new entries are persisted by the ticker every second, and WAL replay re-adds the
/// hashes of replayed bodies (which covers the last second before a crash).
public final class DedupWindow: Sendable {
    public struct Key: Hashable, Sendable {
        public var high: UInt64
        public var low: UInt64

        public init(high: UInt64, low: UInt64) {
            self.high = high
            self.low = low
        }
    }

    private struct State {
        var expiries: [Key: Int64] = [:]
        var unsaved: [(Key, Int64)] = []
    }

    private let state = Mutex(State())
    public let window: Int64

    public init(window: Int64) { self.window = window }

    /// The key of a body, or `nil` when some line has no timestamp (or the body is empty).
    public static func key(_ bytes: UnsafeRawBufferPointer, precision: UInt8) -> Key? {
        guard allLinesTimestamped(bytes) else { return nil }
        return hash(bytes, precision: precision)
    }

    /// The key of a body without checking its timestamps (8 bytes per step). The write path hashes first and
    /// checks timestamps only on a hit; what it records is decided after parsing, from the decoder's view.
    public static func hash(_ bytes: UnsafeRawBufferPointer, precision: UInt8) -> Key {
        let b = bytes.bindMemory(to: UInt8.self)
        var a = SeriesHasher()
        var c = SeriesHasher()
        a.addName(b)
        c.addTagValue(b)
        var p = [precision]
        p.withUnsafeBufferPointer { a.addTagKey($0) }
        _ = p.removeLast()
        return Key(high: a.value, low: c.value ^ UInt64(b.count))
    }

    /// A line has a timestamp when its last token (after the last unescaped space) is an integer. For a valid
    /// line without one, that token ends in a field value (`k=1`, `k="…"`), so it cannot be all digits.
    public static func allLinesTimestamped(_ raw: UnsafeRawBufferPointer) -> Bool {
        let bytes = raw.bindMemory(to: UInt8.self)
        var sawLine = false
        var start = 0
        while start < bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != 0x0A { end += 1 }
            var last = end
            while last > start && (bytes[last - 1] == 0x20 || bytes[last - 1] == 0x0D) { last -= 1 }
            var first = start
            while first < last && (bytes[first] == 0x20 || bytes[first] == 0x09) { first += 1 }
            if first < last && bytes[first] != 0x23 {  // not blank, not a comment
                sawLine = true
                var k = last
                while k > first && bytes[k - 1] >= 0x30 && bytes[k - 1] <= 0x39 { k -= 1 }
                if k < last && k > first && bytes[k - 1] == 0x2D { k -= 1 }
                guard k < last, k > first, bytes[k - 1] == 0x20, k < 2 || bytes[k - 2] != 0x5C else { return false }
            }
            start = end + 1
        }
        return sawLine
    }

    /// True when `key` was accepted within the window (the caller then skips the batch).
    public func seen(_ key: Key, now: Int64) -> Bool {
        state.withLock { s in
            if let expiry = s.expiries[key], expiry > now { return true }
            return false
        }
    }

    public func record(_ key: Key, now: Int64) {
        state.withLock { s in
            s.expiries[key] = now + window
            s.unsaved.append((key, now + window))
        }
    }

    /// Entries to persist (and forgets expired ones).
    public func takeUnsaved(now: Int64) -> [(Key, Int64)] {
        state.withLock { s in
            if s.expiries.count > 10_000 { s.expiries = s.expiries.filter { $0.value > now } }
            defer { s.unsaved.removeAll(keepingCapacity: true) }
            return s.unsaved
        }
    }

    public func load(_ entries: [(high: UInt64, low: UInt64, expires: Int64)], now: Int64) {
        state.withLock { s in
            for e in entries where e.expires > now { s.expiries[Key(high: e.high, low: e.low)] = e.expires }
        }
    }
}
