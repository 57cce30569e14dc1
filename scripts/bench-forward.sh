#!/usr/bin/env bash
# Forwarding benchmark: how fast metricsd drains a backlog of stored minutes into a real local influxd, what it
# costs metricsd in CPU per point, and how that drain compares with the same influxd accepting the same points
# posted directly by a plain client (the points read back from influxd, in batches of the same size, bodies
# prepared before the clock starts). Once per content encoding (gzip, identity), each with a fresh influxd.
# Writes the "Forwarding" section of docs/PERFORMANCE.md.
# Usage: scripts/bench-forward.sh [SERIES] [MINUTES]   (defaults 5000, 10: 50,000 points to forward; 20000 10 is 200,000)
# PERF_OUT=/tmp/fwd records a perf profile of metricsd over each drain (/tmp/fwd.gzip, /tmp/fwd.identity).
set -euo pipefail
cd "$(dirname "$0")/.."
SERIES=${1:-5000}
MINUTES=${2:-10}
BIN=${METRICSD_BIN:-.build/release/metricsd}  # METRICSD_BIN=path measures another build
ENCODINGS=${ENCODINGS:-gzip identity}
TMP=$(mktemp -d)
. scripts/bench-lib.sh
MPID=""; IPID=""
cleanup() { [ -n "$MPID" ] && kill "$MPID" 2>/dev/null; [ -n "$IPID" ] && scripts/peers.sh stop "$IPID"; rm -rf "$TMP"; }
trap cleanup EXIT
cpu() { awk '{print ($14 + $15) / 100}' /proc/$1/stat; }  # user + system seconds (USER_HZ = 100)
# One number of /health's "forwarding" object, without starting an interpreter: the drain is polled every 0.1 s, and
# a python3 per poll took most of a core from influxd (the drain looked 25 % slower than it is).
field() { grep -o "\"$1\" *: *[0-9]*" | grep -o '[0-9]*$'; }

# SERIES × MINUTES series-minutes of a Telegraf-like cpu measurement (4 fields, 6 points a minute), in the past.
python3 - "$SERIES" "$MINUTES" "$TMP/body" <<'PY'
import sys, time
series, minutes, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
start = (int(time.time()) // 60 - minutes - 30) * 60
with open(path, "w") as f:
    for m in range(minutes):
        for s in range(series):
            for k in range(6):
                t = start + m * 60 + k * 10
                v = (s * 7 + m * 3 + k) % 97
                f.write("cpu,host=h%d,cpu=cpu%d usage_user=%d.5,usage_system=%d.25,usage_idle=%d,usage_iowait=%d.125 %d\n"
                        % (s // 8, s % 8, v, v // 2, 100 - v, v % 5, t))
PY
LINES=$(wc -l < "$TMP/body")
split -l 50000 "$TMP/body" "$TMP/chunk."
POINTS=$((SERIES * MINUTES))
: > "$TMP/results"

for ENC in $ENCODINGS; do
    IPORT=$(free_port); MPORT=$(free_port)
    rm -rf "$TMP/var" "$TMP/influxd"
    health() { curl -s "http://127.0.0.1:$MPORT/health"; }
    # influxd is not running yet: metricsd stores everything and the backlog builds up.
    cat > "$TMP/metricsd.toml" <<CONF
[influx]
url = "http://127.0.0.1:$IPORT"
create_database = true
flush_interval = "1s"
retry_initial = "100ms"
retry_max = "200ms"
content_encoding = "$ENC"
CONF
    $BIN serve --config "$TMP/metricsd.toml" --data-dir "$TMP/var" --http 127.0.0.1:$MPORT --udp "" --tcp "" \
        > "$TMP/metricsd.log" 2>&1 &
    MPID=$!
    wait_ping $MPORT
    c0=$(cpu $MPID)
    for f in "$TMP"/chunk.*; do curl -s -f --data-binary @"$f" "http://127.0.0.1:$MPORT/write?precision=s"; done
    for _ in $(seq 1 600); do
        [ "$(health | field backlog_points)" = "$POINTS" ] && break; sleep 0.2
    done
    c1=$(cpu $MPID)
    # The outage itself: retry rounds against the absent influxd, with the backlog built and nothing else to do.
    sleep 5
    c1r=$(cpu $MPID)
    IPID=$(scripts/peers.sh start-influxd $IPORT "$TMP/influxd")
    PERFPID=""
    if [ -n "${PERF_OUT:-}" ]; then  # PERF_OUT=file: a perf profile of metricsd over the drain, one file per encoding
        perf record -g -p "$MPID" -o "$PERF_OUT.$ENC" > /dev/null 2>&1 & PERFPID=$!
    fi
    t0=$(date +%s.%N)
    # Polled every second, and the drain's end taken from metricsd's own `last_success` (the time its last batch was
    # acknowledged): a poll is an HTTP request metricsd serves, and ten a second were a quarter of its CPU during the
    # drain, counted as forwarding's.
    for _ in $(seq 1 1200); do
        h=$(health)
        [ "$(field backlog_points <<< "$h")" = "0" ] && [ "$(field points_forwarded <<< "$h")" -ge "$POINTS" ] && break
        sleep 1
    done
    last=$(grep -o '"forwarding" *: *{[^}]*' <<< "$h" | grep -o '"last_success" *: *"[^"]*"' | grep -o '[0-9T:.-]*Z')
    if [ -n "$last" ]; then t1=$(date -d "$last" +%s.%N); else t1=$(date +%s.%N); fi  # not drained: timed to now
    c2=$(cpu $MPID)
    [ -n "$PERFPID" ] && { kill -INT "$PERFPID"; wait "$PERFPID" || true; }
    kill "$MPID"; wait "$MPID" 2>/dev/null || true; MPID=""
    # The same points, read back from influxd, posted directly to a new database of the same influxd.
    python3 - "$IPORT" "$ENC" "$LINES" "$POINTS" "$c0" "$c1" "$c1r" "$c2" "$t0" "$t1" >> "$TMP/results" <<'PY'
import gzip, json, sys, time, urllib.parse, urllib.request
port, enc, lines, points, c0, c1, c1r, c2, t0, t1 = sys.argv[1:]
base = "http://127.0.0.1:%s" % port
def query(q, db="metrics"):
    url = "%s/query?db=%s&epoch=s&q=%s" % (base, db, urllib.parse.quote(q))
    return json.load(urllib.request.urlopen(url, timeout=600))
stored = query("SELECT count(usage_user_count) FROM cpu_1m")["results"][0]["series"][0]["values"][0][1]
def esc(s): return s.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")
body_lines = []
for series in query("SELECT * FROM cpu_1m GROUP BY *")["results"][0]["series"]:
    tags = ",".join("%s=%s" % (esc(k), esc(v)) for k, v in sorted(series["tags"].items()))
    cols = series["columns"]
    for row in series["values"]:
        fields = []
        for c, v in zip(cols[1:], row[1:]):
            if v is None: continue
            integer = c.endswith("_count") or c.endswith("_distinct")
            fields.append("%s=%s" % (c, ("%di" % v) if integer else repr(float(v))))
        body_lines.append((row[0], "cpu_1m,%s %s %d" % (tags, ",".join(fields), row[0])))
# In metricsd's order: minute by minute, every series of a minute (influxd is slower on batches of many series).
body_lines = [line for _, line in sorted(body_lines, key=lambda e: e[0])]
assert len(body_lines) == int(points), (len(body_lines), points)
urllib.request.urlopen(urllib.request.Request(base + "/query", data=b"q=CREATE+DATABASE+direct"), timeout=60).read()
bodies = []
for i in range(0, len(body_lines), 5000):
    raw = ("\n".join(body_lines[i:i + 5000]) + "\n").encode()
    bodies.append(gzip.compress(raw, 1) if enc == "gzip" else raw)
headers = {"Content-Type": "text/plain; charset=utf-8"}
if enc == "gzip": headers["Content-Encoding"] = "gzip"
d0 = time.time()
for b in bodies:
    urllib.request.urlopen(urllib.request.Request(base + "/write?db=direct&precision=s", data=b, headers=headers), timeout=600).read()
d1 = time.time()
direct = query("SELECT count(usage_user_count) FROM cpu_1m", db="direct")["results"][0]["series"][0]["values"][0][1]
print(json.dumps({"encoding": enc, "lines": int(lines), "points": int(points), "stored": stored, "direct_stored": direct,
                  "ingest_cpu": float(c1) - float(c0), "forward_cpu": float(c2) - float(c1r),
                  "outage_cpu_per_s": (float(c1r) - float(c1)) / 5,
                  "drain_s": float(t1) - float(t0), "direct_s": d1 - d0,
                  "bytes": sum(len(b) for b in bodies)}))
PY
    scripts/peers.sh stop "$IPID"; IPID=""
done

python3 - "$TMP/results" <<'PY'
import json, sys
sys.path.insert(0, "scripts")
from perfdoc import machine, sh, write_section
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = ["## Forwarding (`make bench-forward`)", ""]
out.append("Measured %s, to a local influxd %s over loopback, batches of 5000 points; a fresh influxd for each content "
           "encoding. The direct post: the same points read back from influxd and posted by a plain client to a new "
           "database of the same influxd, in batches of the same size, bodies made before the clock starts." % (
    machine(), sh("dpkg-query -W -f='${Version}' influxdb")))
out.append("")
out.append("| content_encoding | points (InfluxDB counts) | metricsd drain | direct post | drain / direct | metricsd CPU per point | body bytes per point | CPU to ingest the %d lines behind them | CPU while influxd is down |" % runs[0]["lines"])
out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for r in runs:
    p = r["points"]
    out.append("| %s | %d (%d, direct %d) | %.0f points/s | %.0f points/s | **%.2f×** | **%.1f µs** | %.0f | %.2f s | %s |" % (
        r["encoding"], p, r["stored"], r["direct_stored"], p / r["drain_s"], p / r["direct_s"],
        r["direct_s"] / r["drain_s"], r["forward_cpu"] / p * 1e6, r["bytes"] / p, r["ingest_cpu"],
        "%.0f ms a second" % (r["outage_cpu_per_s"] * 1000) if "outage_cpu_per_s" in r else "–"))
out.append("")
out.append("Goal: metricsd's CPU per forwarded point ≤ 5 µs, and the drain ≥ 0.9× the direct post. metricsd's CPU is "
           "measured from /proc over the whole drain (reading the outbox, encoding, compressing, libcurl, and the "
           "daemon's own periodic work). *CPU while influxd is down*: metricsd's CPU over 5 s of retry rounds "
           "(100–200 ms apart) with the backlog built, before influxd starts (the CPU /proc counts in 10 ms ticks). "
           "Body bytes per point: the direct post's bodies. Command: `make bench-forward` (or `scripts/bench-forward.sh SERIES MINUTES`; "
           "`ENCODINGS=identity` for one).")
section = "\n".join(out)
write_section("forward", section, after="storage")
print(section)
PY
