#!/usr/bin/env python3
"""Where a level-3 failover's time goes: the leader's node is killed (node-loss, its
whole cgroup) on an idle level-3 environment, and these are timed from the kill,
sampled every 20-50 ms:

  lock gone     the leader key disappears from etcd (its lease ran out: Patroni's ttl)
  new lock      another member holds the leader key
  promoted      that member's Patroni answers /primary with 200 and role master
                (PostgreSQL out of recovery: what the database router waits for)
  router write  a write (SELECT txid_current()) through the router's :5000
  pooled write  the same write through PgBouncer, the shop's path
  order         an order acknowledged by the shop (through its balancer)

Usage: bench/rto_breakdown.py [--runs 5] [--bin target/release/scalectl] [--set K=V ...]
Each run kills whoever leads, measures, and brings the node back with `up` (waiting
for a failover candidate) before the next. Needs root (cgroups), psql and the shop.
"""

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import level3  # noqa: E402  (the shop client the level-3 bench uses)


def sc(a, home, *args, check=True):
    out = subprocess.run([a.bin, "--home", home, *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        sys.exit(f"scalectl {' '.join(args)} failed: {out.stderr}")
    return out


def http(url, body=None, timeout=0.5):
    req = urllib.request.Request(url, data=body.encode() if body else None, method="POST" if body else "GET")
    if body:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except Exception:
        return None, ""


def leader_key(etcd, scope):
    key = base64.b64encode(f"/scalectl/{scope}/leader".encode()).decode()
    status, body = http(f"http://{etcd}/v3/kv/range", json.dumps({"key": key}))
    if status != 200:
        return "?"
    kvs = json.loads(body).get("kvs") or []
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def psql_write(host, port, user, password, db="shop"):
    env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="1")
    # PgBouncer queues a query while it has no server: the write returns when one is
    # back, which is the moment measured.
    try:
        r = subprocess.run(["psql", "-XAtq", "-h", host, "-p", str(port), "-U", user, "-d", db, "-c", "SELECT txid_current()"],
                           env=env, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def one_run(a, home, env, nodes, etcd, scope, router, pooler, secrets, shop):
    status = json.loads(sc(a, home, "status", "--env", env, "-o", "json", check=False).stdout)
    old = status["insights"]["database"]["leader"].split("/")[-1]
    marks = {}
    stop = threading.Event()

    def mark(name):
        marks.setdefault(name, time.monotonic())

    def watch_etcd():
        while not stop.is_set():
            v = leader_key(etcd, scope)
            if v is None:
                mark("lock gone")
            elif v not in ("?", old):
                mark("lock gone")
                mark("new lock")
            time.sleep(0.02)

    def watch_patroni():
        while not stop.is_set():
            for name, api in nodes.items():
                if name == old:
                    continue
                s, body = http(f"http://{api}/primary", timeout=0.3)
                if s == 200 and ('"role": "master"' in body or '"role": "primary"' in body):
                    mark("promoted")
            time.sleep(0.02)

    def watch(name, probe):
        while not stop.is_set() and name not in marks:
            if probe():
                mark(name)
            time.sleep(0.05)

    threads = [threading.Thread(target=watch_etcd, daemon=True), threading.Thread(target=watch_patroni, daemon=True),
               threading.Thread(daemon=True, target=watch, args=("router write", lambda: psql_write(router[0], router[1], "postgres", secrets["postgres"])) ),
               threading.Thread(daemon=True, target=watch, args=("pooled write", lambda: psql_write(pooler[0], pooler[1], "shop", secrets["shop"])) ),
               threading.Thread(daemon=True, target=watch, args=("order", shop))]
    t0 = time.monotonic()
    sc(a, home, "chaos", "inject", "--env", env, "--fault", "node-loss", "--target", "leader", "-q")
    for t in threads:
        t.start()
    deadline = t0 + 90
    while time.monotonic() < deadline and not all(k in marks for k in ("new lock", "promoted", "router write", "pooled write", "order")):
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    result = {k: round(v - t0, 2) for k, v in marks.items()}
    sc(a, home, "up", "--env", env, "-q")
    return old, result


def shop_orderer(base):
    """An order through the shop's API: a seller with a product of ample stock and a
    buyer, as the system tests make them; returns a function that places one order."""
    tag = f"rto{os.getpid()}"
    password = "correct horse battery staple"

    def call(method, path, body=None, token=None, key=None):
        # No answer at all (the connection refused or cut mid-failover) is (None, None).
        try:
            return level3.call(base, method, path, body, token, key, timeout=2)
        except Exception:
            return None, None

    tokens = {}
    for who, roles in (("seller", "seller"), ("buyer", "buyer")):
        email = f"{tag}-{who}@example.com"
        call("POST", "/register", {"email": email, "password": password, "roles": roles})
        _, t = call("POST", "/login", {"email": email, "password": password})
        tokens[who] = (t or {}).get("token")
    _, shop = call("POST", "/shops", {"name": tag}, tokens["seller"])
    _, product = call("POST", "/products", {"shop_id": (shop or {}).get("id"), "name": "Phone", "description": "a phone",
                                            "price_cents": 100, "stock": 1000000}, tokens["seller"])
    if not product:
        return None
    n = [0]

    def order():
        n[0] += 1
        s, _ = call("POST", "/cart/items", {"product_id": product["id"], "quantity": 1}, tokens["buyer"])
        if s not in (200, 201):
            return False
        s, _ = call("POST", "/checkout", {}, tokens["buyer"], key=f"{tag}-{n[0]}")
        return s in (200, 201)

    return order if order() else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bin", default="target/release/scalectl")
    ap.add_argument("--set", action="append", default=[], help="a manifest setting, such as spec.postgres.failover.ttl=5")
    a = ap.parse_args()
    home = tempfile.mkdtemp(prefix="scalectl-rto-")
    os.chmod(home, 0o755)
    env = f"rto-{os.getpid()}"
    sets = [x for s in a.set for x in ("--set", s)]
    try:
        up = json.loads(sc(a, home, "up", "--level", "3", "--env", env, "-q", "-o", "json", *sets).stdout)
        res = json.loads(open(os.path.join(home, "envs", env, "state.json")).read())["resources"]
        nodes = {k.split("/")[-1]: f"{v['address']}:{v['spec']['patroni_port']}" for k, v in res.items() if v["kind"] == "patroni-node"}
        etcd = next(f"{v['address']}:{v['port']}" for v in res.values() if v["kind"] == "etcd")
        router = (res["haproxy/r1-db"]["address"], res["haproxy/r1-db"]["port"])
        pooler = next((v["address"], v["port"]) for v in res.values() if v["kind"] == "pgbouncer")
        secrets = {n: open(os.path.join(home, "envs", env, "secrets", f"postgres-{n}.password")).read().strip() for n in ("postgres", "shop")}
        shop = shop_orderer(up["endpoints"]["shop"])
        if shop is None:
            sys.exit("could not place a first order through the shop")
        scope = f"{env}-r1"
        keys = ["lock gone", "new lock", "promoted", "router write", "pooled write", "order"]
        rows = []
        print("| run | killed | " + " | ".join(keys) + " |")
        print("|---|---|" + "---|" * len(keys))
        for i in range(a.runs):
            old, r = one_run(a, home, env, nodes, etcd, scope, router, pooler, secrets, shop)
            rows.append(r)
            print(f"| {i + 1} | {old} | " + " | ".join(f"{r[k]:.2f} s" if k in r else "–" for k in keys) + " |", flush=True)
        print("| median | | " + " | ".join(f"{statistics.median([r[k] for r in rows if k in r]):.2f} s" if any(k in r for r in rows) else "–" for k in keys) + " |")
    finally:
        if sc(a, home, "down", "--env", env, "-q", check=False).returncode == 0:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
