import CDeflate
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

    /// Compresses with gzip framing (tests, `metricsd send --gzip`, forwarding to InfluxDB and ClickHouse), in one
    /// call over the whole buffer with libdeflate: at level 1 about 1.7× zlib's speed at its level 1 on line
    /// protocol, with output about 7 % smaller (docs/PERFORMANCE.md, Forwarding). `level`: 1 (fastest) to 12.
    public static func compress(_ input: [UInt8], level: Int32 = 6) -> [UInt8] {
        guard let compressor = libdeflate_alloc_compressor(min(max(level, 1), 12)) else {
            fatalError("libdeflate could not allocate a compressor")  // only when out of memory
        }
        defer { libdeflate_free_compressor(compressor) }
        let bound = libdeflate_gzip_compress_bound(compressor, input.count)
        return input.withUnsafeBytes { source in
            [UInt8](unsafeUninitializedCapacity: bound) { output, written in
                // The bound is enough for any input, so this cannot come back 0 for a lack of room.
                written = libdeflate_gzip_compress(
                    compressor, source.baseAddress, source.count, output.baseAddress, output.count)
                precondition(written > 0, "libdeflate_gzip_compress failed within its own bound")
            }
        }
    }
}
