#!/usr/bin/env python3
"""Writes the InfluxQL differential suite's data: Telegraf-like line protocol, deterministic.

Five hosts, three hours from 2026-11-20T00:00:00Z, one point per series every 10 s (Telegraf's default interval,
timestamps rounded to it as Telegraf's round_interval does), nanosecond timestamps. Measurements and fields as
Telegraf's inputs write them: cpu (cpu-total and cpu0), mem, net (counters, one reset), disk, system (with the
string uptime_format), processes, and http_response (strings, a boolean, status codes) on the two web hosts. db-02
is down from 01:10 to 01:30 (no points: empty windows). Values have few decimals, so percentiles and modes see ties.

Usage: influxql_data.py OUT.lp   (the committed copy is Tests/InfluxQLTests/Fixtures/differential/data.lp.gz)
"""
import random
import sys

START = 1_795_132_800  # 2026-11-20T00:00:00Z
STEPS = 3 * 360  # three hours of 10 s
HOSTS = [("web-01", "eu-west"), ("web-02", "eu-west"), ("db-01", "us-east"), ("db-02", "us-east"),
         ("cache-01", "eu-west")]


def main():
    rng = random.Random(20261120)
    out = []
    bytes_recv = {h: rng.randrange(10**9, 10**10) for h, _ in HOSTS}
    bytes_sent = {h: rng.randrange(10**8, 10**9) for h, _ in HOSTS}
    packets = {h: rng.randrange(10**6, 10**7) for h, _ in HOSTS}
    uptime = {h: rng.randrange(10**5, 10**6) for h, _ in HOSTS}
    load = {h: rng.uniform(0.2, 3.0) for h, _ in HOSTS}
    free = {h: rng.randrange(40, 200) * 1024**3 for h, _ in HOSTS}
    for step in range(STEPS):
        t = (START + 10 * step) * 10**9
        minute = step // 6
        for host, region in HOSTS:
            if host == "db-02" and 70 <= minute < 90:
                continue
            tags = "host=%s,region=%s" % (host, region)
            for cpu in ["cpu-total", "cpu0"]:
                busy = rng.uniform(2, 40) if cpu == "cpu0" else rng.uniform(5, 25)
                user = round(busy * rng.uniform(0.5, 0.8), 2)
                system = round(busy * rng.uniform(0.1, 0.3), 2)
                iowait = round(rng.choice([0, 0, 0, 0.1, 0.2, 0.5, 1.5]), 2)
                idle = round(100 - user - system - iowait, 2)
                out.append("cpu,cpu=%s,%s usage_idle=%s,usage_iowait=%s,usage_system=%s,usage_user=%s %d" % (
                    cpu, tags, idle, iowait, system, user, t))
            total = 16 * 1024**3 if host.startswith("db") else 8 * 1024**3
            used = int(total * rng.uniform(0.3, 0.9)) // 4096 * 4096
            out.append("mem,%s available=%di,total=%di,used=%di,used_percent=%s %d" % (
                tags, total - used, total, used, round(100.0 * used / total, 4), t))
            # Counters; web-02's reset at 02:00 (a restart): non_negative_derivative drops the negative step.
            if host == "web-02" and step == 720:
                bytes_recv[host] = rng.randrange(10**4, 10**5)
                bytes_sent[host] = rng.randrange(10**4, 10**5)
            bytes_recv[host] += rng.randrange(10**4, 10**6)
            bytes_sent[host] += rng.randrange(10**3, 10**5)
            packets[host] += rng.randrange(10, 1000)
            err = 1 if rng.random() < 0.02 else 0
            out.append("net,interface=eth0,%s bytes_recv=%di,bytes_sent=%di,err_in=%di,packets_recv=%di %d" % (
                tags, bytes_recv[host], bytes_sent[host], err, packets[host], t))
            free[host] -= rng.randrange(0, 10**6)
            size = 512 * 1024**3
            out.append("disk,device=sda1,fstype=ext4,path=/,%s free=%di,used=%di,used_percent=%s %d" % (
                tags, free[host], size - free[host], round(100.0 * (size - free[host]) / size, 3), t))
            load[host] = max(0.01, load[host] + rng.uniform(-0.2, 0.2))
            uptime[host] += 10
            days, rest = divmod(uptime[host], 86400)
            out.append('system,%s load1=%s,load15=%s,load5=%s,n_cpus=%di,uptime=%di,uptime_format="%d days, %2d:%02d" %d'
                       % (tags, round(load[host], 2), round(load[host] * 0.8, 2), round(load[host] * 0.9, 2),
                          8 if host.startswith("db") else 4, uptime[host], days, rest // 3600, rest % 3600 // 60, t))
            running = rng.choice([0, 1, 1, 1, 2, 2, 3, 5])
            sleeping = rng.randrange(180, 260)
            out.append("processes,%s running=%di,sleeping=%di,total=%di,zombies=%di %d" % (
                tags, running, sleeping, running + sleeping + 1, rng.choice([0, 0, 0, 0, 1]), t))
            if host.startswith("web"):
                code = rng.choice([200] * 12 + [301, 500, 503])
                ok = code < 500
                out.append('http_response,method=GET,server=https://example.com,%s http_response_code=%di,'
                           'response_time=%s,result_type="%s",up=%s %d' % (
                               tags, code, round(rng.uniform(0.02, 0.4) if ok else rng.uniform(1, 5), 3),
                               "success" if ok else "response_status_code_mismatch", "true" if ok else "false", t))
    with open(sys.argv[1], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
