#!/usr/bin/env bash
# Storage benchmark: SQLite flush of 1,000,000 series-minutes, WAL append/replay speed, and what durability
# ("fsync", "batch", "none") costs HTTP ingest. Writes the "Storage" section of docs/PERFORMANCE.md.
# Usage: scripts/bench-storage.sh [CELLS] [SECONDS]   (defaults 1000000, 10)
set -euo pipefail
cd "$(dirname "$0")/.."
CELLS=${1:-1000000}
SECS=${2:-10}
OUT=.build-bench/results
mkdir -p $OUT
METRICSD_BENCH=1 swift build -c release --scratch-path .build-bench --product StorageBench 2>&1 | tail -1
.build-bench/release/StorageBench "$CELLS" > $OUT/storage.jsonl
cat $OUT/storage.jsonl
BIN=.build/release/metricsd
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
. scripts/bench-lib.sh
: > $OUT/durability.jsonl
for mode in none batch fsync; do
    port=$(free_port)
    mkdir -p "$TMP/$mode"
    printf '[storage]\ndurability = "%s"\n' $mode > "$TMP/$mode/config.toml"
    $BIN serve --config "$TMP/$mode/config.toml" --data-dir "$TMP/$mode/var" --http 127.0.0.1:$port --udp "" --tcp "" \
        > "$TMP/$mode/log" 2>&1 &
    pid=$!
    wait_ping $port
    for s in 1 2; do
        $BIN send --http 127.0.0.1:$port --rate 0 --duration $SECS --series 10000 --batch 5000 --pool 20 --quiet \
            > "$TMP/$mode/send.$s.json" &
    done
    wait $(jobs -p | grep -v -w $pid) 2>/dev/null || true
    python3 -c "
import json,sys
r=[json.load(open('$TMP/$mode/send.%d.json' % s)) for s in (1,2)]
print(json.dumps({'durability':'$mode','lines_per_second':sum(x['acknowledged_lines'] for x in r)/max(x['seconds'] for x in r)}))" >> $OUT/durability.jsonl
    kill $pid; wait $pid 2>/dev/null || true
done
cat $OUT/durability.jsonl
python3 - <<'PY'
import json, sys
rows = [json.loads(l) for l in open(".build-bench/results/storage.jsonl")]
flush = next(r for r in rows if r["benchmark"] == "flush")
wal = next(r for r in rows if r["benchmark"] == "wal")
dur = [json.loads(l) for l in open(".build-bench/results/durability.jsonl")]
none = next(d for d in dur if d["durability"] == "none")["lines_per_second"]
sys.path.insert(0, "scripts")
from perfdoc import machine, sh, write_section
out = ["## Storage (`make bench-storage`)", ""]
out.append("Measured %s, SQLite %s (system library), WAL mode, `synchronous = NORMAL`." % (
    machine(), sh("dpkg-query -W -f='${Version}' libsqlite3-0")))
out.append("")
out.append("| what | result |")
out.append("| --- | ---: |")
out.append("| flush of %d series-minutes, first time (creates %d series) | %.2f s |" % (flush["cells"], flush["cells"] // 4, flush["first_flush_new_series_s"]))
out.append("| flush of %d series-minutes, next minute of the same series (steady state, median of 5; fastest) | **%.2f s** (%.0f cells/s); %.2f s |" % (flush["cells"], flush["steady_flush_s"], flush["cells"] / flush["steady_flush_s"], flush["steady_flush_min_s"]))
out.append("| then the checkpoint of that flush (on the ticker, after the commit) | %.2f s |" % flush["steady_checkpoint_s"])
out.append("| flush of %d series-minutes that all merge into stored rows (late data, restarts) | %.2f s |" % (flush["cells"], flush["merge_flush_s"]))
out.append("| WAL append (64 KiB records, no fsync) | %.0f MB/s |" % wal["append_mb_per_s"])
out.append("| WAL replay (read + CRC32C check) | %.0f MB/s |" % wal["replay_mb_per_s"])
fwd = next((r for r in rows if r["benchmark"] == "forward"), None)
if fwd:
    out.append("| forwarding before the network (`StorageBench forward`): %d stored points of `make bench-forward`'s shape "
               "(4 fields × 11 aggregates), reading the outbox / writing line protocol, CPU per point (best of 8) "
               "| %.2f µs / %.2f µs (%d bytes a point) |" % (
        fwd["points"], fwd["read_us_per_point"], fwd["encode_us_per_point"], fwd["bytes_per_point"]))
for d in dur:
    out.append("| HTTP ingest with `durability = \"%s\"` | %.0f lines/s (%.2f× of `none`) |" % (d["durability"], d["lines_per_second"], d["lines_per_second"] / none))
out.append("")
under = sum(1 for x in flush["steady_flush_runs"] if x < 1.0)
med = flush["steady_flush_s"]
goal = "**met**" if med < 0.95 else ("**at the limit**" if med < 1.05 else "**not met**")
text = ("The goal of < 1 s for a 1,000,000-cell flush is %s: %.2f s median, %.2f s fastest, %d of 5 runs under 1 s "
        "(runs: %s; this machine's timing noise is about ±40 %%). " % (goal, med, flush["steady_flush_min_s"], under,
        ", ".join("%.2f" % x for x in flush["steady_flush_runs"])))
text += ("A series-minute here is one field of one series in one minute (a Telegraf `cpu` point with four fields is "
         "four), so the flush writes %d rows. What made it: one row per (bucket, series) with every field packed "
         "(schema 2), field names as dictionary ids, a compact bit-exact encoding (about 54 bytes a cell, was 180), "
         "a non-copyable reusable write buffer, plain inserts for a bucket never stored, the checkpoint moved "
         "off the flush's commit, and a new bucket's rows encoded on a second thread while the first inserts "
         "(encoding was a third of the flush). What is left is SQLite's B-tree insert (about 2.5 µs a row) and "
         "finding each cell's series and field ids. Flushes run on the ticker, off the event loops, so ingestion "
         "does not wait for them." % (flush["cells"] // 4))
out.append(text)
out.append("")
out.append("Command: `make bench-storage` (or `scripts/bench-storage.sh CELLS SECONDS`).")
section = "\n".join(out)
write_section("storage", section, after="ingest")
print(section)
PY
