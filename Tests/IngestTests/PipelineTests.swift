import Export
import Foundation
import Ingest
import LineProtocol
import Rollups
import Testing

/// The ingest pipeline in process: the same path every listener takes (WAL → frame → decode → rollups → counters).
@Suite struct PipelineTests {
    static let minute: Int64 = 60_000_000_000

    /// A pipeline over a fresh engine and a WAL in a temp dir; the sink keeps what it is handed.
    final class Fixture {
        let dir: String
        let engine = RollupEngine()
        let stats = Stats()
        let wal: WriteAheadLog
        let store: SQLiteStore
        let guarded: StoreGuard
        let events: EventPipeline
        let pipeline: IngestPipeline
        let deadLetters = DeadLetterQueue(maxCount: 5)

        init() throws {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("ingest-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            wal = WriteAheadLog(directory: dir + "/wal", durability: .none)
            _ = try wal.open(replayFrom: 0)
            store = try SQLiteStore(path: dir + "/metricsd.db")
            guarded = StoreGuard(store: store, dataDir: dir)
            events = EventPipeline(
                store: try EventStore(path: dir + "/metricsd.db"), ids: EventIDs(window: 3_600_000_000_000),
                retention: 30 * 86_400_000_000_000, maxFuture: 600_000_000_000)
            pipeline = IngestPipeline(
                engine: engine, sink: guarded, stats: stats, wal: wal, dedup: DedupWindow(window: 3_600_000_000_000),
                events: events, maxLineLength: 65_536, deadLetters: deadLetters)
        }

        deinit { try? FileManager.default.removeItem(atPath: dir) }

        /// (count, sum) of a measurement's field over every open bucket.
        func totals(_ measurement: String, _ field: String) -> (count: Int64, sum: Double) {
            var out: (count: Int64, sum: Double) = (0, 0)
            for bucket in engine.closeAll() {
                for cell in bucket.cells where cell.series.measurement == measurement && cell.field == field {
                    out.count += cell.rollup.count
                    out.sum += FieldSummary(cell.rollup).numeric.sum
                }
            }
            return out
        }
    }

    static func accept(_ f: Fixture, _ text: String, source: IngestSource = .http, dedup: Bool = false)
        -> IngestPipeline.Accepted
    {
        let ingester = f.pipeline.ingester(source)
        return Array(text.utf8).withUnsafeBytes { f.pipeline.accept($0, into: ingester, deduplicate: dedup) }
    }

    @Test func aBatchIsLoggedAppliedAndCounted() throws {
        let f = try Fixture()
        let now = nowNanoseconds()
        let ingester = f.pipeline.ingester(.tcp)
        let body = "cpu,host=a v=1 \(now)\ncpu,host=b v=2 \(now)\nnot a line\n"
        let accepted = Array(body.utf8).withUnsafeBytes { f.pipeline.accept($0, overlong: [70_000], into: ingester) }
        guard case .applied = accepted else {
            Issue.record("\(accepted)")
            return
        }
        #expect(ingester.outcome.lines == 4 && ingester.outcome.invalid == 2 && ingester.outcome.overlong == 1)
        #expect(ingester.outcome.firstError?.line == 3, "the bad line's number in the batch")
        #expect(f.stats.tcp.lines.current == 4 && f.stats.tcp.points.current == 2)
        #expect(f.wal.end > 0, "logged before it was applied")
        #expect(f.totals("cpu", "v") == (2, 3))
    }

    /// A retried HTTP body (every line timestamped) is acknowledged once more but applied once; a body without
    /// timestamps is a new write each time.
    @Test func aRetriedBodyIsAppliedOnce() throws {
        let f = try Fixture()
        let now = nowNanoseconds()
        let timed = "m v=1 \(now)\nm v=2 \(now + 1)"
        guard case .applied = Self.accept(f, timed, dedup: true) else {
            Issue.record("first")
            return
        }
        guard case .duplicate = Self.accept(f, timed, dedup: true) else {
            Issue.record("retry")
            return
        }
        guard case .applied = Self.accept(f, "m v=4", dedup: true), case .applied = Self.accept(f, "m v=4", dedup: true)
        else {
            Issue.record("untimestamped")
            return
        }
        #expect(f.stats.duplicateBatches.current == 1)
        #expect(f.totals("m", "v") == (4, 11))
    }

    /// An event reaches the rollups as a point (measurement `events`, tag `event`, fields `count` and the
    /// distinct `users`), from an event body and from a `{` line on a stream alike.
    @Test func eventsReachTheRollupsWithoutLineProtocol() throws {
        let f = try Fixture()
        let t = nowNanoseconds() / 1_000_000
        let body = Array(
            #"[{"event":"signup","user_id":"u1","timestamp":\#(t)},{"event":"signup","user_id":"u2","timestamp":\#(t)}]"#
                .utf8)
        let outcome = try f.pipeline.acceptEvents(body, into: f.pipeline.ingester(.http)).get()
        #expect(outcome.accepted == 2 && outcome.rejectedCount == 0)
        guard case .applied = Self.accept(f, #"{"event":"signup","user_id":"u1","timestamp":\#(t + 1)}"#, source: .udp)
        else {
            Issue.record("event line")
            return
        }
        var users: Double?
        var count: Int64 = 0
        for bucket in f.engine.closeAll() {
            for cell in bucket.cells where cell.series.measurement == "events" {
                #expect(cell.series.tags == [TagPair("event", "signup")])
                if cell.field == "count" { count += cell.rollup.count }
                if cell.field == "users" { users = cell.rollup.value(of: .distinct) }
            }
        }
        #expect(count == 3)
        #expect(users == 2)
    }

    /// Replay applies the log as it was applied live, skipping lines whose bucket was stored with the record in
    /// it.
    @Test func replayAppliesTheLogOnceAndSkipsStoredBuckets() throws {
        let f = try Fixture()
        let now = nowNanoseconds()
        let start = now / Self.minute * Self.minute
        _ = Self.accept(f, "r v=1 \(start - Self.minute)\nr v=10 \(start)")
        _ = Self.accept(f, "r v=100 \(start)")
        let live = f.totals("r", "v")
        #expect(live == (3, 111))
        let recovery = try WriteAheadLog(directory: f.dir + "/wal", durability: .none).open(replayFrom: 0)
        #expect(recovery.records.count == 2)
        let g = try Fixture()
        let (applied, skipped) = g.pipeline.replay(recovery.records, watermarks: [:])
        #expect(applied == 3 && skipped == 0)
        #expect(g.totals("r", "v") == live)
        // The bucket a minute back was stored holding the first record: its line is not applied again.
        let h = try Fixture()
        let first = recovery.records[0].position
        let again = h.pipeline.replay(recovery.records, watermarks: [start - Self.minute: first])
        #expect(again.skipped == 1)
        #expect(h.totals("r", "v") == (2, 110))
    }

    /// The daemon's own figures go straight in, strings included.
    @Test func ownFiguresGoStraightIn() throws {
        let f = try Fixture()
        f.pipeline.acceptOwn(
            measurement: "metricsd", fields: [("a", .integer(3)), ("b", .float(0.5)), ("s", .string("ok"))],
            time: nowNanoseconds())
        #expect(f.totals("metricsd", "a") == (1, 3))
        #expect(f.stats.internalWrites.points.current == 3)
    }
    /// Each refused line is reported once with its reason (up to the report limit), counted per reason, and queued
    /// as a dead letter (the queue keeps its newest `maxCount`); a good batch reports nothing and queues nothing.
    @Test func refusedLinesAreReportedCountedAndQueued() throws {
        let f = try Fixture()
        let ingester = f.pipeline.ingester(.tcp)
        ingester.reportLimit = 3
        let good = "cpu,host=a v=1\ncpu,host=a w=2i\n"
        _ = Array(good.utf8).withUnsafeBytes { f.pipeline.accept($0, into: ingester) }
        #expect(ingester.outcome.rejections.isEmpty && ingester.outcome.reasons.total == 0)
        #expect(ingester.outcome.reasons.counts.isEmpty, "a good batch allocates no counts")
        #expect(f.deadLetters.count == 0)
        let bad = "cpu,host=a v=\"s\"\nnope\ncpu,host=a v=2\nx y=\ncpu,host=a w=true,v=3\n{\"event\":1}\n"
        _ = Array(bad.utf8).withUnsafeBytes { f.pipeline.accept($0, into: ingester) }
        let o = ingester.outcome
        #expect(o.rejections.map(\.line) == [1, 2, 4], "the first three")
        #expect(o.rejectedLines == 5)
        #expect(o.reasons[.typeConflict] == 2 && o.reasons[.syntax] == 2 && o.reasons[.invalidEvent] == 1)
        #expect(o.firstError?.line == 2 && o.firstRefusal?.line == 1)
        #expect(o.rejections[0].partial == false)
        let letters = f.deadLetters.takeAll()
        #expect(letters.map(\.line) == [1, 2, 4, 5, 6])
        #expect(letters.allSatisfy { $0.source == "tcp" })
        #expect(
            String(decoding: letters[3].payload, as: UTF8.self).hasPrefix("cpu,host=a w=true "),
            "the refused field only")
        #expect(letters[4].kind == .event)
        #expect(f.stats.rejected[RejectReason.typeConflict.ordinal].current == 2)
        // Replays do not queue again.
        ingester.deadLetterQueue = nil
        _ = Array(bad.utf8).withUnsafeBytes { f.pipeline.accept($0, into: ingester) }
        #expect(f.deadLetters.count == 0)
        // Past its bound the queue drops the oldest, counted.
        ingester.deadLetterQueue = f.deadLetters
        for _ in 0..<3 { _ = Array(bad.utf8).withUnsafeBytes { f.pipeline.accept($0, into: ingester) } }
        #expect(f.deadLetters.count == 5)
        #expect(f.deadLetters.takeDropped() == 10)
    }
}
