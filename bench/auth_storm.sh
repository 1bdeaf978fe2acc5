#!/usr/bin/env bash
# Checkout latency with and without an auth storm, at level 3 (the monolith: logins and
# checkouts share processes) and level 4 (the shop split by role, each pool in cgroups
# with its role's CPU weight and memory limit). Per level: bring it up in a throwaway
# home, then ROUNDS times alternately `load --scenario checkout` alone and the same run
# beside `load --scenario login` at STORM logins/s (several times what the auth pool can
# hash). Prints checkout p50/p99 of each run, the medians and their ratio (goal at level
# 4: p99 under the storm ≤ 1.5 × p99 without it), and the logins the storm got through.
# The shop's per-client login limits see one client per simulated buyer, so the storm
# reaches the hashing.
# Usage: bench/auth_storm.sh [ROUNDS=3] [SECONDS=20] [CHECKOUT_RATE=20] [STORM=300] [LEVELS="3 4"]
#   UP_SET="--set KEY=VALUE …": passed to `up`, to try other weights (spec.shop.roles.0.cpu=100m).
# Needs a release build: cargo build --release -p scalectl -p shop
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-20}
rate=${3:-20}
storm=${4:-300}
levels=${5:-3 4}
bin=${SCALECTL_BIN:-${CARGO_TARGET_DIR:-target}/release/scalectl}
out=$(mktemp -d /tmp/auth-storm-XXXX)
export SCALECTL_HOME=$(mktemp -d /tmp/auth-storm-home-XXXX)
chmod 755 "$SCALECTL_HOME"
env=
storm_pid=
cleanup() {
  local rc=$?
  [ -n "$storm_pid" ] && kill "$storm_pid" 2>/dev/null || true
  [ -n "$env" ] && "$bin" down --env "$env" -q >/dev/null 2>&1 || true
  rm -rf "$SCALECTL_HOME"
  echo "reports kept in $out" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

row() { # report row -> "p50 p99 ok count"
  python3 - "$1" "$2" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
row = [x for x in r["run"]["rows"] if x["name"] == sys.argv[2]][0]
print("%.1f %.1f %d %d" % (row["latency_ms"]["p50"], row["latency_ms"]["p99"], row["ok"], row["count"]))
EOF
}
median() { python3 -c 'import statistics, sys; print("%.1f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

for level in $levels; do
  env=storm-$level
  read -ra up_set <<<"${UP_SET:-}"
  "$bin" up --level "$level" --env "$env" -q "${up_set[@]}" >/dev/null
  # Buyers for both runs, registered once (registration hashes too) and cached.
  "$bin" load --env "$env" --scenario checkout --rate 5 --duration 1s --users 200 --seed 1 -q -o json >/dev/null || true
  "$bin" load --env "$env" --scenario login --rate 5 --duration 1s --users 400 --seed 2 -q -o json >/dev/null || true
  calm99=() storm99=() calm50=() storm50=()
  for i in $(seq "$rounds"); do
    "$bin" load --env "$env" --scenario checkout --rate "$rate" --duration "${secs}s" --users 200 --seed 1 -q -o json >"$out/l$level-calm-$i.json" || true
    read -r p50 p99 ok count < <(row "$out/l$level-calm-$i.json" "POST /checkout")
    calm50+=("$p50") calm99+=("$p99")
    echo "level $level round $i  alone:       checkout p50 $p50 ms, p99 $p99 ms ($ok of $count ok)"
    "$bin" load --env "$env" --scenario login --rate "$storm" --duration "$((secs + 6))s" --users 400 --seed 2 -q -o json \
      >"$out/l$level-storm-$i-logins.json" 2>/dev/null &
    storm_pid=$!
    sleep 3
    "$bin" load --env "$env" --scenario checkout --rate "$rate" --duration "${secs}s" --users 200 --seed 1 -q -o json >"$out/l$level-storm-$i.json" || true
    wait "$storm_pid" || true
    storm_pid=
    read -r p50 p99 ok count < <(row "$out/l$level-storm-$i.json" "POST /checkout")
    storm50+=("$p50") storm99+=("$p99")
    read -r _ lp99 lok lcount < <(row "$out/l$level-storm-$i-logins.json" "POST /login")
    echo "level $level round $i  under storm: checkout p50 $p50 ms, p99 $p99 ms ($ok of $count ok); logins: $lok of $lcount ok, p99 $lp99 ms, offered $storm/s"
  done
  c99=$(median "${calm99[@]}") s99=$(median "${storm99[@]}") c50=$(median "${calm50[@]}") s50=$(median "${storm50[@]}")
  echo "level $level medians: checkout p50 $c50 -> $s50 ms, p99 $c99 -> $s99 ms; p99 ratio $(python3 -c "print('%.2f' % ($s99 / $c99))")"
  "$bin" down --env "$env" -q >/dev/null
  env=
done
