// libFuzzer target for the HTTP API's parameters: the first byte picks a route (/api/v1/series, /api/v1/query,
// funnel, retention, experiment, /query's form), the rest is its form-encoded query string. Properties: nothing
// traps; whatever is taken is within what the route can answer (a limit in range, from < to, a step that divides
// the range into at most the allowed steps, statements and nesting within their limits); decoding is deterministic.
import API
import InfluxQL
import Query

let now: Int64 = 1_795_860_000_000_000_000

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = UnsafeBufferPointer(start: data + 1, count: size - 1)
    let form = Form(bytes: bytes)
    precondition(form == Form(bytes: bytes), "form decoding is not deterministic")
    switch data[0] % 6 {
    case 0:
        if let p = try? SeriesParameters(form, maxLimit: 1_000) { precondition((0...1_000).contains(p.limit)) }
    case 1:
        if let p = try? RangeParameters(form, now: now, interval: 60_000_000_000, maxSteps: 100_000) {
            precondition(p.from < p.to && p.step > 0 && p.step % 60_000_000_000 == 0)
            precondition((p.to - p.from) / p.step <= 100_000)
        }
    case 2:
        if let p = try? FunnelParameters(form, now: now) {
            precondition(p.range.from < p.range.to && p.window >= 0 && (2...20).contains(p.steps.count))
        }
    case 3:
        if let p = try? RetentionParameters(form, now: now) {
            precondition(p.range.from < p.range.to && (1...366).contains(p.periods))
        }
    case 4:
        if let p = try? ExperimentParameters(form, now: now) {
            precondition(p.range.from < p.range.to && p.window >= 0)
        }
    default:
        if let p = try? InfluxQLParameters(form, maxStatements: 10, maxDepth: 20, maxSize: 4_096) {
            precondition((1...10).contains(p.statements.count))
        }
    }
    return 0
}
