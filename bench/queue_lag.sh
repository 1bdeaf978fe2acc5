#!/usr/bin/env bash
# End-to-end lag of the outbox: from an order's commit to its notification delivered by
# a worker, p50 and p99, at a range of order rates. In a throwaway home: `up --level
# LEVEL`, buyers registered once, then for each RATE `load --scenario checkout` for 30 s,
# a wait until the outbox is empty, and `queue status` (whose lag covers the last five
# minutes, so each rate runs on a fresh environment). Goal: p99 ≤ 1 s at the highest
# order rate the machine sustains.
# Usage: bench/queue_lag.sh [LEVEL=3] [RATES="100 200 400"]
# Needs a release build: cargo build --release -p scalectl -p shop
set -euo pipefail
cd "$(dirname "$0")/.."
level=${1:-3}
rates=${2:-100 200 400}
bin=${SCALECTL_BIN:-${CARGO_TARGET_DIR:-target}/release/scalectl}
export SCALECTL_SHOP_BIN=${SCALECTL_SHOP_BIN:-$(dirname "$bin")/shop}
out=$(mktemp -d /tmp/queue-lag-XXXX)
export SCALECTL_HOME=$(mktemp -d /tmp/queue-lag-home-XXXX)
chmod 755 "$SCALECTL_HOME"
env=
cleanup() {
  local rc=$?
  [ -n "$env" ] && "$bin" down --env "$env" -q >/dev/null 2>&1 || true
  rm -rf "$SCALECTL_HOME"
  echo "reports kept in $out" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for rate in $rates; do
  env=lag-$rate
  "$bin" up --level "$level" --env "$env" -q >/dev/null
  "$bin" load --env "$env" --scenario checkout --rate 5 --duration 1s --users 200 -q -o json >/dev/null || true
  "$bin" load --env "$env" --scenario checkout --rate "$rate" --duration 30s --users 200 -q -o json >"$out/load-$rate.json" || true
  for _ in $(seq 60); do
    "$bin" queue status --env "$env" -o json >"$out/queue-$rate.json"
    python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["pending"] != 0)' "$out/queue-$rate.json" && break
    sleep 1
  done
  python3 - "$out/load-$rate.json" "$out/queue-$rate.json" "$rate" "$level" <<'PY'
import json, sys
load, _ = json.JSONDecoder().raw_decode(open(sys.argv[1]).read())
queue = json.load(open(sys.argv[2]))
rows = {r["name"]: r for r in load["run"]["rows"]}
checkout = rows["POST /checkout"]
lag = queue["lag"]
print("level %s, %s checkouts/s asked: %d of %d acknowledged; %d notifications, lag p50 %.3f s, p99 %.3f s; pending %d, dead %d" % (
    sys.argv[4], sys.argv[3], checkout["ok"], checkout["count"], lag["events"], lag["p50_seconds"] or 0, lag["p99_seconds"] or 0,
    queue["pending"], queue["dead"]))
PY
  "$bin" down --env "$env" -q >/dev/null
  env=
done
