import CCurl
import Foundation

/// A blocking HTTP client on one reused libcurl easy handle (keep-alive across requests). Not thread-safe: one
/// client per thread, and never on an event loop (`perform` blocks for up to `timeout`).
package final class CurlClient {
    package struct Options: Sendable, Hashable {
        /// Whole-request timeout, seconds.
        var timeout = 30
        var connectTimeout = 10
        /// PEM bundle to verify the server with (HTTPS), instead of the system's.
        var caFile = ""
        /// Skip certificate and host name verification (HTTPS; for test setups only).
        var insecureSkipVerify = false
        /// The longest answer body kept; past it the transfer is aborted (a `TransportError`).
        var maxResponseBytes = Int.max

        package init(
            timeout: Int = 30, connectTimeout: Int = 10, caFile: String = "", insecureSkipVerify: Bool = false,
            maxResponseBytes: Int = .max
        ) {
            self.timeout = timeout
            self.connectTimeout = connectTimeout
            self.caFile = caFile
            self.insecureSkipVerify = insecureSkipVerify
            self.maxResponseBytes = maxResponseBytes
        }
    }

    package struct Response: Sendable {
        package var status: Int
        package var headers: [String: String]
        package var body: [UInt8]
        package var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// A request that got no HTTP answer (refused, reset, timed out, TLS failure).
    package struct TransportError: Error, CustomStringConvertible {
        package var code: Int32
        package var message: String
        package var description: String { message }
    }

    private let handle: UnsafeMutableRawPointer
    private let options: Options
    /// Filled by the C callbacks during `perform`.
    private final class Sink {
        var limit = Int.max
        var body: [UInt8] = []
        var headers: [String: String] = [:]
    }

    static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()

    package init(options: Options) {
        _ = Self.globalInit
        guard let h = curl_easy_init() else { fatalError("curl_easy_init failed: libcurl is unusable") }
        handle = h
        self.options = options
    }

    deinit { curl_easy_cleanup(handle) }

    /// POSTs `body` to `url` and returns the answer, or throws when there was none.
    package func post(_ url: String, headers: [String], body: [UInt8]) throws(TransportError) -> Response {
        curl_easy_reset(handle)
        let h = handle
        _ = ccurl_setopt_str(h, CURLOPT_URL, url)
        _ = ccurl_setopt_long(h, CURLOPT_NOSIGNAL, 1)  // threads: no SIGALRM for DNS timeouts
        _ = ccurl_setopt_long(h, CURLOPT_POST, 1)
        _ = ccurl_setopt_long(h, CURLOPT_TIMEOUT, options.timeout)
        _ = ccurl_setopt_long(h, CURLOPT_CONNECTTIMEOUT, options.connectTimeout)
        _ = ccurl_setopt_long(h, CURLOPT_TCP_KEEPALIVE, 1)
        if !options.caFile.isEmpty { _ = ccurl_setopt_str(h, CURLOPT_CAINFO, options.caFile) }
        if options.insecureSkipVerify {
            _ = ccurl_setopt_long(h, CURLOPT_SSL_VERIFYPEER, 0)
            _ = ccurl_setopt_long(h, CURLOPT_SSL_VERIFYHOST, 0)
        }
        // An empty Expect: libcurl would otherwise ask for 100-continue on bodies over 1 MiB and wait for it.
        var list: UnsafeMutablePointer<curl_slist>? = curl_slist_append(nil, "Expect:")
        for header in headers { list = curl_slist_append(list, header) }
        defer { curl_slist_free_all(list) }
        _ = ccurl_setopt_slist(h, CURLOPT_HTTPHEADER, list)

        let sink = Sink()
        sink.limit = options.maxResponseBytes
        let context = Unmanaged.passRetained(sink)
        defer { context.release() }
        _ = ccurl_setopt_writefn(h) { data, size, count, user in
            let sink = Unmanaged<Sink>.fromOpaque(user!).takeUnretainedValue()
            let n = size * count
            guard sink.body.count + n <= sink.limit else { return 0 }  // too long: abort the transfer
            if let data { sink.body.append(contentsOf: UnsafeRawBufferPointer(start: data, count: n)) }
            return n
        }
        _ = ccurl_setopt_ptr(h, CURLOPT_WRITEDATA, context.toOpaque())
        _ = ccurl_setopt_headerfn(h) { data, size, count, user in
            let sink = Unmanaged<Sink>.fromOpaque(user!).takeUnretainedValue()
            let n = size * count
            if let data {
                let line = String(decoding: UnsafeRawBufferPointer(start: data, count: n), as: UTF8.self)
                if let colon = line.firstIndex(of: ":") {
                    let name = line[..<colon].lowercased()
                    let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
                    sink.headers[name] = value
                } else if line.hasPrefix("HTTP/") {
                    sink.headers = [:]  // a new response (after a 100 Continue): forget the previous headers
                }
            }
            return n
        }
        _ = ccurl_setopt_ptr(h, CURLOPT_HEADERDATA, context.toOpaque())

        // POSTFIELDS does not copy: the body stays pinned for the whole perform.
        let rc = body.withUnsafeBytes { raw -> CURLcode in
            _ = ccurl_setopt_off(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(raw.count))
            _ = ccurl_setopt_ptr(h, CURLOPT_POSTFIELDS, raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!)
            return curl_easy_perform(h)
        }
        _ = ccurl_setopt_ptr(h, CURLOPT_POSTFIELDS, nil)
        guard rc == CURLE_OK else {
            throw TransportError(code: Int32(rc.rawValue), message: String(cString: curl_easy_strerror(rc)))
        }
        var status = 0
        _ = ccurl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &status)
        return Response(status: status, headers: sink.headers, body: sink.body)
    }
}
