#!/usr/bin/env bash
# scalectl load against a real local level: the default flash sale (10,000 buyers, 1,000
# units) with its checks, winner and loser latency and the generator's peak memory; then
# `mixed` at rising rates (the level's rate × 1, 2, 4, …) until a run misses an SLO — or,
# when the level's own rate misses, at falling rates (÷ 2, 4, …) until one meets them — to
# find the highest rate the level sustains within its SLOs on this machine.
# Usage: bench/load_level.sh LEVEL [ENV] [seconds per mixed run, default 20]
#   LOAD_USERS=N: buyers for the mixed runs [default: the level's spec.workload.users].
#   Without ENV it brings up a throwaway environment in a temporary home and takes it down
#   at the end; with ENV it uses that one (and its cached buyers from earlier runs).
# Needs a release build: cargo build --release -p scalectl -p shop
set -euo pipefail
cd "$(dirname "$0")/.."
level=${1:?usage: bench/load_level.sh LEVEL [ENV] [seconds]}
env=${2:-}
secs=${3:-20}
bin=${SCALECTL_BIN:-${CARGO_TARGET_DIR:-target}/release/scalectl}
out=$(mktemp -d /tmp/load-level-XXXX)
own=
cleanup() {
  local rc=$?
  [ -n "$own" ] && "$bin" down --env "$env" -q >/dev/null 2>&1 || true
  [ -n "$own" ] && rm -rf "$SCALECTL_HOME"
  echo "reports kept in $out" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ -z "$env" ]; then
  export SCALECTL_HOME=$(mktemp -d /tmp/load-level-home-XXXX)
  chmod 755 "$SCALECTL_HOME"
  env=load-bench-$level
  own=1
  "$bin" up --level "$level" --env "$env" -q >/dev/null
fi
field() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$@"; }

# --- the flash sale
/usr/bin/time -f '%M' -o "$out/flash.rss" "$bin" load --env "$env" --scenario flash-sale -q -o json \
  --report "$out/flash.html" >"$out/flash.json" || true
f="$out/flash.json"
echo "flash sale on level $level: $(field "$f" '"%(units)s units, %(buyers)s buyers: %(won)s won, %(sold_out)s sold out, %(unknown)s unknown, %(remaining)s remaining" % r["flash"]')"
echo "  checks: $(field "$f" '", ".join(("ok " if c["met"] else "FAILED ") + c["check"] for c in r["flash"]["checks"])')"
echo "  winners  p50/p99/max ms: $(field "$f" '"%(p50).1f / %(p99).1f / %(max).1f" % [x for x in r["run"]["rows"] if x["name"] == "won"][0]["latency_ms"]')"
echo "  losers   p50/p99/max ms: $(field "$f" '"%(p50).1f / %(p99).1f / %(max).1f" % [x for x in r["run"]["rows"] if x["name"] == "sold out"][0]["latency_ms"]')"
echo "  all answers within $(field "$f" '"%.2f" % r["run"]["seconds"]') s of the start; $(field "$f" 'r["run"]["retries"]') retries"
echo "  setup $(field "$f" '"%(seconds).1f s (%(reused)s reused, %(logged_in)s logged in, %(registered)s registered)" % r["setup"]'); generator peak RSS $(($(tail -n1 "$out/flash.rss") / 1024)) MB"

# --- mixed at rising rates
rate=$(python3 - "$level" <<'EOF'
import re, sys
text = open(f"environments/level-{sys.argv[1]}.yaml").read()
print(re.search(r"workload:\s*\n\s*rate:\s*(\d+)", text).group(1))
EOF
)
users=()
[ -n "${LOAD_USERS:-}" ] && users=(--users "$LOAD_USERS")
mixed() { # rate -> exit code of scalectl load; prints one line
  local r=$1 code=0
  "$bin" load --env "$env" --scenario mixed --rate "$r" --duration "${secs}s" "${users[@]}" -q -o json >"$out/mixed-$r.json" 2>/dev/null || code=$?
  line=$(field "$out/mixed-$r.json" '"offered %.0f/s, p95 %.1f ms, p99 %.1f ms, errors %d/%d, late %d, never started %d" % (r["run"]["offered_rate"], r["run"]["total"]["latency_ms"]["p95"], r["run"]["total"]["latency_ms"]["p99"], r["run"]["total"]["errors"], r["run"]["total"]["count"], r["run"]["late"], r["run"]["not_started"])')
  missed=$(field "$out/mixed-$r.json" '", ".join(c["slo"] for c in r["slos"]["checks"] if not c["met"]) or "-"')
  echo "mixed at $r op/s: $line; SLOs missed: $missed" >&2
  return "$code"
}
best=none
if mixed "$rate"; then
  best=$rate
  for mult in 2 4 8 16 32 64; do
    mixed $((rate * mult)) || break
    best=$((rate * mult))
  done
else
  for div in 2 4 8 16 32 64; do
    [ $((rate / div)) -ge 1 ] || break
    if mixed $((rate / div)); then best=$((rate / div)); break; fi
  done
fi
echo "level $level sustains mixed at $best op/s within its SLOs (highest rate tried that met them)"
