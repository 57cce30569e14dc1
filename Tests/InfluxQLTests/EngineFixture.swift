import Export
import Foundation
import LineProtocol
import Rollups

@testable import InfluxQL

/// Rollups built from line protocol in process — an open ``RollupEngine`` and a real ``SQLiteStore`` in a temp
/// directory — and the InfluxQL engine over them, as the daemon wires it.
final class EngineFixture: @unchecked Sendable {
    let rollups: RollupEngine
    let store: SQLiteStore
    let directory: URL
    let decoder = LineDecoder()
    var bytes: [UInt8] = []

    /// - Parameter store: lines whose bucket starts before this go to SQLite, the rest stay open in memory.
    init(lines: [String], storeBefore: Int64 = .max, width: Int64 = 60_000_000_000) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("influxql-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        store = try SQLiteStore(path: directory.appendingPathComponent("rollups.db").path)
        var config = RollupConfiguration()
        config.interval = width
        config.maxAge = .max / 4
        config.maxFuture = .max / 4
        rollups = RollupEngine(configuration: config)
        try load(lines, storeBefore: storeBefore)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    func load(_ lines: [String], storeBefore: Int64 = .max) throws {
        var late = LateCells()
        for line in lines where !line.isEmpty && !line.hasPrefix("#") {
            bytes = Array(line.utf8)
            let ok = bytes.withUnsafeBufferPointer { (try? decoder.decode($0)) ?? false }
            precondition(ok, "fixture line must parse: \(line)")
            _ = rollups.ingest(decoder, now: decoder.timestamp ?? 0, lateCells: &late)
        }
        let closed = rollups.closeEnded(now: storeBefore)
        if !closed.isEmpty { try store.store(closed) }
    }

    /// Downsamples every complete hour into the 1 h tier (the store's maintenance, as the daemon runs it), keeping
    /// the minutes.
    func downsample(now: Int64) throws {
        while try store.maintain(now: now, settle: 0, retention1m: .max / 4, retention1h: .max / 4) != nil {}
    }

    func engine(retention1m: Int64 = 7 * 86_400_000_000_000, maxRows: Int = 1_000_000) -> Engine {
        Engine(
            QueryData(
                open: rollups, minutes: store.source(.minutes), hours: store.source(.hours),
                catalogs: [rollups, store], bucketWidth: rollups.configuration.interval, retention1m: retention1m,
                retention1h: 400 * 86_400_000_000_000, maxFuture: 3_600_000_000_000, databases: ["telegraf"],
                maxSelectBuckets: 100_000, maxSelectSeries: 100_000, maxRowLimit: maxRows))
    }

    func results(_ q: String, now: Int64, retention1m: Int64 = 7 * 86_400_000_000_000) throws -> [StatementResult] {
        try engine(retention1m: retention1m).run(Parser.parse(q), budget: .unlimited, now: now)
    }

    /// The answer as `/query` writes it.
    func json(_ q: String, now: Int64, epoch: String? = nil, retention1m: Int64 = 7 * 86_400_000_000_000) throws
        -> String
    {
        let statements = try Parser.parse(q)
        let results = try engine(retention1m: retention1m).run(statements, budget: .unlimited, now: now)
        var zones: [Int: TimeZoneRule] = [:]
        for (k, s) in statements.enumerated() {
            if case .select(let select) = s, let name = select.timeZone { zones[k] = TimeZoneRule(name) }
        }
        let scale: Int64? =
            switch epoch {
            case "ms": 1_000_000
            case "s": 1_000_000_000
            case "ns": 1
            default: nil
            }
        return String(
            decoding: ResultWriter.write(results, format: TimeFormat(epochScale: scale), zones: zones), as: UTF8.self)
    }
}
