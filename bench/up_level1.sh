#!/usr/bin/env bash
# `scalectl up --level 1` wall time as a ratio to a bare `initdb` + `pg_ctl start -w` run
# in the same session on the same machine (goal: ratio <= 2.0), and the time of `plan`.
# Usage: bench/up_level1.sh [runs]   (needs `cargo build --release --workspace` first)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
bin=${SCALECTL_BIN:-./target/release/scalectl}
[ -x "$bin" ] || { echo "build first: cargo build --release --workspace" >&2; exit 2; }
bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d /tmp/scalectl-bench-XXXX); chmod 755 "$work"
trap '"$bin" --home "$work/home" down --env bench-up -q >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
as_pg=()
[ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

bare=(); ours=(); plan=()
for i in $(seq "$runs"); do
  d="$work/bare-$i"; mkdir -p "$d"; [ "$(id -u)" -eq 0 ] && chown postgres "$d"
  t0=$(now)
  "${as_pg[@]}" "$bindir/initdb" -D "$d/data" -U postgres -E UTF8 --locale=C --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  "${as_pg[@]}" "$bindir/pg_ctl" start -D "$d/data" -l "$d/log" -w -s -o "-c listen_addresses='' -c unix_socket_directories='$d'"
  t1=$(now)
  "${as_pg[@]}" "$bindir/pg_ctl" stop -D "$d/data" -m fast -s
  bare+=("$(echo "$t1 - $t0" | bc)")

  t0=$(now)
  "$bin" --home "$work/home" up --level 1 --env bench-up -q >/dev/null
  t1=$(now)
  ours+=("$(echo "$t1 - $t0" | bc)")
  t0=$(now)
  "$bin" --home "$work/home" plan --env bench-up --exit-code >/dev/null
  t1=$(now)
  plan+=("$(echo "$t1 - $t0" | bc)")
  "$bin" --home "$work/home" down --env bench-up -q >/dev/null
done

t0=$(now); for i in $(seq 20); do "$bin" --home "$work/home" plan --level 6 >/dev/null; done; t1=$(now)
plan6=$(echo "($t1 - $t0) / 20" | bc -l)

b=$(printf '%s\n' "${bare[@]}" | median); o=$(printf '%s\n' "${ours[@]}" | median); p=$(printf '%s\n' "${plan[@]}" | median)
printf 'bare initdb + pg_ctl start   median %.2fs  (%s)\n' "$b" "${bare[*]}"
printf 'scalectl up --level 1        median %.2fs  (%s)\n' "$o" "${ours[*]}"
printf 'ratio up / bare              %.2f  (goal <= 2.0)\n' "$(echo "$o / $b" | bc -l)"
printf 'no-op plan of the level-1 env median %.0f ms\n' "$(echo "$p * 1000" | bc -l)"
printf 'plan --level 6 (expand + plan, nothing recorded) mean %.0f ms  (goal <= 200 ms)\n' "$(echo "$plan6 * 1000" | bc -l)"
