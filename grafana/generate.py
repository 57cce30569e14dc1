#!/usr/bin/env python3
"""Generates grafana/dashboards/*.json (committed; rerun after editing this file: python3 grafana/generate.py).

Every panel query is InfluxQL that metricsd answers (docs/influxql.md); GrafanaDashboardTests expands Grafana's
macros and runs each one against metricsd (and the long-term ones against a real influxd)."""
import json
import os

HOST_FILTER = '"host" =~ /^$host$/'


def panel(pid, title, queries, x, y, unit="short", datasource="metricsd", w=12, h=8, interval=None):
    p = {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "influxdb", "uid": datasource},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(65 + i), "datasource": {"type": "influxdb", "uid": datasource}, "rawQuery": True,
             "resultFormat": "time_series", "query": q, "alias": "$tag_host $col"}
            for i, q in enumerate(queries)
        ],
    }
    if interval:
        p["interval"] = interval
    return p


def host_variable(datasource, measurement):
    return {
        "name": "host", "label": "host", "type": "query", "datasource": {"type": "influxdb", "uid": datasource},
        "query": 'SHOW TAG VALUES FROM "%s" WITH KEY = "host"' % measurement, "definition":
        'SHOW TAG VALUES FROM "%s" WITH KEY = "host"' % measurement, "refresh": 2, "multi": True, "includeAll": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1,
    }


def dashboard(uid, title, panels, variables, refresh="30s", time_from="now-6h"):
    return {
        "uid": uid, "title": title, "tags": ["metricsd"], "timezone": "utc", "schemaVersion": 39, "version": 1,
        "editable": True, "refresh": refresh, "time": {"from": time_from, "to": "now"},
        "templating": {"list": variables}, "annotations": {"list": []}, "panels": panels,
    }


def hosts(datasource, suffix, agg):
    """The Telegraf host panels; `suffix`/`agg` turn field f into f<agg> of measurement m<suffix> (long term)."""
    def f(name, fn="mean"):
        return '%s("%s%s")' % (fn, name, agg)

    def counter(name, scale=""):
        # A counter's rate per second, as Grafana's network panels write it: live from the window means, long term
        # from the per-minute maxima (a counter's maximum in a minute is its last value).
        return 'non_negative_derivative(%s("%s%s"), 1s)%s' % ("max" if agg else "mean", name, "_max" if agg else "",
                                                             scale)

    def gauge_last(name):
        return 'last("%s%s")' % (name, "_last" if agg else "")
    where = 'WHERE %s AND $timeFilter' % HOST_FILTER
    m = lambda name: '"%s%s"' % (name, suffix)
    return [
        panel(1, "CPU", ['SELECT %s AS "user", %s AS "system", %s AS "iowait" FROM %s %s AND "cpu" = \'cpu-total\' '
                         'GROUP BY time($__interval), "host" fill(null)'
                         % (f("usage_user"), f("usage_system"), f("usage_iowait"), m("cpu"), where)], 0, 0, "percent",
              datasource),
        panel(2, "Memory used", ['SELECT %s AS "used" FROM %s %s GROUP BY time($__interval), "host" fill(null)'
                                 % (f("used_percent"), m("mem"), where)], 12, 0, "percent", datasource),
        panel(3, "Disk used", ['SELECT %s AS "used" FROM %s %s GROUP BY time($__interval), "host", "path" fill(null)'
                               % (gauge_last("used_percent"), m("disk"), where)],
              0, 8, "percent", datasource),
        panel(4, "Disk I/O (bytes per second)",
              ['SELECT %s AS "read", %s AS "write" FROM %s %s GROUP BY time($__interval), "host", "name" fill(none)'
               % (counter("read_bytes"), counter("write_bytes"), m("diskio"), where)],
              12, 8, "Bps", datasource, interval="1m"),
        panel(5, "Network (bits per second)",
              ['SELECT %s AS "recv", %s AS "sent" FROM %s %s GROUP BY time($__interval), "host", "interface" fill(none)'
               % (counter("bytes_recv", " * 8"), counter("bytes_sent", " * 8"), m("net"), where)],
              0, 16, "bps", datasource, interval="1m"),
    ]


def metricsd_panels():
    q = lambda sel: 'SELECT %s FROM "metricsd" WHERE $timeFilter GROUP BY time($__interval) fill(none)' % sel
    return [
        panel(1, "Lines received per interval", [q('spread("http_lines") AS "http", spread("tcp_lines") AS "tcp", '
                                                  'spread("udp_lines") AS "udp"')], 0, 0, interval="5m"),
        panel(2, "Invalid lines per interval", [q('spread("http_invalid") + spread("tcp_invalid") + '
                                                 'spread("udp_invalid") AS "invalid"')], 12, 0, interval="5m"),
        panel(3, "Active series", [q('last("series_active") AS "active", last("series_rejected") AS "rejected", '
                                     'last("series_overflowed") AS "values folded into _overflow"')], 0, 8),
        panel(4, "UDP drops per interval", [q('spread("udp_drops") AS "drops"')], 12, 8, interval="5m"),
        panel(5, "Flush (sink) latency", [q('max("sink_seconds") AS "max"')], 0, 16, "s"),
        panel(6, "Open buckets and late points", [q('last("buckets_open") AS "open buckets", '
                                                   'spread("points_late") AS "late points"')], 12, 16),
        panel(7, "Events per interval", [q('spread("events_accepted") AS "accepted", spread("events_duplicate") AS '
                                          '"duplicates", spread("events_invalid") AS "invalid"')], 0, 24,
              interval="5m"),
        cardinality_panel(8, "Cardinality: series per measurement (largest 20)",
                          'SELECT last("series") FROM "metricsd_cardinality" WHERE $timeFilter '
                          'GROUP BY time($__interval), "measurement" fill(none)', "$tag_measurement", 12, 24),
        cardinality_panel(9, "Cardinality: tag keys growing fastest (distinct values, last hour)",
                          'SELECT last("growth_1h") FROM "metricsd_tags" WHERE $timeFilter '
                          'GROUP BY time($__interval), "measurement", "tag" fill(none)',
                          "$tag_measurement.$tag_tag", 0, 32),
    ]


def cardinality_panel(pid, title, query, alias, x, y):
    """A panel of the daemon's cardinality figures (written every interval from GET /api/v1/cardinality's report):
    one series per measurement or tag key."""
    p = panel(pid, title, [query], x, y)
    for t in p["targets"]:
        t["alias"] = alias
    return p


def event_variable():
    q = 'SHOW TAG VALUES FROM "events" WITH KEY = "event"'
    return {
        "name": "event", "label": "event", "type": "query", "datasource": {"type": "influxdb", "uid": "metricsd"},
        "query": q, "definition": q, "refresh": 2, "multi": True, "includeAll": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1,
    }


def events_panels():
    """Product events from the `events` measurement (docs/events.md): counts, and distinct users from merged
    HyperLogLog sketches, so a window's users are distinct over the whole window."""
    where = 'WHERE "event" =~ /^$event$/ AND $timeFilter'
    by_event = 'GROUP BY time($__interval), "event" fill(none)'
    p = [
        panel(1, "Events per interval", ['SELECT sum("count") AS "events" FROM "events" %s %s' % (where, by_event)],
              0, 0),
        panel(2, "Unique users per interval",
              ['SELECT count(distinct("users")) AS "users" FROM "events" %s %s' % (where, by_event)], 12, 0),
        panel(3, "Events per user", ['SELECT sum("count") / count(distinct("users")) AS "per user" FROM "events" '
                                     '%s %s' % (where, by_event)], 0, 8),
        panel(4, "Unique users per hour (any selected event)",
              ['SELECT count(distinct("users")) AS "users" FROM "events" %s GROUP BY time(1h) fill(none)' % where],
              12, 8),
    ]
    for x in p:
        for t in x["targets"]:
            t["alias"] = "$tag_event $col"
    return p


out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboards")
boards = {
    "hosts.json": dashboard("metricsd-hosts", "Hosts (live, metricsd)", hosts("metricsd", "", ""),
                            [host_variable("metricsd", "cpu")]),
    "long-term.json": dashboard("metricsd-long-term", "Hosts (long term, InfluxDB)",
                                hosts("influxdb-longterm", "_1m", "_mean"),
                                [host_variable("influxdb-longterm", "cpu_1m")], refresh="5m", time_from="now-7d"),
    "metricsd.json": dashboard("metricsd-self", "metricsd", metricsd_panels(), []),
    "events.json": dashboard("metricsd-events", "Events (live, metricsd)", events_panels(), [event_variable()],
                             time_from="now-24h"),
}
for name, board in boards.items():
    with open(os.path.join(out, name), "w") as f:
        json.dump(board, f, indent=2)
        f.write("\n")
print("wrote", ", ".join(sorted(boards)))
