"""Shared by the scripts/bench-*.sh reports: shell helper, the machine line, and rewriting one section of
docs/PERFORMANCE.md (between <!-- name:begin --> and <!-- name:end -->, added after section `after` if missing)."""
import datetime
import re
import subprocess

DOC = "docs/PERFORMANCE.md"


def sh(command):
    return subprocess.run(command, shell=True, capture_output=True, text=True).stdout.strip()


def machine():
    """'<date> UTC on <cpu> (<n> cores)'."""
    return "%s UTC on %s (%s cores)" % (
        datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(), sh("nproc"))


def write_section(name, section, after=None):
    doc = open(DOC).read()
    begin, end = "<!-- %s:begin -->" % name, "<!-- %s:end -->" % name
    if begin not in doc:
        anchor = "<!-- %s:end -->" % after if after else None
        doc = doc.replace(anchor, anchor + "\n\n" + begin + "\n" + end) if anchor and anchor in doc \
            else doc.rstrip("\n") + "\n\n" + begin + "\n" + end + "\n"
    doc = re.sub(re.escape(begin) + ".*" + re.escape(end), lambda _: begin + "\n" + section + "\n" + end, doc,
                 flags=re.S)
    open(DOC, "w").write(doc)
