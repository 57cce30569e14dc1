#!/usr/bin/env bash
# Forwarding benchmark: how fast metricsd drains a backlog of stored minutes into a real local influxd
# (points/s), and what forwarding costs in CPU next to ingesting the same data. Writes the "Forwarding"
# section of docs/PERFORMANCE.md.
# Usage: scripts/bench-forward.sh [SERIES] [MINUTES]   (defaults 20000, 10: 200,000 points to forward)
set -euo pipefail
cd "$(dirname "$0")/.."
SERIES=${1:-20000}
MINUTES=${2:-10}
BIN=${METRICSD_BIN:-.build/release/metricsd}  # METRICSD_BIN=path measures another build
TMP=$(mktemp -d)
. scripts/bench-lib.sh
IPORT=$(free_port); MPORT=$(free_port)
MPID=""; IPID=""
cleanup() { [ -n "$MPID" ] && kill "$MPID" 2>/dev/null; [ -n "$IPID" ] && scripts/peers.sh stop "$IPID"; rm -rf "$TMP"; }
trap cleanup EXIT
cpu() { awk '{print ($14 + $15) / 100}' /proc/$1/stat; }  # user + system seconds (USER_HZ = 100)
health() { curl -s "http://127.0.0.1:$MPORT/health"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['forwarding']['$1'])"; }

# influxd is not running yet: metricsd stores everything and the backlog builds up.
cat > "$TMP/metricsd.toml" <<CONF
[influx]
url = "http://127.0.0.1:$IPORT"
create_database = true
flush_interval = "1s"
retry_initial = "100ms"
retry_max = "200ms"
CONF
$BIN serve --config "$TMP/metricsd.toml" --data-dir "$TMP/var" --http 127.0.0.1:$MPORT --udp "" --tcp "" \
    > "$TMP/metricsd.log" 2>&1 &
MPID=$!
wait_ping $MPORT

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
c0=$(cpu $MPID)
for f in "$TMP"/chunk.*; do curl -s -f --data-binary @"$f" "http://127.0.0.1:$MPORT/write?precision=s"; done
POINTS=$((SERIES * MINUTES))
for _ in $(seq 1 600); do
    [ "$(health | field backlog_points)" = "$POINTS" ] && break; sleep 0.2
done
c1=$(cpu $MPID)
IPID=$(scripts/peers.sh start-influxd $IPORT "$TMP/influxd")
t0=$(date +%s.%N)
for _ in $(seq 1 3000); do
    [ "$(health | field backlog_points)" = "0" ] && [ "$(health | field points_forwarded)" -ge "$POINTS" ] && break
    sleep 0.1
done
t1=$(date +%s.%N)
c2=$(cpu $MPID)
stored=$(curl -s "http://127.0.0.1:$IPORT/query?db=metrics" --data-urlencode "q=SELECT count(usage_user_count) FROM cpu_1m" \
    | python3 -c "import json,sys; print(json.load(sys.stdin)['results'][0]['series'][0]['values'][0][1])")
python3 - "$LINES" "$POINTS" "$c0" "$c1" "$c2" "$t0" "$t1" "$stored" <<'PY'
import sys
lines, points, c0, c1, c2, t0, t1, stored = sys.argv[1:]
lines, points, stored = int(lines), int(points), int(stored)
ingest_cpu, forward_cpu = float(c1) - float(c0), float(c2) - float(c1)
seconds = float(t1) - float(t0)
sys.path.insert(0, "scripts")
from perfdoc import machine, sh, write_section
out = ["## Forwarding (`make bench-forward`)", ""]
out.append("Measured %s, to a local influxd %s over loopback (gzip, batches of 5000 points)." % (
    machine(), sh("dpkg-query -W -f='${Version}' influxdb")))
out.append("")
out.append("| what | result |")
out.append("| --- | ---: |")
out.append("| backlog forwarded (series-minutes, one point each, 4 fields × 11 aggregates) | %d (InfluxDB counts %d) |" % (points, stored))
out.append("| drain time, from influxd up to backlog 0 | %.2f s |" % seconds)
out.append("| forwarded points/s | **%.0f** |" % (points / seconds))
out.append("| metricsd CPU to ingest the %d lines behind them (parse, rollup, WAL, SQLite) | %.2f s |" % (lines, ingest_cpu))
out.append("| metricsd CPU to forward them (read the outbox, encode, gzip, libcurl) | %.2f s (%.2f× of ingest) |" % (forward_cpu, forward_cpu / ingest_cpu))
out.append("")
out.append("Forwarding is bounded by influxd here (it uses the other core); metricsd's own cost per forwarded point is about %.1f µs of CPU. "
           "Command: `make bench-forward` (or `scripts/bench-forward.sh SERIES MINUTES`)." % (forward_cpu / points * 1e6))
section = "\n".join(out)
write_section("forward", section, after="storage")
print(section)
PY
