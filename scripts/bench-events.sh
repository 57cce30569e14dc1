#!/usr/bin/env bash
# Events benchmark: ingest rate of JSON events over HTTP (NDJSON batches), then p50/p99 latency of a 3-step funnel,
# an 8-period retention and an experiment over 1,000,000 events from 100,000 users (30 days); then the fleet path:
# a private clickhouse-server takes the same events directly (its own insert rate), metricsd restarted with
# [events.clickhouse] forwards its stored events (forwarding rate), and the same queries with scope=fleet (latency,
# and the answer compared with the local one). Writes the "Events" section of docs/PERFORMANCE.md.
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
CHPID=""
CHPORT=$(free_port)
cleanup() {  # never fails: a server already gone must not fail the benchmark after its results are written
    if [ -f "$TMP/mpid" ]; then MPID=$(cat "$TMP/mpid"); fi  # the daemon restarted for the fleet part
    if [ -n "$MPID" ]; then kill "$MPID" 2>/dev/null || true; fi
    if [ -f "$TMP/chpid" ]; then CHPID=$(cat "$TMP/chpid"); fi
    if [ -n "$CHPID" ]; then scripts/peers.sh stop "$CHPID" || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
$BIN serve --data-dir "$TMP/var" --http 127.0.0.1:$MPORT --udp "" --tcp "" > "$TMP/metricsd.log" 2>&1 &
MPID=$!
wait_ping $MPORT
cat > "$TMP/fleet.toml" <<TOML
[events.clickhouse]
url = "http://127.0.0.1:$CHPORT"
database = "bench"
table = "events"
TOML
# The script restarts metricsd itself (same data, forwarding on) and tells the shell its new PID through this file.
echo "$MPID" > "$TMP/mpid"
python3 - "$MPORT" "$EVENTS" "$RUNS" "$MPID" "$CHPORT" "$BIN" "$TMP" <<'PY'
import gzip, http.client, json, os, random, signal, subprocess, sys, time
port, total, runs, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
chport, binary, tmp = int(sys.argv[5]), sys.argv[6], sys.argv[7]
users = max(1, total // 10)
rng = random.Random(7)
now = int(time.time() * 1000)
start = now - 30 * 86400000
# Each user: a signup, an exposure to A or B, then views, some carts and purchases and logins over 30 days.
batches, batch = [], []
chrows = []  # the same events as ClickHouse rows, in metricsd's forwarding format
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
    chrows.append(json.dumps({"id": "e-%d" % n, "event": e[0], "user_id": "user-%d" % u, "ts": t // 1000, "ts_ms": t,
                              "properties": json.dumps(e[1], separators=(",", ":"))}, separators=(",", ":")))
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
c.close()
# --- The fleet path, with ClickHouse started only now (an idle server's background work is not in the figures
# above). ClickHouse's own insert rate for the same events: 10,000-row gzip JSONEachRow batches (what
# metricsd sends), one kept-alive connection, into a table made as metricsd makes it.
chpid = subprocess.run(["scripts/peers.sh", "start-clickhouse", tmp + "/clickhouse", str(chport)], check=True,
                       capture_output=True, text=True).stdout.strip()
open(tmp + "/chpid", "w").write(chpid)
ch = http.client.HTTPConnection("127.0.0.1", chport, timeout=300)
def chq(sql, body=None, gz=False):
    path = "/?query=" + __import__("urllib.parse").parse.quote(sql) if body is not None else "/"
    headers = {"Content-Encoding": "gzip"} if gz else {}
    ch.request("POST", path, body=body if body is not None else sql.encode(), headers=headers)
    r = ch.getresponse(); data = r.read()
    assert r.status == 200, (sql[:80], r.status, data[:300])
    return data
ddl = ("(id String, event String, user_id String, ts DateTime, ts_ms UInt64, properties String) "
       "ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(ts) ORDER BY (toDate(ts), event, cityHash64(user_id), id)")
chq("CREATE DATABASE IF NOT EXISTS direct")
chq("CREATE TABLE direct.events " + ddl)
bodies = [gzip.compress(("\n".join(chrows[i:i + 10000]) + "\n").encode(), 1) for i in range(0, len(chrows), 10000)]
t0 = time.perf_counter()
for b in bodies:
    chq("INSERT INTO direct.events (id, event, user_id, ts, ts_ms, properties) FORMAT JSONEachRow", b, gz=True)
direct_s = time.perf_counter() - t0
# metricsd again on the same data with [events.clickhouse]: it forwards every stored event from its outbox.
os.kill(pid, signal.SIGTERM)
for _ in range(600):
    try: os.kill(pid, 0); time.sleep(0.05)
    except ProcessLookupError: break
log = open(tmp + "/metricsd-fleet.log", "w")
proc = subprocess.Popen([binary, "serve", "--config", tmp + "/fleet.toml", "--data-dir", tmp + "/var", "--http",
                         "127.0.0.1:%d" % port, "--udp", "", "--tcp", ""], stdout=log, stderr=log)
pid = proc.pid
open(tmp + "/mpid", "w").write(str(pid))
c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
for _ in range(600):
    try:
        get_health = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        get_health.request("GET", "/ping"); get_health.getresponse().read(); break
    except OSError: time.sleep(0.05)
t0, c0 = time.perf_counter(), cpu()
while True:
    h = get("/health").get("events_forwarding", {})
    if h.get("events_sent", 0) >= total and h.get("backlog_events", 1) == 0: break
    assert time.perf_counter() - t0 < 600, h
    time.sleep(0.05)
forward_s, forward_cpu = time.perf_counter() - t0, cpu() - c0
fleet, same = {}, {}
for name, path in q.items():
    answer = get(path + "&scope=fleet")
    answer.pop("scope", None)
    same[name] = answer == answers[name]
    for _ in range(2): get(path + "&scope=fleet")
    times = []
    for _ in range(runs):
        t = time.perf_counter(); get(path + "&scope=fleet"); times.append((time.perf_counter() - t) * 1000)
    times.sort()
    fleet[name] = (times[len(times) // 2], times[max(0, int(len(times) * 0.99) - 1)])
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
worst = max(results[n][1] for n in results)
out.append("")
out.append("Goals (step 12): ingest ≥ 200,000 events/s — %s (%s/s); each local query, the breakdown included, "
           "< 100 ms p99 — %s (worst p99 %.1f ms)." % (
               "met" if total / ingest_s >= 200000 else "not met", format(int(total / ingest_s), ","),
               "met" if worst < 100 else "not met", worst))
out.append("")
out.append("Fleet (`scope=fleet`, Debian's clickhouse-server 18.16 on the same 2 cores, fed by this instance):")
out.append("")
out.append("- ClickHouse's own insert rate for the same events (10,000-row gzip JSONEachRow batches, one connection): "
           "%s rows/s (%.1f s)." % (format(int(total / direct_s), ","), direct_s))
out.append("- metricsd forwarding its %s stored events from the outbox after a restart with `[events.clickhouse]`: "
           "%s events/s (%.1f s, %.1f s metricsd CPU: %.1f µs per event); %.2f× ClickHouse's direct rate." % (
               format(total, ","), format(int(total / forward_s), ","), forward_s, forward_cpu,
               forward_cpu / total * 1e6, direct_s / forward_s))
out.append("")
out.append("| query, `scope=fleet` | p50 | p99 | answer |")
out.append("| --- | ---: | ---: | --- |")
for name in q:
    out.append("| %s | %.1f ms | %.1f ms | %s |" % (label[name], fleet[name][0], fleet[name][1],
               "= local" if same[name] else "**differs from local**"))
fworst = max(fleet[n][1] for n in fleet)
out.append("")
out.append("Goal: fleet queries over 1 M events < 500 ms p99 — %s (worst p99 %.1f ms)." % (
    "met" if fworst < 500 else "not met", fworst))
out.append("Command: `make bench-events` (or `scripts/bench-events.sh EVENTS RUNS`).")
section = "\n".join(out)
write_section("events", section, after="query")
print(section)
PY
