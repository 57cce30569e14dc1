#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// One framed line, or the report that a line was longer than the limit.
public enum FramedLine {
    /// A complete line without its `\n`. Valid only during the callback.
    case line(UnsafeBufferPointer<UInt8>)
    /// A line longer than ``LineFramer/maxLineLength`` bytes was skipped up to its newline.
    case overlong(byteCount: Int)
}

@available(*, unavailable) extension FramedLine: Sendable {}

/// Splits a byte stream that arrives in arbitrary chunks into lines.
///
/// Complete lines inside a chunk are handed out without copying. Only the unfinished tail of a chunk is copied
/// into a reusable buffer (its capacity is kept), and the framer never rescans bytes it has already searched for a
/// newline. A line longer than ``maxLineLength`` is dropped and reported once, and the framer resynchronises at the
/// next newline, so memory stays bounded whatever the peer sends.
///
/// ```swift
/// var framer = LineFramer(maxLineLength: 1 << 20)
/// chunk.withUnsafeBytes { framer.feed($0) { line in handle(line) } }
/// framer.finish { line in handle(line) }   // at end of stream
/// ```
public struct LineFramer {
    /// The longest line accepted, in bytes (without the newline).
    public let maxLineLength: Int
    /// Number of newline-terminated lines seen so far, plus the final unterminated one after ``finish(_:)``.
    public private(set) var linesSeen = 0

    private var pending: [UInt8] = []
    private var discarding = false
    private var discardedBytes = 0

    public init(maxLineLength: Int = 1 << 20) {
        precondition(maxLineLength > 0)
        self.maxLineLength = maxLineLength
    }

    /// Bytes of an unfinished line held back from earlier chunks.
    public var pendingByteCount: Int { discarding ? 0 : pending.count }

    /// Feeds the next chunk and calls `body` for every line that it completes.
    public mutating func feed(
        _ chunk: UnsafeRawBufferPointer,
        _ body: (FramedLine) throws -> Void
    ) rethrows {
        guard let base = chunk.baseAddress?.assumingMemoryBound(to: UInt8.self), chunk.count > 0 else { return }
        var start = 0
        let n = chunk.count
        while start < n {
            let remaining = n - start
            guard let hit = memchr(base + start, 0x0A, remaining) else {
                // No newline in the rest of the chunk: keep it for the next one (bounded).
                appendPartial(base + start, remaining)
                return
            }
            let newline = UnsafePointer(hit.assumingMemoryBound(to: UInt8.self)) - base
            linesSeen += 1
            if discarding {
                discardedBytes += newline - start
                discarding = false
                let count = discardedBytes
                discardedBytes = 0
                try body(.overlong(byteCount: count))
            } else if pending.isEmpty {
                let length = newline - start
                if length > maxLineLength {
                    try body(.overlong(byteCount: length))
                } else {
                    try body(.line(UnsafeBufferPointer(start: base + start, count: length)))
                }
            } else {
                let length = pending.count + (newline - start)
                if length > maxLineLength {
                    pending.removeAll(keepingCapacity: true)
                    try body(.overlong(byteCount: length))
                } else {
                    pending.append(contentsOf: UnsafeBufferPointer(start: base + start, count: newline - start))
                    try pending.withUnsafeBufferPointer { try body(.line($0)) }
                    pending.removeAll(keepingCapacity: true)
                }
            }
            start = newline + 1
        }
    }

    /// Ends the stream: a final line without a trailing newline is delivered too.
    public mutating func finish(_ body: (FramedLine) throws -> Void) rethrows {
        if discarding {
            linesSeen += 1
            let count = discardedBytes
            discarding = false
            discardedBytes = 0
            try body(.overlong(byteCount: count))
        } else if !pending.isEmpty {
            linesSeen += 1
            try pending.withUnsafeBufferPointer { try body(.line($0)) }
            pending.removeAll(keepingCapacity: true)
        }
    }

    /// Forgets any partial line (for reuse on a new connection).
    public mutating func reset() {
        pending.removeAll(keepingCapacity: true)
        discarding = false
        discardedBytes = 0
        linesSeen = 0
    }

    private mutating func appendPartial(_ p: UnsafePointer<UInt8>, _ n: Int) {
        if discarding {
            discardedBytes += n
        } else if pending.count + n > maxLineLength {
            discarding = true
            discardedBytes = pending.count + n
            pending.removeAll(keepingCapacity: true)
        } else {
            pending.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        }
    }
}

@available(*, unavailable) extension LineFramer: Sendable {}
