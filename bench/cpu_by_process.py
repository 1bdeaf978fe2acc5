#!/usr/bin/env python3
"""CPU seconds each kind of process on this machine spent while one command ran.

Usage: bench/cpu_by_process.py COMMAND [ARG ...]
Reads utime + stime of every process in /proc before and after COMMAND, and COMMAND's
own (with its children) from rusage; prints the totals by program (PostgreSQL backends
by their `postgres: CLUSTER: USER` title), largest first. COMMAND's stdout is kept in
cpu_by_process.out in the current directory. Processes that start and end within the
run are not seen; a process that ends during it counts only what it used before.
"""
import collections
import os
import resource
import subprocess
import sys
import time


def snapshot():
    seen = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
            cmd = open(f"/proc/{pid}/cmdline").read().replace("\0", " ").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        seen[pid] = (cmd, int(fields[11]) + int(fields[12]))
    return seen


def program(cmd):
    if cmd.startswith("postgres:"):
        return " ".join(cmd.split()[:3])
    first = cmd.split(" ")[0]
    return os.path.basename(first) or "?"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    hz = os.sysconf("SC_CLK_TCK")
    before = snapshot()
    own_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with open("cpu_by_process.out", "w") as out:
        code = subprocess.run(sys.argv[1:], stdout=out).returncode
    wall = time.monotonic() - started
    own_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = snapshot()
    totals = collections.Counter()
    for pid, (cmd, ticks) in after.items():
        totals[program(cmd)] += ticks - (before[pid][1] if pid in before else 0)
    spent = (own_after.ru_utime + own_after.ru_stime) - (own_before.ru_utime + own_before.ru_stime)
    totals[f"{os.path.basename(sys.argv[1])} (the command)"] += int(spent * hz)
    print(f"wall {wall:.2f} s; CPU seconds by program:")
    for name, ticks in totals.most_common():
        if ticks > 0:
            print(f"  {ticks / hz:7.2f}  {name}")
    sys.exit(code)


if __name__ == "__main__":
    main()
