#!/usr/bin/env bash
# Moving an environment up a level in place while it serves. ROUNDS times, in a
# throwaway home: `up --level FROM`, buyers registered once, then `load --scenario
# checkout --rate RATE` for 40 s with `up --level TO` started 12 s in. Prints what the
# load saw (cart additions and checkouts answered, refused, the slowest), the longest
# pause between acknowledged orders that `up` reported, and how long the move took.
# Goal: nothing refused, every acknowledged order kept (tests/local_level4.rs checks
# that), the pause as short as a busy machine allows.
# Usage: bench/move_level.sh [ROUNDS=3] [RATE=20] [FROM=3] [TO=4]
#   UP_BIN=…: another scalectl for `up` and `down` (an older release, as the baseline),
#   while this one's generator drives the load.
# Needs a release build: cargo build --release -p scalectl -p shop
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
rate=${2:-20}
from=${3:-3}
to=${4:-4}
bin=${SCALECTL_BIN:-${CARGO_TARGET_DIR:-target}/release/scalectl}
up_bin=${UP_BIN:-$bin}
out=$(mktemp -d /tmp/move-level-XXXX)
export SCALECTL_HOME=$(mktemp -d /tmp/move-level-home-XXXX)
chmod 755 "$SCALECTL_HOME"
env=
load_pid=
cleanup() {
  local rc=$?
  [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
  [ -n "$env" ] && "$up_bin" down --env "$env" -q >/dev/null 2>&1 || true
  rm -rf "$SCALECTL_HOME"
  echo "reports kept in $out" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for i in $(seq "$rounds"); do
  env=move-$i
  "$up_bin" up --level "$from" --env "$env" -q >/dev/null
  "$bin" load --env "$env" --scenario checkout --rate 5 --duration 1s --users 60 -q -o json >/dev/null || true
  "$bin" load --env "$env" --scenario checkout --rate "$rate" --duration 40s --users 60 -q -o json >"$out/load-$i.json" &
  load_pid=$!
  sleep 12
  "$up_bin" up --level "$to" --env "$env" -q -o json >"$out/up-$i.json"
  wait "$load_pid" || true
  load_pid=
  python3 - "$out/load-$i.json" "$out/up-$i.json" "$i" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
load, _ = json.JSONDecoder().raw_decode(text)
up = json.load(open(sys.argv[2]))
rows = {r["name"]: r for r in load["run"]["rows"]}
parts = []
for name in ("POST /cart/items", "POST /checkout"):
    r = rows[name]
    parts.append("%s %d of %d ok (%s), slowest %.0f ms" % (name, r["ok"], r["count"], r["error_statuses"] or "no errors", r["latency_ms"]["max"]))
pause = up.get("write_pause") or {}
print("round %s: move %.1f s, longest pause %.2f s over %s orders; %s" % (
    sys.argv[3], up["seconds"], pause.get("longest_seconds", float("nan")), pause.get("orders", "?"), "; ".join(parts)))
EOF
  "$up_bin" down --env "$env" -q >/dev/null
  env=
done
