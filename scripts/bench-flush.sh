#!/usr/bin/env bash
# Flush while querying: a one-series /query and a one-line /write with a late point, each in a loop, while the
# daemon stores a minute of 1,000,000 series-minutes (250,000 series × 4 fields; the minute before, of the same
# series, was stored first). Reports each one's p99 before
# the flush and its worst latency during it. Writes the "Flush while querying" section of docs/PERFORMANCE.md.
# Usage: scripts/bench-flush.sh [SERIES]   (default 250000; 4 fields each)
# With BASELINE_BIN=path, the same run is made against that build first.
set -euo pipefail
cd "$(dirname "$0")/.."
SERIES=${1:-250000}
OUT=.build-bench/results
mkdir -p $OUT
TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$TMP"' EXIT
. scripts/bench-lib.sh
: > $OUT/flush.jsonl
run() {  # run LABEL BINARY
    local label=$1 bin=$2 port dir=$TMP/$1
    port=$(free_port)
    mkdir -p "$dir"
    printf '[rollup]\nlateness = "5s"\n[storage]\ndurability = "none"\n' > "$dir/config.toml"
    "$bin" serve --config "$dir/config.toml" --data-dir "$dir/var" --http 127.0.0.1:$port --udp "" --tcp "" \
        > "$dir/log" 2>&1 &
    local pid=$!
    wait_ping $port
    python3 scripts/flush-probe.py --port $port --series $SERIES --label "$label" >> $OUT/flush.jsonl
    kill $pid; wait $pid 2>/dev/null || true
}
if [ -n "${BASELINE_BIN:-}" ]; then run baseline "$BASELINE_BIN"; fi
run metricsd .build/release/metricsd
cat $OUT/flush.jsonl
python3 - "$SERIES" <<'PY'
import json, sys
sys.path.insert(0, "scripts")
from perfdoc import machine, write_section
rows = [json.loads(l) for l in open(".build-bench/results/flush.jsonl")]
series = int(sys.argv[1])
out = ["## Flush while querying (`make bench-flush`)", ""]
out.append("Measured %s: %d series × 4 fields loaded into one minute over HTTP and stored (that first flush "
           "creates the series), then the next minute of the same series (%d series-minutes) loaded and, until it "
           "is stored, a one-series `/query` (`mean` by minute over 30 m) and a one-line `/write` with a point 10 "
           "minutes old (late: merged into stored rows) timed in two loops of their own, each over a kept-alive "
           "connection. The flush — closing the minute's buckets and storing them — is found from the daemon's "
           "`metricsd_sink_seconds` and `metricsd_cells_closed_total`." % (machine(), series, series * 4))
out.append("")
out.append("| build | flush (first flush) | query p99 before / worst during | late write p99 before / worst during | bound: max(100 ms, 4 × p99 before) |")
out.append("| --- | ---: | ---: | ---: | --- |")
for r in rows:
    qb = max(100.0, 4 * r["query_p99_before_ms"])
    wb = max(100.0, 4 * r["write_p99_before_ms"])
    ok = r["query_max_during_ms"] <= qb and r["write_max_during_ms"] <= wb
    out.append("| %s | %.2f s (%.2f s) | %.1f / %.1f ms (%d during) | %.1f / %.1f ms (%d during) | %s |" % (
        r["label"], r["flush_s"], r["first_flush_s"], r["query_p99_before_ms"], r["query_max_during_ms"], r["queries_during"],
        r["write_p99_before_ms"], r["write_max_during_ms"], r["writes_during"], "**met**" if ok else "**not met**"))
out.append("")
out.append("Command: `make bench-flush` (or `scripts/bench-flush.sh SERIES`; `BASELINE_BIN=path` adds an older build).")
section = "\n".join(out)
write_section("flush", section, after="storage")
print(section)
PY
