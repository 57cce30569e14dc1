#!/usr/bin/env python3
"""Writes a deterministic Telegraf-like line-protocol file for the benchmarks.

cpu (cpu0..cpu3 and cpu-total), mem, disk (2 mounts), diskio (2 devices), net (2 interfaces): 12 tag
combinations per host, mixed float and integer fields, 10 s apart, nanosecond timestamps, as Telegraf's
inputs.cpu/mem/disk/diskio/net write them. Usage: gen_telegraf.py OUT [LINES] [HOSTS] [--short]

Floats are written in shortest round-trip form (17 significant digits, as Go's strconv writes a float64), or with
--short as short decimals (`91.0029`: four decimals, what Telegraf's inputs mostly report).
"""
import random
import sys


def main():
    short = "--short" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--short"]
    out = args[0]
    target = int(args[1]) if len(args) > 1 else 1_000_000
    hosts = int(args[2]) if len(args) > 2 else 100
    fmt = (lambda v: "%.4f" % v) if short else repr
    rng = random.Random(7)
    t = 1_764_000_000_000_000_000
    lines = 0
    with open(out, "w") as f:
        while lines < target:
            for h in range(hosts):
                host = "host-%04d" % h
                for cpu in ["cpu0", "cpu1", "cpu2", "cpu3", "cpu-total"]:
                    u = [rng.uniform(0, 100) for _ in range(10)]
                    f.write("cpu,cpu=%s,host=%s usage_guest=0,usage_guest_nice=0,usage_idle=%s,usage_iowait=%s,"
                            "usage_irq=%s,usage_nice=0,usage_softirq=%s,usage_steal=0,usage_system=%s,"
                            "usage_user=%s %d\n" % (cpu, host, fmt(u[0]), fmt(u[1]), fmt(u[2]), fmt(u[3]), fmt(u[4]), fmt(u[5]), t))
                total = 17179869184
                used = rng.randrange(total // 4, total)
                f.write("mem,host=%s active=%di,available=%di,available_percent=%s,buffered=%di,cached=%di,free=%di,"
                        "inactive=%di,total=%di,used=%di,used_percent=%s %d\n" % (
                            host, rng.randrange(total), total - used, fmt(100.0 * (total - used) / total),
                            rng.randrange(10**9), rng.randrange(10**10), total - used, rng.randrange(total), total, used,
                            fmt(100.0 * used / total), t))
                for device, path in [("sda1", "/"), ("sdb1", "/var/lib/data")]:
                    size = 512 * 1024 ** 3
                    free = rng.randrange(size)
                    f.write("disk,device=%s,fstype=ext4,host=%s,mode=rw,path=%s free=%di,inodes_free=%di,"
                            "inodes_total=32768000i,inodes_used=%di,total=%di,used=%di,used_percent=%s %d\n" % (
                                device, host, path, free, rng.randrange(32768000), rng.randrange(32768000), size,
                                size - free, fmt(100.0 * (size - free) / size), t))
                for name in ["sda", "sdb"]:
                    f.write("diskio,host=%s,name=%s io_time=%di,iops_in_progress=%di,read_bytes=%di,read_time=%di,"
                            "reads=%di,weighted_io_time=%di,write_bytes=%di,write_time=%di,writes=%di %d\n" % (
                                host, name, rng.randrange(10**9), rng.randrange(64), rng.randrange(10**12),
                                rng.randrange(10**9), rng.randrange(10**9), rng.randrange(10**9), rng.randrange(10**12),
                                rng.randrange(10**9), rng.randrange(10**9), t))
                for iface in ["eth0", "eth1"]:
                    f.write("net,host=%s,interface=%s bytes_recv=%di,bytes_sent=%di,drop_in=%di,drop_out=0i,err_in=0i,"
                            "err_out=0i,packets_recv=%di,packets_sent=%di %d\n" % (
                                host, iface, rng.randrange(10**12), rng.randrange(10**12), rng.randrange(100),
                                rng.randrange(10**10), rng.randrange(10**10), t))
                lines += 12
            t += 10_000_000_000


if __name__ == "__main__":
    main()
