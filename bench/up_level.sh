#!/usr/bin/env bash
# `scalectl up --level LEVEL` from nothing, wall time, RUNS times in a throwaway home (each
# run a fresh environment, torn down after), with the median; then the time of a no-op
# `plan` and of `up` on the environment already up (nothing to do).
# Usage: bench/up_level.sh [LEVEL=5] [RUNS=3]
# Needs a release build: cargo build --release -p scalectl -p shop
set -euo pipefail
cd "$(dirname "$0")/.."
level=${1:-5}
runs=${2:-3}
bin=${SCALECTL_BIN:-${CARGO_TARGET_DIR:-target}/release/scalectl}
export SCALECTL_SHOP_BIN=${SCALECTL_SHOP_BIN:-$(dirname "$bin")/shop}
[ -x "$bin" ] || { echo "build first: cargo build --release -p scalectl -p shop" >&2; exit 2; }
export SCALECTL_HOME=$(mktemp -d /tmp/up-level-home-XXXX)
chmod 755 "$SCALECTL_HOME"
env=
cleanup() {
  local rc=$?
  [ -n "$env" ] && "$bin" down --env "$env" -q >/dev/null 2>&1 || true
  rm -rf "$SCALECTL_HOME"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }

times=()
for i in $(seq "$runs"); do
  env=up-$level-$i
  t0=$(now)
  "$bin" up --level "$level" --env "$env" -q >/dev/null
  t1=$(now)
  times+=("$(secs "$t0" "$t1")")
  echo "run $i: up --level $level in ${times[-1]} s" >&2
  if [ "$i" -lt "$runs" ]; then
    "$bin" down --env "$env" -q >/dev/null
    env=
  fi
done
t0=$(now); "$bin" plan --env "$env" --exit-code >/dev/null; t1=$(now); plan=$(secs "$t0" "$t1")
t0=$(now); "$bin" up --env "$env" -q >/dev/null; t1=$(now); again=$(secs "$t0" "$t1")
echo "level $level: up from nothing ${times[*]} s (median $(printf '%s\n' "${times[@]}" | median) s); no-op plan $plan s; up with nothing to do $again s"
