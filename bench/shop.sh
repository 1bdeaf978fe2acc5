#!/usr/bin/env bash
# The shop against baselines run in the same session on the same machine:
#   1. cached GET /products/{id} vs a bare axum handler returning a body of the same size
#      (goal: >= 0.6 of its requests/s at a p99 <= 2x its p99);
#   2. checkout orders/s vs pgbench running the same SQL (bench/checkout.sql; goal >= 0.7);
#   3. the shop's peak resident memory (VmHWM) at the end of the run (goal <= 150 MB).
# Starts a throwaway PostgreSQL 15 and the release shop; everything stops on exit.
# Each comparison alternates the shop and its baseline for several rounds and judges the
# median of the per-round ratios: on a shared machine a neighbour's burst during one
# side's only run used to swing the checkout ratio between 0.48 and 0.68.
# Usage: bench/shop.sh [seconds per measurement, default 5] [rounds, default 5]
# SHOP_BIN=path runs that shop binary instead of this checkout's release build, and
# CHECKOUT_SQL=path gives pgbench that build's checkout SQL instead of bench/checkout.sql.
# BENCH_STATEMENTS=1 also prints, for the first checkout round of each side, what
# PostgreSQL spent per statement (pg_stat_statements: calls, mean time, buffers, WAL)
# and its WAL flushes: where the database works harder for the shop than for pgbench.
# BENCH_CPU=1 also prints, for every checkout round of each side, the CPU time per order
# of the shop process, of PostgreSQL (all its processes) and of the load client, the
# machine's idle time per order, and PostgreSQL's WAL flushes per order.
# Exit: 0 all goals met, 1 a goal missed, 2 error.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-5}
warm=2
clients=16 # checkout: concurrent buyers on each side (wrk threads = connections = pgbench -c)

cargo build --release -p shop --examples --bins
shop_bin=${SHOP_BIN:-./target/release/shop}
checkout_sql=${CHECKOUT_SQL:-bench/checkout.sql}
bare_bin=./target/release/examples/bare_axum
bindir=/usr/lib/postgresql/15/bin

work=$(mktemp -d /tmp/shop-bench-XXXX)
chmod 755 "$work"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  as_pg=(runuser -u postgres --)
  chown postgres "$work"
fi
pids=()
cleanup() {
  local rc=$?
  if [ "$rc" -ge 2 ] && [ -f "$work/shop.log" ]; then
    echo "--- last lines of the shop's log" >&2
    tail -n 20 "$work/shop.log" >&2
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -f "$work/data/postmaster.pid" ]; then
    "${as_pg[@]}" "$bindir/pg_ctl" stop -D "$work/data" -m fast -s || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { echo "shop.sh: $*" >&2; exit 2; }

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# wrk prints latencies as 812.00us, 1.23ms or 1.02s; in milliseconds.
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; else if (v ~ /m$/) n *= 60000; printf "%.3f", n }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { printf "%.2f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
meets() { awk -v v="$1" -v op="$2" -v g="$3" 'BEGIN { ok = (op == ">=") ? v >= g : v <= g; print ok ? "met" : "MISSED" }'; }

# --- PostgreSQL: unix socket in $work for setup, 127.0.0.1 for the shop and pgbench.
pg_port=$(free_port)
"${as_pg[@]}" "$bindir/initdb" -D "$work/data" -U postgres -E UTF8 --locale=C --auth=trust >/dev/null
pg_opts=
[ "${BENCH_STATEMENTS:-0}" = 1 ] && pg_opts="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on"
"${as_pg[@]}" "$bindir/pg_ctl" start -D "$work/data" -l "$work/pg.log" -w -s \
  -o "$pg_opts -c listen_addresses=127.0.0.1 -p $pg_port -c unix_socket_directories='$work'"
psql -h "$work" -p "$pg_port" -U postgres -d postgres -qAtX -v ON_ERROR_STOP=1 -c 'CREATE DATABASE shop'
sql() { psql -h "$work" -p "$pg_port" -U postgres -d shop -qAtX -v ON_ERROR_STOP=1 -c "$1"; }
export DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/shop"

# --- The shop (release build, no Redis: the in-process cache). Its pool holds as many
# connections as pgbench opens ($clients), so both sides get the same database sessions.
"$shop_bin" migrate 2>"$work/migrate.log" || { cat "$work/migrate.log" >&2; fail "migrate failed"; }
shop_addr=127.0.0.1:$(free_port)
SHOP_BIND=$shop_addr SHOP_DB_POOL_SIZE=$clients SHOP_LOG_FORMAT=json SHOP_RATE_LOGIN=0 SHOP_RATE_REGISTER=0 SHOP_RATE_SEARCH=0 \
  "$shop_bin" serve 2>"$work/shop.log" &
shop_pid=$!
pids+=("$shop_pid")
for _ in $(seq 100); do
  grep -q 'listening on' "$work/shop.log" && break
  kill -0 "$shop_pid" 2>/dev/null || fail "shop serve exited"
  sleep 0.1
done
grep -q 'listening on' "$work/shop.log" || fail "shop did not start listening"
shop=http://$shop_addr

token=
api() { # METHOD PATH [JSON]; prints the response body, fails on a non-2xx status
  local args=(-sS --fail-with-body -X "$1" "$shop$2" -H 'content-type: application/json')
  [ -n "$token" ] && args+=(-H "authorization: Bearer $token")
  [ $# -ge 3 ] && args+=(-d "$3")
  curl "${args[@]}" || fail "$1 $2 failed"
}

# --- Catalog through the API: a seller, a shop, one product to read, and one product
# per checkout buyer (2 x $clients: wrk's buyers, then pgbench's), stock that never runs out.
api POST /register '{"email":"seller@bench.test","password":"bench-password","roles":"seller"}' >/dev/null
token=$(api POST /login '{"email":"seller@bench.test","password":"bench-password"}' | jq -r .token)
shop_id=$(api POST /shops '{"name":"Bench shop"}' | jq -r .id)
product() {
  api POST /products "{\"shop_id\":$shop_id,\"name\":\"$1\",\"description\":\"$2\",\"price_cents\":1999,\"stock\":2000000000}" | jq -r .id
}
read_id=$(product "Espresso machine" "15-bar pump, stainless steel boiler, steam wand and a 1.8 l removable water tank; descaling reminder; two-year warranty.")
product0=$(product "Checkout product 0" "bench")
for i in $(seq 1 $((2 * clients - 1))); do
  id=$(product "Checkout product $i" "bench")
  [ "$id" -eq $((product0 + i)) ] || fail "product ids are not contiguous"
done
token=

# Buyers with sessions, written directly (the API would spend two argon2 hashes on
# each); their bearer token is "bench-token-<user id>".
read -r buyer0 buyer_last < <(sql "WITH b AS (INSERT INTO users (email, password_hash, roles)
  SELECT 'buyer' || g || '@bench.test', '!', 'buyer' FROM generate_series(1, $((2 * clients))) g RETURNING id)
  SELECT min(id) || ' ' || max(id) FROM b")
# Named after their id, so bench/checkout.sql can write the email the shop writes.
sql "UPDATE users SET email = 'buyer-' || id || '@bench.test' WHERE roles = 'buyer'"
[ $((buyer_last - buyer0)) -eq $((2 * clients - 1)) ] || fail "buyer ids are not contiguous"
sql "INSERT INTO sessions (token_hash, user_id, expires_at)
  SELECT sha256(convert_to('bench-token-' || id, 'UTF8')), id, now() + interval '1 day'
  FROM users WHERE roles = 'buyer'"
token=bench-token-$buyer0
api GET /me >/dev/null
token=

# --- 1. Cached GET /products/{id} against bare axum with a body of the same size.
size=$(curl -sS --fail "$shop/products/$read_id" | wc -c)
bare_addr=127.0.0.1:$(free_port)
"$bare_bin" "$bare_addr" "$size" >"$work/bare.out" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do [ -s "$work/bare.out" ] && break; sleep 0.1; done
[ "$(curl -sS --fail "http://$bare_addr/products/$read_id" | wc -c)" -eq "$size" ] || fail "bare_axum body size differs"

get_bench() { # NAME URL: one measurement; sets rps and p99 (ms)
  wrk -t2 -c32 -d${secs}s --latency "$2" >"$work/wrk-$1.txt"
  ! grep -q 'Non-2xx' "$work/wrk-$1.txt" || fail "$1: non-2xx responses: $(grep Non-2xx "$work/wrk-$1.txt")"
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$work/wrk-$1.txt")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$work/wrk-$1.txt")")
}
wrk -t2 -c32 -d${warm}s "$shop/products/$read_id" >/dev/null
wrk -t2 -c32 -d${warm}s "http://$bare_addr/products/$read_id" >/dev/null
get_ratios= p99_ratios= get_rounds=
for r in $(seq "$rounds"); do
  get_bench shop "$shop/products/$read_id"
  shop_rps=$rps shop_p99=$p99
  get_bench bare "http://$bare_addr/products/$read_id"
  get_ratios+=" $(ratio "$shop_rps" "$rps")" p99_ratios+=" $(ratio "$shop_p99" "$p99")"
  get_rounds+="| GET round $r | $shop_rps req/s, p99 $shop_p99 ms | $rps req/s, p99 $p99 ms | $(ratio "$shop_rps" "$rps"), p99 $(ratio "$shop_p99" "$p99") | | |
"
done

# --- 2. Checkout: wrk's buyers through the shop, then pgbench's buyers straight to SQL,
# alternately.
BENCH_BUYERS=$(for i in $(seq 0 $((clients - 1))); do printf 'bench-token-%d:%d,' $((buyer0 + i)) $((product0 + i)); done)
export BENCH_BUYERS
pgb=(pgbench -n -M prepared -c "$clients" -j 2 -h 127.0.0.1 -p "$pg_port" -U postgres
  -D buyer0=$((buyer0 + clients)) -D product0=$((product0 + clients)) -f "$checkout_sql" shop)
wrk -t$clients -c$clients -d${warm}s -s bench/checkout.lua "$shop" -- warm >/dev/null
"${pgb[@]}" -T "$warm" >/dev/null 2>&1 || fail "pgbench warm-up failed"
checkout_ratios= checkout_rounds= pg_failed=0
tick_ms=$((1000 / $(getconf CLK_TCK)))
TIMEFORMAT='%U %S' # bash `time`: the load client's user and system seconds
cpu_now() { # with BENCH_CPU=1: "shop postgres idle" CPU in ms, and WAL flushes so far
  [ "${BENCH_CPU:-0}" = 1 ] || return 0
  local pm p pg=0
  pm=$(head -1 "$work/data/postmaster.pid")
  # Fields 16-17 add the children a process reaped: the backends of pgbench's
  # connections, which exit with each run, end up in the postmaster's.
  for p in $pm $(pgrep -P "$pm"); do
    pg=$((pg + $(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$(($(awk '{ print $14 + $15 }' "/proc/$shop_pid/stat") * tick_ms)) $((pg * tick_ms))" \
    "$(awk -v t="$tick_ms" '/^cpu / { print ($5 + $6) * t }' /proc/stat) $(sql 'SELECT wal_sync FROM pg_stat_wal')"
}
cpu_report() { # SIDE ORDERS BEFORE AFTER (from cpu_now): prints microseconds per order
  [ "${BENCH_CPU:-0}" = 1 ] || return 0
  local client
  client=$(awk '{ printf "%d", ($1 + $2) * 1000 }' "$work/client-cpu")
  awk -v r="$r" -v side="$1" -v n="$2" -v c="$client" -v b="$3" -v a="$4" 'BEGIN {
    split(b, x, " "); split(a, y, " "); f = 1000 / n
    printf "cpu per order, checkout round %d, %s: shop %d us, PostgreSQL %d us, client %d us, idle %d us; WAL flushes %.2f\n",
      r, side, (y[1] - x[1]) * f, (y[2] - x[2]) * f, c * f, (y[3] - x[3]) * f, (y[4] - x[4]) / n }'
}
statements() { # after round 1 of each side with BENCH_STATEMENTS=1: print its statements, reset
  [ "${BENCH_STATEMENTS:-0}" = 1 ] && [ "$r" -eq 1 ] || return 0
  echo "--- PostgreSQL per statement, checkout round 1 through $1"
  psql -h "$work" -p "$pg_port" -U postgres -d shop -X -P footer=off -c "SELECT calls,
      round((total_exec_time / calls * 1000)::numeric) AS exec_us, round((total_plan_time / calls * 1000)::numeric) AS plan_us,
      plans, round(shared_blks_hit::numeric / calls, 1) AS buffers, round(wal_bytes / calls) AS wal_bytes,
      left(regexp_replace(query, '\s+', ' ', 'g'), 70) AS statement
    FROM pg_stat_statements WHERE calls > 100 ORDER BY total_exec_time DESC"
  psql -h "$work" -p "$pg_port" -U postgres -d shop -X -P footer=off -c "SELECT wal_records, wal_bytes, wal_sync AS wal_flushes FROM pg_stat_wal"
  sql "SELECT pg_stat_statements_reset(); SELECT pg_stat_reset_shared('wal')" >/dev/null
}
if [ "${BENCH_STATEMENTS:-0}" = 1 ]; then
  sql "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset(); SELECT pg_stat_reset_shared('wal')" >/dev/null
fi
for r in $(seq "$rounds"); do
  before=$(cpu_now)
  { time wrk -t$clients -c$clients -d${secs}s -s bench/checkout.lua "$shop" -- "run$r" >"$work/wrk-checkout.txt"; } 2>"$work/client-cpu"
  cpu_report "the shop (wrk)" "$(awk '/^checkouts / { print $2 }' "$work/wrk-checkout.txt")" "$before" "$(cpu_now)"
  shop_ops=$(awk '/^orders\/s/ { print $2 }' "$work/wrk-checkout.txt")
  statuses=$(awk '/^status / { printf "%s%s=%s", sep, $2, $3; sep = " " }' "$work/wrk-checkout.txt")
  grep -q '^status checkout_201 ' "$work/wrk-checkout.txt" || fail "no checkout succeeded: $statuses"
  statements "the shop ($shop_ops orders/s)"
  before=$(cpu_now)
  { time "${pgb[@]}" -T "$secs" >"$work/pgbench.txt" 2>&1; } 2>"$work/client-cpu" || { cat "$work/pgbench.txt" >&2; fail "pgbench failed"; }
  cpu_report "pgbench" "$(awk '/^number of transactions actually processed/ { split($6, t, "/"); print t[1] }' "$work/pgbench.txt")" "$before" "$(cpu_now)"
  pg_tps=$(awk '/^tps = / { printf "%.2f", $3; exit }' "$work/pgbench.txt")
  statements "pgbench ($pg_tps tps)"
  pg_failed=$((pg_failed + $(awk -F': ' '/^number of failed transactions/ { print $2 + 0 }' "$work/pgbench.txt")))
  checkout_ratios+=" $(ratio "$shop_ops" "$pg_tps")"
  checkout_rounds+="| checkout round $r | $shop_ops orders/s ($statuses) | $pg_tps tps | $(ratio "$shop_ops" "$pg_tps") | | |
"
done

# --- 3. Peak resident memory of the shop over the whole run.
hwm_kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$shop_pid/status")
hwm_mb=$(awk -v k="$hwm_kb" 'BEGIN { printf "%.1f", k / 1024 }')

get_ratio=$(median <<<"$get_ratios")
p99_ratio=$(median <<<"$p99_ratios")
checkout_ratio=$(median <<<"$checkout_ratios")
r1=$(meets "$get_ratio" ">=" 0.6) r2=$(meets "$p99_ratio" "<=" 2.0)
r3=$(meets "$checkout_ratio" ">=" 0.7) r4=$(meets "$hwm_mb" "<=" 150)

cat <<EOF
body of GET /products/$read_id: $size bytes; $rounds rounds of ${secs} s per side, alternated, after ${warm} s warm-up

| what | shop | baseline | ratio (median of rounds) | goal | |
|---|---|---|---|---|---|
| cached GET /products/{id}, requests/s (wrk -t2 -c32) | | bare axum, same body size | $get_ratio | >= 0.6 | $r1 |
| same, p99 latency | | | $p99_ratio | <= 2.0 | $r2 |
| checkout, orders/s ($clients buyers) | | pgbench, $checkout_sql | $checkout_ratio | >= 0.7 | $r3 |
| shop peak RSS (VmHWM) | ${hwm_mb} MB | | | <= 150 MB | $r4 |
$get_rounds$checkout_rounds
pgbench failed transactions: $pg_failed
EOF
[ "$r1$r2$r3$r4" = metmetmetmet ]
