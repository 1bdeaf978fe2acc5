#!/usr/bin/env bash
# scalectl load's generator against wrk, on the same bare HTTP server in the same session:
# both at full speed (scalectl's schedule set far above what the machine can carry, so
# every connection always has a request due), same connections, same duration, same
# threads (2). Runs alternate (wrk, scalectl, wrk, scalectl, …) so that drift in the
# machine's load hits both; each round's ratio compares two neighbouring runs, and the
# result is the median of those ratios. Goal: scalectl >= 0.9 of wrk's req/s.
# Usage: bench/load_vs_wrk.sh [seconds per run, default 5] [rounds, default 7] [connections, default 32]
# Exit: 0 goal met, 1 missed, 2 error.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-7}
conns=${3:-32}
target_dir=${CARGO_TARGET_DIR:-target}

cargo build --release -p scalectl -p shop --example bare_axum
scalectl="$target_dir/release/scalectl"
bare="$target_dir/release/examples/bare_axum"
command -v wrk >/dev/null || { echo "load_vs_wrk.sh: wrk is not installed (apt-get install wrk)" >&2; exit 2; }

work=$(mktemp -d /tmp/load-bench-XXXX)
pid=
cleanup() {
  local rc=$?
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The bare server binds port 0 and prints its address.
"$bare" 127.0.0.1:0 221 >"$work/addr" &
pid=$!
for _ in $(seq 50); do [ -s "$work/addr" ] && break; sleep 0.1; done
addr=$(head -n1 "$work/addr")
[ -n "$addr" ] || { echo "load_vs_wrk.sh: the bare server did not start" >&2; exit 2; }
url="http://$addr/products/1"

wrk_rps() { wrk -t2 -c"$conns" -d"${secs}s" "$url" | awk '/^Requests\/sec:/ { print $2 }'; }
load_rps() {
  "$scalectl" load --url "http://$addr" --scenario raw --path /products/1 --rate 10000000 \
    --duration "${secs}s" --connections "$conns" -o json -q >"$work/load.json" || true
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["run"]; print("%.0f %d %.3f %.3f" % (r["throughput"], r["total"]["errors"], r["total"]["latency_ms"]["p50"], r["total"]["latency_ms"]["p99"]))' "$work/load.json"
}
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

wrk -t2 -c"$conns" -d2s "$url" >/dev/null # warm-up
: >"$work/wrk"
: >"$work/load"
: >"$work/ratio"
for r in $(seq "$rounds"); do
  # Odd rounds start with wrk, even ones with scalectl, so neither always goes first.
  if [ $((r % 2)) -eq 1 ]; then
    w=$(wrk_rps)
    read -r l errors p50 p99 < <(load_rps)
  else
    read -r l errors p50 p99 < <(load_rps)
    w=$(wrk_rps)
  fi
  q=$(awk -v a="$l" -v b="$w" 'BEGIN { printf "%.3f", a / b }')
  echo "round $r: wrk $w req/s; scalectl load $l req/s ($errors errors); ratio $q" >&2
  echo "$w" >>"$work/wrk"
  echo "$l" >>"$work/load"
  echo "$q" >>"$work/ratio"
done
w=$(median <"$work/wrk")
l=$(median <"$work/load")
ratio=$(median <"$work/ratio")
peak=$( (/usr/bin/time -f '%M' "$scalectl" load --url "http://$addr" --scenario raw --path /products/1 --rate 10000000 --duration 3s --connections "$conns" -o json -q >/dev/null) 2>&1 | tail -n1)
echo "median of $rounds rounds: wrk $w req/s, scalectl load $l req/s; median ratio $ratio (goal >= 0.90); scalectl peak RSS ${peak} KiB at full speed"
awk -v r="$ratio" 'BEGIN { exit (r >= 0.9) ? 0 : 1 }'
