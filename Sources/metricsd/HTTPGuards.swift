import API
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Ingest
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The context every route gets: Hummingbird's, plus the connection, so work a request started can stop when
/// its client has gone (``QueryBudget``).
struct MetricsdRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

// MARK: - Auth

/// Who may pass: with `[auth] token` set, every request but `GET /ping` and `GET /health` (liveness and readiness
/// probes) needs the token. Checked here, once, in front of every route — routes never check it themselves, so a
/// route added later cannot be left open. Unknown paths need it too (they answer 401, not 404, without it).
///
/// Accepted as InfluxDB accepts credentials: `Authorization: Token <t>` or `Bearer <t>` (scheme names in any
/// case), HTTP Basic with the token as the password, the `p` query parameter, or `p` in a `POST /query` form body.
/// The comparison takes the same time whatever the presented value.
struct AuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let settings: RuntimeSettings
    let stats: Stats
    /// The largest form body read for its `p` (`[http] max_body_size`).
    let formLimit: Int

    /// Answered without credentials. The pages' files hold no data (a browser cannot send a header when it
    /// navigates): every request they make for data carries the token.
    static var publicPaths: Set<String> { ["/ping", "/health", "/ui", "/ui/", "/ui/app.js", "/ui/app.css"] }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        let token = settings.authToken
        if token.isEmpty || Self.publicPaths.contains(request.uri.path) { return try await next(request, context) }
        if let presented = Credentials.presented(request), Credentials.matches(presented, token) {
            return try await next(request, context)
        }
        if request.method == .post, request.uri.path == "/query",
            request.headers[.contentType]?.lowercased().hasPrefix("application/x-www-form-urlencoded") == true
        {
            var request = request
            // The collected body stays on the request: the route reads it again.
            if let body = try? await request.collectBody(upTo: formLimit),
                let p = Form(String(buffer: body))["p"], Credentials.matches(p, token)
            {
                return try await next(request, context)
            }
        }
        stats.unauthorized.add(1)
        return HTTPRoutes.error(.unauthorized, "authorization failed")
    }
}

enum Credentials {
    /// The secret a request presents: a Token or Bearer credential, Basic's password, or the `p` parameter.
    static func presented(_ request: Request) -> String? {
        if let header = request.headers[.authorization] {
            let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
            if parts.count == 2 {
                let scheme = parts[0].lowercased()
                let credential = String(parts[1]).trimming(" ")
                switch scheme {
                case "token", "bearer": return credential
                case "basic":
                    guard let decoded = base64Decoded(credential), let colon = decoded.firstIndex(of: ":") else {
                        return nil
                    }
                    return String(decoded[decoded.index(after: colon)...])
                default: break
                }
            }
        }
        return Form(request.uri.query ?? "")["p"]
    }

    /// Whether `presented` is `token`, in time that depends only on their lengths.
    static func matches(_ presented: String, _ token: String) -> Bool {
        let a = Array(presented.utf8)
        let b = Array(token.utf8)
        var difference = UInt8(a.count == b.count ? 0 : 1)
        for i in 0..<max(a.count, b.count) {
            difference |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
        }
        return difference == 0 && !b.isEmpty
    }

    static func base64Decoded(_ text: String) -> String? {
        Data(base64Encoded: text).flatMap { String(data: $0, encoding: .utf8) }
    }
}

// MARK: - Methods

/// A known path asked with a method it does not take answers 405 with `Allow`, not 404.
struct MethodNotAllowedMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Path → the methods it answers.
    let methods: [String: [HTTPRequest.Method]]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            guard let allowed = methods[request.uri.path] else { throw error }
            var response = HTTPRoutes.error(
                .methodNotAllowed, "method \(request.method) is not allowed on \(request.uri.path)")
            response.headers[.allow] = allowed.map(\.rawValue).joined(separator: ", ")
            return response
        }
    }
}

// MARK: - Connections

/// `[http] max_connections`: at the limit the server stops accepting (new connections wait in the kernel's
/// backlog) until one closes. Counted for `/health` and `/metrics`.
struct HTTPConnectionLimit: AvailableConnectionsDelegate {
    let limit: Int
    let stats: Stats

    mutating func connectionOpened() {
        let open = stats.httpConnectionCount.wrappingAdd(1, ordering: .relaxed).newValue
        if open >= limit { stats.httpConnectionsThrottled.add(1) }
    }

    mutating func connectionClosed() { stats.httpConnectionCount.wrappingSubtract(1, ordering: .relaxed) }

    func isAcceptingNewConnections() -> Bool { stats.httpConnectionCount.load(ordering: .relaxed) < limit }
}

/// HTTP/1.1 as Hummingbird serves it, with every connection bounded in time: between requests the connection may
/// stay idle for `[http] idle_timeout`; once the first byte of a request arrives its head must be complete within
/// `[http] read_header_timeout` and the whole request within `[http] read_timeout`, or the connection is closed —
/// a slow or stuck client (slowloris) holds one connection for seconds, never a thread. A client that closes its
/// side while its request is in flight has left: the connection is closed so the work it asked for stops
/// (``QueryBudget``), as Go's server (InfluxDB's) cancels the request of a client that went away.
struct GuardedHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value

    let responder: HTTPChannelHandler.Responder
    let idleTimeout: TimeAmount
    let headerTimeout: TimeAmount
    let readTimeout: TimeAmount
    let stats: Stats

    static func builder(idle: TimeAmount, header: TimeAmount, read: TimeAmount, stats: Stats) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in
            GuardedHTTP1Channel(
                responder: responder, idleTimeout: idle, headerTimeout: header, readTimeout: read, stats: stats)
        }
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let clock = RequestClock(headerTimeout: headerTimeout, readTimeout: readTimeout, stats: stats)
        do {
            try channel.pipeline.syncOperations.addHandler(RequestStartHandler(clock: clock), position: .first)
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        return HTTP1Channel(
            responder: responder,
            configuration: .init(
                additionalChannelHandlers: [RequestDeadlineHandler(clock: clock)], idleTimeout: idleTimeout)
        ).setup(channel: channel, logger: logger).flatMapThrowing { value in
            // Right after the HTTP/1 decoder, where the request's version is still known.
            let decoder = try channel.pipeline.syncOperations.handler(
                type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try channel.pipeline.syncOperations.addHandler(KeepAliveHandler(), position: .after(decoder))
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await HTTP1Channel(responder: responder).handle(value: value, logger: logger)
    }
}

/// Closes the connection after the response to a request that did not ask to keep it: HTTP/1.0 without
/// `Connection: keep-alive`, or `Connection: close` (Hummingbird's types no longer carry the version).
final class KeepAliveHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart
    /// Per request read and not yet answered (pipelining), whether its connection may stay open.
    private var keepAlive: [Bool] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) { keepAlive.append(head.isKeepAlive) }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head) where keepAlive.first == false:
            head.headers.replaceOrAdd(name: "connection", value: "close")
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .end where !keepAlive.isEmpty:
            let keep = keepAlive.removeFirst()
            guard !keep else { return context.write(data, promise: promise) }
            let written = promise ?? context.eventLoop.makePromise()
            context.writeAndFlush(data, promise: written)
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            written.futureResult.whenComplete { _ in bound.value.close(promise: nil) }
        default:
            context.write(data, promise: promise)
        }
    }
}

/// The clocks of one connection's current request. Used only on the connection's event loop.
final class RequestClock: @unchecked Sendable {
    let headerTimeout: TimeAmount
    let readTimeout: TimeAmount
    let stats: Stats
    /// No request is being read or answered: the next byte starts one. (The first request's clock starts when
    /// the connection opens: a connection that sends nothing is closed past read_header_timeout.)
    var waiting = true
    /// Requests whose head was read and whose response has not ended.
    var inFlight = 0
    private var headerTimer: Scheduled<Void>?
    private var readTimer: Scheduled<Void>?

    init(headerTimeout: TimeAmount, readTimeout: TimeAmount, stats: Stats) {
        self.headerTimeout = headerTimeout
        self.readTimeout = readTimeout
        self.stats = stats
    }

    /// The first byte of a request arrived on `channel`.
    func start(_ channel: any Channel) {
        waiting = false
        cancel()
        let stats = self.stats
        let loop = channel.eventLoop.assumeIsolated()
        headerTimer = loop.scheduleTask(in: headerTimeout) {
            stats.requestTimeouts.add(1)
            channel.close(promise: nil)
        }
        readTimer = loop.scheduleTask(in: readTimeout) {
            stats.requestTimeouts.add(1)
            channel.close(promise: nil)
        }
    }

    func headRead() {
        headerTimer?.cancel()
        headerTimer = nil
        inFlight += 1
    }

    func requestRead() {
        readTimer?.cancel()
        readTimer = nil
    }

    func responseEnded() {
        inFlight -= 1
        if inFlight <= 0 {
            inFlight = 0
            waiting = true
        }
    }

    func cancel() {
        headerTimer?.cancel()
        headerTimer = nil
        readTimer?.cancel()
        readTimer = nil
    }
}

/// First in the pipeline, on raw bytes: notices when a request begins.
final class RequestStartHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let clock: RequestClock

    init(clock: RequestClock) { self.clock = clock }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { clock.start(context.channel) }
    }

    func channelActive(context: ChannelHandlerContext) {
        clock.start(context.channel)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if clock.waiting, unwrapInboundIn(data).readableBytes > 0 { clock.start(context.channel) }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        clock.cancel()
        context.fireChannelInactive()
    }
}

/// After HTTP decoding: request heads and ends stop the clocks, response ends make the connection wait again.
final class RequestDeadlineHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart
    let clock: RequestClock

    init(clock: RequestClock) { self.clock = clock }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: clock.headRead()
        case .body: break
        case .end: clock.requestRead()
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { clock.responseEnded() }
        context.write(data, promise: promise)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event, clock.inFlight > 0 || !clock.waiting {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

// MARK: - Bodies

/// `[http] max_concurrent_bodies`: how many request bodies are read and processed at once. A request waits
/// (without a thread) for a permit up to `wait`, then gets 503 naming the limit; its body stays in the socket
/// meanwhile, so memory is bounded by the permits times `max_body_size`.
final class AsyncPermits: Sendable {
    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Bool, Never>
    }
    private struct State {
        var available: Int
        var waiters: [Waiter] = []
        var nextID: UInt64 = 0
    }
    private let state: Mutex<State>
    let limit: Int
    let wait: Duration

    init(_ limit: Int, wait: Duration) {
        self.limit = limit
        self.wait = wait
        state = Mutex(State(available: limit))
    }

    /// Takes a permit; `false` when none came within `wait`. A `true` must be followed by one ``release()``.
    func acquire() async -> Bool {
        let id: UInt64? = state.withLock { s in
            if s.available > 0 {
                s.available -= 1
                return nil
            }
            s.nextID += 1
            return s.nextID
        }
        guard let id else { return true }
        let wait = self.wait
        return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let granted: Bool? = state.withLock { s in
                // A permit may have come back between the two locks.
                if s.available > 0 {
                    s.available -= 1
                    return true
                }
                s.waiters.append(Waiter(id: id, continuation: continuation))
                return nil
            }
            if let granted {
                continuation.resume(returning: granted)
                return
            }
            Task {
                try? await Task.sleep(for: wait)
                let expired = self.state.withLock { s -> CheckedContinuation<Bool, Never>? in
                    guard let k = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                    return s.waiters.remove(at: k).continuation
                }
                expired?.resume(returning: false)
            }
        }
    }

    func release() {
        let next = state.withLock { s -> CheckedContinuation<Bool, Never>? in
            if s.waiters.isEmpty {
                s.available += 1
                return nil
            }
            return s.waiters.removeFirst().continuation
        }
        next?.resume(returning: true)
    }
}

/// Raises the soft limit on open files to the hard one (as Go programs, InfluxDB among them, do at start): the
/// listeners' connection limits must stay below it, or accepting fails at the descriptor limit instead.
/// Returns the limit in force.
func raiseOpenFileLimit() -> Int {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
    if limit.rlim_cur < limit.rlim_max {
        var raised = limit
        raised.rlim_cur = limit.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
    }
    return limit.rlim_cur >= rlim_t(Int.max) ? Int.max : Int(limit.rlim_cur)
}
