import Export
import Foundation
import Ingest
import LineProtocol
import Logging
import NIOCore
import NIOPosix
import Prometheus
import Rollups
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

// MARK: - UDP

/// One datagram holds whole lines (Telegraf and the Influx clients never split a line across datagrams).
/// Datagrams are read in batches with recvmmsg (`datagramVectorReadMessageCount`).
final class UDPIngestHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>

    private let ingester: LineIngester

    init(_ pipeline: IngestPipeline) {
        ingester = pipeline.ingester(.udp)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let ingester = self.ingester
        if ingester.pipeline.gate.isClosed {
            // backlog_policy = "block": the outbox is full; a datagram cannot wait. Counted.
            ingester.pipeline.stats.backlogDroppedDatagrams.add(1)
            return
        }
        ingester.remote = RemoteAddress(envelope.remoteAddress)  // described only if a line is refused
        envelope.data.withUnsafeReadableBytes { raw in _ = ingester.pipeline.accept(raw, into: ingester) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A UDP read error (e.g. ICMP-induced) must not stop the listener.
    }
}

/// A sender's address as a dead letter shows it (`127.0.0.1:51234`, `[::1]:51234`), described only when one is
/// made.
struct RemoteAddress: CustomStringConvertible, Sendable {
    let address: SocketAddress
    init(_ address: SocketAddress) { self.address = address }

    var description: String {
        guard let ip = address.ipAddress else { return "\(address)" }
        let host = ip.contains(":") ? "[\(ip)]" : ip
        return address.port.map { "\(host):\($0)" } ?? host
    }
}

// MARK: - TCP

/// Newline-framed line protocol over TCP, one handler per connection. Lines are parsed and applied inside
/// `channelRead`, on the connection's event loop, so when ingestion is slower than the peer the socket simply is
/// not read: backpressure reaches the sender through TCP, and nothing is buffered beyond one partial line
/// (bounded by `limits.max_line_length`).
final class TCPIngestHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let ingester: LineIngester
    private var framer: LineFramer
    private let stats: Stats
    private let maxConnections: Int
    private var counted = false
    /// The complete lines of one read, copied so they can be logged as one WAL record (capacity reused).
    private var batch: [UInt8] = []
    private var overlong: [Int] = []

    init(_ pipeline: IngestPipeline, maxConnections: Int) {
        ingester = pipeline.ingester(.tcp)
        framer = LineFramer(maxLineLength: pipeline.maxLineLength)
        stats = pipeline.stats
        self.maxConnections = maxConnections
    }

    /// Logs and applies the complete lines gathered in `batch` (and counts the overlong ones after them).
    private func applyBatch() {
        defer {
            batch.removeAll(keepingCapacity: true)
            overlong.removeAll(keepingCapacity: true)
        }
        let ingester = self.ingester
        let overlong = self.overlong
        batch.withUnsafeBytes { raw in _ = ingester.pipeline.accept(raw, overlong: overlong, into: ingester) }
    }

    private func gather(_ framed: FramedLine) {
        switch framed {
        case .line(let line):
            batch.append(contentsOf: line)
            batch.append(0x0A)
        case .overlong(let n):
            overlong.append(n)
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        let open = stats.tcpConnectionCount.wrappingAdd(1, ordering: .relaxed).newValue
        counted = true
        stats.tcpConnections.set(Double(open))
        if open > maxConnections {
            stats.connectionsRejected.add(1)
            context.close(promise: nil)
            return
        }
        ingester.remote = context.channel.remoteAddress.map(RemoteAddress.init)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Bytes held while blocked are taken when the sender leaves (they were sent; better late than lost).
        if let held {
            self.held = nil
            process(held)
        }
        // A final line without a newline still counts.
        var framer = self.framer
        framer.finish { gather($0) }
        self.framer = framer
        if !batch.isEmpty || !overlong.isEmpty { applyBatch() }
        if counted {
            let open = stats.tcpConnectionCount.wrappingSubtract(1, ordering: .relaxed).newValue
            stats.tcpConnections.set(Double(open))
            counted = false
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        if ingester.pipeline.gate.isClosed || held != nil {
            // backlog_policy = "block": what was already read waits here (a read or two: reading stops now).
            if held == nil { held = buffer } else { held!.writeBuffer(&buffer) }
            if !paused { pause(context) }
            return
        }
        process(buffer)
    }

    private func process(_ buffer: ByteBuffer) {
        var framer = self.framer
        buffer.withUnsafeReadableBytes { raw in framer.feed(raw) { gather($0) } }
        self.framer = framer
        if !batch.isEmpty || !overlong.isEmpty { applyBatch() }
    }

    /// Whether reading stopped for `backlog_policy = "block"`, and the bytes read before it did.
    private var paused = false
    private var held: ByteBuffer?

    /// The outbox is full under `backlog_policy = "block"`: stop reading this connection (the sender's writes wait in
    /// its socket buffers: TCP's own backpressure), and look again every 100 ms.
    private func pause(_ context: ChannelHandlerContext) {
        paused = true
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: .milliseconds(100)) { bound.value.0.resumeIfOpen(bound.value.1) }
    }

    private func resumeIfOpen(_ context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        if ingester.pipeline.gate.isClosed {
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: .milliseconds(100)) { bound.value.0.resumeIfOpen(bound.value.1) }
            return
        }
        paused = false
        if let held {
            self.held = nil
            process(held)
        }
        context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
        context.read()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)  // half-open or silent connection: free its slot
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // One bad connection never takes the listener down: close just this one.
        context.close(promise: nil)
    }
}

// MARK: - Services

/// A bound NIO channel run as a Service: it closes on graceful shutdown (stopping intake first).
struct ChannelService: Service {
    let name: String
    let channel: any Channel
    let logger: Logger

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
        logger.info("listener stopped", metadata: ["listener.protocol": "\(name)"])
    }
}

enum Listeners {
    /// `sockets` UDP sockets on one port (SO_REUSEPORT when more than one), each on the next event loop of `group`:
    /// the kernel hashes each sender's address and port to one of them, so many senders are read on every core.
    /// The first socket binds `address` (port 0: a free port), the others the port it got.
    static func bindUDP(
        _ address: HostPort,
        sockets: Int,
        receiveBuffer: Int,
        context: IngestPipeline,
        group: any EventLoopGroup
    ) async throws -> [any Channel] {
        var channels: [any Channel] = []
        var port = address.port
        if sockets > 1 {
            // SO_REUSEPORT would let this bind share a port another process (a second metricsd started by mistake,
            // by the same user) already holds, and take half its datagrams. A plain bind first fails in that case
            // (and picks the port when 0 was asked for); then the shared sockets take its place.
            let probe = try await bindUDP(
                address, reusePort: false, receiveBuffer: receiveBuffer, context: context, group: group)
            port = probe.localAddress?.port ?? port
            try await probe.close()
        }
        do {
            for _ in 0..<max(1, sockets) {
                let channel = try await bindUDP(
                    HostPort(host: address.host, port: port), reusePort: sockets > 1, receiveBuffer: receiveBuffer,
                    context: context, group: group)
                port = channel.localAddress?.port ?? port
                channels.append(channel)
            }
        } catch {
            for channel in channels { try? await channel.close() }
            throw error
        }
        return channels
    }

    private static func bindUDP(
        _ address: HostPort,
        reusePort: Bool,
        receiveBuffer: Int,
        context: IngestPipeline,
        group: any EventLoopGroup
    ) async throws -> any Channel {
        // No SO_REUSEADDR: for UDP it lets a second process bind the same port and silently take its datagrams
        // (there is no TIME_WAIT to step over on a restart).
        try await DatagramBootstrap(group: group.next())
            .channelOption(ChannelOptions.socket(SocketOptionLevel(SOL_SOCKET), SO_REUSEPORT), value: reusePort ? 1 : 0)
            .channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(receiveBuffer))
            .channelOption(.datagramVectorReadMessageCount, value: 32)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 32 * 65_536))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(UDPIngestHandler(context))
                }
            }
            .bind(host: address.host, port: address.port)
            .get()
    }

    static func bindTCP(
        _ address: HostPort,
        maxConnections: Int,
        context: IngestPipeline,
        group: any EventLoopGroup
    ) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            // At the descriptor limit accept() fails at once: back off instead of spinning on it (this bind does
            // not add the handler by itself).
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptBackoffHandler())
                }
            }
            .childChannelOption(.socketOption(.so_keepalive), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: .minutes(5)))
                    try channel.pipeline.syncOperations.addHandler(
                        TCPIngestHandler(context, maxConnections: maxConnections)
                    )
                }
            }
            .bind(host: address.host, port: address.port)
            .get()
    }

    /// Kernel drops for the UDP socket bound to `port`, from /proc/net/udp and /proc/net/udp6 (the last column).
    static func kernelUDPDrops(port: Int) -> Int64? {
        var total: Int64 = 0
        var found = false
        let hexPort = String(port, radix: 16, uppercase: true)
        let suffix = ":" + String(repeating: "0", count: max(0, 4 - hexPort.count)) + hexPort
        for path in ["/proc/net/udp", "/proc/net/udp6"] {
            guard let text = try? readText(path) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let columns = line.split(separator: " ", omittingEmptySubsequences: true)
                guard columns.count >= 13, columns[1].hasSuffix(suffix), let drops = Int64(columns.last!) else {
                    continue
                }
                total += drops
                found = true
            }
        }
        return found ? total : nil
    }
}

/// Reads a whole (small) text file.
func readText(_ path: String) throws -> String {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw ConfigError("cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65_536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    return String(decoding: bytes, as: UTF8.self)
}
