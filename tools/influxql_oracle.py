#!/usr/bin/env python3
"""Records a real influxd's answers to the InfluxQL differential corpus (like tools/lporacle for the parser).

  influxql_oracle.py record DIR OUT   start influxd (scripts/peers.sh, free port, temp dir), load DIR/data.lp.gz
                                      into database telegraf, answer every query of DIR/queries.txt, write OUT
  influxql_oracle.py check DIR        record into a temp file and compare it with DIR/answers.jsonl

Each line of the answers: {"q": query, "epoch": "ms" or null, "answer": influxd's JSON}. Every query is asked
with epoch=ms (what Grafana sends); those with tz() also without epoch (RFC 3339 at the zone's offset). Rows of
one series with the same time (raw points of several series) are put in a fixed order, since influxd's is not.
"""
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "scripts", "peers.sh")


def normalize(answer):
    for result in answer.get("results", []):
        for series in result.get("series", []):
            values = series.get("values")
            if values and series.get("columns", [None])[0] == "time":
                times = [row[0] for row in values]
                if len(set(map(str, times))) != len(times):
                    values.sort(key=lambda row: json.dumps(row, sort_keys=True))
                    values.sort(key=lambda row: (str(type(row[0])), row[0]))
    return answer


def queries(directory):
    with open(os.path.join(directory, "queries.txt")) as f:
        return [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]


def record(directory, out):
    port = subprocess.check_output([PEERS, "free-port"], text=True).strip()
    work = tempfile.mkdtemp(prefix="influxql-oracle-")
    pid = subprocess.check_output([PEERS, "start-influxd", port, work], text=True).strip().splitlines()[-1]
    base = "http://127.0.0.1:%s" % port
    try:
        urllib.request.urlopen(base + "/query", data=b"q=CREATE+DATABASE+telegraf").read()
        with gzip.open(os.path.join(directory, "data.lp.gz"), "rt") as f:
            lines = f.read().splitlines()
        for k in range(0, len(lines), 5000):
            body = ("\n".join(lines[k:k + 5000]) + "\n").encode()
            urllib.request.urlopen(base + "/write?db=telegraf&precision=ns", data=body).read()
        with open(out, "w") as f:
            for q in queries(directory):
                for epoch in (["ms", None] if "tz(" in q else ["ms"]):
                    params = {"db": "telegraf", "q": q}
                    if epoch:
                        params["epoch"] = epoch
                    url = base + "/query?" + urllib.parse.urlencode(params)
                    try:
                        body = urllib.request.urlopen(url).read()
                    except urllib.error.HTTPError as e:
                        body = e.read()
                    answer = normalize(json.loads(body))
                    f.write(json.dumps({"q": q, "epoch": epoch, "answer": answer}, sort_keys=True) + "\n")
    finally:
        subprocess.call([PEERS, "stop", pid])
        shutil.rmtree(work, ignore_errors=True)


def main():
    mode, directory = sys.argv[1], sys.argv[2]
    if mode == "record":
        record(directory, sys.argv[3])
        return
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as t:
        fresh = t.name
    try:
        record(directory, fresh)
        committed = os.path.join(directory, "answers.jsonl")
        with open(fresh) as a, open(committed) as b:
            if a.read() != b.read():
                print("influxd's answers differ from %s (run make influxql-oracle-update)" % committed)
                sys.exit(1)
        print("influxql oracle: committed influxd answers verified (%d queries)" % len(queries(directory)))
    finally:
        os.unlink(fresh)


main()
