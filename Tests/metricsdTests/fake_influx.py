#!/usr/bin/env python3
"""A scripted stand-in for InfluxDB's write endpoint, for forwarding tests.

Usage: fake_influx.py PORT PLAN LOG
PLAN is a comma-separated list of answers for the first requests to /write or /api/v2/write, then 204 for every
later one: "500", "429:2" (429 with Retry-After: 2), "400:partial" (InfluxDB's partial write: the first point is
kept, the others are refused — and stay refused, as a type conflict does: any later request holding one of them is
answered the same way, its other points kept), "401". Each request is appended to LOG as one JSON line:
{"t": arrival time, "path": ..., "status": answered status, "lines": [accepted lines]}.
Prints "ready" once listening on 127.0.0.1:PORT.
"""
import gzip
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, plan, log_path = int(sys.argv[1]), [p for p in sys.argv[2].split(",") if p], sys.argv[3]
state = {"n": 0}
refused = set()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        lines = [l for l in data.decode().split("\n") if l]
        step = plan[state["n"]] if state["n"] < len(plan) else "204"
        state["n"] += 1
        code, _, arg = step.partition(":")
        status, accepted, body, headers = int(code), [], b"", []
        if status == 204 and any(l in refused for l in lines):
            status, arg = 400, "again"
        if status == 204:
            accepted = lines
        elif status == 429:
            headers = [("Retry-After", arg or "1")]
        elif status == 400 and arg in ("partial", "again"):
            if arg == "partial":
                refused.update(lines[1:])
            accepted = [l for l in lines if l not in refused]
            body = json.dumps({"error": "partial write: field type conflict dropped=%d" % (len(lines) - len(accepted))}).encode()
        elif status == 401:
            body = b'{"error":"authorization failed"}'
        else:
            body = b'{"error":"scripted failure"}'
        with open(log_path, "a") as f:
            f.write(json.dumps({"t": time.time(), "path": self.path, "status": status, "lines": accepted, "sent": lines,
                                "auth": self.headers.get("Authorization")}) + "\n")
        self.answer(status, body, headers)


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
print("ready", flush=True)
server.serve_forever()
