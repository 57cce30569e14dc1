public import Export
import Foundation
public import LineProtocol
import Logging
public import Query
import Rollups
import Synchronization

/// The WAL's precision byte for a record holding an `/api/v1/events` body (line-protocol records use 0…5).
public let eventsBodyWALCode: UInt8 = 0xEE

/// Event ids accepted within `[events] dedup_window`, each with the identity of the event that carried it (its
/// receive time, WAL position and index): the same id from another event is a duplicate; from the same event
/// (WAL replay after a crash) it is that event again, not a duplicate.
public final class EventIDs: Sendable {
    public struct Identity: Equatable, Sendable {
        var received: Int64
        var origin: UInt64
        var index: Int
    }

    private struct Seen {
        var byID: [String: Identity] = [:]
        /// Ids in the order they were recorded (from `head` on), to forget the oldest first.
        var order: [(id: String, received: Int64)] = []
        var head = 0
    }
    private let seen = Mutex(Seen())
    public let window: Int64
    /// The most ids remembered (`[events] max_indexed`): past it the tenth recorded first are forgotten, so an
    /// id seen again after that is no longer recognized (memory stays bounded whatever senders send).
    public let limit: Int

    public init(window: Int64, limit: Int = 10_000_000) {
        self.window = window
        self.limit = limit
    }

    /// Records `id` for the event `identity`; `false` when another event accepted within the window has it.
    public func accept(_ id: String, _ identity: Identity) -> Bool {
        seen.withLock { seen in
            if let previous = seen.byID[id], previous != identity, previous.received >= identity.received - window {
                return false
            }
            Self.record(id, identity, in: &seen, limit: limit)
            return true
        }
    }

    private static func record(_ id: String, _ identity: Identity, in seen: inout Seen, limit: Int) {
        seen.byID[id] = identity
        seen.order.append((id, identity.received))
        guard seen.byID.count > limit else { return }
        let target = limit - limit / 10
        while seen.byID.count > target, seen.head < seen.order.count {
            let oldest = seen.order[seen.head]
            seen.head += 1
            // Recorded again since: that later entry keeps it.
            if seen.byID[oldest.id]?.received == oldest.received { seen.byID[oldest.id] = nil }
        }
        if seen.head > seen.order.count / 2 {
            seen.order.removeFirst(seen.head)
            seen.head = 0
        }
    }

    public func load(_ entries: [(id: String, received: Int64, origin: UInt64, index: Int)]) {
        seen.withLock { seen in
            for e in entries {
                Self.record(
                    e.id, Identity(received: e.received, origin: e.origin, index: e.index), in: &seen, limit: limit)
            }
        }
    }

    /// Forgets ids accepted before the window.
    public func prune(now: Int64) {
        seen.withLock { seen in
            seen.byID = seen.byID.filter { $0.value.received >= now - window }
            seen.order = seen.order[seen.head...].filter { $0.received >= now - window }
            seen.head = 0
        }
    }
}

/// Accepted events go two ways: into the in-memory ``EventIndex`` at once (the analytics read it, so an event
/// counts the moment it is acknowledged) and to the `events` table, queued until the ticker stores them (every
/// second). At start-up the index is built from the table, after WAL replay has stored what the log held.
///
/// Ingestion never waits on a query: accepted events go to `toIndex` (a short lock), and whoever holds the index
/// next — an analytics query, or the ticker each second when no query does — moves them in. A query holds the
/// index while it scans (bounded by `[query] timeout`); only other analytics queries wait for it. The index
/// keeps at most `[events] max_indexed` events: past it the oldest leave it (they stay stored; counted in
/// `metricsd_events_unindexed_total`, and answers then say from when they count).
public final class EventPipeline: Sendable {
    public let store: EventStore
    public let ids: EventIDs
    public let retention: Int64
    public let maxFuture: Int64
    public let maxIndexed: Int
    public let limits = EventLimits()
    private struct Pending {
        var events: [StoredEvent] = []
        var minPosition: UInt64?
    }
    private let pending = Mutex(Pending())
    private let index = Mutex(EventIndex())
    private struct Unindexed {
        var time: Int64
        var name: String
        var user: String
        var properties: [EventProperty]
    }
    /// Accepted events not yet in the index.
    private let toIndex = Mutex<[Unindexed]>([])
    /// Emptied buffers handed back after a store and a settle, swapped in for the next second's events: about
    /// 100 bytes an event, grown anew each second otherwise (a copy at each doubling and fresh pages to fault in).
    private let spareEvents = Mutex<[StoredEvent]>([])
    private let spareUnindexed = Mutex<[Unindexed]>([])
    /// A burst's buffer larger than this is not kept.
    private static let spareCapacity = 1 << 19
    /// Events older than this (milliseconds) leave the index when it is next held (retention).
    private let indexCutoff = Atomic<Int64>(.min)
    /// Where evictions are counted (`nil` in tests).
    public let unindexed: StatCounter?
    /// Off during WAL replay (the index is loaded from the store afterwards, once, without double entries).
    private let indexing = Atomic<Bool>(true)
    /// Serializes stores so that a batch taken from `pending` is in SQLite before the next one is taken.
    private let storing = Mutex(())

    public init(
        store: EventStore, ids: EventIDs, retention: Int64, maxFuture: Int64, maxIndexed: Int = 10_000_000,
        unindexed: StatCounter? = nil
    ) {
        self.store = store
        self.ids = ids
        self.retention = retention
        self.maxFuture = maxFuture
        self.maxIndexed = maxIndexed
        self.unindexed = unindexed
    }

    public enum Outcome: Equatable {
        case accepted(time: Int64)
        case duplicate
        case rejected(String)
    }

    /// Decides an event's fate and queues it for storage. `received` is the WAL record's time (nanoseconds),
    /// `position` its WAL position (0 without a log), `index` the event's place in the record.
    public func admit(_ event: Event, received: Int64, position: UInt64, index: Int, now: Int64) -> Outcome {
        let time = event.timestamp ?? (received / 1_000_000)
        let nowMs = now / 1_000_000
        if time > nowMs + maxFuture / 1_000_000 {
            return .rejected("\"timestamp\" is more than \(maxFuture / 60_000_000_000) minutes in the future")
        }
        if time < nowMs - retention / 1_000_000 { return .rejected("\"timestamp\" is older than [events] retention") }
        if let id = event.id,
            !ids.accept(id, EventIDs.Identity(received: received, origin: position, index: index))
        {
            return .duplicate
        }
        let stored = StoredEvent(
            time: time, name: event.name, userID: event.userID, id: event.id, received: received, origin: position,
            index: index, properties: event.propertiesJSON)
        pending.withLock { p in
            p.events.append(stored)
            if position > 0 { p.minPosition = min(p.minPosition ?? position, position) }
        }
        if indexing.load(ordering: .relaxed) {
            let entry = Unindexed(time: time, name: event.name, user: event.userID, properties: event.properties)
            toIndex.withLock { $0.append(entry) }
        }
        return .accepted(time: time)
    }

    /// Replay mode: events are stored, not indexed, until ``loadIndex()``.
    public func pauseIndexing() { indexing.store(false, ordering: .relaxed) }

    /// Builds the index from every stored event and resumes indexing. Returns the event count.
    @discardableResult
    public func loadIndex() throws(StoreError) -> Int {
        var fresh = EventIndex()
        try store.visitAll(newest: maxIndexed) { time, name, user, json in
            fresh.append(time: time, name: name, user: user, properties: EventDecoder.properties(json: json))
        }
        // Replayed events the store refused (they stay pending) are indexed too.
        for e in pending.withLock({ $0.events }) {
            fresh.append(
                time: e.time, name: e.name, user: e.userID, properties: EventDecoder.properties(json: e.properties))
        }
        Self.bound(&fresh, maxIndexed, unindexed)
        fresh.compact()
        let count = fresh.count
        index.withLock { $0 = fresh }
        indexing.store(true, ordering: .relaxed)
        return count
    }

    /// Runs an analytics query on the index, brought up to date first (an event acknowledged a moment ago counts).
    public func withIndex<T>(_ body: (borrowing EventIndex) throws -> T) rethrows -> T {
        try index.withLock { idx in
            settle(&idx)
            idx.compact()
            return try body(idx)
        }
    }

    /// Moves accepted events into the index if no query holds it (the ticker, each second), so they do not pile
    /// up between queries.
    public func settleIndex() { _ = index.withLockIfAvailable { settle(&$0) } }

    /// Accepted events into the index, retention applied, size bounded.
    private func settle(_ idx: inout EventIndex) {
        var fresh = spareUnindexed.withLock { spare in
            defer { spare = [] }
            return spare
        }
        toIndex.withLock { swap(&$0, &fresh) }
        for e in fresh { idx.append(time: e.time, name: e.name, user: e.user, properties: e.properties) }
        fresh.removeAll(keepingCapacity: fresh.capacity <= Self.spareCapacity)
        spareUnindexed.withLock { swap(&$0, &fresh) }
        let cutoff = indexCutoff.load(ordering: .relaxed)
        if cutoff != .min {
            idx.removeOlder(than: cutoff)
            indexCutoff.store(.min, ordering: .relaxed)
        }
        Self.bound(&idx, maxIndexed, unindexed)
    }

    /// Past `limit` events the oldest tenth of the index goes (at once, so eviction is rare and linear).
    private static func bound(_ idx: inout EventIndex, _ limit: Int, _ counter: StatCounter?) {
        guard idx.count > limit else { return }
        let target = limit - limit / 10
        counter?.add(idx.removeFirst(idx.count - target))
    }

    /// Forgets expired ids and deletes events older than `[events] retention` from the table (10,000 at most)
    /// and from the index.
    /// Events stored after `keepAfter` (not yet forwarded to ClickHouse) stay in the table whatever their age.
    public func maintain(now: Int64, keepAfter: Int64? = nil) throws(StoreError) {
        ids.prune(now: now)
        let cutoff = (now - retention) / 1_000_000
        try store.deleteOlder(than: cutoff, keepAfter: keepAfter)
        indexCutoff.store(cutoff, ordering: .relaxed)  // applied when the index is next held
    }

    /// The oldest WAL position of an event not yet stored: replay must start there.
    public var minPendingPosition: UInt64? { pending.withLock { $0.minPosition } }

    public var pendingCount: Int { pending.withLock { $0.events.count } }

    /// Stores every pending event. On failure they stay pending (in order) for the next attempt.
    @discardableResult
    public func flush() throws(StoreError) -> Int {
        try storing.withLock { _ throws(StoreError) in
            var next = Pending()
            next.events = spareEvents.withLock { spare in
                defer { spare = [] }
                return spare
            }
            var batch = pending.withLock { p in
                swap(&p, &next)
                return next
            }
            guard !batch.events.isEmpty else { return 0 }
            do throws(StoreError) {
                let stored = try store.insert(batch.events)
                batch.events.removeAll(keepingCapacity: batch.events.capacity <= Self.spareCapacity)
                spareEvents.withLock { swap(&$0, &batch.events) }
                return stored
            } catch {
                pending.withLock { p in
                    p.events.insert(contentsOf: batch.events, at: 0)
                    if let m = batch.minPosition { p.minPosition = min(p.minPosition ?? m, m) }
                }
                throw error
            }
        }
    }
}

/// Events handled in one batch.
public struct EventCounts {
    public var accepted = 0
    public var duplicates = 0
    public var invalid = 0
}
