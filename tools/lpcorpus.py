#!/usr/bin/env python3
"""Builds the line-protocol differential corpus (deterministic: same output on every run).

Four parts, one line per case:
  1. mined    -- every string literal in InfluxDB's models/points_test.go that looks like line protocol
  2. generated -- random points covering every escape rule, field type and number form
  3. mutated  -- the generated and mined lines with single-byte edits, truncations and splices
  4. scanned  -- short field sets drawn from the bytes InfluxDB's two field scanners treat differently
                 (backslash, '=', ',', ' ', '"'), where they disagree: `a\\=1`, `a\\,b=1`, `="x"`

Usage: lpcorpus.py POINTS_TEST_GO OUT.lp [--timestamps OUT_TS.lp]
"""
import random
import re
import sys

SEED = 20261129


def go_unquote(body):
    """Decodes the escapes of a Go interpreted string literal (enough for the test file)."""
    out = bytearray()
    i = 0
    raw = body.encode("utf-8")
    while i < len(raw):
        c = raw[i]
        if c != 0x5C:
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(raw):
            return None
        e = chr(raw[i + 1])
        simple = {"n": 10, "t": 9, "r": 13, "\\": 92, '"': 34, "'": 39, "a": 7, "b": 8, "f": 12, "v": 11}
        if e in simple:
            out.append(simple[e])
            i += 2
        elif e == "x":
            out.append(int(raw[i + 2:i + 4], 16))
            i += 4
        elif e == "u":
            out += chr(int(raw[i + 2:i + 6], 16)).encode("utf-8")
            i += 6
        elif e in "01234567":
            out.append(int(raw[i + 1:i + 4], 8))
            i += 4
        else:
            return None
    return bytes(out)


def mined(path):
    text = open(path, encoding="utf-8").read()
    found = []
    for m in re.finditer(r'`([^`]*)`', text):
        found.append(m.group(1).encode("utf-8"))
    for m in re.finditer(r'"((?:[^"\\\n]|\\.)*)"', text):
        b = go_unquote(m.group(1))
        if b is not None:
            found.append(b)
    lines = []
    for blob in found:
        for line in blob.split(b"\n"):
            if (b" " in line or b"=" in line) and len(line) < 4000:
                lines.append(line)
    return lines


MEAS = ["cpu", "mem", "disk", "net", "m", "weather", "a,b", "a b", "h2o_feet", "x\\y", "caf\u00e9", "\u6e29\u5ea6",
        "a=b", "cpu\\", "e\"q", "_", "1", "-", "."]
KEYS = ["host", "region", "az", "k", "a b", "a,b", "a=b", "t\\", "\"q\"", "x\\y", "_k", "0", "\u00fcber", "h"]
VALS = ["a", "server01", "us-west", "a b", "a,b", "a=b", "=lead", "v\\", "x\\y", "\"q\"", "1", "true", "\u00e9t\u00e9",
        "#", "-"]
FKEYS = ["value", "usage", "v", "a b", "a,b", "a=b", "\"k\"", "x\\y", "k\\", "n", "\u00e9", "f1", "_", "i", "u"]
STRS = ["", "x", "a b", "a,b", "a=b", "say \"hi\"", "back\\slash", "\\", "\\\\", "end\\", "\t", "#", "caf\u00e9",
        "multi word string, with comma", "\\n", "\"", "\\\""]


def esc(s, chars):
    out = []
    for ch in s:
        if ch in chars:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def number(rng):
    kind = rng.randrange(7)
    if kind == 0:
        return repr(rng.uniform(-1e6, 1e6))
    if kind == 1:
        return rng.choice(["0", "-0", "1", "1.", ".5", "-.5", "0.1", "1e5", "1E5", "1e+5", "1e-5", "1.5e300", "1e308",
                           "1.7976931348623157e308", "4.9e-324", "2.2250738585072014e-308", "123456789012345678901234567890",
                           "0.000000000000000000000000001", "9007199254740993", "1e22", "1e23", "3.14159265358979323846",
                           "00012", "-0.0", "1.e5", "5e-324", "1e-400", "1e400", "0e999", "6.02214076e23"])
    if kind == 2:
        return rng.choice(["0", "1", "-1", "42", "9223372036854775807", "-9223372036854775808", "007",
                           "9223372036854775808", "-9223372036854775809", "-0"]) + "i"
    if kind == 3:
        return rng.choice(["0", "1", "42", "18446744073709551615", "18446744073709551616", "007"]) + "u"
    if kind == 4:
        return str(rng.randrange(-10**6, 10**6)) + "i"
    if kind == 5:
        return "%d.%d" % (rng.randrange(0, 10**rng.randrange(1, 12)), rng.randrange(0, 10**rng.randrange(1, 18)))
    return "%de%d" % (rng.randrange(1, 1000), rng.randrange(-30, 30))


def value(rng):
    r = rng.randrange(10)
    if r < 6:
        return number(rng)
    if r < 8:
        return '"' + rng.choice(STRS).replace("\\", "\\\\").replace('"', '\\"') + '"'
    return rng.choice(["t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"])


def timestamp(rng):
    return rng.choice(["", "", " 1700000000000000000", " 0", " -1", " 1", " 1434055562000000000", " 9223372036854775806",
                       " 9223372036854775807", " -9223372036854775806", " -9223372036854775807", " 1700000000",
                       " %d" % rng.randrange(0, 2**62), " 1700000000000000000 ", " 1700000000000000000  "])


def generated(rng, n):
    lines = []
    for _ in range(n):
        m = esc(rng.choice(MEAS), ", ")
        parts = [m]
        tags = rng.sample(KEYS, rng.randrange(0, 4))
        for k in tags:
            parts.append(esc(k, ",= ") + "=" + esc(rng.choice(VALS), ",= "))
        key = ",".join(parts)
        fks = [rng.choice(FKEYS) for _ in range(rng.randrange(1, 5))]
        fields = ",".join(esc(k, ",= \"") + "=" + value(rng) for k in fks)
        sep = rng.choice([" ", " ", " ", "  ", " \t"])
        lines.append((key + sep + fields + timestamp(rng)).encode("utf-8"))
    return lines


MUT_BYTES = b' ,=\\"tTfF0123456789.eEiu-+#\tx\r'


def mutate(rng, line):
    b = bytearray(line)
    op = rng.randrange(6)
    if not b:
        return bytes(b)
    pos = rng.randrange(len(b) + 1)
    if op == 0 and pos < len(b):
        del b[pos]
    elif op == 1:
        b.insert(pos, rng.choice(MUT_BYTES))
    elif op == 2 and pos < len(b):
        b[pos] = rng.choice(MUT_BYTES)
    elif op == 3:
        b = b[:pos]
    elif op == 4 and pos < len(b):
        end = min(len(b), pos + rng.randrange(1, 8))
        b[end:end] = b[pos:end]
    else:
        i, j = sorted((rng.randrange(len(b) + 1), rng.randrange(len(b) + 1)))
        b = b[:i] + b[j:]
    return bytes(b)


def timestamps(rng):
    lines = []
    for ts in ["0", "1", "-1", "1700000000", "1700000000000", "1700000000000000", "1700000000000000000",
               "9223372036", "9223372037", "-9223372036", "-9223372037", "9223372036854", "9223372036855",
               "153722867", "153722868", "2562047", "2562048", "-2562047", "-2562048", "106751", "106752",
               "9223372036854775", "9223372036854776", "-9223372036854775", "-9223372036854776",
               "9223372036854775806", "9223372036854775807", "-9223372036854775806", "-9223372036854775807"]:
        lines.append(b"cpu v=1 " + ts.encode())
    for _ in range(200):
        lines.append(b"cpu v=1 %d" % rng.randrange(-2**63, 2**63))
        lines.append(b"cpu v=1 %d" % rng.randrange(-10**12, 10**12))
    return lines


SCANNED_HEADS = ["m", "m,t=a", "m\\ ", "m\\,", "m,t\\ x=y", "m,k=v\\\\"]
SCANNED_BYTES = ["a", "=", "=", "1", " ", "\\", "\\", "\\", ",", ",", "t", '"', '"', ".", "i", "-", "e", "u", "f"]
SCANNED_FIXED = ["m a\\\\=1", "m x=1,a\\\\=b=2", "m a\\\\,b=1", "m a\\\\ b=1", "m a\\\\b=1", "m \\\\=1",
                 "m a\\\\\\==1", "m a\\\\\\\\=1", "m a\\=b=1", "m \\\\ 1=t", 'm= "\\\\,=1', "m =1", "m ==1",
                 "m =a=1", 'm a\\\\="x",b=1', "m a\\\\=tru"]


def scanned(n):
    """Short field sets over the scanners' special bytes (its own generator: the other parts stay as they were)."""
    rng = random.Random(SEED + 4)
    lines = [l.encode("utf-8") for l in SCANNED_FIXED]
    while len(lines) < n:
        body = "".join(rng.choice(SCANNED_BYTES) for _ in range(rng.randint(2, 12)))
        line = rng.choice(SCANNED_HEADS) + " " + body
        if line.strip() and not line.lstrip().startswith("#"):
            lines.append(line.encode("utf-8"))
    return lines


def main():
    rng = random.Random(SEED)
    out = []
    seen = set()

    def add(line):
        if b"\n" in line or line in seen:
            return
        seen.add(line)
        out.append(line)

    base = mined(sys.argv[1])
    for line in base:
        add(line)
    gen = generated(rng, 2500)
    for line in gen:
        add(line)
    pool = base + gen
    for _ in range(4000):
        add(mutate(rng, rng.choice(pool)))
    before = len(out)
    for line in scanned(1500):
        add(line)
    scanned_count = len(out) - before
    with open(sys.argv[2], "wb") as f:
        f.write(b"\n".join(out) + b"\n")
    if len(sys.argv) > 4 and sys.argv[3] == "--timestamps":
        with open(sys.argv[4], "wb") as f:
            f.write(b"\n".join(timestamps(rng)) + b"\n")
    print("%d cases (%d mined, %d generated, %d scanned)" % (len(out), len(base), len(gen), scanned_count),
          file=sys.stderr)


if __name__ == "__main__":
    main()
