import CZlib
import Foundation
import Synchronization

/// Why a compressed body could not be read.
public enum GzipError: Error {
    case corrupt(String)
    case tooLarge
}

public enum Gzip {
    /// Inflates a gzip (or zlib) body, refusing to produce more than `limit` bytes: a small compressed body can
    /// expand a thousandfold, so the limit applies to what comes out, not what goes in.
    public static func decompress(_ input: UnsafeRawBufferPointer, limit: Int) throws(GzipError) -> [UInt8] {
        var stream = z_stream()
        guard czlib_inflate_init_auto(&stream) == Z_OK else { throw .corrupt("inflateInit failed") }
        defer { inflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: min(limit, max(4096, input.count * 4)))
        var produced = 0
        stream.next_in = UnsafeMutablePointer(mutating: input.bindMemory(to: Bytef.self).baseAddress)
        stream.avail_in = uInt(input.count)
        while true {
            if produced == output.count {
                if output.count >= limit { throw .tooLarge }
                output.append(contentsOf: repeatElement(0, count: min(limit, output.count * 2) - output.count))
            }
            let status: Int32 = output.withUnsafeMutableBufferPointer { out in
                stream.next_out = out.baseAddress! + produced
                stream.avail_out = uInt(out.count - produced)
                let status = inflate(&stream, Z_NO_FLUSH)
                produced = out.count - Int(stream.avail_out)
                return status
            }
            switch status {
            case Z_STREAM_END:
                output.removeSubrange(produced...)
                return output
            case Z_OK:
                if stream.avail_in == 0 && produced < output.count { throw .corrupt("truncated gzip stream") }
            case Z_BUF_ERROR:
                if stream.avail_in == 0 { throw .corrupt("truncated gzip stream") }
            default:
                let message = stream.msg.map { String(cString: $0) } ?? "error \(status)"
                throw .corrupt(message)
            }
        }
    }

    /// Compresses with gzip framing (used by tests, `metricsd send --gzip` and forwarding).
    public static func compress(_ input: [UInt8], level: Int32 = 6) -> [UInt8] {
        var stream = z_stream()
        precondition(czlib_deflate_init_gzip(&stream, level) == Z_OK)
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(input.count))) + 32)
        input.withUnsafeBufferPointer { inp in
            output.withUnsafeMutableBufferPointer { out in
                stream.next_in = UnsafeMutablePointer(mutating: inp.baseAddress)
                stream.avail_in = uInt(inp.count)
                stream.next_out = out.baseAddress
                stream.avail_out = uInt(out.count)
                _ = deflate(&stream, Z_FINISH)
            }
        }
        output.removeSubrange(Int(stream.total_out)...)
        return output
    }
}
