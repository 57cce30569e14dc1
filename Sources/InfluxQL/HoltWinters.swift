import Foundation

/// `holt_winters(agg, h, m)` and `holt_winters_with_fit`: InfluxDB 1.x's forecast, computed the same way — points
/// rounded to the interval (gaps as NaN), seasonal initial guesses, a grid of starting parameters each refined by
/// Nelder–Mead (Hutt's method: reflection 1, contraction 0.5, expansion 2, at most 1,000 iterations, stopping when
/// the spread of the simplex's errors is below 1e-4), parameters clamped to [0, 1] as the error is computed (in
/// place, as InfluxDB does: it changes the simplex), and the forecast `h` intervals past the last point.
struct HoltWinters {
    let h: Int
    let m: Int
    let seasonal: Bool
    let withFit: Bool
    let interval: Int64
    var y: [Double] = []

    init(h: Int, m: Int, withFit: Bool, interval: Int64) {
        self.h = h
        self.m = m
        seasonal = m >= 2
        self.withFit = withFit
        self.interval = interval
    }

    func roundTime(_ t: Int64) -> Int64 {
        let remainder = t % interval
        if remainder > interval / 2 { return (t / interval + 1) * interval }
        return (t / interval) * interval
    }

    /// The forecast (time, value) for points in time order.
    /// `check` is asked at every Nelder–Mead iteration (the query's budget: the fit's cost grows with its points).
    mutating func forecast(_ points: [(time: Int64, value: Double)], check: () throws -> Void) throws -> [(
        Int64, Double
    )] {
        guard points.count >= 2, !(seasonal && points.count < m), h > 0 else { return [] }
        let start = roundTime(points[0].time)
        let stop = roundTime(points[points.count - 1].time)
        guard (stop - start) / interval > 0 else { return [] }
        y = [points[0].value]
        var t = start
        for p in points.dropFirst() {
            let rounded = roundTime(p.time)
            if rounded <= t { continue }
            t += interval
            while rounded != t {
                y.append(.nan)
                t += interval
            }
            y.append(p.value)
        }
        var l0 = 0.0
        if seasonal {
            for i in 0..<m where i < y.count && !y[i].isNaN { l0 += (1 / Double(m)) * y[i] }
        } else {
            l0 += 0.5 * y[0]
        }
        var b0 = 0.0
        if seasonal {
            var i = 0
            while i < m && m + i < y.count {
                if !y[i].isNaN && !y[m + i].isNaN { b0 += 1 / Double(m * m) * (y[m + i] - y[i]) }
                i += 1
            }
        } else if !y[1].isNaN {
            b0 = 0.5 * (y[1] - y[0])
        }
        var s: [Double] = []
        if seasonal { s = (0..<m).map { i in i < y.count && !y[i].isNaN ? y[i] / l0 : 0 } }
        var parameters = [Double](repeating: 0, count: 6 + s.count)
        parameters[4] = l0
        parameters[5] = b0
        for i in s.indices { parameters[6 + i] = s[i] }
        var minSSE = Double.infinity
        var best: [Double]?
        // alpha, beta, gamma, phi from 0.3 in steps of 0.4 below 1 (InfluxDB's grid).
        var alpha = 0.3
        while alpha < 1.0 {
            var beta = 0.3
            while beta < 1.0 {
                var gamma = 0.3
                while gamma < 1.0 {
                    var phi = 0.3
                    while phi < 1.0 {
                        parameters[0] = alpha
                        parameters[1] = beta
                        parameters[2] = gamma
                        parameters[3] = phi
                        let (sse, params) = try optimize(parameters, epsilon: 1e-4, scale: 1, check: check)
                        if sse < minSSE || best == nil {
                            minSSE = sse
                            best = params
                        }
                        phi += 0.4
                    }
                    gamma += 0.4
                }
                beta += 0.4
            }
            alpha += 0.4
        }
        var params = best!
        let forecasted = forecast(h, &params)
        var out: [(Int64, Double)] = []
        if withFit {
            for (i, v) in forecasted.enumerated() where !v.isNaN {
                out.append((points[0].time + interval * Int64(i), v))
            }
        } else {
            let last = points[points.count - 1].time
            for (i, v) in forecasted[y.count...].enumerated() where !v.isNaN {
                out.append((last + interval * (Int64(i) + 1), v))
            }
        }
        return out
    }

    func forecast(_ h: Int, _ params: inout [Double]) -> [Double] {
        for k in 0..<4 { params[k] = Swift.min(1, Swift.max(0, params[k])) }
        var yT = y[0]
        let phi = params[3]
        var phiH = phi
        var lT = params[4]
        var bT = params[5]
        let m = seasonal ? params.count - 6 : 0
        if seasonal, m == 1 { params[6] = 1 }
        var so = seasonal ? m - 1 : 0
        var forecasted = [Double](repeating: 0, count: y.count + h)
        forecasted[0] = yT
        let l = y.count
        var stm = 1.0
        var stmh = 1.0
        if l + h > 1 {
            for t in 1..<(l + h) {
                if seasonal {
                    let hm = t % m
                    stm = params[6 + ((t - m + so) % m + m) % m]
                    stmh = params[6 + ((t - m + hm + so) % m + m) % m]
                }
                let (alpha, beta, gamma) = (params[0], params[1], params[2])
                let lTp = lT
                let bTp = bT
                lT = alpha * (yT / stm) + (1 - alpha) * (lTp + phi * bTp)
                bT = beta * (lT - lTp) + (1 - beta) * phi * bTp
                let sT = gamma * (yT / (lTp + phi * bTp)) + (1 - gamma) * stm
                yT = (lT + phiH * bT) * stmh
                phiH += pow(phi, Double(t))
                if seasonal {
                    params[6 + (t + so) % m] = sT
                    so += 1
                }
                forecasted[t] = yT
            }
        }
        return forecasted
    }

    func sse(_ params: inout [Double]) -> Double {
        var sse = 0.0
        let forecasted = forecast(0, &params)
        for i in forecasted.indices where !y[i].isNaN {
            if forecasted[i].isNaN { return .infinity }
            let diff = forecasted[i] - y[i]
            sse += diff * diff
        }
        return sse
    }

    /// Nelder–Mead as InfluxDB's `neldermead` package runs it (the objective may change the vertex it is given).
    func optimize(_ start: [Double], epsilon: Double, scale: Double, check: () throws -> Void) throws -> (
        Double, [Double]
    ) {
        let n = start.count
        var v = [[Double]](repeating: [Double](repeating: 0, count: n), count: n + 1)
        var f = [Double](repeating: 0, count: n + 1)
        var vr = [Double](repeating: 0, count: n)
        var ve = [Double](repeating: 0, count: n)
        var vc = [Double](repeating: 0, count: n)
        var vm = [Double](repeating: 0, count: n)
        let pn = scale * ((Double(n + 1)).squareRoot() - 1 + Double(n)) / (Double(n) * 2.0.squareRoot())
        let qn = scale * ((Double(n + 1)).squareRoot() - 1) / (Double(n) * 2.0.squareRoot())
        v[0] = start
        for i in 1...n {
            for j in 0..<n { v[i][j] = (i - 1 == j ? pn : qn) + start[j] }
        }
        for j in 0...n { f[j] = sse(&v[j]) }
        for _ in 1...1_000 {
            try check()
            var vg = 0
            var vs = 0
            for i in 0...n {
                if f[i] > f[vg] { vg = i }
                if f[i] < f[vs] { vs = i }
            }
            var vh = vs
            for i in 0...n where f[i] > f[vh] && f[i] < f[vg] { vh = i }
            for i in 0..<n {
                var cent = 0.0
                for k in 0...n where k != vg { cent += v[k][i] }
                vm[i] = cent / Double(n)
            }
            for i in 0..<n { vr[i] = vm[i] + 1.0 * (vm[i] - v[vg][i]) }
            let fr = sse(&vr)
            if fr < f[vh] && fr >= f[vs] {
                v[vg] = vr
                f[vg] = fr
            }
            if fr < f[vs] {
                for i in 0..<n { ve[i] = vm[i] + 2.0 * (vr[i] - vm[i]) }
                let fe = sse(&ve)
                if fe < fr {
                    v[vg] = ve
                    f[vg] = fe
                } else {
                    v[vg] = vr
                    f[vg] = fr
                }
            }
            if fr >= f[vh] {
                if fr < f[vg] && fr >= f[vh] {
                    for i in 0..<n { vc[i] = vm[i] + 0.5 * (vr[i] - vm[i]) }
                } else {
                    for i in 0..<n { vc[i] = vm[i] - 0.5 * (vm[i] - v[vg][i]) }
                }
                let fc = sse(&vc)
                if fc < f[vg] {
                    v[vg] = vc
                    f[vg] = fc
                } else {
                    for row in 0...n where row != vs {
                        for i in 0..<n { v[row][i] = v[vs][i] + (v[row][i] - v[vs][i]) / 2.0 }
                    }
                    f[vg] = sse(&v[vg])
                    f[vh] = sse(&v[vh])
                }
            }
            let favg = f.reduce(0, +) / Double(n + 1)
            var s = 0.0
            for i in 0...n { s += pow(f[i] - favg, 2.0) / Double(n) }
            if s.squareRoot() < epsilon { break }
        }
        var vs = 0
        for i in 0...n where f[i] < f[vs] { vs = i }
        var parameters = v[vs]
        let minimum = sse(&parameters)
        return (minimum, v[vs])
    }
}
