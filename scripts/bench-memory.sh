#!/usr/bin/env bash
# Memory per active series and ingest rate vs series count: metricsd vs VictoriaMetrics vs InfluxDB 1.6, each
# started fresh per series count on loopback, fed the same Telegraf-like payload (`metricsd send --http`, every
# series written LINES_PER_SERIES times, no timestamps) by the same sender. Memory = resident set after the load
# minus resident set before it, divided by the series-fields (series × 2.2: the sender's field mix, the same for all).
# Writes the "memory" section of docs/PERFORMANCE.md and docs/img/memory-ingest.png (gnuplot).
# Usage: scripts/bench-memory.sh [SERIES_COUNTS] [LINES_PER_SERIES]   (defaults "10000 100000 1000000", 3)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=${1:-"10000 100000 1000000"}
PER_SERIES=${2:-3}
BIN=.build/release/metricsd
OUT=.build-bench/results
mkdir -p $OUT docs/img
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do scripts/peers.sh stop "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
. scripts/bench-lib.sh

rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
RESULTS=$OUT/memory.jsonl
: > $RESULTS

measure() { # target pid port path series
    local target=$1 pid=$2 port=$3 path=$4 series=$5 before after sent
    sleep 1
    before=$(rss_kib "$pid")
    sent=$($BIN send --http 127.0.0.1:$port --path "$path" --rate 0 --series "$series" \
        --lines $((series * PER_SERIES)) --duration 600 --batch 5000 --quiet)
    sleep 3  # let background work (caches, index, merges) settle
    after=$(rss_kib "$pid")
    echo "{\"target\":\"$target\",\"series\":$series,\"rss_before_kib\":$before,\"rss_after_kib\":$after,\"send\":$sent}" \
        >> $RESULTS
    echo "== $target $series series: RSS $((before / 1024)) -> $((after / 1024)) MiB; $sent"
}

for series in $COUNTS; do
    MD=$(free_port); MD_UDP=$(free_port); MD_TCP=$(free_port)
    printf '[rollup]\nmax_series = 4000000\n' > "$TMP/md.toml"
    rm -rf "$TMP/metricsd"
    $BIN serve --config "$TMP/md.toml" --data-dir "$TMP/metricsd" --http 127.0.0.1:$MD --udp 127.0.0.1:$MD_UDP \
        --tcp 127.0.0.1:$MD_TCP > "$TMP/metricsd.log" 2>&1 &
    MD_PID=$!; PIDS+=($MD_PID)
    wait_ping $MD
    measure metricsd $MD_PID $MD "/write?db=bench" "$series"
    CELLS=$(curl -s "http://127.0.0.1:$MD/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["cells_open"])')
    SERIES_ACTIVE=$(curl -s "http://127.0.0.1:$MD/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["series_active"])')
    echo "{\"target\":\"cells\",\"series\":$series,\"cells_open\":$CELLS,\"series_active\":$SERIES_ACTIVE}" >> $RESULTS
    scripts/peers.sh stop $MD_PID

    VM=$(free_port)
    rm -rf "$TMP/vm"
    VM_PID=$(scripts/peers.sh start-vm $VM "$TMP/vm"); PIDS+=($VM_PID)
    measure victoriametrics $VM_PID $VM "/write?db=bench" "$series"
    scripts/peers.sh stop $VM_PID

    IX=$(free_port)
    rm -rf "$TMP/influx"
    IX_PID=$(scripts/peers.sh start-influxd $IX "$TMP/influx"); PIDS+=($IX_PID)
    curl -s -XPOST "http://127.0.0.1:$IX/query" --data-urlencode "q=CREATE DATABASE bench" > /dev/null
    measure influxdb $IX_PID $IX "/write?db=bench" "$series"
    scripts/peers.sh stop $IX_PID
done

python3 - "$RESULTS" "$PER_SERIES" <<'PY'
import json, subprocess, sys
sys.path.insert(0, "scripts")
from perfdoc import machine, sh, write_section
rows = [json.loads(l) for l in open(sys.argv[1])]
per_series = int(sys.argv[2])
cells = {r["series"]: r for r in rows if r["target"] == "cells"}
runs = [r for r in rows if r["target"] != "cells"]
targets = ["metricsd", "victoriametrics", "influxdb"]
table = {}
FIELDS = 2.2  # the sender's mix: cpu 3 fields, mem/disk/diskio/net 2 (series cycle through the five)
for r in runs:
    c = r["series"] * FIELDS
    grown = max(0, r["rss_after_kib"] - r["rss_before_kib"]) * 1024
    table[(r["target"], r["series"])] = {
        "bytes_per_field": grown / max(1, c), "rss_mib": r["rss_after_kib"] / 1024,
        "lines_per_second": r["send"]["acknowledged_lines"] / r["send"]["seconds"], "errors": r["send"]["errors"],
        "acked": r["send"]["acknowledged_lines"], "sent": r["send"]["sent_lines"]}
counts = sorted(cells)
out = ["## Memory per active series and ingest vs series count (`make bench-memory`)", ""]
out.append("Measured %s. Each target started fresh per series count, on 127.0.0.1: metricsd (release), VictoriaMetrics "
           "%s, InfluxDB %s (default `inmem` index). One sender (`metricsd send --http --rate 0`, 5000 lines per "
           "request, generated as it goes, no timestamps) writes every series %d times. A Telegraf-like series has "
           "2.2 fields on average; memory is the resident set after the load minus before it, per series-field. "
           "metricsd keeps one cell per series-field and open minute: a load that spans a minute boundary has two "
           "minutes open (column *open cells*), and in steady state `interval + lateness` (3 minutes by default) "
           "keeps up to four." % (
               machine(), sh("dpkg-query -W -f='${Version}' victoria-metrics"),
               sh("dpkg-query -W -f='${Version}' influxdb"), per_series))
out.append("")
out.append("| series | series-fields | metricsd open cells | target | bytes per series-field | RSS after (MiB) | ingest lines/s | errors | vs metricsd (memory) | vs metricsd (ingest) |")
out.append("| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for s in counts:
    m = table.get(("metricsd", s))
    for t in targets:
        v = table.get((t, s))
        if not v: continue
        out.append("| %d | %d | %d | %s | %.0f | %.0f | %.0f | %d | %s | %s |" % (
            s, s * FIELDS, cells[s]["cells_open"], t, v["bytes_per_field"], v["rss_mib"], v["lines_per_second"], v["errors"],
            "1.00×" if t == "metricsd" else "%.2f×" % (v["bytes_per_field"] / max(1, m["bytes_per_field"])),
            "1.00×" if t == "metricsd" else "%.2f×" % (m["lines_per_second"] / max(1, v["lines_per_second"]))))
out.append("")
top = counts[-1]
goal = table[("metricsd", top)]["bytes_per_field"]
per_cell = goal * top * FIELDS / max(1, cells[top]["cells_open"])
vm = table.get(("victoriametrics", top), {}).get("bytes_per_field", 0)
out.append("Goal (step 11): memory ≤ 250 bytes per active series-field and below VictoriaMetrics — %s at %d series: "
           "%.0f bytes per series-field (VictoriaMetrics %.0f), %.0f bytes per open cell (%d cells). The ratio columns "
           "say how many times more memory the peer uses, and how many times faster metricsd ingested." % (
               "**met**" if goal <= 250 and goal < vm else "**not met**", top, goal, vm, per_cell,
               cells[top]["cells_open"]))
out.append("")
out.append("![ingest rate and memory vs series count](img/memory-ingest.png)")
out.append("")
out.append("Command: `make bench-memory` (or `scripts/bench-memory.sh \"10000 100000 1000000\" 3`). Raw: "
           "`.build-bench/results/memory.jsonl`.")
write_section("memory", "\n".join(out), after="ingest")
# Data for the plot: series, then lines/s and bytes per field for each target.
with open(".build-bench/results/memory.dat", "w") as f:
    for s in counts:
        f.write("%d %s\n" % (s, " ".join("%.1f %.1f" % (table[(t, s)]["lines_per_second"], table[(t, s)]["bytes_per_field"])
                                          if (t, s) in table else "NaN NaN" for t in targets)))
print("\n".join(out))
PY

gnuplot <<'GP'
set terminal pngcairo size 1100,450 font ",10"
set output "docs/img/memory-ingest.png"
set multiplot layout 1,2 title "metricsd vs VictoriaMetrics vs InfluxDB 1.6 (same sender, same payload, loopback)"
set logscale x
set xlabel "active series"
set grid
set key top right
set ylabel "ingest (lines/s)"
set title "HTTP ingest rate"
plot ".build-bench/results/memory.dat" using 1:2 with linespoints lw 2 title "metricsd", \
     "" using 1:4 with linespoints lw 2 title "VictoriaMetrics", \
     "" using 1:6 with linespoints lw 2 title "InfluxDB 1.6"
set ylabel "bytes per series-field"
set title "Memory per active series-field"
set logscale y
plot ".build-bench/results/memory.dat" using 1:3 with linespoints lw 2 title "metricsd", \
     "" using 1:5 with linespoints lw 2 title "VictoriaMetrics", \
     "" using 1:7 with linespoints lw 2 title "InfluxDB 1.6"
unset multiplot
GP
echo "wrote docs/img/memory-ingest.png"
