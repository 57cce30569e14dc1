#!/usr/bin/env bash
# HTTP ingest benchmark: metricsd vs VictoriaMetrics (/write) vs InfluxDB 1.6 (/write), same sender
# (`metricsd send`, pre-generated Telegraf-like batches), same payload, same concurrency, one run. Then UDP loss
# of metricsd vs send rate. Writes the "HTTP ingest" and "UDP" sections of docs/PERFORMANCE.md.
# Usage: scripts/bench-ingest.sh [SECONDS] [ROUNDS] [UDP_SECONDS]   (defaults 10, 5, 30)
#        BASELINE_BIN=path/to/older/metricsd scripts/bench-ingest.sh   also runs an older build as the target
#        "metricsd-baseline" in the same rounds (before/after a change: its rows say how they compare)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-5}
UDP_SECONDS=${3:-30}
SENDERS=2
BATCH=5000
SERIES=10000
BIN=.build/release/metricsd
OUT=.build-bench/results
mkdir -p $OUT
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do scripts/peers.sh stop "$p"; done; rm -rf "$TMP"; }
trap cleanup EXIT

. scripts/bench-lib.sh
MD_HTTP=$(free_port); MD_UDP=$(free_port); MD_TCP=$(free_port); VM=$(free_port); VM_LP=$(free_port); IX=$(free_port)

$BIN serve --data-dir "$TMP/metricsd" --http 127.0.0.1:$MD_HTTP --udp 127.0.0.1:$MD_UDP --tcp 127.0.0.1:$MD_TCP \
    > "$TMP/metricsd.log" 2>&1 &
MD_PID=$!; PIDS+=($MD_PID)
wait_ping $MD_HTTP
BL_PID=0
if [ -n "${BASELINE_BIN:-}" ]; then
    BL_HTTP=$(free_port); BL_TCP=$(free_port)
    "$BASELINE_BIN" serve --data-dir "$TMP/baseline" --http 127.0.0.1:$BL_HTTP --udp "" --tcp 127.0.0.1:$BL_TCP \
        > "$TMP/baseline.log" 2>&1 &
    BL_PID=$!; PIDS+=($BL_PID)
    wait_ping $BL_HTTP
fi
VM_PID=$(scripts/peers.sh start-vm $VM "$TMP/vm" $VM_LP); PIDS+=($VM_PID)
IX_PID=$(scripts/peers.sh start-influxd $IX "$TMP/influx"); PIDS+=($IX_PID)
curl -s -XPOST "http://127.0.0.1:$IX/query" --data-urlencode "q=CREATE DATABASE bench" > /dev/null

RESULTS=$OUT/ingest.jsonl
: > $RESULTS
# CPU seconds (user + system) a process has used so far.
cpu_seconds() { awk -v tck="$(getconf CLK_TCK)" '{print ($14 + $15) / tck}' "/proc/$1/stat"; }
pid_of() { case $1 in metricsd) echo $MD_PID ;; metricsd-baseline) echo $BL_PID ;; victoriametrics) echo $VM_PID ;; influxdb) echo $IX_PID ;; esac; }
run_target() { # name port path
    local name=$1 port=$2 path=$3 files=() cpu0 cpu1
    cpu0=$(cpu_seconds "$(pid_of $name)")
    for s in $(seq 1 $SENDERS); do
        $BIN send --http 127.0.0.1:$port --path "$path" --rate 0 --duration $SECONDS_PER_RUN --series $SERIES \
            --batch $BATCH --pool 20 --quiet > "$TMP/$name.$s.json" &
        files+=("$TMP/$name.$s.json")
    done
    wait $(jobs -p | grep -v -w -e "$MD_PID" -e "$BL_PID" -e "$VM_PID" -e "$IX_PID" || true) 2>/dev/null || true
    cpu1=$(cpu_seconds "$(pid_of $name)")
    python3 - "$name" "$cpu0" "$cpu1" "${files[@]}" >> $RESULTS <<'PY'
import json, sys
name, cpu0, cpu1, files = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
runs = [json.load(open(f)) for f in files]
acked = sum(r["acknowledged_lines"] for r in runs)
errors = sum(r["errors"] for r in runs)
seconds = max(r["seconds"] for r in runs)
print(json.dumps({"target": name, "lines": acked, "errors": errors, "seconds": seconds, "lines_per_second": acked / seconds,
                  "cpu_seconds": cpu1 - cpu0, "cpu_seconds_per_million": (cpu1 - cpu0) / max(1, acked) * 1e6}))
PY
}
# TCP line protocol: metricsd vs VictoriaMetrics (InfluxDB 1.x has no TCP line-protocol listener). TCP has no
# acknowledgement, so the rate is what the server counted as received until its counter stopped moving.
received() { # name
    case $1 in
    metricsd) curl -s "http://127.0.0.1:$MD_HTTP/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["tcp_lines"])' ;;
    metricsd-baseline) curl -s "http://127.0.0.1:$BL_HTTP/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["tcp_lines"])' ;;
    # VictoriaMetrics counts a row per field value; rows read by its line-protocol parser are lines.
    victoriametrics) curl -s "http://127.0.0.1:$VM/metrics" | awk '/^vm_protoparser_rows_read_total\{type="influx"\}/{print $2}' ;;
    esac
}
run_tcp() { # name port
    local name=$1 port=$2 before after last t0 t1 sent cpu0 cpu1
    before=$(received $name); before=${before:-0}
    cpu0=$(cpu_seconds "$(pid_of $name)")
    t0=$(date +%s.%N)
    sent=$($BIN send --tcp 127.0.0.1:$port --rate 0 --duration $SECONDS_PER_RUN --series $SERIES --batch $BATCH --pool 20 \
        --quiet | python3 -c 'import json,sys; print(json.load(sys.stdin)["sent_lines"])')
    last=-1; t1=$(date +%s.%N)
    for _ in $(seq 1 100); do
        after=$(received $name); after=${after:-0}
        [ "$after" = "$last" ] && break
        last=$after; t1=$(date +%s.%N); sleep 0.2
    done
    cpu1=$(cpu_seconds "$(pid_of $name)")
    python3 -c "import json; r=$after-$before; s=$t1-$t0; print(json.dumps({'target': '$name', 'transport': 'tcp', 'sent': $sent, 'received': r, 'seconds': s, 'lines_per_second': r / s, 'cpu_seconds_per_million': ($cpu1-$cpu0) / max(1, r) * 1e6}))" >> $TCP_RESULTS
}
TCP_RESULTS=$OUT/tcp.jsonl
: > $TCP_RESULTS
for round in $(seq $ROUNDS); do
    echo "== round $round/$ROUNDS"
    run_target metricsd $MD_HTTP "/write?db=bench&precision=ns"
    [ "$BL_PID" != 0 ] && run_target metricsd-baseline $BL_HTTP "/write?db=bench&precision=ns"
    run_target victoriametrics $VM "/write?db=bench&precision=ns"
    run_target influxdb $IX "/write?db=bench&precision=ns"
    run_tcp metricsd $MD_TCP
    [ "$BL_PID" != 0 ] && run_tcp metricsd-baseline $BL_TCP
    run_tcp victoriametrics $VM_LP
done
RSS_MD=$(awk '/VmRSS/{print $2}' /proc/$MD_PID/status)

# UDP loss vs rate: datagrams of 200 lines (metricsd), and of 6 lines within 1,400 bytes — what Telegraf's socket
# writer and network MTUs give for its lines — for metricsd and VictoriaMetrics. 8 sending sockets, as 8 senders (the kernel spreads
# senders over metricsd's SO_REUSEPORT sockets by source port).
UDP_RESULTS=$OUT/udp.jsonl
: > $UDP_RESULTS
udp_count() { # target -> "received drops"
    case $1 in
    metricsd) curl -s "http://127.0.0.1:$MD_HTTP/health" | python3 -c 'import json,sys; c=json.load(sys.stdin)["counters"]; print(c["udp_lines"], c["udp_drops"])' ;;
    victoriametrics) echo "$(curl -s "http://127.0.0.1:$VM/metrics" | awk '/^vm_protoparser_rows_read_total\{type="influx"\}/{print $2}') -1" ;;
    esac
}
run_udp() { # target port rate seconds lines-per-datagram max-datagram-bytes
    local name=$1 port=$2 rate=$3 secs=$4 batch=$5 dgram=$6 before drops_before after drops_after sent last
    read -r before drops_before < <(udp_count $name)
    sent=$($BIN send --udp 127.0.0.1:$port --rate $rate --duration $secs --series $SERIES --batch $batch --pool 20 \
        --sockets 8 --max-datagram $dgram --quiet | python3 -c 'import json,sys; print(json.load(sys.stdin)["sent_lines"])')
    last=-1
    for _ in $(seq 1 50); do
        read -r after drops_after < <(udp_count $name)
        [ "$after" = "$last" ] && break
        last=$after; sleep 0.2
    done
    local drops=-1; [ "$drops_before" != -1 ] && drops=$((drops_after - drops_before))
    echo "{\"target\": \"$name\", \"rate\": $rate, \"seconds\": $secs, \"lines_per_datagram\": $batch, \"max_datagram\": $dgram, \"sent\": $sent, \"received\": $((${after%.*} - ${before%.*})), \"kernel_drops\": $drops}" >> $UDP_RESULTS
    echo "== udp $name $rate lines/s ($batch lines a datagram): sent $sent received $((${after%.*} - ${before%.*}))"
}
run_udp metricsd $MD_UDP 300000 "$UDP_SECONDS" 200 0
run_udp metricsd $MD_UDP 600000 "$UDP_SECONDS" 200 0
for rate in 100000 200000 400000; do
    run_udp metricsd $MD_UDP $rate 10 6 1400
    run_udp victoriametrics $VM_LP $rate 10 6 1400
done

python3 - "$RESULTS" "$UDP_RESULTS" "$SECONDS_PER_RUN" "$SENDERS" "$BATCH" "$SERIES" "$RSS_MD" "$TCP_RESULTS" <<'PY'
import json, re, statistics, subprocess, sys, datetime
rows = [json.loads(l) for l in open(sys.argv[1])]
udp = [json.loads(l) for l in open(sys.argv[2])]
secs, senders, batch, series, rss = sys.argv[3:8]
tcp = [json.loads(l) for l in open(sys.argv[8])]
def sh(c): return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
by = {}
for r in rows: by.setdefault(r["target"], []).append(r)
FIELDS_PER_LINE = 2.2  # the sender's mix: cpu 3 fields, mem/disk/diskio/net 2
med = {k: statistics.median(x["lines_per_second"] for x in v) for k, v in by.items()}
out = ["## HTTP ingest (`make bench-ingest`)", ""]
out.append("Measured %s UTC on %s (%s cores). Targets on 127.0.0.1 in the same run: metricsd (release build), "
           "VictoriaMetrics %s (`victoria-metrics`, `/write`), InfluxDB %s (`influxd`, `/write?db=bench`). Sender: "
           "%s concurrent `metricsd send --http` processes, keep-alive, %s lines per request from 20 pre-generated "
           "Telegraf-like batches (no timestamps: each server stamps lines on arrival), %s series, %s s per run, %d runs per target interleaved; a point is acknowledged "
           "on HTTP 204." % (datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"),
           sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(), sh("nproc"),
           sh("dpkg-query -W -f='${Version}' victoria-metrics"), sh("dpkg-query -W -f='${Version}' influxdb"),
           senders, batch, series, secs, len(by.get("metricsd", []))))
out.append("")
out.append("| target | median lines/s | median field values/s | runs (lines/s) | errors | vs metricsd | CPU s per million lines (median) | CPU vs metricsd |")
out.append("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
cpu = {k: statistics.median(x.get("cpu_seconds_per_million", 0) for x in v) for k, v in by.items()}
for k in ["metricsd", "metricsd-baseline", "victoriametrics", "influxdb"]:
    v = by.get(k, [])
    if not v: continue
    out.append("| %s | %.0f | %.0f | %s | %d | %s | %.2f | %s |" % (k, med[k], med[k] * FIELDS_PER_LINE,
               ", ".join("%.0f" % x["lines_per_second"] for x in v), sum(x["errors"] for x in v),
               "1.00×" if k == "metricsd" else "%.2f× slower" % (med["metricsd"] / med[k]), cpu[k],
               "1.00×" if k == "metricsd" else "%.2f× more" % (cpu[k] / max(1e-9, cpu["metricsd"]))))
out.append("")
out.append("Ratio: metricsd ingests **%.2f×** VictoriaMetrics and **%.2f×** InfluxDB 1.6 over HTTP (goal ≥ 3× "
           "VictoriaMetrics). The sender shares the 2 cores with the server, for every target alike. metricsd RSS "
           "after the runs: %.0f MiB." % (med["metricsd"] / med["victoriametrics"], med["metricsd"] / med["influxdb"], int(rss) / 1024))
if "metricsd-baseline" in med:
    out.append("")
    out.append("Before/after in the same run: `metricsd-baseline` is the build at `BASELINE_BIN` (%s). This build "
               "ingests **%.3f×** its lines/s over HTTP at **%.3f×** its CPU per line." % (
               sh("'%s' --version 2>/dev/null || true" % __import__("os").environ.get("BASELINE_BIN", "")) or "an older build",
               med["metricsd"] / med["metricsd-baseline"], cpu["metricsd"] / max(1e-9, cpu["metricsd-baseline"])))
out.append("")
out.append("CPU is the server process's user + system time (`/proc/PID/stat`) over the run, per million acknowledged "
           "lines (%.1f field values each on average)." % FIELDS_PER_LINE)
out.append("")
out.append("### TCP ingest (metricsd vs VictoriaMetrics)")
out.append("")
out.append("One `metricsd send --tcp` connection, %s lines per write, %s s per run, the same pre-generated batches; "
           "InfluxDB 1.x has no TCP line-protocol listener. TCP has no acknowledgement: the rate is the lines the "
           "server counted (metricsd `tcp_lines`, VictoriaMetrics `vm_protoparser_rows_read_total{type=\"influx\"}`) "
           "divided by the time until that count stopped moving." % (batch, secs))
out.append("")
out.append("| target | median received lines/s | runs | received of sent | CPU s per million lines | vs metricsd |")
out.append("| --- | ---: | --- | ---: | ---: | ---: |")
tby = {}
for r in tcp: tby.setdefault(r["target"], []).append(r)
tmed = {k: statistics.median(x["lines_per_second"] for x in v) for k, v in tby.items()}
for k in ["metricsd", "metricsd-baseline", "victoriametrics"]:
    v = tby.get(k, [])
    if not v: continue
    out.append("| %s | %.0f | %s | %d of %d | %.2f | %s |" % (k, tmed[k], ", ".join("%.0f" % x["lines_per_second"] for x in v),
               sum(x["received"] for x in v), sum(x["sent"] for x in v),
               statistics.median(x["cpu_seconds_per_million"] for x in v),
               "1.00×" if k == "metricsd" else "%.2f× slower" % (tmed["metricsd"] / tmed[k])))
out.append("")
out.append("### UDP loss vs rate")
out.append("")
out.append("| target | datagrams | sent lines/s | seconds | sent | received | lost | loss % | kernel drops |")
out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for u in udp:
    lost = u["sent"] - u["received"]
    out.append("| %s | %s | %d | %d | %d | %d | %d | %.3f %% | %s |" % (u.get("target", "metricsd"),
               "%d lines%s" % (u.get("lines_per_datagram", 200), " (≤ %d B)" % u["max_datagram"] if u.get("max_datagram") else ""),
               u["rate"], u["seconds"],
               u["sent"], u["received"], lost, 100.0 * lost / max(1, u["sent"]),
               u["kernel_drops"] if u["kernel_drops"] >= 0 else "–"))
out.append("")
out.append("One sender process, 8 sockets in turn (8 senders to the kernel, which spreads them over metricsd's "
           "`SO_REUSEPORT` sockets, one per core), pre-generated datagrams of 200 lines, or of 6 lines within 1,400 bytes "
           "(Telegraf's socket writer at its line lengths; this sender's lines are shorter, ~70 B, so the datagram count, "
           "the receiver's cost, is Telegraf's). metricsd: `SO_RCVBUF` 8 MiB (capped by `net.core.rmem_max`: %s "
           "bytes here), recvmmsg 32 datagrams per call; VictoriaMetrics counts the rows its influx parser read "
           "(`vm_protoparser_rows_read_total`). The sender shares the 2 cores." % sh("cat /proc/sys/net/core/rmem_max"))
out.append("")
out.append("Command: `make bench-ingest` (or `scripts/bench-ingest.sh SECONDS ROUNDS UDP_SECONDS`). Raw: "
           "`.build-bench/results/ingest.jsonl`, `tcp.jsonl`, `udp.jsonl`.")
section = "\n".join(out)
path = "docs/PERFORMANCE.md"
doc = open(path).read()
if "<!-- ingest:begin -->" not in doc:
    doc = doc.replace("<!-- parse:end -->", "<!-- parse:end -->\n\n<!-- ingest:begin -->\n<!-- ingest:end -->")
doc = re.sub(r"<!-- ingest:begin -->.*<!-- ingest:end -->", "<!-- ingest:begin -->\n" + section.replace("\\", "\\\\") + "\n<!-- ingest:end -->", doc, flags=re.S)
open(path, "w").write(doc)
print(section)
PY
