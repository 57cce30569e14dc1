#!/usr/bin/env bash
# Time from exec to the first 204 of /ping, median of RUNS starts, each with a fresh data directory.
# Usage: scripts/start-time.sh [BIN] [RUNS]   (defaults .build/release/metricsd, 7)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-.build/release/metricsd}
RUNS=${2:-7}
. scripts/bench-lib.sh
for _ in $(seq "$RUNS"); do
    PORT=$(free_port)
    DIR=$(mktemp -d)
    start=$(date +%s%N)
    "$BIN" serve --data-dir "$DIR" --http 127.0.0.1:"$PORT" --udp "" --tcp "" > /dev/null 2>&1 &
    PID=$!
    for _ in $(seq 2000); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/ping" 2>/dev/null)" = 204 ] && break
        sleep 0.005
    done
    end=$(date +%s%N)
    echo $(((end - start) / 1000000))
    kill "$PID"; wait "$PID" 2>/dev/null || true; rm -rf "$DIR"
done | sort -n | awk '{a[NR]=$1} END {printf "%s: median %d ms over %d starts; size %d bytes\n", bin, a[int((NR+1)/2)], NR, size}' \
    bin="$BIN" size="$(stat -c %s "$BIN")"
