public import Export
import Foundation

/// Where events go and fleet queries are answered (`[events.clickhouse]`).
public struct ClickHouseConfiguration: Sendable, Hashable {
    /// Base URL of ClickHouse's HTTP interface, e.g. `http://127.0.0.1:8123`; empty: off.
    public var url = ""
    public var database = "metricsd"
    public var table = "events"
    /// `CREATE DATABASE/TABLE IF NOT EXISTS` before the first insert.
    public var createTable = true
    public var username = "default"
    public var password = ""
    /// Events per INSERT (each INSERT makes a part in ClickHouse: few large ones, not many small ones).
    public var batchSize = 10_000
    /// How often stored events are sent, nanoseconds; a backlog is sent batch after batch without waiting.
    public var flushInterval: Int64 = 1_000_000_000
    /// Request timeout, seconds (inserts; a fleet query has `[query] timeout`).
    public var timeout = 30
    /// First retry delay and the cap of the exponential backoff, nanoseconds.
    public var retryInitial: Int64 = 1_000_000_000
    public var retryMax: Int64 = 60_000_000_000
    /// The most the events outbox may hold unsent (bytes of the events' text), and what gives past it.
    public var maxBacklog = 1 << 30
    public var backlogPolicy = BacklogPolicy.dropOldest

    public init() {}

    public var enabled: Bool { !url.isEmpty }

    /// The table as SQL names it.
    public var qualifiedTable: String { ClickHouseSQL.table(database, table) }
}

/// A ClickHouse request that failed, classified by the `Code: N` of ClickHouse's answer (its HTTP status says
/// little: bad data comes back as 500 as well as 400).
public struct ClickHouseError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable {
        /// No answer (refused, reset, timed out) or a transient server condition (too many parts, memory,
        /// timeouts): retry with backoff.
        case unavailable
        /// The data of the batch is bad (parse errors): resending it cannot help.
        case badData
        /// This configuration is refused (no such table, column or database; unknown user, wrong password):
        /// retried slowly until the operator fixes it.
        case refused
        /// A query ClickHouse could not run as written (a bug here, or a limit such as `max_result_rows`).
        case query
    }

    public var kind: Kind
    public var code: Int?
    public var status: Int?
    public var message: String

    public var description: String {
        var s = code.map { "Code \($0): " } ?? ""
        s += message
        return s
    }

    /// ClickHouse's error codes, by what they mean for a sender (ErrorCodes.cpp).
    static let badDataCodes: Set<Int> = [6, 26, 27, 38, 41, 53, 69, 72, 117, 130]
    static let refusedCodes: Set<Int> = [16, 60, 81, 192, 193, 194, 195, 497, 516]
    static let transientCodes: Set<Int> = [159, 160, 164, 202, 209, 210, 241, 252, 285, 394]

    /// The error of an answer that was not 200.
    static func classify(status: Int, body: String) -> ClickHouseError {
        let code = Self.code(in: body)
        let message = String(body.prefix(500)).trimmingCharacters(in: .whitespacesAndNewlines)
        let kind: Kind
        if let code, badDataCodes.contains(code) {
            kind = .badData
        } else if let code, refusedCodes.contains(code) {
            kind = .refused
        } else if let code, transientCodes.contains(code) {
            kind = .unavailable
        } else if code == nil {
            // Not ClickHouse speaking (a proxy, a load balancer): 5xx and 429 transient, the rest refused.
            kind = status >= 500 || status == 429 ? .unavailable : .refused
        } else {
            kind = status >= 500 && status != 500 ? .unavailable : .query
        }
        return ClickHouseError(kind: kind, code: code, status: status, message: message)
    }

    /// `N` of the first `Code: N` in ClickHouse's error text.
    static func code(in text: String) -> Int? {
        guard let range = text.range(of: "Code: ") else { return nil }
        return Int(text[range.upperBound...].prefix { $0.isNumber })
    }
}

/// ClickHouse over HTTP, on one libcurl handle (keep-alive). Not thread-safe: one per thread.
package final class ClickHouseHTTP {
    let configuration: ClickHouseConfiguration
    private let client: CurlClient

    package init(_ configuration: ClickHouseConfiguration, timeout: Int, maxResponseBytes: Int = 64 << 20) {
        self.configuration = configuration
        client = CurlClient(options: .init(timeout: timeout, maxResponseBytes: maxResponseBytes))
    }

    var base: String { configuration.url.hasSuffix("/") ? String(configuration.url.dropLast()) : configuration.url }

    static func escape(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? s
    }

    /// Runs `sql` (in the body) with ClickHouse `settings`; returns the answer's body.
    package func query(_ sql: String, settings: [(String, String)] = []) throws(ClickHouseError) -> [UInt8] {
        // Every statement names its database: none is set on the request (CREATE DATABASE runs before it exists).
        var url = base + "/"
        for (i, (k, v)) in settings.enumerated() { url += "\(i == 0 ? "?" : "&")\(k)=\(Self.escape(v))" }
        return try post(url, body: Array(sql.utf8), gzip: false)
    }

    /// `INSERT … FORMAT JSONEachRow` with `rows` as the data (gzip-compressed when `gzip`).
    package func insert(_ rows: [UInt8], gzip: Bool) throws(ClickHouseError) {
        let sql = ClickHouseSQL.insert(configuration.database, configuration.table)
        let url = base + "/?query=" + Self.escape(sql)
        _ = try post(url, body: gzip ? Gzip.compress(rows, level: 1) : rows, gzip: gzip)
    }

    private func post(_ url: String, body: [UInt8], gzip: Bool) throws(ClickHouseError) -> [UInt8] {
        var headers = ["X-ClickHouse-User: \(configuration.username)"]
        if !configuration.password.isEmpty { headers.append("X-ClickHouse-Key: \(configuration.password)") }
        if gzip { headers.append("Content-Encoding: gzip") }
        let response: CurlClient.Response
        do {
            response = try client.post(url, headers: headers, body: body)
        } catch {
            throw ClickHouseError(
                kind: .unavailable, code: nil, status: nil, message: "\(configuration.url): \(error.message)")
        }
        guard response.status == 200 else {
            throw ClickHouseError.classify(status: response.status, body: response.text)
        }
        return response.body
    }
}

/// ClickHouse's TabSeparated output: rows of fields, `\`-escaped.
enum TabSeparated {
    static func rows(_ body: [UInt8]) -> [[String]] {
        var rows: [[String]] = []
        var row: [String] = []
        var field: [UInt8] = []
        var escaped = false
        for b in body {
            if escaped {
                escaped = false
                switch b {
                case UInt8(ascii: "n"): field.append(0x0A)
                case UInt8(ascii: "t"): field.append(0x09)
                case UInt8(ascii: "r"): field.append(0x0D)
                case UInt8(ascii: "b"): field.append(0x08)
                case UInt8(ascii: "f"): field.append(0x0C)
                case UInt8(ascii: "0"): field.append(0)
                default: field.append(b)  // \\ \' and anything else: the character itself
                }
                continue
            }
            switch b {
            case UInt8(ascii: "\\"): escaped = true
            case 0x09:
                row.append(String(decoding: field, as: UTF8.self))
                field.removeAll(keepingCapacity: true)
            case 0x0A:
                row.append(String(decoding: field, as: UTF8.self))
                field.removeAll(keepingCapacity: true)
                rows.append(row)
                row = []
            default: field.append(b)
            }
        }
        if !field.isEmpty || !row.isEmpty {
            row.append(String(decoding: field, as: UTF8.self))
            rows.append(row)
        }
        return rows
    }

    /// `[1,2,3]`: an array of integers as ClickHouse writes it.
    static func integers(_ text: String) -> [Int]? {
        guard text.hasPrefix("["), text.hasSuffix("]") else { return nil }
        let inner = text.dropFirst().dropLast()
        if inner.isEmpty { return [] }
        var out: [Int] = []
        for part in inner.split(separator: ",") {
            guard let n = Int(part) else { return nil }
            out.append(n)
        }
        return out
    }
}
