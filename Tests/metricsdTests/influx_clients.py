#!/usr/bin/env python3
"""Writes through the real InfluxDB Python clients from PyPI, unchanged, against metricsd.

influxdb (v1 API, /write with u/p) and influxdb-client (v2 API, /api/v2/write with a token, gzip on).
Usage: influx_clients.py HTTP_PORT TOKEN. Exit status 0 when every write was acknowledged.
"""
import sys
import time

port, token = int(sys.argv[1]), sys.argv[2]
now = time.time_ns()

from influxdb import InfluxDBClient  # noqa: E402

v1 = InfluxDBClient(host="127.0.0.1", port=port, username="me", password=token, database="metrics")
assert v1.ping(), "ping"
points = [{"measurement": "py_v1", "tags": {"client": "influxdb", "host": "h%d" % (i % 5)},
           "fields": {"value": float(i)}, "time": now + i} for i in range(100)]
assert v1.write_points(points, time_precision="n", batch_size=30), "v1 write"

from influxdb_client import InfluxDBClient as V2Client, Point  # noqa: E402
from influxdb_client.client.write_api import SYNCHRONOUS  # noqa: E402

with V2Client(url="http://127.0.0.1:%d" % port, token=token, org="org", enable_gzip=True) as v2:
    write = v2.write_api(write_options=SYNCHRONOUS)
    records = [Point("py_v2").tag("client", "influxdb-client").tag("host", "h%d" % (i % 5)).field("value", float(i))
               .time(now + i) for i in range(100)]
    write.write(bucket="bucket", record=records[:50])
    write.write(bucket="bucket", record="\n".join(r.to_line_protocol() for r in records[50:]))
print("ok")
