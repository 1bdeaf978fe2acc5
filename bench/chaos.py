#!/usr/bin/env python3
"""RTO and RPO of shipped chaos experiments on a fresh level-3 environment.

Usage: bench/chaos.py [--runs 5] [--bin target/release/scalectl] [--reports DIR] [EXPERIMENT ...]
Default: every shipped experiment. Prints one row per experiment: RTO (fault to first
acknowledged write) median and worst, the longest write gap (longest time without an
acknowledged write until writes resumed) median and worst, resume (fault's end to first
acknowledged write) worst, recovery median, RPO (acknowledged writes lost) worst, and how many runs passed.
With --reports, every run's SVG timeline and history (.jsonl) are kept there.
Compound experiments (several faults) add a row per run with each fault's RTO and write
gap in order, and their table cells cover every fault; --env NAME runs on an existing
level-3 environment (of the default home, or --home) instead of a fresh one each.
Needs a release build (cargo build --release --workspace) and root for partitions.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def sc(binary, home, *args):
    return subprocess.run([binary, *(["--home", home] if home else []), *args], capture_output=True, text=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bin", default="target/release/scalectl")
    ap.add_argument("--reports", help="keep each run's SVG timeline and history (.jsonl) in this directory")
    ap.add_argument("--env", help="run on this existing environment instead of a fresh one per experiment")
    ap.add_argument("--home", help="the scalectl home of --env [default: scalectl's]")
    ap.add_argument("experiments", nargs="*")
    a = ap.parse_args()
    if a.reports:
        os.makedirs(a.reports, exist_ok=True)
    names = a.experiments or [e["name"] for e in json.loads(sc(a.bin, "/tmp", "chaos", "list", "-o", "json").stdout)["experiments"]]
    print("| experiment | runs passed | RTO median | RTO worst | longest write gap, median / worst | resume after the fault, worst | recovery median | RPO worst |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        if a.env:
            home, env = a.home, a.env  # no --home: scalectl's default home
        else:
            home = tempfile.mkdtemp(prefix="scalectl-chaos-bench-")
            os.chmod(home, 0o755)
            env = f"bench-{os.getpid()}"
        try:
            if not a.env:
                up = sc(a.bin, home, "up", "--level", "3", "--env", env, "-q")
                if up.returncode != 0:
                    sys.exit(f"up failed: {up.stderr}")
            keep = ["--report", os.path.join(os.path.abspath(a.reports), f"{name}.svg")] if a.reports else []
            out = sc(a.bin, home, "chaos", "run", name, "--env", env, "--runs", str(a.runs), "-q", "-o", "json", *keep)
            try:
                report = json.loads(out.stdout)
            except json.JSONDecodeError:
                print(f"| {name} | error: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else 'no output'} | | | | | | |", flush=True)
                continue
            runs = report["runs"]
            rtos = [f["rto_s"] for r in runs for f in r["faults"] if f.get("rto_s") is not None]
            gaps = [f["write_gap_s"] for r in runs for f in r["faults"] if f.get("write_gap_s") is not None]
            resumes = [f["resume_s"] for r in runs for f in r["faults"] if f.get("resume_s") is not None]
            recs = [f["recovery_s"] for r in runs for f in r["faults"] if f.get("recovery_s") is not None]
            rpo = max((r["rpo"] for r in runs), default=0)
            passed = sum(1 for r in runs if r["passed"])
            fmt = lambda xs, f: f"{f(xs):.1f} s" if xs else "–"
            print(f"| {name} | {passed}/{len(runs)} | {fmt(rtos, statistics.median)} | {fmt(rtos, max)} | {fmt(gaps, statistics.median)} / {fmt(gaps, max)} | {fmt(resumes, max)} | {fmt(recs, statistics.median)} | {rpo} |", flush=True)
            if any(len(r["faults"]) > 1 for r in runs):
                for i, r in enumerate(runs):
                    each = "; ".join(f"{f['kind']} RTO {f.get('rto_s') or 0:.1f} s, gap {f.get('write_gap_s') or 0:.1f} s" for f in r["faults"])
                    print(f"|   run {i + 1}: {'pass' if r['passed'] else 'FAIL'}, RPO {r['rpo']} | {each} | | | | | |", flush=True)
        finally:
            if not a.env:
                sc(a.bin, home, "down", "--env", env, "-q")


if __name__ == "__main__":
    main()
