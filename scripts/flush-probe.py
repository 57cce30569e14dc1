#!/usr/bin/env python3
"""Loads a minute of SERIES × 4 fields into a metricsd and waits for its flush (it creates the series), loads the
next minute of the same series, then times a one-series /query and a late one-line /write in loops until that
minute has been stored; prints one JSON line (see scripts/bench-flush.sh)."""
import argparse, http.client, json, threading, time, urllib.parse

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--series", type=int, default=250000)
p.add_argument("--label", default="metricsd")
p.add_argument("--dump", help="write every sample and the flush window here (JSON)")
a = p.parse_args()
MINUTE = 60_000_000_000


def metric(conn, name):
    conn.request("GET", "/metrics")
    body = conn.getresponse().read().decode()
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def load(minute):
    c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
    batch = []
    for i in range(a.series):
        batch.append("cpu,host=h%d usage_user=%d.5,usage_system=%d,usage_idle=%d.25,usage_iowait=1 %d"
                     % (i, i % 100, i % 7, 90 - i % 9, minute + (i % 50) * 1_000_000_000))
        if len(batch) == 5000 or i == a.series - 1:
            c.request("POST", "/write?db=metrics", "\n".join(batch).encode())
            r = c.getresponse()
            r.read()
            assert r.status == 204, r.status
            batch = []
    c.close()


def wait_stored(cells, timeout):
    """Waits until `cells` more cells were closed; returns (when, that store's duration)."""
    watch = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
    base = metric(watch, "metricsd_cells_closed_total")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(watch, "metricsd_cells_closed_total") - base >= cells:
            return time.monotonic(), metric(watch, "metricsd_sink_seconds")
        time.sleep(0.05)
    raise SystemExit("the minute was not stored in time")


def start_of_next_minute():
    now = time.time()
    if 60 - now % 60 < 40:  # not enough of this minute left to load it
        time.sleep(60 - now % 60 + 0.5)
    return int(time.time() // 60) * MINUTE


# The first minute creates the series (its flush adds them to the store); the timed flush is the next minute's, of
# the same series, as every flush after the first is.
first = start_of_next_minute()
load(first)
_, first_flush_s = wait_stored(a.series * 4, (first + MINUTE) / 1e9 - time.time() + 60)
minute = start_of_next_minute()
load(minute)

stop = threading.Event()
samples = {"query": [], "write": []}
q = urllib.parse.urlencode({"db": "metrics", "epoch": "ms", "q": 'SELECT mean("usage_user") FROM "cpu" WHERE '
                            '"host" = \'h1\' AND time > now() - 30m GROUP BY time(1m)'})


def loop(kind):
    c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
    n = 0
    while not stop.is_set():
        n += 1
        t0 = time.monotonic()
        if kind == "query":
            c.request("GET", "/query?" + q)
        else:
            late = (time.time_ns() // MINUTE - 10) * MINUTE + n % 60 * 1_000_000_000
            c.request("POST", "/write?db=metrics", ("late,host=h1 v=%d %d" % (n, late)).encode())
        r = c.getresponse()
        r.read()
        t1 = time.monotonic()
        assert r.status in (200, 204), (kind, r.status)
        samples[kind].append((t0, (t1 - t0) * 1000.0))
        time.sleep(0.005)


threads = [threading.Thread(target=loop, args=(k,)) for k in ("query", "write")]
for t in threads:
    t.start()
flush_end, flush_s = wait_stored(a.series * 4, (minute + MINUTE) / 1e9 - time.time() + 60)
time.sleep(2)
stop.set()
for t in threads:
    t.join()
flush_start = flush_end - flush_s - 0.1  # the counter is read every 50 ms


def stats(kind):
    before = sorted(ms for t, ms in samples[kind] if t < flush_start - 1)
    during = [ms for t, ms in samples[kind] if flush_start <= t <= flush_end]
    p99 = before[min(len(before) - 1, int(len(before) * 0.99))] if before else 0.0
    return p99, max(during) if during else 0.0, len(during), len(before)


if a.dump:
    json.dump({"flush": [flush_start, flush_end], "samples": samples}, open(a.dump, "w"))
qp, qm, qn, qb = stats("query")
wp, wm, wn, wb = stats("write")
print(json.dumps({"label": a.label, "flush_s": flush_s, "first_flush_s": first_flush_s, "cells": a.series * 4,
                  "query_p99_before_ms": qp, "query_max_during_ms": qm, "queries_during": qn, "queries_before": qb,
                  "write_p99_before_ms": wp, "write_max_during_ms": wm, "writes_during": wn, "writes_before": wb}))
