#!/usr/bin/env bash
# How long the shop goes without Redis when the Redis primary is lost, where Sentinels
# watch it (level 4 and up). In a throwaway home: `up --level LEVEL`, then ROUNDS times,
# under `load --scenario mixed` at RATE: SIGKILL the current primary and time (every
# 50 ms, from the kill) when a Sentinel has promoted a replica (`role:master`) and when
# the shop's first write lands on it (its count of changes grows: nothing else writes
# there);
# then `up` (the old primary returns as a replica) and `plan --exit-code` (no change).
# Usage: bench/redis_failover.sh [LEVEL=4] [ROUNDS=3] [RATE=200]
# Needs a release build: cargo build --release -p scalectl -p shop
set -euo pipefail
cd "$(dirname "$0")/.."
level=${1:-4}
rounds=${2:-3}
rate=${3:-200}
bin=${SCALECTL_BIN:-${CARGO_TARGET_DIR:-target}/release/scalectl}
export SCALECTL_SHOP_BIN=${SCALECTL_SHOP_BIN:-$(dirname "$bin")/shop}
export SCALECTL_HOME=$(mktemp -d /tmp/redis-failover-home-XXXX)
chmod 755 "$SCALECTL_HOME"
env=redis-failover
load=
cleanup() {
  local rc=$?
  [ -n "$load" ] && kill "$load" 2>/dev/null || true
  "$bin" down --env "$env" -q >/dev/null 2>&1 || true
  rm -rf "$SCALECTL_HOME"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin" up --level "$level" --env "$env" -q >/dev/null
"$bin" load --env "$env" --scenario mixed --rate 5 --duration 1s --users 200 -q -o json >/dev/null || true
for round in $(seq "$rounds"); do
  "$bin" load --env "$env" --scenario mixed --rate "$rate" --duration 40s --users 200 -q -o json >/dev/null 2>&1 &
  load=$!
  sleep 5
  "$bin" status --env "$env" -o json >"$SCALECTL_HOME/status.json"
  python3 - "$SCALECTL_HOME/status.json" "$SCALECTL_HOME/envs/$env/secrets/redis.password" "$round" <<'PY'
import json, os, signal, socket, sys, time

status = json.load(open(sys.argv[1]))
password = open(sys.argv[2]).read().strip()
nodes = [c for c in status["components"] if c["kind"] == "redis"]

def ask(address, command):
    host, port = address.rsplit(":", 1)
    try:
        s = socket.create_connection((host, int(port)), timeout=0.5)
        s.settimeout(0.5)
        s.sendall(f"AUTH {password}\r\n{command}\r\nQUIT\r\n".encode())
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out.decode()
            out += chunk
    except OSError:
        return None

def role(address):
    reply = ask(address, "INFO replication")
    return None if reply is None else ("master" if "role:master" in reply else "replica")

def changes(address):
    # Writes since the last save, which never comes (no snapshots): on a promoted
    # replica, nothing but the shop writes.
    reply = ask(address, "INFO persistence")
    return None if reply is None else next((int(l.split(":")[1]) for l in reply.splitlines() if l.startswith("rdb_changes_since_last_save:")), None)

primary = next(c for c in nodes if role(c["address"]) == "master")
others = [c for c in nodes if c is not primary]
os.kill(primary["pid"], signal.SIGKILL)
killed = time.monotonic()
promoted = written = None
before = None
while time.monotonic() - killed < 30 and written is None:
    for c in others:
        if promoted is None and role(c["address"]) == "master":
            promoted, new = time.monotonic() - killed, c
            before = changes(c["address"]) or 0
    if promoted is not None and (changes(new["address"]) or 0) > before:
        written = time.monotonic() - killed
    time.sleep(0.05)
fmt = lambda t: "never" if t is None else "%.2f s" % t
print(f"round {sys.argv[3]}: killed {primary['id']}; {new['id'] if promoted else 'no replica'} promoted after {fmt(promoted)}, "
      f"the shop's first write on it after {fmt(written)}")
PY
  wait "$load" || true
  load=
  "$bin" up --env "$env" -q >/dev/null
  "$bin" plan --env "$env" --exit-code -q >/dev/null && echo "  up: the old primary is back as a replica; plan: no change" \
    || echo "  plan after up shows changes"
done
