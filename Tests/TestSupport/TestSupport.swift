public import Foundation

/// What the test suites share: a seeded generator, temporary directories, free loopback ports.

/// A small deterministic generator (SplitMix64), so every failure is reproducible from its seed.
public struct SplitMix: RandomNumberGenerator {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }
    public init(state: UInt64) { self.state = state }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A new empty directory under the system's temporary directory, named `name-<uuid>`.
public func temporaryDirectory(_ name: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// A path for a new file under the system's temporary directory (`name-<uuid>.suffix`), not created.
public func temporaryPath(_ name: String, suffix: String = "") -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)\(suffix)").path
}

public struct NoFreePort: Error, CustomStringConvertible {
    public var description: String { "no free port" }
}

/// A free loopback port (bound with port 0, then released) for UDP and TCP alike.
public func freePort() throws -> Int {
    for _ in 0..<50 {
        let tcp = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(tcp, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(tcp, $0, &len) }
        }
        let port = Int(UInt16(bigEndian: addr.sin_port))
        close(tcp)
        // The same number must also be free for UDP.
        let udp = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(udp, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        close(udp)
        if ok == 0 && port > 0 { return port }
    }
    throw NoFreePort()
}

/// Waits (bounded by `timeout` seconds) until `condition` holds, re-evaluating it every `every` seconds; whether it
/// did. For tests that watch a server or a thread reach a state, never for timing.
public func eventually(
    timeout: TimeInterval = 10, every interval: TimeInterval = 0.05, _ condition: () throws -> Bool
) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return true }
        usleep(UInt32(interval * 1_000_000))
    }
    return try condition()
}
