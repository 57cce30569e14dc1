#!/usr/bin/env bash
# Events benchmark: ingest rate of JSON events over HTTP (NDJSON batches), then p50/p99 latency of a 3-step funnel,
# an 8-period retention and an experiment over 1,000,000 events from 100,000 users (30 days). Writes the "Events"
# section of docs/PERFORMANCE.md.
# Usage: scripts/bench-events.sh [EVENTS] [RUNS]   (defaults 1000000 and 30)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-1000000}
RUNS=${2:-30}
BIN=${METRICSD_BIN:-.build/release/metricsd}  # METRICSD_BIN=path measures another build
TMP=$(mktemp -d)
. scripts/bench-lib.sh
MPORT=$(free_port)
MPID=""
cleanup() { [ -n "$MPID" ] && kill "$MPID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
$BIN serve --data-dir "$TMP/var" --http 127.0.0.1:$MPORT --udp "" --tcp "" > "$TMP/metricsd.log" 2>&1 &
MPID=$!
wait_ping $MPORT
python3 - "$MPORT" "$EVENTS" "$RUNS" "$MPID" <<'PY'
import http.client, json, random, sys, time
port, total, runs, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
users = max(1, total // 10)
rng = random.Random(7)
now = int(time.time() * 1000)
start = now - 30 * 86400000
# Each user: a signup, an exposure to A or B, then views, some carts and purchases and logins over 30 days.
batches, batch = [], []
n = 0
while n < total:
    u = rng.randrange(users)
    t = start + rng.randrange(30 * 86400000 - 3600000)
    kind = rng.random()
    if kind < 0.05: e = ("signup", {})
    elif kind < 0.10: e = ("exposure", {"variant": "A" if u % 2 else "B"})
    elif kind < 0.60: e = ("view", {"country": ["DE", "FR", "US", "JP"][u % 4]})
    elif kind < 0.75: e = ("add_to_cart", {})
    elif kind < 0.82: e = ("purchase", {"revenue": round(rng.random() * 100, 2)})
    else: e = ("login", {})
    batch.append(json.dumps({"event": e[0], "user_id": "user-%d" % u, "timestamp": t, "properties": e[1],
                             "id": "e-%d" % n}, separators=(",", ":")))
    n += 1
    if len(batch) == 5000:
        batches.append(("\n".join(batch) + "\n").encode()); batch = []
if batch: batches.append(("\n".join(batch) + "\n").encode())
c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
def cpu():
    f = open("/proc/%d/stat" % pid).read().split(")")[-1].split()
    return (int(f[11]) + int(f[12])) / 100.0
c0, t0 = cpu(), time.perf_counter()
for b in batches:
    c.request("POST", "/api/v1/events", body=b)
    r = c.getresponse(); body = r.read()
    assert r.status == 200, (r.status, body[:300])
ingest_s = time.perf_counter() - t0
ingest_cpu = cpu() - c0
# Store everything pending, then time the queries over the whole 30 days.
q = {
    "funnel": "/api/v1/funnel?steps=view,add_to_cart,purchase&window=1h&from=%d&to=%d" % (start, now),
    "funnel_breakdown": "/api/v1/funnel?steps=view,add_to_cart,purchase&window=1h&breakdown=country&from=%d&to=%d" % (start, now),
    "retention": "/api/v1/retention?cohort_event=signup&return_event=login&period=day&periods=8&from=%d&to=%d" % (start, now),
    "experiment": "/api/v1/experiment?exposure_event=exposure&variant_property=variant&goal_event=purchase&window=7d&from=%d&to=%d" % (start, now),
}
def get(path):
    c.request("GET", path); r = c.getresponse(); body = r.read()
    assert r.status == 200, (path, r.status, body[:300])
    return json.loads(body)
answers = {name: get(path) for name, path in q.items()}
results = {}
for name, path in q.items():
    for _ in range(2): get(path)
    times = []
    for _ in range(runs):
        t = time.perf_counter(); get(path); times.append((time.perf_counter() - t) * 1000)
    times.sort()
    results[name] = (times[len(times) // 2], times[max(0, int(len(times) * 0.99) - 1)])
sys.path.insert(0, "scripts")
from perfdoc import machine, write_section
out = ["## Events (`make bench-events`)", ""]
out.append("Measured %s: %s JSON events from %s users over 30 days posted as NDJSON (batches of 5,000, one "
           "kept-alive connection, ids on every event), then each query %d times after 2 warm-ups." %
           (machine(), format(total, ","), format(users, ","), runs))
out.append("")
out.append("Ingest: %s events/s (%.1f s wall, %.1f s daemon CPU: %.1f µs CPU per event)." % (
    format(int(total / ingest_s), ","), ingest_s, ingest_cpu, ingest_cpu / total * 1e6))
out.append("")
out.append("| query | p50 | p99 | answer |")
out.append("| --- | ---: | ---: | --- |")
steps = answers["funnel"]["steps"]
summary = {
    "funnel": "users per step " + " → ".join(str(s["users"]) for s in steps),
    "funnel_breakdown": "%d breakdown values" % len(answers["funnel_breakdown"].get("breakdown", {})),
    "retention": "%d daily cohorts" % len(answers["retention"]["cohorts"]),
    "experiment": ", ".join("%s %d/%d" % (v["variant"], v["converted"], v["exposed"]) for v in answers["experiment"]["variants"]),
}
label = {"funnel": "funnel, 3 steps, 1 h window", "funnel_breakdown": "the same funnel by country",
         "retention": "retention, daily, 8 periods", "experiment": "experiment, 2 variants, 7 d window"}
for name in q:
    out.append("| %s | %.1f ms | %.1f ms | %s |" % (label[name], results[name][0], results[name][1], summary[name]))
worst = max(results[n][1] for n in ("funnel", "retention", "experiment"))
out.append("")
out.append("Goal: each query < 100 ms p99 — %s (worst p99 %.1f ms)." % ("met" if worst < 100 else "not met", worst))
out.append("Command: `make bench-events` (or `scripts/bench-events.sh EVENTS RUNS`).")
section = "\n".join(out)
write_section("events", section, after="query")
print(section)
PY
