#!/usr/bin/env python3
"""CPU time of the shop per "sold out" answer against a cached product read, in one
running environment (after `scalectl load --scenario flash-sale` sold a sale out).

Usage: bench/flash_cpu.py ENV_DIR SALE_ID PRODUCT_ID [requests per side, default 20000]

ENV_DIR is the environment's directory ($SCALECTL_HOME/envs/NAME): the shop's address
comes from its HAProxy (state.json is not parsed: the edge is found in
nodes/haproxy-r1/haproxy.cfg), the shops' pids from nodes/shop-*/pid, and the buyers'
tokens from load/setup-s1.json. Each side sends its requests through the edge over 16
keep-alive connections (16 threads); CPU is the shop processes' utime + stime from
/proc over the whole side. Losers carry tokens of the run's buyers, one per request in
turn, and fresh Idempotency-Keys; every answer is checked (409 "sold out"). Winners are
left out: a pre-pass replays each buyer's purchase (the load's key `flash-SALE-i`) and
drops those answered 200, then waits out the shops' 10 s session cache, so that every
measured loser's session is new to the shop that answers it, as in the stampede.
"""
import glob
import http.client
import json
import os
import re
import sys
import threading
import time
import uuid

env, sale, product = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
n = int(sys.argv[4]) if len(sys.argv) > 4 else 20000
conns = 16

cfg = open(os.path.join(env, "nodes/haproxy-r1/haproxy.cfg")).read()
bind = re.search(r"frontend shop\n(?:[^\n]*\n)*?\s*bind\s+(\S+):(\d+)", cfg)
host, port = bind.group(1), int(bind.group(2))
pids = [int(open(p).read()) for p in glob.glob(os.path.join(env, "nodes/shop-*/pid"))]
tokens = json.load(open(os.path.join(env, "load/setup-s1.json")))["buyers"]
hz = os.sysconf("SC_CLK_TCK")


def cpu():
    total = 0
    for pid in pids:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / hz


def side(name, request, ok, record=None):
    bad = []
    counter = iter(range(n))
    lock = threading.Lock()

    def worker():
        c = http.client.HTTPConnection(host, port, timeout=30)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            method, path, body, headers = request(i)
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            data = r.read()
            if not ok(r.status, data):
                bad.append((r.status, data[:200]))
            if record is not None and r.status == 200:
                record.add(i)
        c.close()

    before, t0 = cpu(), time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spent, secs = cpu() - before, time.monotonic() - t0
    print(f"{name:28} {n} requests in {secs:5.1f} s, shop CPU {spent * 1e6 / n:7.1f} us/request"
          + (f", {len(bad)} unexpected answers, e.g. {bad[0]}" if bad else ""))
    return spent / n


def read(i):
    return "GET", f"/products/{product}", None, {"X-Forwarded-For": f"10.9.{i % 250}.{i % 199}"}


def lose(i):
    t = tokens[i % len(tokens)]
    return ("POST", f"/flash-sales/{sale}/purchase", '{"quantity":1}',
            {"Authorization": f"Bearer {t}", "Idempotency-Key": str(uuid.uuid4()),
             "Content-Type": "application/json", "X-Forwarded-For": f"10.8.{i % 250}.{i % 199}"})


winners = set()


def replay(i):
    return ("POST", f"/flash-sales/{sale}/purchase", '{"quantity":1}',
            {"Authorization": f"Bearer {tokens[i]}", "Idempotency-Key": f"flash-{sale}-{i}",
             "Content-Type": "application/json", "X-Forwarded-For": f"10.7.{i % 250}.{i % 199}"})


n_all, n = n, len(tokens)
side("pre-pass (who won)", replay, lambda s, d: s in (200, 409), record=winners)
tokens = [t for i, t in enumerate(tokens) if i not in winners]
print(f"{len(winners)} winners left out, {len(tokens)} losers' tokens")
n = n_all
time.sleep(11)
side("warm-up (cached read)", read, lambda s, d: s == 200)
get = side("GET /products/{id} (cached)", read, lambda s, d: s == 200)
# Buyers who won answer 200 (their retry would) or 409 sold out with a new key.
lost = side("POST purchase (sold out)", lose, lambda s, d: s == 409 and b"sold out" in d)
print(f"sold-out answer / cached read: {lost / get:.2f}x")
