#!/usr/bin/env python3
"""Writes a deterministic Telegraf-like line-protocol file for the benchmarks.

cpu (cpu0..cpu3 and cpu-total), mem, disk (2 mounts), diskio (2 devices), net (2 interfaces): 12 tag
combinations per host, mixed float and integer fields, 10 s apart, nanosecond timestamps, as Telegraf's
inputs.cpu/mem/disk/diskio/net write them. Usage: gen_telegraf.py OUT [LINES] [HOSTS]
"""
import random
import sys


def main():
    out = sys.argv[1]
    target = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    hosts = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    rng = random.Random(7)
    t = 1_764_000_000_000_000_000
    lines = 0
    with open(out, "w") as f:
        while lines < target:
            for h in range(hosts):
                host = "host-%04d" % h
                for cpu in ["cpu0", "cpu1", "cpu2", "cpu3", "cpu-total"]:
                    u = [rng.uniform(0, 100) for _ in range(10)]
                    f.write("cpu,cpu=%s,host=%s usage_guest=0,usage_guest_nice=0,usage_idle=%r,usage_iowait=%r,"
                            "usage_irq=%r,usage_nice=0,usage_softirq=%r,usage_steal=0,usage_system=%r,"
                            "usage_user=%r %d\n" % (cpu, host, u[0], u[1], u[2], u[3], u[4], u[5], t))
                total = 17179869184
                used = rng.randrange(total // 4, total)
                f.write("mem,host=%s active=%di,available=%di,available_percent=%r,buffered=%di,cached=%di,free=%di,"
                        "inactive=%di,total=%di,used=%di,used_percent=%r %d\n" % (
                            host, rng.randrange(total), total - used, 100.0 * (total - used) / total,
                            rng.randrange(10**9), rng.randrange(10**10), total - used, rng.randrange(total), total, used,
                            100.0 * used / total, t))
                for device, path in [("sda1", "/"), ("sdb1", "/var/lib/data")]:
                    size = 512 * 1024 ** 3
                    free = rng.randrange(size)
                    f.write("disk,device=%s,fstype=ext4,host=%s,mode=rw,path=%s free=%di,inodes_free=%di,"
                            "inodes_total=32768000i,inodes_used=%di,total=%di,used=%di,used_percent=%r %d\n" % (
                                device, host, path, free, rng.randrange(32768000), rng.randrange(32768000), size,
                                size - free, 100.0 * (size - free) / size, t))
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
