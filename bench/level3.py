#!/usr/bin/env python3
"""Level 3 on the local target, measured end to end with the real binaries:

  1. `scalectl up --level 3` wall time, from nothing to healthy (goal <= 20 s);
  2. failover: SIGKILL every process of the leader's node, then the time until the shop
     acknowledges an order again (retrying one idempotency key), reported beside
     Patroni's ttl;
  3. planned switchover: the time from the request until the shop writes again, and the
     longest gap between writes probed all along (both from `scalectl switchover`).

Each run uses a fresh home and environment and ends with `down`.
Usage: bench/level3.py [--runs 5] [--bin target/release/scalectl] [--set KEY=VALUE ...]
Needs a release build: cargo build --release --workspace
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def scalectl(binary, home, *args, check=True):
    out = subprocess.run([binary, "--home", home, *args, "-q", "-o", "json"], capture_output=True, text=True)
    if check and out.returncode != 0:
        sys.exit(f"scalectl {' '.join(args)} failed:\n{out.stderr}")
    return json.loads(out.stdout) if out.stdout.strip() else {}


def call(base, method, path, body=None, token=None, key=None, timeout=5):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if key:
        req.add_header("Idempotency-Key", key)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, None


def seed(base):
    for email, roles in (("seller@example.com", "seller"), ("buyer@example.com", "buyer")):
        call(base, "POST", "/register", {"email": email, "password": "correct horse battery", "roles": roles})
    tok = {e: call(base, "POST", "/login", {"email": e, "password": "correct horse battery"})[1]["token"] for e in ("seller@example.com", "buyer@example.com")}
    shop = call(base, "POST", "/shops", {"name": "Bench"}, tok["seller@example.com"])[1]
    product = call(base, "POST", "/products", {"shop_id": shop["id"], "name": "Phone", "description": "x", "price_cents": 100, "stock": 100000}, tok["seller@example.com"])[1]
    return tok["buyer@example.com"], product["id"]


def order(base, buyer, product, key):
    status, _ = call(base, "POST", "/cart/items", {"product_id": product, "quantity": 1}, buyer)
    if status not in (200, 201):
        return False
    status, _ = call(base, "POST", "/checkout", {}, buyer, key)
    return status in (200, 201)


def kill_node(node_dir):
    """SIGKILL every process whose command line names node_dir, and their children."""
    def pids():
        return [int(p) for p in os.listdir("/proc") if p.isdigit()]

    def cmdline(p):
        try:
            return open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            return ""

    def ppid(p):
        try:
            return int(open(f"/proc/{p}/stat").read().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return -1

    victims = {p for p in pids() if node_dir in cmdline(p)}
    while True:
        children = {p for p in pids() if p not in victims and ppid(p) in victims}
        if not children:
            break
        victims |= children
    for p in victims:
        try:
            os.kill(p, 9)
        except ProcessLookupError:
            pass
    return len(victims)


def one_run(binary, n, sets):
    home = tempfile.mkdtemp(prefix="scalectl-bench-")
    os.chmod(home, 0o755)
    env = f"bench3-{os.getpid()}-{n}"
    try:
        t = time.monotonic()
        up = scalectl(binary, home, "up", "--level", "3", "--env", env, *[a for s in sets for a in ("--set", s)])
        up_s = time.monotonic() - t
        base = up["endpoints"]["shop"]
        buyer, product = seed(base)
        for i in range(5):
            assert order(base, buyer, product, f"warm-{i}"), "orders before the fault"
        status = scalectl(binary, home, "status", "--env", env, check=False)
        leader = status["insights"]["database"]["leader"]
        killed = kill_node(os.path.join(home, "envs", env, "nodes", leader.replace("/", "-")))
        t = time.monotonic()
        while not order(base, buyer, product, "after-kill"):
            if time.monotonic() - t > 120:
                sys.exit("no acknowledged order within 120 s of the kill")
            time.sleep(0.05)
        rto = time.monotonic() - t
        scalectl(binary, home, "up", "--env", env)
        # Wait until the healed node is the synchronous standby again, then switch over.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            members = scalectl(binary, home, "status", "--env", env, check=False)["insights"]["database"]["members"]
            if any(m["role"] == "sync_standby" for m in members):
                break
            time.sleep(0.5)
        sw = scalectl(binary, home, "switchover", "--env", env)
        print(f"run {n}: up {up_s:.1f} s; killed {killed} processes of {leader}, first order after {rto:.1f} s; "
              f"switchover {sw['from']} -> {sw['to']}, writes resumed after {sw['writes_resumed_after_seconds']:.1f} s, "
              f"paused {sw['writes_paused_seconds']:.1f} s", flush=True)
        return up_s, rto, sw["writes_resumed_after_seconds"], sw["writes_paused_seconds"]
    finally:
        subprocess.run([binary, "--home", home, "down", "--env", env, "-q"], capture_output=True)


def patroni_timing(binary, sets):
    """ttl, loop_wait and retry_timeout from the patroni.yml scalectl generates."""
    out = tempfile.mkdtemp(prefix="scalectl-render-")
    subprocess.run([binary, "render", "--level", "3", "--out", out, "-q", *[a for s in sets for a in ("--set", s)]], capture_output=True, check=True)
    for root, _, files in os.walk(out):
        if "patroni.yml" in files:
            lines = open(os.path.join(root, "patroni.yml")).read().splitlines()
            return ", ".join(l.strip() for l in lines if l.strip().split(":")[0] in ("ttl", "loop_wait", "retry_timeout"))
    return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bin", default="target/release/scalectl")
    ap.add_argument("--set", action="append", default=[], help="manifest override, as for scalectl up")
    a = ap.parse_args()
    results = [one_run(a.bin, n, a.set) for n in range(1, a.runs + 1)]
    print(f"Patroni timing: {patroni_timing(a.bin, a.set)}")
    for name, i, goal in (("up --level 3 (s)", 0, "<= 20"), ("failover: kill leader -> first acknowledged order (s)", 1, "<= 5"), ("switchover: request -> the shop ready and writing (s)", 2, ""), ("switchover: longest gap between writes (s)", 3, "")):
        xs = [r[i] for r in results]
        print(f"| {name} | median {statistics.median(xs):.1f} | worst {max(xs):.1f} | goal {goal} |")


if __name__ == "__main__":
    main()
