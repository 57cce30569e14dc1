import ArgumentParser
import Export
import Foundation
import LineProtocol
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// `metricsd send`: a load generator that sends deterministic Telegraf-like line protocol over UDP, TCP or HTTP
/// at a fixed rate, with a live progress line and a final JSON summary.
struct SendCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Send Telegraf-like line protocol over UDP, TCP or HTTP at a fixed rate (a load generator)."
    )

    @Option(help: "Send UDP datagrams to host:port.")
    var udp: String?
    @Option(help: "Send over one TCP connection to host:port.")
    var tcp: String?
    @Option(help: "POST batches to http://host:port/write.")
    var http: String?
    @Option(help: "HTTP path and query (for InfluxDB v2 use /api/v2/write?org=o&bucket=b).")
    var path: String = "/write?db=metrics&precision=ns"
    @Option(help: "Lines per second; 0 sends as fast as possible.")
    var rate: Int = 10_000
    @Option(help: "Seconds to send for.")
    var duration: Double = 10
    @Option(help: "Number of distinct series (hosts × cpu/mem/disk/diskio/net).")
    var series: Int = 1_000
    @Option(help: "Lines per datagram, TCP write or HTTP request.")
    var batch: Int = 500
    @Option(help: "Stop after this many lines (0: no limit).")
    var lines: Int = 0
    @Option(help: "HTTP auth token (sent as Authorization: Token <t>).")
    var token: String?
    @Option(
        help:
            "Pre-generate this many batches and cycle through them (0: generate every batch fresh). Takes the generator's cost out of throughput benchmarks."
    )
    var pool: Int = 0
    @Option(help: "UDP: send from this many sockets in turn, as that many senders would (1–1024).")
    var sockets: Int = 1
    @Option(
        help:
            "UDP: cut each batch into datagrams of at most this many bytes at line ends (1400: what Telegraf's socket writer and network MTUs give; 0: one datagram a batch)."
    )
    var maxDatagram: Int = 0
    @Flag(help: "gzip HTTP bodies.")
    var gzip = false
    @Flag(help: "No progress line.")
    var quiet = false

    func validate() throws {
        let targets = [udp, tcp, http].compactMap { $0 }
        guard targets.count == 1 else { throw ValidationError("give exactly one of --udp, --tcp, --http") }
        guard targets.allSatisfy({ HostPort($0) != nil }) else { throw ValidationError("addresses are host:port") }
        guard series > 0, batch > 0, duration > 0, rate >= 0 else {
            throw ValidationError("--series, --batch and --duration must be positive, --rate not negative")
        }
        guard maxDatagram >= 0 else { throw ValidationError("--max-datagram must not be negative") }
        guard (1...1024).contains(sockets) else {
            throw ValidationError("--sockets must be 1 to 1024")
        }
    }

    func run() throws {
        var generator = PayloadGenerator(series: series)
        let transport: any Transport
        if let udp {
            transport = try UDPTransport(HostPort(udp)!, sockets: sockets, maxDatagram: maxDatagram)
        } else if let tcp {
            transport = try TCPTransport(HostPort(tcp)!)
        } else {
            transport = try HTTPTransport(HostPort(http!)!, path: path, token: token, gzip: gzip)
        }
        let start = monotonicNow()
        var sent = 0
        var acknowledged = 0
        var errors = 0
        var lastProgress = start
        var body: [UInt8] = []
        body.reserveCapacity(batch * 200)
        var prepared: [[UInt8]] = []
        if pool > 0 {
            for _ in 0..<pool {
                var b: [UInt8] = []
                for _ in 0..<batch { generator.appendLine(to: &b, time: nil) }
                prepared.append(gzip ? Gzip.compress(b) : b)
            }
        }
        var poolIndex = 0
        while true {
            let elapsed = monotonicNow() - start
            if elapsed >= duration || (lines > 0 && sent >= lines) { break }
            if rate > 0 {
                let due = Double(sent) / Double(rate)
                if due > elapsed { usleep(useconds_t(min(100_000, (due - elapsed) * 1e6))) }
                if Double(sent) / Double(rate) > monotonicNow() - start { continue }
            }
            var n = lines > 0 ? min(batch, lines - sent) : batch
            if transport is UDPTransport { n = min(n, 200) }  // keep datagrams under ~60 KB
            body.removeAll(keepingCapacity: true)
            if prepared.isEmpty {
                let now = wallNanoseconds()
                for _ in 0..<n { generator.appendLine(to: &body, time: now) }
            } else {
                n = batch
                body = prepared[poolIndex]
                poolIndex = (poolIndex + 1) % prepared.count
            }
            do {
                try transport.send(body, lines: n, compressed: !prepared.isEmpty && gzip)
                acknowledged += transport.acknowledges ? n : 0
            } catch {
                errors += 1
                if !quiet { writeStderr("\nsend error: \(error)\n") }
            }
            sent += n
            let t = monotonicNow()
            if !quiet && t - lastProgress >= 1 {
                lastProgress = t
                writeStderr(
                    String(
                        format: "\rsent %d lines  %.0f lines/s  errors %d   ", sent, Double(sent) / (t - start), errors)
                )
            }
        }
        transport.close()
        let seconds = monotonicNow() - start
        if !quiet { writeStderr("\n") }
        print(
            #"{"sent_lines":\#(sent),"acknowledged_lines":\#(acknowledged),"errors":\#(errors),"seconds":\#(seconds),"lines_per_second":\#(Double(sent) / seconds)}"#
        )
    }
}

func writeStderr(_ text: String) {
    var bytes = Array(text.utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}

func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func wallNanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// Deterministic Telegraf-like lines: series i is host-(i/5) with cpu, mem, disk, diskio or net by i % 5.
struct PayloadGenerator {
    let series: Int
    private var next = 0
    private var state: UInt64 = 0x1234_5678

    init(series: Int) { self.series = series }

    private mutating func random() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func appendLine(to out: inout [UInt8], time: Int64?) {
        let i = next
        next = (next + 1) % series
        let host = "host-\(i / 5)"
        let r = random()
        let percent = Double(r % 10_000) / 100
        switch i % 5 {
        case 0:
            out.append(
                contentsOf:
                    "cpu,cpu=cpu-total,host=\(host) usage_idle=\(percent),usage_user=\(100 - percent),usage_system=1.5"
                    .utf8)
        case 1:
            out.append(contentsOf: "mem,host=\(host) used=\(r % 17_179_869_184)i,used_percent=\(percent)".utf8)
        case 2:
            out.append(contentsOf: "disk,host=\(host),path=/ free=\(r % 512_000_000_000)i,used_percent=\(percent)".utf8)
        case 3:
            out.append(contentsOf: "diskio,host=\(host),name=sda reads=\(r % 1_000_000)i,writes=\(r % 777_777)i".utf8)
        default:
            out.append(
                contentsOf:
                    "net,host=\(host),interface=eth0 bytes_recv=\(r % 1_000_000_000)i,bytes_sent=\(r % 999_999_999)i"
                    .utf8)
        }
        if let time {
            out.append(0x20)
            LineEncoder.appendDecimal(time, to: &out)
        }
        out.append(0x0A)
    }
}

struct SendError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

protocol Transport {
    func send(_ body: [UInt8], lines: Int, compressed: Bool) throws
    func close()
    /// Whether a successful send means the server acknowledged (HTTP 204).
    var acknowledges: Bool { get }
}

func resolve(_ address: HostPort, type: Int32) throws -> (sockaddr_storage, socklen_t, Int32) {
    var hints = addrinfo()
    hints.ai_socktype = type
    var result: UnsafeMutablePointer<addrinfo>?
    guard getaddrinfo(address.host, String(address.port), &hints, &result) == 0, let info = result else {
        throw SendError("cannot resolve \(address)")
    }
    defer { freeaddrinfo(result) }
    var storage = sockaddr_storage()
    memcpy(&storage, info.pointee.ai_addr, Int(info.pointee.ai_addrlen))
    return (storage, info.pointee.ai_addrlen, info.pointee.ai_family)
}

final class UDPTransport: Transport {
    /// One socket per simulated sender: datagrams go out from each in turn (the kernel spreads senders, by source
    /// address and port, over a port's SO_REUSEPORT sockets).
    let fds: [Int32]
    var next = 0
    var address: sockaddr_storage
    let length: socklen_t
    var acknowledges: Bool { false }

    /// Most bytes a datagram (cut at line ends; 0: a batch a datagram).
    let maxDatagram: Int

    init(_ target: HostPort, sockets: Int = 1, maxDatagram: Int = 0) throws {
        self.maxDatagram = maxDatagram
        let (storage, length, family) = try resolve(target, type: Int32(SOCK_DGRAM.rawValue))
        address = storage
        self.length = length
        var fds: [Int32] = []
        for _ in 0..<max(1, sockets) {
            let fd = socket(family, Int32(SOCK_DGRAM.rawValue), 0)
            guard fd >= 0 else {
                for fd in fds { _ = Glibc.close(fd) }
                throw SendError("socket: \(String(cString: strerror(errno)))")
            }
            fds.append(fd)
        }
        self.fds = fds
    }

    func send(_ body: [UInt8], lines: Int, compressed: Bool) throws {
        try body.withUnsafeBytes { raw in
            guard maxDatagram > 0, raw.count > maxDatagram else { return try sendDatagram(raw) }
            var start = 0
            while start < raw.count {
                // The longest run of whole lines that fits (a longer line goes alone).
                var end = start
                while end < raw.count {
                    let next = raw[end...].firstIndex(of: 0x0A).map { $0 + 1 } ?? raw.count
                    if next - start > maxDatagram && end > start { break }
                    end = next
                }
                try sendDatagram(UnsafeRawBufferPointer(rebasing: raw[start..<end]))
                start = end
            }
        }
    }

    private func sendDatagram(_ raw: UnsafeRawBufferPointer) throws {
        let fd = fds[next]
        next = (next + 1) % fds.count
        let n = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, raw.baseAddress, raw.count, 0, $0, length)
            }
        }
        if n < 0 { throw SendError("sendto: \(String(cString: strerror(errno)))") }
    }

    func close() { for fd in fds { _ = Glibc.close(fd) } }
}

final class TCPTransport: Transport {
    let fd: Int32
    var acknowledges: Bool { false }

    init(_ target: HostPort) throws {
        fd = try connectTCP(target)
    }

    func send(_ body: [UInt8], lines: Int, compressed: Bool) throws { try writeFully(fd, body) }

    func close() {
        shutdown(fd, Int32(SHUT_WR))
        _ = Glibc.close(fd)
    }
}

func connectTCP(_ target: HostPort) throws -> Int32 {
    var (storage, length, family) = try resolve(target, type: Int32(SOCK_STREAM.rawValue))
    let fd = socket(family, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SendError("socket: \(String(cString: strerror(errno)))") }
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    let rc = withUnsafePointer(to: &storage) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, length) }
    }
    guard rc == 0 else {
        let message = String(cString: strerror(errno))
        _ = Glibc.close(fd)
        throw SendError("connect \(target): \(message)")
    }
    return fd
}

/// A minimal HTTP/1.1 keep-alive client for POSTing line protocol (reconnects when the server closes).
final class HTTPTransport: Transport {
    let target: HostPort
    let path: String
    let token: String?
    let gzip: Bool
    var fd: Int32 = -1
    var acknowledges: Bool { true }

    init(_ target: HostPort, path: String, token: String?, gzip: Bool) throws {
        self.target = target
        self.path = path
        self.token = token
        self.gzip = gzip
        fd = try connectTCP(target)
    }

    func send(_ body: [UInt8], lines: Int, compressed: Bool) throws {
        let payload = gzip && !compressed ? Gzip.compress(body) : body
        var head = "POST \(path) HTTP/1.1\r\nHost: \(target)\r\nContent-Type: text/plain; charset=utf-8\r\n"
        head += "Content-Length: \(payload.count)\r\n"
        if gzip { head += "Content-Encoding: gzip\r\n" }
        if let token { head += "Authorization: Token \(token)\r\n" }
        head += "\r\n"
        if fd < 0 { fd = try connectTCP(target) }
        do {
            try writeFully(fd, Array(head.utf8) + payload)
            let (status, text) = try readResponse()
            guard (200..<300).contains(status) else { throw SendError("HTTP \(status): \(text)") }
        } catch let error as SendError where error.description.hasPrefix("HTTP") {
            throw error
        } catch {
            _ = Glibc.close(fd)
            fd = -1
            throw error
        }
    }

    private func readResponse() throws -> (Int, String) {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        func fill() throws {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { throw SendError("connection closed") }
            buffer += chunk[0..<n]
        }
        while true {
            if let end = findHeaderEnd(buffer) {
                let head = String(decoding: buffer[0..<end], as: UTF8.self)
                let statusLine = head.split(separator: "\r\n").first ?? ""
                let status = statusLine.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
                var length = 0
                for line in head.split(separator: "\r\n") where line.lowercased().hasPrefix("content-length:") {
                    length = Int(String(line.split(separator: ":")[1]).trimming(" ")) ?? 0
                }
                while buffer.count < end + 4 + length { try fill() }
                return (status, String(decoding: buffer[(end + 4)..<(end + 4 + length)], as: UTF8.self))
            }
            try fill()
        }
    }

    private func findHeaderEnd(_ b: [UInt8]) -> Int? {
        guard b.count >= 4 else { return nil }
        for i in 0...(b.count - 4) where b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 { return i }
        return nil
    }

    func close() {
        if fd >= 0 { _ = Glibc.close(fd) }
    }
}
